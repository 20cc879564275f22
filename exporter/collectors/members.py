"""The member accounts of a Macie administrator account (ListMembers, every page of 25),
including accounts that left: a member that is Removed, Resigned or Paused has buckets no
longer analysed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from exporter.aws.operations import MACIE, Operation
from exporter.collectors.base import Collector, Context, Fetch, Settings, Switch, pages
from exporter.collectors.fields import text
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import TARGET_LABELS, AnySpec, Family, gauge, state_set, target_family

# The largest page ListMembers accepts (botocore's model).
LIST_MEMBERS = Operation(MACIE, "ListMembers", "macie2:ListMembers", page_size=25,
                         items="members")
# Documented RelationshipStatus values of a Macie member account.
MEMBER_STATUSES = ("Enabled", "Paused", "Invited", "Created", "Removed", "Resigned",
                   "EmailVerificationInProgress", "EmailVerificationFailed", "RegionDisabled",
                   "AccountSuspended")

# (member account, relationship status), sorted.
Members = tuple[tuple[str, str], ...]
SLOT: Slot[Members] = Slot("members")


def members_from_api(members: Iterable[Mapping[str, Any]]) -> Members:
    """ListMembers items → (member account, relationship status), sorted."""
    out: dict[str, str] = {}
    for member in members:
        account = text(member, "accountId")
        if account:
            out[account] = text(member, "relationshipStatus") or "Unknown"
    return tuple(sorted(out.items()))


def fetch(_ctx: Context[Members]) -> Fetch[Members]:
    return members_from_api((yield from pages(LIST_MEMBERS, onlyAssociated="false")))


def _members(target: TargetResult) -> Members | None:
    return target.get(SLOT)


def _add(family: Family, key: TargetKey, members: Members | None) -> None:
    for member, status in members or ():
        state_set(family, [key.account_id, key.region, member], MEMBER_STATUSES, status)


def families(_settings: Settings) -> list[AnySpec]:
    return [target_family("macie_member_relationship_status", lambda: gauge(
        "macie_member_relationship_status",
        "Relationship of each member account with this Macie administrator account "
        "(ListMembers): 1 for the current status, 0 for the others.",
        (*TARGET_LABELS, "member_account_id", "status")), _members, _add)]


COLLECTOR = Collector(
    name="members", slot=SLOT, operations=(LIST_MEMBERS,), fetch=fetch, families=families,
    switch=Switch("1h", "Collect the member accounts of a Macie administrator account "
                        "(ListMembers)."),
)
