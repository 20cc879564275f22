"""Usage: GetUsageStatistics (`POST /usage/statistics`), the caller's usage records and those of
its members with Macie on, filtered, sorted and paged; up to 50 a page (the default; the model
gives no maximum, so the bound is the simulator's own)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.session import Session, macie, session_of
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

USAGE_PAGE_SIZE = 50  # GetUsageStatistics: default and maximum (the model gives none)
USAGE_TYPES = ("DATA_INVENTORY_EVALUATION", "SENSITIVE_DATA_DISCOVERY",
               "AUTOMATED_SENSITIVE_DATA_DISCOVERY", "AUTOMATED_OBJECT_MONITORING")
TIME_RANGES = ("MONTH_TO_DATE", "PAST_30_DAYS")
# Members whose usage their administrator's GetUsageStatistics reports (Macie on for them).
USAGE_REPORTED = frozenset({"Enabled", "Paused"})


@dataclass(frozen=True)
class Usage:
    estimated_cost: str | None  # None: the account has no record of this usage type
    limit_value: int | None  # the serviceLimit in terabytes; None: no serviceLimit
    limited: bool


# What every account with Macie on reports unless set otherwise: a small cost for sensitive data
# discovery under its 5 TB monthly quota, and an inventory evaluation without a serviceLimit.
DEFAULT_USAGE = {
    "DATA_INVENTORY_EVALUATION": Usage("0.12", None, False),
    "SENSITIVE_DATA_DISCOVERY": Usage("1.35", 5, False),
}


@macie
def get_usage_statistics(sim: Simulator, call: Call, session: Session) -> Answer:
    """GetUsageStatistics."""
    request = call.params
    size = bounded(request.get("maxResults"), "maxResults", USAGE_PAGE_SIZE)
    offset = offset_of(request.get("nextToken"))
    time_range = request.get("timeRange", "PAST_30_DAYS")
    if time_range not in TIME_RANGES:
        raise Invalid(f"timeRange must be one of {', '.join(TIME_RANGES)}")
    filters = [_usage_filter(f) for f in request.get("filterBy") or []]
    sort = request.get("sortBy") or {}
    sort_key, order = sort.get("key", "accountId"), sort.get("orderBy", "ASC")
    if sort_key not in _USAGE_SORT_KEYS or order not in ("ASC", "DESC"):
        raise Invalid(f"sortBy: key one of {', '.join(_USAGE_SORT_KEYS)}, "
                      "orderBy ASC or DESC")
    account, region = call.account_id, call.region
    with sim.lock:
        members = sim._members.get((account, region), {})
        accounts = [account, *sorted(
            member for member, relation in members.items()
            if relation.status in USAGE_REPORTED
            and session_of(sim, member, region).status != "DISABLED")]
        records = [usage_record(sim, a, region) for a in accounts]
    records = [r for r in records if all(keep(r) for keep in filters)]
    records.sort(key=lambda r: r["accountId"])
    records.sort(key=_USAGE_SORT_KEYS[sort_key], reverse=order == "DESC")
    page = records[offset:offset + size]
    answer: dict[str, Any] = {"records": page, "timeRange": time_range}
    if offset + len(page) < len(records):
        answer["nextToken"] = token(offset + len(page))
    return json_answer(200, answer)


def usage_record(sim: Simulator, account: str, region: str) -> dict[str, Any]:
    """One account's UsageRecord in `region` (called under the lock)."""
    usage = {**DEFAULT_USAGE, **sim._usage.get((account, None), {}),
             **sim._usage.get((account, region), {})}
    items = []
    for usage_type, entry in sorted(usage.items()):
        if entry.estimated_cost is None:
            continue
        item: dict[str, Any] = {"type": usage_type, "currency": "USD",
                                "estimatedCost": entry.estimated_cost}
        if entry.limit_value is not None:
            item["serviceLimit"] = {"isServiceLimited": entry.limited, "unit": "TERABYTES",
                                    "value": entry.limit_value}
        items.append(item)
    return {"accountId": account,
            "freeTrialStartDate": iso(session_of(sim, account, region).created_at),
            "usage": items}


def _usage_total(record: dict[str, Any]) -> Decimal:
    return sum((Decimal(u["estimatedCost"]) for u in record["usage"]), Decimal(0))


def _usage_limited(record: dict[str, Any]) -> bool:
    return any(u.get("serviceLimit", {}).get("isServiceLimited") for u in record["usage"])


def _usage_limit(record: dict[str, Any]) -> int:
    return max((u["serviceLimit"]["value"] for u in record["usage"] if "serviceLimit" in u),
               default=0)


_USAGE_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "accountId": lambda r: r["accountId"], "total": _usage_total,
    "serviceLimitValue": _usage_limit, "freeTrialStartDate": lambda r: r["freeTrialStartDate"],
}
_ORDERED_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "GT": lambda a, b: a > b, "GTE": lambda a, b: a >= b, "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b, "EQ": lambda a, b: a == b, "NE": lambda a, b: a != b,
}


def _usage_filter(condition: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for one UsageStatisticsFilter."""
    if not isinstance(condition, dict):
        raise Invalid("filterBy items must be objects")
    key, comparator = condition.get("key"), condition.get("comparator", "EQ")
    values = condition.get("values") or []
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise Invalid("filterBy values must be a non-empty list of strings")
    if key == "accountId":
        if comparator not in ("CONTAINS", "EQ", "NE"):
            raise Invalid("accountId filters take CONTAINS")
        accounts = frozenset(values)
        if comparator == "NE":
            return lambda record: record["accountId"] not in accounts
        return lambda record: record["accountId"] in accounts
    if comparator not in _ORDERED_COMPARATORS or len(values) != 1:
        raise Invalid(f"a {key} filter takes one value and EQ, NE, GT, GTE, LT or LTE")
    compare, value = _ORDERED_COMPARATORS[comparator], values[0]
    if key == "serviceLimit":
        if value not in ("true", "false") or comparator not in ("EQ", "NE"):
            raise Invalid("a serviceLimit filter takes EQ or NE and true or false")
        return lambda record: compare(_usage_limited(record), value == "true")
    if key == "total":
        try:
            total = Decimal(value)
        except InvalidOperation:
            raise Invalid(f"total {value!r} is not a number") from None
        return lambda record: compare(_usage_total(record), total)
    if key == "freeTrialStartDate":
        return lambda record: compare(record["freeTrialStartDate"], value)
    raise Invalid(f"filterBy key {key!r}: expected accountId, serviceLimit, "
                  "freeTrialStartDate or total")
