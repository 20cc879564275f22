"""Members: ListMembers (`GET /members`, query string `maxResults`, `nextToken`,
`onlyAssociated`), the accounts the caller is Macie administrator of in the region; up to 25 a
page (the model's maximum, and the default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.session import Session, macie
from exporter.demo.simulator.wire import (
    Answer,
    Call,
    Invalid,
    bounded,
    iso,
    json_answer,
    offset_of,
    token,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

MEMBERS_PAGE_SIZE = 25  # ListMembers: the model's maximum, also the default
RELATIONSHIP_STATUSES = ("Enabled", "Paused", "Invited", "Created", "Removed", "Resigned",
                         "EmailVerificationInProgress", "EmailVerificationFailed",
                         "RegionDisabled", "AccountSuspended")
# Members no longer associated with their administrator: listed only with onlyAssociated=false.
NOT_ASSOCIATED = frozenset({"Removed", "Resigned"})


@dataclass(frozen=True)
class Member:
    status: str  # one of RELATIONSHIP_STATUSES
    invited_at: float
    updated_at: float


@macie
def list_members(sim: Simulator, call: Call, session: Session) -> Answer:
    """ListMembers."""
    query = call.params
    raw_size = query.get("maxResults", str(MEMBERS_PAGE_SIZE))
    try:
        size = int(raw_size)
    except ValueError:
        raise Invalid("maxResults must be an integer") from None
    size = bounded(size, "maxResults", MEMBERS_PAGE_SIZE)
    offset = offset_of(query.get("nextToken"))
    only_associated = query.get("onlyAssociated", "true")
    if only_associated not in ("true", "false"):
        raise Invalid("onlyAssociated must be true or false")
    admin, region = call.account_id, call.region
    with sim.lock:
        members = sorted(sim._members.get((admin, region), {}).items())
    if only_associated == "true":
        members = [(m, r) for m, r in members if r.status not in NOT_ASSOCIATED]
    page = [{
        "accountId": member, "administratorAccountId": admin, "masterAccountId": admin,
        "arn": f"arn:aws:macie2:{region}:{admin}:member/{member}",
        "email": f"aws+{member}@example.com", "invitedAt": iso(relation.invited_at),
        "relationshipStatus": relation.status, "tags": {},
        "updatedAt": iso(relation.updated_at),
    } for member, relation in members[offset:offset + size]]
    answer: dict[str, Any] = {"members": page}
    if offset + len(page) < len(members):
        answer["nextToken"] = token(offset + len(page))
    return json_answer(200, answer)
