"""Why a job's latest run failed: the account- and bucket-level error events that Macie
publishes to CloudWatch Logs (log group /aws/macie/classificationjobs, in the account and
region that own the job, one log stream per job named by its ID), counted per event type and
affected resource.

Only the jobs whose last run had errors (lastRunErrorStatus.code is ERROR) are read: one
FilterLogEvents (every page) for up to 100 of their streams, from the earliest point any of
them needs. A target without such a job makes no CloudWatch Logs call. A stream is read from
its job's latest run (lastRunTime) the first time, then from the previous read on, less
INGESTION_LAG for the events that reach CloudWatch Logs late; the events read twice are
known by their IDs. A run is the job's latest runDate: the events of earlier runs are left
out, and a new run (a newer runDate in the stream, or a newer lastRunTime from Macie) starts
the counts again.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.aws.errors import ApiError
from exporter.aws.operations import Operation
from exporter.aws.target import Pages
from exporter.collectors import jobs
from exporter.collectors.base import Collector, Context, Fetch, NextPage, Settings, Switch
from exporter.collectors.jobs import Job
from exporter.logs import fields
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import AnySpec, Family, FamilySpec, Section, gauge

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/macie/classificationjobs"
# The largest page FilterLogEvents returns (10,000 events; botocore's model).
FILTER_LOG_EVENTS = Operation(
    "logs", "FilterLogEvents", "logs:FilterLogEvents",
    resource=f"arn:aws:logs:*:*:log-group:{LOG_GROUP}:*", page_size=10_000, items="events")
STREAMS_PER_CALL = 100  # logStreamNames takes at most 100 names
# How late an event may reach CloudWatch Logs (after its timestamp) and still be counted: each
# read starts this long before the previous one.
INGESTION_LAG = 600.0
# How far a runDate may be from the job's lastRunTime and still be the same run (Macie's
# runs are a day apart at least).
RUN_DATE_SLACK = 60.0
# Macie's account- and bucket-level error events ("Understanding log events for sensitive
# data discovery jobs", Macie user guide). An undocumented ACCOUNT_* or BUCKET_* type is
# counted under its own name; status events (JOB_CREATED, SCHEDULED_RUN_STARTED, ...) only
# mark where a run starts.
ACCOUNT_ERRORS = ("ACCOUNT_ACCESS_DENIED", "ACCOUNT_DISABLED", "ACCOUNT_DISASSOCIATED",
                  "ACCOUNT_ISOLATED", "ACCOUNT_REGION_DISABLED", "ACCOUNT_SUSPENDED",
                  "ACCOUNT_TERMINATED")
BUCKET_ERRORS = ("BUCKET_ACCESS_DENIED", "BUCKET_DETAILS_UNAVAILABLE", "BUCKET_DOES_NOT_EXIST",
                 "BUCKET_IN_DIFFERENT_REGION", "BUCKET_OWNER_CHANGED")
# Events that are not JSON objects, or errors that do not say what they affect.
UNPARSED = "unparsed"

# (event type, affected resource) -> events, sorted.
Counts = tuple[tuple[tuple[str, str], int], ...]


@dataclass(frozen=True, slots=True)
class RunErrors:
    """The error events of one job's latest run, as far as its log stream has been read."""

    job_id: str
    run_at: float | None  # the job's lastRunTime when its stream was read
    run_date: float | None = None  # the latest runDate its events named
    counts: Counts = ()
    # When the stream was read (None: not read, start from the run), and the events read at
    # or after INGESTION_LAG before then, as (ID, timestamp in ms): the next read sees them
    # again.
    read_at: float | None = field(default=None, compare=False)
    seen: frozenset[tuple[str, int]] = field(default=frozenset(), compare=False)


@dataclass(frozen=True, slots=True)
class JobErrors:
    """What the job logs of one target said: one entry per job whose last run had errors."""

    runs: tuple[RunErrors, ...] = ()  # by job id
    log_group_missing: bool = False


SLOT: Slot[JobErrors] = Slot("job_errors")


# ------------------------------------------------------------------ one event


def _timestamp(value: object) -> float | None:
    """An ISO-8601 date (`2024-04-14T17:08:30.345809Z`) in seconds; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    except (ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None


def _json_object(message: object) -> Mapping[str, Any] | None:
    if not isinstance(message, str):
        return None
    try:
        event = json.loads(message)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def _affected(event_type: str, event: Mapping[str, Any]) -> str | None:
    """The bucket of a bucket-level error, the account of an account-level one."""
    if event_type.startswith("BUCKET_"):
        resource = event.get("affectedResource")
        value = resource.get("value") if isinstance(resource, Mapping) else None
    else:
        value = event.get("affectedAccount")
    return value if isinstance(value, str) and value else None


class _Stream:
    """One job's log stream while it is read."""

    def __init__(self, job: Job, known: RunErrors | None, now: float) -> None:
        self.job_id = job.job_id
        self.run_at = job.last_run_at
        self.now = now
        self.unparsed = 0
        self.seen: dict[str, int] = {}
        if known is None or known.read_at is None or known.run_at != job.last_run_at:
            # First read of this run: from its start (the whole stream if it is unknown).
            self.run_date: float | None = None
            self.counts: Counter[tuple[str, str]] = Counter()
            self.begin = None if job.last_run_at is None else job.last_run_at - RUN_DATE_SLACK
        else:
            self.run_date = known.run_date
            self.counts = Counter(dict(known.counts))
            self.seen = dict(known.seen)
            self.begin = known.read_at - INGESTION_LAG

    @property
    def start(self) -> float | None:
        """When the latest run started, as far as known."""
        known = [t for t in (self.run_at, self.run_date) if t is not None]
        return max(known) if known else None

    def take(self, event: Mapping[str, Any]) -> bool:
        """Count one event of the stream; False if it is left out as malformed."""
        timestamp, event_id = event.get("timestamp"), event.get("eventId")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            return False
        if self.begin is not None and timestamp / 1000 < self.begin:
            return True  # read before, or an earlier run's: another stream asked for it
        key = event_id if isinstance(event_id, str) else f"{timestamp}:{event.get('message')}"
        if key in self.seen:
            return True
        self.seen[key] = timestamp
        self._count(event.get("message"), timestamp / 1000)
        return True

    def _count(self, message: object, at: float) -> None:
        event = _json_object(message)
        event_type = event.get("eventType") if event is not None else None
        if event is None or not isinstance(event_type, str):
            self._unparsed(at)
            return
        run_date = _timestamp(event.get("runDate"))
        start = self.start
        if run_date is not None and (start is None or run_date > start + RUN_DATE_SLACK):
            # A newer run: the earlier run's errors drop out.
            self.run_date = run_date
            self.counts.clear()
        elif start is not None and (run_date if run_date is not None else at) < (
                start - RUN_DATE_SLACK):
            return  # an earlier run's
        if not event_type.startswith(("ACCOUNT_", "BUCKET_")):
            return  # a status event
        affected = _affected(event_type, event)
        if affected is None:
            self._unparsed(at)
        else:
            self.counts[(event_type, affected)] += 1

    def _unparsed(self, at: float) -> None:
        """An event that does not say what it is: counted in the run it falls in."""
        self.unparsed += 1
        start = self.start
        if start is None or at >= start - RUN_DATE_SLACK:
            self.counts[(UNPARSED, "")] += 1

    def result(self) -> RunErrors:
        keep = (self.now - INGESTION_LAG) * 1000
        return RunErrors(self.job_id, self.run_at, self.run_date,
                         tuple(sorted(self.counts.items())), read_at=self.now,
                         seen=frozenset((k, t) for k, t in self.seen.items() if t >= keep))


# ------------------------------------------------------------------ fetch


def _batches(streams: list[_Stream]) -> Iterable[list[_Stream]]:
    """Streams in calls of STREAMS_PER_CALL, those that start reading earliest together."""
    ordered = sorted(streams, key=lambda s: -math.inf if s.begin is None else s.begin)
    for first in range(0, len(ordered), STREAMS_PER_CALL):
        yield ordered[first:first + STREAMS_PER_CALL]


def fetch(ctx: Context[JobErrors]) -> Fetch[JobErrors]:
    erroring = [job for job in jobs.jobs_of(ctx.result) if job.last_run_error]
    if not erroring:
        return JobErrors()
    known = {run.job_id: run for run in ctx.previous.runs} if ctx.previous else {}
    streams = [_Stream(job, known.get(job.job_id), ctx.now) for job in erroring]
    left_out = 0
    for batch in _batches(streams):
        by_name = {stream.job_id: stream for stream in batch}
        arguments: dict[str, Any] = {"logGroupName": LOG_GROUP,
                                     "logStreamNames": list(by_name)}
        begins = [stream.begin for stream in batch]
        if None not in begins:
            arguments["startTime"] = max(0, int(min(b for b in begins if b is not None) * 1000))
        cursor = Pages(FILTER_LOG_EVENTS, arguments)
        while True:
            try:
                page = yield NextPage(cursor)
            except ApiError as err:
                if err.code != "ResourceNotFoundException":
                    raise
                if not (ctx.previous and ctx.previous.log_group_missing):
                    log.info("no job log group: no job has logged an event here (or the "
                             "logging was changed); no job errors to report", extra=fields(
                                 account_id=ctx.key.account_id, region=ctx.key.region,
                                 log_group=LOG_GROUP))
                return JobErrors(tuple(RunErrors(s.job_id, s.run_at) for s in streams), True)
            if page is None:
                break
            assert isinstance(page, list)
            for event in page:
                stream = by_name.get(event.get("logStreamName"))
                if stream is None or not stream.take(event):
                    left_out += 1
    unparsed = sum(stream.unparsed for stream in streams)
    if unparsed or left_out:
        first = next((s.job_id for s in streams if s.unparsed), streams[0].job_id)
        log.warning("job log events not understood: counted as event_type=unparsed, or left "
                    "out without a timestamp or a stream asked for", extra=fields(
                        account_id=ctx.key.account_id, region=ctx.key.region, job_id=first,
                        unparsed_events=unparsed, left_out_events=left_out))
    return JobErrors(tuple(sorted((s.result() for s in streams), key=lambda r: r.job_id)))


def _misses_a_run(result: TargetResult) -> bool:
    """A job whose current run has errors that the stored value has not read yet."""
    known = result.get(SLOT)
    if known is None:
        return False
    read = {(run.job_id, run.run_at) for run in known.runs}
    return any(job.last_run_error and (job.job_id, job.last_run_at) not in read
               for job in jobs.jobs_of(result))


# ------------------------------------------------------------------ families


Part = tuple[tuple[Job, ...], JobErrors | None]


def _part(target: TargetResult) -> Part:
    return jobs.jobs_of(target), target.get(SLOT)


def _size(part: Part) -> int:
    return len(part[0])


def _add(family: Family, key: TargetKey, part: Part, lo: int, hi: int) -> None:
    exported, found = part
    if not found or not found.runs:
        return
    runs = {run.job_id: run for run in found.runs}
    for job in exported[lo:hi]:
        run = runs.get(job.job_id)
        # Only for the run that was read: a job whose new run has no errors (or has not been
        # read yet) has no series.
        if run is None or job.last_run_error is not True or run.run_at != job.last_run_at:
            continue
        ids = jobs.job_ids(key.region, job)
        for (event_type, affected), count in run.counts:
            family.add_metric([*ids, event_type, affected], count)


def families(_settings: Settings) -> list[AnySpec]:
    return [FamilySpec("macie_classification_job_run_errors", lambda: gauge(
        "macie_classification_job_run_errors",
        "Error events of this type in the job's latest run, by affected resource (the bucket "
        "of a bucket-level error, the account of an account-level one), from Macie's job log "
        "events in CloudWatch Logs; only for jobs whose last run had errors "
        "(lastRunErrorStatus.code is ERROR). event_type unparsed counts events that could not "
        "be read.", (*jobs.JOB_LABELS, "event_type", "affected_resource")), _add, part=_part,
        size=_size, section=Section.JOB)]


COLLECTOR = Collector(
    name="job_errors", slot=SLOT, operations=(FILTER_LOG_EVENTS,), fetch=fetch,
    families=families, stale=_misses_a_run,
    switch=Switch("5m", "Collect the account- and bucket-level errors of each job's latest "
                        "run from Macie's job log events in CloudWatch Logs (FilterLogEvents)."),
)
