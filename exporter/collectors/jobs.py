"""The jobs: ListClassificationJobs, then DescribeClassificationJob for what changed.

Each refresh lists every page (botocore's paginator, the largest page the API takes), then
describes the jobs that changed: COMPLETE and CANCELLED are terminal, so such a job is
described once and cached, and again only when its listed status changes or once per
`--refresh.full-redescribe-interval`. Jobs never seen before are published with what the list
says as soon as the list is whole; the describes fill in the rest. A job whose describe fails
keeps its last known values; one that vanished between list and describe is dropped.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily

from exporter.aws.errors import ApiError
from exporter.aws.operations import MACIE, Operation
from exporter.aws.target import Pages
from exporter.collectors.base import (
    Call,
    Collector,
    Context,
    Fetch,
    MacieDisabled,
    MappingError,
    NextPage,
    Published,
    Settings,
    parallel,
)
from exporter.collectors.fields import number, text, timestamp
from exporter.logs import fields
from exporter.model import UNKNOWN_ACCOUNT, Slot, TargetKey, TargetResult, tag_label_name
from exporter.render.families import (
    TARGET_LABELS,
    AnySpec,
    Family,
    FamilySpec,
    Section,
    gauge,
    state_set,
    target_family,
)

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 200  # the largest page ListClassificationJobs accepts
LIST_JOBS = Operation(MACIE, "ListClassificationJobs", "macie2:ListClassificationJobs",
                      page_size=LIST_PAGE_SIZE, items="items")
DESCRIBE_JOB = Operation(MACIE, "DescribeClassificationJob",
                         "macie2:DescribeClassificationJob",
                         resource="arn:aws:macie2:*:*:classification-job/*")
# Documented JobStatus values, in the API's order (botocore macie2 model).
JOB_STATUSES = ("RUNNING", "PAUSED", "CANCELLED", "COMPLETE", "IDLE", "USER_PAUSED")
# Documented JobType values.
JOB_TYPES = ("ONE_TIME", "SCHEDULED")
# Macie never changes a job in these states again.
TERMINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED"})
# A refresh with at least this many jobs never seen before starts its describes once /metrics
# shows the jobs from the list (fewer are described about as fast as they would be rendered).
WAIT_FOR_METRICS_JOBS = 500
JOB_LABELS = ("account_id", "region", "job_id", "job_name")


# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Job:
    """One classification job as exported. `None` means the API did not return the field."""

    job_id: str
    name: str
    account_id: str
    status: str
    job_type: str
    schedule: str
    managed_data_identifier_selector: str
    runs: float | None = None
    objects_to_process: float | None = None
    last_run_error: bool | None = None
    created_at: float | None = None
    last_run_at: float | None = None
    paused_at: float | None = None
    pause_expires_at: float | None = None
    tags: tuple[tuple[str, str], ...] | None = None


Counts = tuple[tuple[tuple[str, str, str], int], ...]


@dataclass(frozen=True, slots=True)
class Described:
    """A job as last described, with its listed status then."""

    job: Job
    listed_status: str
    described_at: float


@dataclass(frozen=True, slots=True)
class Jobs:
    """What the last good refresh of a target found."""

    jobs: tuple[Job, ...] = ()  # exported (not past --jobs.terminal-max-age), by id
    counts: Counts = ()  # (account_id, status, job_type) -> number of listed jobs
    describe_failures: int = 0
    # Every listed job as last described: terminal ones are not described again.
    described: Mapping[str, Described] = field(default_factory=dict, compare=False)
    # Every known job (status, type, creation time), and when the last full list was made.
    listed: Mapping[str, tuple[str, str, float | None]] = field(default_factory=dict,
                                                               compare=False)
    full_at: float | None = field(default=None, compare=False)

    @property
    def active(self) -> int:
        """Known jobs that are not COMPLETE or CANCELLED."""
        return sum(status not in TERMINAL_STATUSES for status, _, _ in self.listed.values())


SLOT: Slot[Jobs] = Slot("jobs")


def zero_filled_counts(counted: dict[tuple[str, str, str], int],
                       accounts: Iterable[str]) -> Counts:
    """(account, status, type) counts with every documented status x type present, sorted."""
    full = dict(counted)
    for account in accounts:
        for state in JOB_STATUSES:
            for job_type in JOB_TYPES:
                full.setdefault((account, state, job_type), 0)
    return tuple(sorted(full.items()))


# ------------------------------------------------------------------ mapping


def account_from_arn(arn: object) -> str | None:
    """The 12-digit account of `arn:aws:macie2:<region>:<account>:classification-job/<id>`."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and len(parts[4]) == 12 and parts[4].isdigit():
        return sys.intern(parts[4])
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
    job_id = text(data, "jobId")
    if not job_id:
        raise MappingError("jobId: missing")
    paused = data.get("userPausedDetails")
    # The few values of a field many jobs share are interned: one string each, not one per
    # job and refresh (29,000 jobs at 10,200 targets held 12 MB of copies).
    job_type = sys.intern(text(data, "jobType"))
    schedule = sys.intern(schedule_label(data.get("scheduleFrequency")))
    if "scheduleFrequency" not in data and job_type == "SCHEDULED":
        schedule = "unknown"
    return Job(
        job_id=job_id,
        name=text(data, "name"),
        account_id=account_from_arn(data.get("jobArn")) or default_account,
        status=sys.intern(text(data, "jobStatus", "UNKNOWN") or "UNKNOWN"),
        job_type=job_type,
        schedule=schedule,
        managed_data_identifier_selector=sys.intern(
            text(data, "managedDataIdentifierSelector")),
        runs=number(data.get("statistics"), "numberOfRuns"),
        objects_to_process=number(data.get("statistics"), "approximateNumberOfObjectsToProcess"),
        last_run_error=_last_run_error(data),
        created_at=timestamp(data, "createdAt"),
        last_run_at=timestamp(data, "lastRunTime"),
        paused_at=timestamp(paused, "jobPausedAt"),
        pause_expires_at=timestamp(paused, "jobExpiresAt"),
        tags=_tags(data, tag_keys),
    )


# ------------------------------------------------------------------ fetch


# (status, type, creation time) of a job as last listed, or as last described for the known
# jobs a steady refresh does not list again.
Listed = tuple[str, str, float | None]


class _Refresh:
    """What one refresh of one target has learned so far."""

    def __init__(self, ctx: Context[Jobs], full: bool) -> None:
        self.ctx = ctx
        previous = ctx.previous
        self.full = full
        self.described: Mapping[str, Described] = previous.described if previous else {}
        self.exported = {j.job_id: j for j in previous.jobs} if previous else {}
        # A steady refresh starts from what is known; a full one from nothing.
        self.known: Mapping[str, Listed] = previous.listed if previous else {}
        self.listed: dict[str, Listed] = {} if full else dict(self.known)
        self.seen: set[str] = set()  # listed by this refresh
        self.pending: dict[str, dict[str, Any]] = {}  # summaries of the jobs being described
        self.jobs: dict[str, Job] = {}
        self.new_jobs = 0  # jobs being described that have no last known values
        # When this refresh counts as made: now, or for the first full list when spreading,
        # this target's phase of the full-redescribe interval earlier, so that its next full
        # list and terminal re-describes come at that phase instead of with every other
        # target's 24 h after start-up (at 10,200 targets, ~41,000 calls in one minute).
        first = full and (previous is None or previous.full_at is None)
        self.stamp = (ctx.now - ctx.key.phase * ctx.settings.full_redescribe_interval
                      if first and ctx.settings.spread else ctx.now)

    @property
    def account(self) -> str:
        return self.ctx.key.account_id

    def take(self, page: list[dict[str, Any]]) -> list[str]:
        """Record a page of summaries; returns the job ids to describe."""
        # Due in the refresh nearest the interval, as the full list is (a refresh a few
        # milliseconds early would otherwise list in full and keep every terminal job's old
        # description for another interval).
        full = (self.ctx.settings.full_redescribe_interval
                - self.ctx.settings.interval / 2)
        to_describe = []
        for summary in page:
            job_id = summary.get("jobId")
            if not isinstance(job_id, str) or not job_id or job_id in self.seen:
                continue
            self.seen.add(job_id)
            status = sys.intern(str(summary.get("jobStatus") or "UNKNOWN"))
            created = summary.get("createdAt")
            self.listed[job_id] = (status, sys.intern(str(summary.get("jobType") or "")),
                                   created.timestamp() if isinstance(created, datetime)
                                   else None)
            cached = self.described.get(job_id)
            if (cached is not None and status in TERMINAL_STATUSES
                    and cached.listed_status == status
                    and self.ctx.now - cached.described_at < full):
                self.jobs[job_id] = cached.job
            else:
                self.pending[job_id] = summary
                self.new_jobs += cached is None
                to_describe.append(job_id)
        return to_describe

    def reaches_known(self, page: list[dict[str, Any]], newest: float | None) -> bool:
        """A steady refresh stops after a page that holds a job it knew, unless the page ends
        where new jobs can still follow (jobs created at the newest known job's time)."""
        if not any(item.get("jobId") in self.known for item in page):
            return False
        last = page[-1].get("createdAt")
        return newest is None or not isinstance(last, datetime) or last.timestamp() < newest

    def unlisted(self) -> list[str]:
        """Known jobs this steady refresh did not list: the non-terminal ones are described
        (how a job that completed is seen), the terminal ones keep their values."""
        to_describe = []
        for job_id, (status, _, _) in self.known.items():
            if job_id in self.seen:
                continue
            cached = self.described.get(job_id)
            if status in TERMINAL_STATUSES and cached is not None:
                self.jobs[job_id] = cached.job
            else:
                self.pending[job_id] = {}
                to_describe.append(job_id)
        return to_describe

    def fallback(self, job_id: str, summary: dict[str, Any]) -> Job | None:
        """Last known values; for a job never described, what the list said."""
        cached = self.described.get(job_id)
        if cached is not None:
            return cached.job
        if not summary:
            return self.exported.get(job_id)
        try:
            return job_from_api(summary, self.account, self.ctx.settings.tag_keys)
        except MappingError:
            return None

    def current(self) -> dict[str, Job]:
        """The described jobs, plus last known (or listed) values for the rest."""
        jobs = dict(self.jobs)
        for job_id, summary in self.pending.items():
            if job_id not in jobs:
                fallback = self.fallback(job_id, summary)
                if fallback is not None:
                    jobs[job_id] = fallback
        return jobs

    def too_old(self, job: Job) -> bool:
        """A terminal job past --jobs.terminal-max-age (counted, but not exported per job)."""
        max_age = self.ctx.settings.terminal_max_age
        if not max_age or job.status not in TERMINAL_STATUSES:
            return False
        last = job.last_run_at if job.last_run_at is not None else job.created_at
        return last is not None and self.ctx.now - last > max_age

    def value(self, jobs: dict[str, Job], described: Mapping[str, Described],
              failures: int, full_at: float | None) -> Jobs:
        counts: Counter[tuple[str, str, str]] = Counter()
        for job_id, (status, job_type, _) in self.listed.items():
            job = jobs.get(job_id)
            counts[(job.account_id if job else self.account, status, job_type)] += 1
        exported = tuple(sorted((j for j in jobs.values() if not self.too_old(j)),
                                key=lambda j: j.job_id))
        return Jobs(exported, zero_filled_counts(dict(counts),
                                                 {self.account} | {k[0] for k in counts}),
                    failures, described, dict(self.listed), full_at)

    def describe(self, job_id: str, answer: dict[str, Any] | ApiError) -> ApiError | None:
        """Take one describe's answer; returns the failure to report, if any."""
        if isinstance(answer, ApiError):
            if answer.code == "ResourceNotFoundException":  # deleted since the list
                self.listed.pop(job_id, None)
                self.pending.pop(job_id, None)
                return None
            return answer
        try:
            job = self.jobs[job_id] = job_from_api(answer, self.account,
                                                   self.ctx.settings.tag_keys)
        except MappingError as err:
            return ApiError.of(DESCRIBE_JOB, "MalformedResponse", str(err))
        if job_id not in self.seen and job_id in self.listed:  # not listed again: as described
            _, job_type, created = self.listed[job_id]
            self.listed[job_id] = (job.status, job_type, created)
        return None

    def described_now(self) -> dict[str, Described]:
        """The describe cache after this refresh: every listed job's last description."""
        described = {k: v for k, v in self.described.items() if k in self.listed}
        for job_id, job in self.jobs.items():
            if job_id in self.pending and job_id in self.listed:
                described[job_id] = Described(job, self.listed[job_id][0], self.stamp)
        return described


def _full_list_due(ctx: Context[Jobs]) -> bool:
    """A full list at start-up and every --refresh.full-redescribe-interval (in the refresh
    nearest its time), and always when the list is filtered by status: a job that stops
    matching would otherwise still be described."""
    previous, settings = ctx.previous, ctx.settings
    if previous is None or previous.full_at is None:
        return True
    filtered = settings.list_filter or {}
    if any(term.get("key") == "jobStatus" for terms in filtered.values()
           for term in terms if isinstance(term, Mapping)):
        return True
    return ctx.now - previous.full_at >= (settings.full_redescribe_interval
                                          - settings.interval / 2)


def fetch(ctx: Context[Jobs]) -> Fetch[Jobs]:
    """Newest jobs first. A full refresh lists every page; a steady one stops at the first
    page that reaches jobs it knows (one page for any history), and describes the known
    non-terminal jobs as well, since jobs are never deleted and new jobs are the newest."""
    full = _full_list_due(ctx)
    run = _Refresh(ctx, full)
    arguments: dict[str, Any] = {"sortCriteria": {"attributeName": "createdAt",
                                                  "orderBy": "DESC"}}
    if ctx.settings.list_filter:
        arguments["filterCriteria"] = ctx.settings.list_filter
    newest = max((created for _, _, created in run.known.values() if created is not None),
                 default=None)
    cursor = Pages(LIST_JOBS, arguments)
    to_describe: list[str] = []
    while True:
        try:
            page = yield NextPage(cursor)
        except ApiError as err:
            if err.macie_disabled or ctx.region_not_enabled(err):
                raise MacieDisabled from err
            raise
        if page is None:
            break
        assert isinstance(page, list)
        to_describe += run.take(page)
        if not full and page and run.reaches_known(page, newest):
            break
    if not full:
        to_describe += run.unlisted()
    # The describes start once the list is whole: pages go first, and a target with many new
    # jobs shows all of them (from the list) before it describes any. With very many, the
    # describes wait until /metrics shows them: rendering 10,000 jobs while 16 workers
    # describe them would take most of the refresh.
    previous_failures = ctx.previous.describe_failures if ctx.previous else 0
    full_at = run.stamp if full else (ctx.previous.full_at if ctx.previous else None)
    if run.new_jobs and to_describe:
        ctx.publish(run.value(run.current(), run.described, previous_failures, None))
        if run.new_jobs >= WAIT_FOR_METRICS_JOBS:
            yield Published()
    # Terminal jobs never described wait behind every target's other calls: what the list
    # says of them is right, and their runs and tags can come later.
    later = [j for j in to_describe
             if run.listed[j][0] in TERMINAL_STATUSES and j not in run.described]
    waiting = set(later)
    now = [j for j in to_describe if j not in waiting]
    answers = yield from parallel([Call(DESCRIBE_JOB, {"jobId": job_id}) for job_id in now])
    failures = [(job_id, failure) for job_id, answer in zip(now, answers, strict=True)
                if (failure := run.describe(job_id, answer)) is not None]
    if later:
        # What is needed to be right now is there: the refresh counts as done (readiness).
        ctx.publish(run.value(run.current(), run.described_now(), len(failures), None),
                    ready=True)
        answers = yield from parallel([Call(DESCRIBE_JOB, {"jobId": job_id})
                                       for job_id in later], background=True)
        failures += [(job_id, failure) for job_id, answer in zip(later, answers, strict=True)
                     if (failure := run.describe(job_id, answer)) is not None]
    described = run.described_now()
    jobs = run.current()
    if failures:
        job_id, first = failures[0]
        log.warning("describe failed; those jobs keep their last known values",
                    extra=fields(account_id=ctx.key.account_id, region=ctx.key.region,
                                 failed_jobs=len(failures), job_id=job_id,
                                 error_code=first.code,
                                 missing_permission=first.missing_permission or ""))
    if run.account == UNKNOWN_ACCOUNT:
        # STS could not tell the account: a job ARN can.
        learned = next((j.account_id for j in jobs.values()
                        if j.account_id != UNKNOWN_ACCOUNT), None)
        if learned:
            ctx.adopt_account(learned)
            jobs = {k: replace(j, account_id=learned) if j.account_id == UNKNOWN_ACCOUNT
                    else j for k, j in jobs.items()}
    return run.value(jobs, described, len(failures), full_at)


# ------------------------------------------------------------------ families


def jobs_of(target: TargetResult) -> tuple[Job, ...]:
    value = target.get(SLOT)
    return value.jobs if value is not None else ()


def _count_jobs(jobs: tuple[Job, ...]) -> int:
    return len(jobs)


def job_ids(region: str, job: Job) -> list[str]:
    """The job labels' values."""
    return [job.account_id, region, job.job_id, job.name]


def job_family(name: str, documentation: str, labels: tuple[str, ...],
               add_job: Callable[[Family, str, Job], None]) -> FamilySpec[tuple[Job, ...]]:
    """A per-job family: a target's part is its jobs; `add_job(family, region, job)`."""
    def make() -> GaugeMetricFamily:
        return gauge(name, documentation, (*JOB_LABELS, *labels))

    def add(family: Family, key: TargetKey, jobs: tuple[Job, ...], lo: int, hi: int) -> None:
        for job in jobs[lo:hi]:
            add_job(family, key.region, job)
    return FamilySpec(name, make, add, part=jobs_of, size=_count_jobs, section=Section.JOB)


def _add_info(family: Family, region: str, job: Job) -> None:
    family.add_metric([*job_ids(region, job), job.job_type, job.schedule,
                       job.managed_data_identifier_selector], 1)


def _add_status(family: Family, region: str, job: Job) -> None:
    state_set(family, job_ids(region, job), JOB_STATUSES, job.status)


def _value(get: Callable[[Job], float | bool | None]) -> Callable[[Family, str, Job], None]:
    def add(family: Family, region: str, job: Job) -> None:
        value = get(job)
        if value is not None:
            family.add_metric(job_ids(region, job), float(value))
    return add


def _tags_family(tag_keys: tuple[str, ...]) -> AnySpec:
    def add(family: Family, region: str, job: Job) -> None:
        if job.tags is not None:
            present = dict(job.tags)
            family.add_metric([*job_ids(region, job), *(present.get(k, "") for k in tag_keys)],
                              1)
    return job_family("macie_classification_job_tags",
                      "Allow-listed tags of the job as labels; the value is always 1.",
                      tuple(tag_label_name(k) for k in tag_keys), add)


def _counts(target: TargetResult) -> Counts:
    value = target.get(SLOT)
    return value.counts if value is not None else ()


def _add_counts(family: Family, key: TargetKey, counts: Counts) -> None:
    for (account, state, job_type), count in counts:
        family.add_metric([account, key.region, state, job_type], count)


def _describe_failures(target: TargetResult) -> tuple[bool, int]:
    value = target.get(SLOT)
    return target.completed, value.describe_failures if value is not None else 0


def _add_when_completed(family: Family, key: TargetKey, part: tuple[bool, int]) -> None:
    completed, failures = part
    if completed:
        family.add_metric([key.account_id, key.region], failures)


def families(settings: Settings) -> list[AnySpec]:
    specs: list[AnySpec] = [
        job_family("macie_classification_job_info",
                   "Information about a classification job; the value is always 1.",
                   ("job_type", "schedule", "managed_data_identifier_selector"), _add_info),
        job_family("macie_classification_job_status",
                   "Current status of the job: 1 for the current status, 0 for the others.",
                   ("status",), _add_status),
        job_family("macie_classification_job_runs",
                   "Number of times the job has run (statistics.numberOfRuns).",
                   (), _value(lambda j: j.runs)),
        job_family("macie_classification_job_objects_to_process",
                   "Approximate number of objects the job has yet to process during its "
                   "current run (statistics.approximateNumberOfObjectsToProcess).",
                   (), _value(lambda j: j.objects_to_process)),
        job_family("macie_classification_job_last_run_error",
                   "1 if account- or bucket-level errors occurred during the job's most recent "
                   "run (lastRunErrorStatus.code is ERROR), 0 otherwise.",
                   (), _value(lambda j: j.last_run_error)),
        job_family("macie_classification_job_created_timestamp_seconds",
                   "When the job was created, in seconds since the Unix epoch.",
                   (), _value(lambda j: j.created_at)),
        job_family("macie_classification_job_last_run_timestamp_seconds",
                   "When the job's most recent run started, in seconds since the Unix epoch.",
                   (), _value(lambda j: j.last_run_at)),
        job_family("macie_classification_job_paused_timestamp_seconds",
                   "When a user paused the job (userPausedDetails.jobPausedAt), in seconds "
                   "since the Unix epoch.",
                   (), _value(lambda j: j.paused_at)),
        job_family("macie_classification_job_pause_expiry_timestamp_seconds",
                   "When Macie cancels the user-paused job or job run unless it is resumed "
                   "(userPausedDetails.jobExpiresAt), in seconds since the Unix epoch.",
                   (), _value(lambda j: j.pause_expires_at)),
    ]
    if settings.tag_keys:
        specs.append(_tags_family(settings.tag_keys))
    specs += [
        target_family("macie_classification_jobs", lambda: gauge(
            "macie_classification_jobs",
            "Number of classification jobs listed, by status and type.",
            (*TARGET_LABELS, "status", "job_type")), _counts, _add_counts),
        target_family("macie_exporter_describe_failures", lambda: gauge(
            "macie_exporter_describe_failures",
            "Jobs whose DescribeClassificationJob call failed in the last refresh; they keep "
            "their last known values.", TARGET_LABELS), _describe_failures, _add_when_completed,
            section=Section.REFRESH_HEALTH),
    ]
    return specs


def _idle(target: TargetResult, _since: float | None) -> bool:
    """No job of the target is active: nothing changes until a job is created, which an
    idle-interval list finds."""
    value = target.get(SLOT)
    return value is not None and value.full_at is not None and value.active == 0


def _idle_interval(settings: Settings) -> float:
    return settings.idle_interval


def _reconfigured(value: Jobs, old: Settings, new: Settings) -> Jobs | None:
    """After a reload. A new tag key: every job is described again (a job's tags are kept
    for the allow-listed keys only), from a full list; the jobs keep their last values until
    then. A new filter: a full list (the jobs it no longer matches go, new ones come), with
    no describe of a terminal job known already. A new terminal max age: the next refresh
    applies it. Anything else (a tag key removed, intervals): nothing to do here."""
    if set(new.tag_keys) - set(old.tag_keys):
        stale = {job_id: replace(described, described_at=-math.inf)
                 for job_id, described in value.described.items()}
        return replace(value, described=stale, full_at=None)
    if new.list_filter != old.list_filter:
        return replace(value, full_at=None)
    if new.terminal_max_age != old.terminal_max_age:
        return value
    return None


COLLECTOR = Collector(
    name="jobs", slot=SLOT, operations=(LIST_JOBS, DESCRIBE_JOB), fetch=fetch,
    families=families, interval_option="refresh.interval", foreground=True, health="refresh",
    idle=_idle, idle_interval=_idle_interval, reconfigured=_reconfigured,
)
