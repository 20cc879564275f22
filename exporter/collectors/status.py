"""Macie's status in the target's account and region (GetMacieSession), checked every
`--refresh.status-interval` before the jobs are listed. A target where Macie is off is not
polled until a check finds it on; a policy without GetMacieSession still polls the jobs."""

from __future__ import annotations

import logging

from exporter.aws.errors import ApiError
from exporter.aws.operations import MACIE, Operation
from exporter.collectors.base import Collector, Context, Fetch, Settings, call
from exporter.logs import fields, log_once
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import TARGET_LABELS, AnySpec, Family, gauge, state_set, target_family

log = logging.getLogger(__name__)

GET_MACIE_SESSION = Operation(MACIE, "GetMacieSession", "macie2:GetMacieSession")
# GetMacieSession's MacieStatus values, plus DISABLED for "Macie is not enabled" (the API
# answers AccessDeniedException then).
MACIE_STATUSES = ("ENABLED", "PAUSED", "DISABLED")
DISABLED = "DISABLED"

# The status is kept as a plain string; an empty one means "unknown" (IAM denies the check).
SLOT: Slot[str] = Slot("status")


def fetch(ctx: Context[str]) -> Fetch[str]:
    found = yield from _check(ctx)
    if ctx.previous and found != ctx.previous:
        log.info("Macie status changed", extra=fields(
            account_id=ctx.key.account_id, region=ctx.key.region, previous=ctx.previous,
            status=found or "unknown"))
    return found


def _check(ctx: Context[str]) -> Fetch[str]:
    try:
        answer = yield from call(GET_MACIE_SESSION)
    except ApiError as err:
        # No session (ResourceNotFoundException, as moto answers) is Macie off, too.
        if (err.macie_disabled or err.code == "ResourceNotFoundException"
                or ctx.region_not_enabled(err)):
            return DISABLED
        if err.missing_permission and err.operation == GET_MACIE_SESSION.name:
            log_once(err.missing_permission, "Macie status check denied; jobs are polled "
                     "without it", account_id=ctx.key.account_id, region=ctx.key.region,
                     operation=err.operation, error_code=err.code)
            return ""
        # A passing failure: the status stays as known, and is asked again next refresh.
        log.warning("Macie status check failed", extra=fields(
            account_id=ctx.key.account_id, region=ctx.key.region, operation=err.operation,
            error_code=err.code))
        raise
    return str(answer.get("status") or "ENABLED")


def status_of(target: TargetResult) -> str | None:
    """The known status, or None."""
    return target.get(SLOT) or None


def _add(family: Family, key: TargetKey, status: str | None) -> None:
    if status is not None:
        state_set(family, [key.account_id, key.region], MACIE_STATUSES, status)


def families(_settings: Settings) -> list[AnySpec]:
    return [target_family("macie_status", lambda: gauge(
        "macie_status",
        "Macie's status in the account and region, from GetMacieSession: 1 for the current "
        "status, 0 for the others. DISABLED means Macie is not enabled there.",
        (*TARGET_LABELS, "status")), status_of, _add)]


COLLECTOR = Collector(
    name="status", slot=SLOT, operations=(GET_MACIE_SESSION,), fetch=fetch, families=families,
    interval_option="refresh.status-interval", foreground=True, health=None, retry_failed=True,
)
