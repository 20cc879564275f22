"""Whether automated sensitive data discovery is on, per account: the account's own
configuration (GetAutomatedDiscoveryConfiguration) and, for a Macie administrator, each
member's status (ListAutomatedDiscoveryAccounts, pages of 25). A member sees its own status
in the list; a standalone account, which has no list, has its configuration's. Each account's
status is exported once across the fleet (exporter.collectors.owners)."""

from __future__ import annotations

from prometheus_client.metrics_core import GaugeMetricFamily

from exporter.aws.errors import ApiError
from exporter.aws.operations import MACIE, Operation
from exporter.collectors.base import Collector, Context, Fetch, Settings, Switch, call, pages
from exporter.collectors.owners import ShownOnce
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import TARGET_LABELS, AnySpec, Family, FamilySpec, state_set

GET_CONFIGURATION = Operation(MACIE, "GetAutomatedDiscoveryConfiguration",
                              "macie2:GetAutomatedDiscoveryConfiguration")
# The largest page the API accepts (botocore's model).
LIST_ACCOUNTS = Operation(MACIE, "ListAutomatedDiscoveryAccounts",
                          "macie2:ListAutomatedDiscoveryAccounts", page_size=25, items="items")
# AutomatedDiscoveryStatus / AutomatedDiscoveryAccountStatus.
STATUSES = ("ENABLED", "DISABLED")
# What the list answers an account that is not part of an organisation in Macie.
_NOT_AN_ORGANIZATION = frozenset({"ValidationException", "ConflictException",
                                  "ResourceNotFoundException"})

# (account, status), sorted.
Statuses = tuple[tuple[str, str], ...]
SLOT: Slot[Statuses] = Slot("automated_discovery")


def fetch(ctx: Context[Statuses]) -> Fetch[Statuses]:
    configuration = yield from call(GET_CONFIGURATION)
    own = configuration.get("status")
    try:
        items = yield from pages(LIST_ACCOUNTS)
    except ApiError as err:
        if err.code not in _NOT_AN_ORGANIZATION:
            raise
        items = []
    statuses = {item["accountId"]: item["status"] for item in items
                if isinstance(item.get("accountId"), str) and isinstance(item.get("status"), str)}
    if isinstance(own, str) and own:
        statuses.setdefault(ctx.key.account_id, own)
    return tuple(sorted(statuses.items()))


def _statuses(target: TargetResult) -> Statuses | None:
    return target.get(SLOT)


_shown = ShownOnce(_statuses, lambda item: item[0], lambda item: item[0])


def _add(family: Family, key: TargetKey, statuses: Statuses, lo: int, hi: int) -> None:
    for account, status in statuses:
        state_set(family, [account, key.region], STATUSES, status)


def families(_settings: Settings) -> list[AnySpec]:
    def make() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "macie_automated_discovery_status",
            "Whether automated sensitive data discovery is enabled for the account "
            "(GetAutomatedDiscoveryConfiguration for the account itself, "
            "ListAutomatedDiscoveryAccounts for a Macie administrator's members): 1 for the "
            "current status, 0 for the other.", labels=[*TARGET_LABELS, "status"])
    return [FamilySpec("macie_automated_discovery_status", make, _add, all_parts=_shown)]


COLLECTOR = Collector(
    name="automated_discovery", slot=SLOT, operations=(GET_CONFIGURATION, LIST_ACCOUNTS),
    fetch=fetch, families=families,
    switch=Switch("1h", "Collect whether automated sensitive data discovery is on, per account "
                        "(GetAutomatedDiscoveryConfiguration, ListAutomatedDiscoveryAccounts)."),
)
