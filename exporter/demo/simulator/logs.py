"""Amazon CloudWatch Logs (JSON 1.1, `POST /` with `X-Amz-Target: Logs_20140328.<name>`):
FilterLogEvents, the events of a log group, optionally of some of its streams and between two
times, oldest first, at most `limit` events (10,000, the model's maximum and the default) and
1 MB of messages a page, as AWS documents it. Log groups and streams are per (account,
region); Macie's job log events (`macie_job_event`) go to MACIE_LOG_GROUP, one stream per job.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.wire import (
    UNAUTHORIZED,
    Answer,
    Call,
    Handler,
    Invalid,
    Service,
    bounded,
    json11_answer,
    json11_error,
    offset_of,
    token,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

LOGS_TARGET_PREFIX = "Logs_20140328"
LOGS = Service("logs", "json", json11_error, invalid="InvalidParameterException",
               target_prefix=LOGS_TARGET_PREFIX)
MACIE_LOG_GROUP = "/aws/macie/classificationjobs"
LOG_EVENTS_PAGE_SIZE = 10_000  # FilterLogEvents `limit`: the model's maximum, and the default
LOG_EVENTS_PAGE_BYTES = 1_048_576  # and at most 1 MB of messages a page
MAX_STREAM_NAMES = 100


@dataclass(frozen=True)
class LogEvent:
    timestamp: int  # ms since the epoch, as the writer said
    message: str
    ingestion_time: int  # ms
    event_id: str


def _iso_micro(ts: float) -> str:
    """Epoch seconds → the ISO-8601 form of Macie's log events (`...T17:08:30.345809Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def macie_job_event(job_id: str, job_name: str, event_type: str, occurred_at: float, *,
                    run_date: float | None = None, account: str | None = None,
                    bucket: str | None = None, description: str = "",
                    operation: str | None = None, admin_account: str | None = None) -> str:
    """One of Macie's job log events, as the Macie user guide's "Understanding log events for
    sensitive data discovery jobs" shows them: the standard fields, and for an error the
    affected account, bucket (`affectedResource`), operation and run date."""
    event: dict[str, Any] = {}
    if admin_account is not None:
        event["adminAccountId"] = admin_account
    event |= {"jobId": job_id, "eventType": event_type, "occurredAt": _iso_micro(occurred_at),
              "description": description or event_type.replace("_", " ").lower(),
              "jobName": job_name}
    if operation is not None:
        event["operation"] = operation
    if run_date is not None:
        event["runDate"] = _iso_micro(run_date)
    if account is not None:
        event["affectedAccount"] = account
    if bucket is not None:
        event["affectedResource"] = {"type": "S3_BUCKET_NAME", "value": bucket}
    return json.dumps(event)


def _logs(handler: Handler) -> Handler:
    """A CloudWatch Logs handler, behind the caller's credentials being valid; a request the
    handler finds invalid is answered InvalidParameterException."""

    @functools.wraps(handler)
    def serve(sim: Simulator, call: Call) -> Answer:
        if call.auth_problem:
            return LOGS.error(400, call.auth_problem, UNAUTHORIZED)
        try:
            return handler(sim, call)
        except Invalid as err:
            return LOGS.error(400, LOGS.invalid, str(err))

    return serve


def _millis(request: dict[str, Any], name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"{name} must be a non-negative integer (milliseconds)")
    return value


@_logs
def filter_log_events(sim: Simulator, call: Call) -> Answer:
    """FilterLogEvents: the events of the asked streams (all, without logStreamNames; names
    that do not exist select nothing) from startTime to endTime, both included, by timestamp
    and then in the order they were written."""
    request = call.params
    group = request.get("logGroupName") or request.get("logGroupIdentifier")
    if not isinstance(group, str) or not group:
        raise Invalid("logGroupName or logGroupIdentifier is required")
    names = request.get("logStreamNames")
    if names is not None and request.get("logStreamNamePrefix") is not None:
        raise Invalid("logStreamNames and logStreamNamePrefix cannot both be given")
    if names is not None and (not isinstance(names, list) or not 1 <= len(names)
                              <= MAX_STREAM_NAMES):
        raise Invalid(f"logStreamNames must list 1 to {MAX_STREAM_NAMES} names")
    if request.get("filterPattern"):
        raise Invalid("the simulator does not evaluate filter patterns")
    start, end = _millis(request, "startTime"), _millis(request, "endTime")
    size = bounded(request.get("limit"), "limit", LOG_EVENTS_PAGE_SIZE)
    prefix = request.get("logStreamNamePrefix") or ""
    with sim.lock:
        streams = sim._logs.get((call.account_id, call.region), {}).get(group)
        if streams is None:
            return json11_error(400, "ResourceNotFoundException",
                                "The specified log group does not exist.")
        chosen = [(name, events) for name, events in streams.items()
                  if (names is None or name in names) and name.startswith(prefix)]
        found = sorted(((event, name) for name, events in chosen for event in events
                        if (start is None or event.timestamp >= start)
                        and (end is None or event.timestamp <= end)),
                       key=lambda item: (item[0].timestamp, item[0].ingestion_time,
                                         int(item[0].event_id)))
    offset = offset_of(request.get("nextToken"))
    page: list[dict[str, Any]] = []
    used = 0
    for event, name in found[offset:offset + size]:
        used += len(event.message.encode())
        if page and used > LOG_EVENTS_PAGE_BYTES:
            break
        page.append({"logStreamName": name, "timestamp": event.timestamp,
                     "message": event.message, "ingestionTime": event.ingestion_time,
                     "eventId": event.event_id})
    answer: dict[str, Any] = {"events": page}
    if offset + len(page) < len(found):
        answer["nextToken"] = token(offset + len(page))
    return json11_answer(answer)
