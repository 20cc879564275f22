"""Month-to-date usage, cost and quota (GetUsageStatistics, every page): one record per
account, so a Macie administrator account gives every member's cost and quota. Each account x
region x usage type is exported once across the fleet (exporter.collectors.owners): from the
account's own target when the fleet polls it, on any shard, else from its administrator's."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.aws.operations import MACIE, Operation
from exporter.collectors.base import (
    Collector,
    Context,
    Fetch,
    MappingError,
    Settings,
    Switch,
    pages,
)
from exporter.collectors.fields import finite, number, text
from exporter.collectors.owners import ShownOnce
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import TARGET_LABELS, AnySpec, Family, FamilySpec, gauge

# The page asked of GetUsageStatistics (the model gives no maximum).
GET_USAGE_STATISTICS = Operation(MACIE, "GetUsageStatistics", "macie2:GetUsageStatistics",
                                 page_size=25, items="records")
# TERABYTES as Macie counts them: 2^40 bytes.
UNIT_BYTES = {"TERABYTES": float(2**40)}


@dataclass(frozen=True, slots=True)
class Usage:
    """One usage type of one account, month to date (GetUsageStatistics)."""

    account_id: str
    usage_type: str
    currency: str
    estimated_cost: float | None = None
    quota_reached: bool | None = None
    quota_bytes: float | None = None


SLOT: Slot[tuple[Usage, ...]] = Slot("usage")


def _cost(value: object) -> float | None:
    """The API's decimal string (estimatedCost) as a number; None when absent."""
    return finite("estimatedCost", value) if isinstance(value, str) else None


def usage_from_api(records: Iterable[Mapping[str, Any]]) -> tuple[Usage, ...]:
    """GetUsageStatistics records → one `Usage` per account and usage type."""
    out: dict[tuple[str, str], Usage] = {}
    for record in records:
        account = text(record, "accountId")
        if not account:
            continue
        for item in record.get("usage") or []:
            if not isinstance(item, Mapping):
                raise MappingError("usage: expected a list of objects")
            usage_type = text(item, "type") or "UNKNOWN"
            limit = item.get("serviceLimit")
            reached = quota = None
            if isinstance(limit, Mapping):
                if isinstance(limit.get("isServiceLimited"), bool):
                    reached = bool(limit["isServiceLimited"])
                value = number(limit, "value")
                unit = UNIT_BYTES.get(text(limit, "unit"))
                if value is not None and unit is not None:
                    quota = value * unit
            out[(account, usage_type)] = Usage(
                account_id=account, usage_type=usage_type,
                currency=text(item, "currency") or "USD",
                estimated_cost=_cost(item.get("estimatedCost")),
                quota_reached=reached, quota_bytes=quota)
    return tuple(out[k] for k in sorted(out))


def fetch(_ctx: Context[tuple[Usage, ...]]) -> Fetch[tuple[Usage, ...]]:
    records = yield from pages(GET_USAGE_STATISTICS, timeRange="MONTH_TO_DATE")
    return usage_from_api(records)


def _records(target: TargetResult) -> tuple[Usage, ...] | None:
    return target.get(SLOT)


# Each target's usage records that it shows: one per (account, region, usage type).
_shown = ShownOnce(_records, lambda item: item.account_id,
                   lambda item: (item.account_id, item.usage_type))


def _family(name: str, documentation: str, value: Callable[[Usage], float | None],
            currency: bool = False) -> AnySpec:
    """A usage family; with `currency`, the record's currency is a label too."""
    labels = (*TARGET_LABELS, "usage_type", *(("currency",) if currency else ()))

    def add(family: Family, key: TargetKey, items: tuple[Usage, ...], lo: int, hi: int) -> None:
        for item in items:
            found = value(item)
            if found is not None:
                family.add_metric([item.account_id, key.region, item.usage_type,
                                   *((item.currency,) if currency else ())], found)
    return FamilySpec(name, lambda: gauge(name, documentation, labels), add, all_parts=_shown)


def _reached(item: Usage) -> float | None:
    return None if item.quota_reached is None else (1 if item.quota_reached else 0)


def families(_settings: Settings) -> list[AnySpec]:
    return [
        _family("macie_usage_estimated_cost",
                "Estimated cost of Macie this month to date, by account and usage type "
                "(GetUsageStatistics estimatedCost). An administrator account reports its "
                "members.", lambda item: item.estimated_cost, currency=True),
        _family("macie_usage_quota_reached",
                "1 if the account has reached the quota of this usage type "
                "(serviceLimit.isServiceLimited), 0 otherwise. Macie pauses jobs that would go "
                "past it.", _reached),
        _family("macie_usage_quota_bytes",
                "The quota of this usage type in bytes (serviceLimit.value, a terabyte being "
                "2^40 bytes); absent when the API gives no quota.", lambda item: item.quota_bytes),
    ]


COLLECTOR = Collector(
    name="usage", slot=SLOT, operations=(GET_USAGE_STATISTICS,), fetch=fetch,
    families=families,
    switch=Switch("1h", "Collect month-to-date usage, cost and quota (GetUsageStatistics)."),
)
