"""Background refreshes: list, describe what changed, build a TargetResult, swap it in."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler

from exporter.collect import zero_filled_counts
from exporter.logs import fields
from exporter.macie import UNKNOWN_ACCOUNT, ApiError, TargetIdentity
from exporter.mapping import MappingError, job_from_api
from exporter.model import TERMINAL_STATUSES, Job, Snapshot, TargetKey, TargetResult

log = logging.getLogger(__name__)


class MacieApi(Protocol):
    """What a refresher needs from one target (exporter.macie.MacieTarget)."""

    identity: TargetIdentity

    def resolve_account(self) -> str: ...
    def learn_account(self, account_id: str) -> None: ...
    def list_pages(self) -> Iterator[list[Any]]: ...
    def describe_job(self, job_id: str) -> dict[str, Any]: ...


class SnapshotStore:
    """Holds the current snapshot; replacing one target's result swaps a new snapshot in."""

    def __init__(self, keys: Sequence[TargetKey]) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(tuple(TargetResult(key=k) for k in keys))
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` is called after every swap (it must return quickly)."""
        self._listeners.append(listener)

    def get(self) -> Snapshot:
        return self._snapshot

    def put(self, index: int, result: TargetResult) -> None:
        with self._lock:
            targets = list(self._snapshot.targets)
            targets[index] = result
            self._snapshot = Snapshot(tuple(targets))
        for listener in self._listeners:
            listener()


@dataclass(frozen=True, slots=True)
class _Cached:
    job: Job
    listed_status: str
    described_at: float


_GONE = object()


class TargetRefresher:
    """Refreshes one target; terminal jobs are described once and then served from cache."""

    def __init__(
        self, index: int, api: MacieApi, store: SnapshotStore, *, tag_keys: Sequence[str] = (),
        concurrency: int = 8, full_redescribe_interval: float = 86400.0,
        interval: float = 60.0, terminal_max_age: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.api = api
        self._store = store
        self._tag_keys = tuple(tag_keys)
        self._full_redescribe = full_redescribe_interval
        self._interval = interval
        self._terminal_max_age = terminal_max_age
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"describe-{index}")
        self._failing = False
        self._running = threading.Event()

    @property
    def running(self) -> bool:
        """True while a refresh of this target is under way."""
        return self._running.is_set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def labels(self) -> dict[str, str]:
        return {"account_id": self.api.identity.account_id, "region": self.api.identity.region}

    def refresh(self) -> bool:
        """One refresh of this target; never raises. Returns whether it succeeded."""
        self._running.set()
        try:
            return self._refresh_and_store()
        finally:
            self._running.clear()

    def _refresh_and_store(self) -> bool:
        started = time.monotonic()
        try:
            result = self._refresh()
        except ApiError as err:
            self._log_failure(err)
            result = None
        except Exception:  # a bug must not kill the schedule; the target shows as failing
            log.exception("refresh crashed", extra=fields(**self.labels()))
            result = None
        duration = time.monotonic() - started
        previous = self._store.get().targets[self.index]
        key = TargetKey(self.api.identity.account_id, self.api.identity.region)
        if result is None:
            # Keep serving the last good jobs; only the health fields change.
            self._store.put(self.index, replace(
                previous, key=key, success=False, completed=True, duration_seconds=duration,
            ))
            self._failing = True
            return False
        self._store.put(self.index, replace(result, key=key, duration_seconds=duration))
        if self._failing:
            log.info("refresh recovered", extra=fields(**self.labels()))
            self._failing = False
        if duration > self._interval:
            log.warning("refresh took longer than the interval; the next one waits for it",
                        extra=fields(**self.labels(), duration_seconds=round(duration, 3),
                                     interval_seconds=self._interval))
        return True

    def _log_failure(self, err: ApiError) -> None:
        extra = {**self.labels(), "operation": err.operation, "error_code": err.code}
        if err.missing_permission:
            log.error("refresh failed: access denied",
                      extra=fields(**extra, missing_permission=err.missing_permission))
        else:
            log.warning("refresh failed", extra=fields(**extra, error=err.message))

    def _describe(self, job_id: str, account: str) -> Job | ApiError | object:
        try:
            return job_from_api(self.api.describe_job(job_id), account, self._tag_keys)
        except ApiError as err:
            if err.code == "ResourceNotFoundException":
                return _GONE
            return err
        except MappingError as err:
            return ApiError("DescribeClassificationJob", "MalformedResponse", str(err))

    def _refresh(self) -> TargetResult:
        account = self.api.resolve_account()
        now = self._clock()
        listed: dict[str, tuple[str, str]] = {}  # job id -> (status, type) as listed
        pending: dict[str, dict[str, Any]] = {}  # the summaries of the jobs to describe
        jobs: dict[str, Job] = {}
        for page in self.api.list_pages():
            for summary in page:
                job_id = summary.get("jobId") if isinstance(summary, dict) else None
                if not isinstance(job_id, str) or not job_id:
                    continue
                status = str(summary.get("jobStatus") or "UNKNOWN")
                listed[job_id] = (status, str(summary.get("jobType") or ""))
                cached = self._cache.get(job_id)
                if (cached is not None and status in TERMINAL_STATUSES
                        and cached.listed_status == status
                        and now - cached.described_at < self._full_redescribe):
                    jobs[job_id] = cached.job
                else:
                    pending[job_id] = summary
        to_describe = list(pending)

        outcomes = self._pool.map(lambda job_id: self._describe(job_id, account), to_describe)
        failures: list[tuple[str, ApiError]] = []
        cache = {k: v for k, v in self._cache.items() if k in listed}
        for job_id, outcome in zip(to_describe, outcomes, strict=True):
            if isinstance(outcome, Job):
                jobs[job_id] = outcome
                cache[job_id] = _Cached(outcome, listed[job_id][0], now)
            elif outcome is _GONE:
                cache.pop(job_id, None)
                listed.pop(job_id)
            else:
                assert isinstance(outcome, ApiError)
                failures.append((job_id, outcome))
                fallback = self._fallback(job_id, pending[job_id], account)
                if fallback is not None:
                    jobs[job_id] = fallback
        self._cache = cache
        if failures:
            job_id, first = failures[0]
            log.warning("describe failed; those jobs keep their last known values",
                        extra=fields(**self.labels(), failed_jobs=len(failures),
                                     job_id=job_id, error_code=first.code,
                                     missing_permission=first.missing_permission or ""))

        if account == UNKNOWN_ACCOUNT:
            # STS could not tell the account: a job ARN can.
            learned = next((j.account_id for j in jobs.values()
                            if j.account_id != UNKNOWN_ACCOUNT), None)
            if learned:
                self.api.learn_account(learned)
                account = learned
                jobs = {k: replace(j, account_id=learned) if j.account_id == UNKNOWN_ACCOUNT
                        else j for k, j in jobs.items()}
        counts: Counter[tuple[str, str, str]] = Counter()
        for job_id, (status, job_type) in listed.items():
            job = jobs.get(job_id)
            counts[(job.account_id if job else account, status, job_type)] += 1
        accounts = {account} | {k[0] for k in counts}
        exported = [j for j in jobs.values() if not self._too_old(j, now)]
        return TargetResult(
            key=TargetKey(account, self.api.identity.region),
            jobs=tuple(sorted(exported, key=lambda j: j.job_id)),
            counts=zero_filled_counts(dict(counts), accounts),
            success=True, completed=True, last_success_at=now,
            describe_failures=len(failures),
        )

    def _too_old(self, job: Job, now: float) -> bool:
        """A terminal job past --jobs.terminal-max-age (counted, but not exported per job)."""
        if not self._terminal_max_age or job.status not in TERMINAL_STATUSES:
            return False
        last = job.last_run_at if job.last_run_at is not None else job.created_at
        return last is not None and now - last > self._terminal_max_age

    def _fallback(self, job_id: str, summary: dict[str, Any], account: str) -> Job | None:
        """Last known values; for a job never described, what the list said."""
        cached = self._cache.get(job_id)
        if cached is not None:
            return cached.job
        try:
            return job_from_api(summary, account, self._tag_keys)
        except MappingError:
            return None


class Poller:
    """Runs every target's refresh on an APScheduler interval: no overlap, no stacking."""

    def __init__(self, refreshers: Sequence[TargetRefresher], interval: float) -> None:
        self.refreshers = list(refreshers)
        self.scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(max(1, min(len(refreshers), 32)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        for refresher in self.refreshers:
            self.scheduler.add_job(
                refresher.refresh, "interval", seconds=interval, id=f"refresh-{refresher.index}",
                next_run_time=datetime.now(UTC),
            )
        logging.getLogger("apscheduler").setLevel(logging.ERROR)

    def _on_event(self, event: JobExecutionEvent) -> None:
        refresher = self.refreshers[int(event.job_id.rsplit("-", 1)[1])]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("refresh skipped: the previous one is still running",
                        extra=fields(**refresher.labels()))

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        for refresher in self.refreshers:
            refresher.close()


def refresh_all_once(refreshers: Sequence[TargetRefresher]) -> bool:
    """Refresh every target once, in parallel; True if all succeeded (`--once`)."""
    with ThreadPoolExecutor(max(1, len(refreshers))) as pool:
        return all(pool.map(lambda r: r.refresh(), refreshers))
