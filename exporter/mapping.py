"""Turn DescribeClassificationJob / JobSummary dicts (as botocore parses them) into `Job`s."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from exporter.model import Job, Usage


class MappingError(ValueError):
    """An API answer that cannot be turned into a job; names the offending field."""


def account_from_arn(arn: object) -> str | None:
    """The 12-digit account of `arn:aws:macie2:<region>:<account>:classification-job/<id>`."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and len(parts[4]) == 12 and parts[4].isdigit():
        return parts[4]
    return None


def schedule_label(frequency: object) -> str:
    """`none`, `daily`, `weekly:MONDAY`, `monthly:15` from a JobScheduleFrequency."""
    if not isinstance(frequency, Mapping) or not frequency:
        return "none"
    if "dailySchedule" in frequency:
        return "daily"
    weekly = frequency.get("weeklySchedule")
    if isinstance(weekly, Mapping):
        return f"weekly:{weekly.get('dayOfWeek', 'unknown')}"
    monthly = frequency.get("monthlySchedule")
    if isinstance(monthly, Mapping):
        return f"monthly:{monthly.get('dayOfMonth', 'unknown')}"
    return "unknown"


def _text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MappingError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _number(data: object, key: str) -> float | None:
    if not isinstance(data, Mapping) or data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(f"{key}: expected a number, got {type(value).__name__}")
    return _finite(key, value)


def _finite(key: str, value: int | float | str) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise MappingError(f"{key}: number out of range") from None
    except ValueError:
        raise MappingError(f"{key}: not a decimal number: {value!r}") from None
    if not math.isfinite(number):
        raise MappingError(f"{key}: not a finite number")
    return number


def _timestamp(data: object, key: str) -> float | None:
    if not isinstance(data, Mapping) or data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, datetime):
        return value.timestamp()
    raise MappingError(f"{key}: expected a timestamp, got {type(value).__name__}")


def _last_run_error(data: Mapping[str, Any]) -> bool | None:
    status = data.get("lastRunErrorStatus")
    if not isinstance(status, Mapping) or status.get("code") is None:
        return None
    return bool(status["code"] == "ERROR")


def _tags(data: Mapping[str, Any], tag_keys: Iterable[str]) -> tuple[tuple[str, str], ...] | None:
    tags = data.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, Mapping):
        raise MappingError(f"tags: expected a map, got {type(tags).__name__}")
    return tuple((key, str(tags[key])) for key in tag_keys if key in tags)


def job_from_api(
    data: Mapping[str, Any], default_account: str, tag_keys: Iterable[str] = ()
) -> Job:
    """Map one DescribeClassificationJob answer or one JobSummary to a `Job`.

    A JobSummary lacks statistics, schedule, ARN and tags: those stay absent.
    """
    job_id = _text(data, "jobId")
    if not job_id:
        raise MappingError("jobId: missing")
    paused = data.get("userPausedDetails")
    job_type = _text(data, "jobType")
    schedule = schedule_label(data.get("scheduleFrequency"))
    if "scheduleFrequency" not in data and job_type == "SCHEDULED":
        schedule = "unknown"
    return Job(
        job_id=job_id,
        name=_text(data, "name"),
        account_id=account_from_arn(data.get("jobArn")) or default_account,
        status=_text(data, "jobStatus", "UNKNOWN") or "UNKNOWN",
        job_type=job_type,
        schedule=schedule,
        managed_data_identifier_selector=_text(data, "managedDataIdentifierSelector"),
        runs=_number(data.get("statistics"), "numberOfRuns"),
        objects_to_process=_number(data.get("statistics"), "approximateNumberOfObjectsToProcess"),
        last_run_error=_last_run_error(data),
        created_at=_timestamp(data, "createdAt"),
        last_run_at=_timestamp(data, "lastRunTime"),
        paused_at=_timestamp(paused, "jobPausedAt"),
        pause_expires_at=_timestamp(paused, "jobExpiresAt"),
        tags=_tags(data, tag_keys),
    )


def _cost(value: object) -> float | None:
    """The API's decimal string (estimatedCost) as a number; None when absent."""
    return _finite("estimatedCost", value) if isinstance(value, str) else None


# TERABYTES as Macie counts them: 2^40 bytes.
UNIT_BYTES = {"TERABYTES": float(2**40)}


def usage_from_api(records: Iterable[Mapping[str, Any]]) -> tuple[Usage, ...]:
    """GetUsageStatistics records → one `Usage` per account and usage type."""
    out: dict[tuple[str, str], Usage] = {}
    for record in records:
        account = _text(record, "accountId")
        if not account:
            continue
        for item in record.get("usage") or []:
            if not isinstance(item, Mapping):
                raise MappingError("usage: expected a list of objects")
            usage_type = _text(item, "type") or "UNKNOWN"
            limit = item.get("serviceLimit")
            reached = quota = None
            if isinstance(limit, Mapping):
                if isinstance(limit.get("isServiceLimited"), bool):
                    reached = bool(limit["isServiceLimited"])
                value = _number(limit, "value")
                unit = UNIT_BYTES.get(_text(limit, "unit"))
                if value is not None and unit is not None:
                    quota = value * unit
            out[(account, usage_type)] = Usage(
                account_id=account, usage_type=usage_type,
                currency=_text(item, "currency") or "USD",
                estimated_cost=_cost(item.get("estimatedCost")),
                quota_reached=reached, quota_bytes=quota)
    return tuple(out[k] for k in sorted(out))


def members_from_api(members: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """ListMembers items → (member account, relationship status), sorted."""
    out: dict[str, str] = {}
    for member in members:
        account = _text(member, "accountId")
        if account:
            out[account] = _text(member, "relationshipStatus") or "Unknown"
    return tuple(sorted(out.items()))
