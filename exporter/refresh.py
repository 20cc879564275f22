"""Background refreshes of every target through the shared call pool; snapshots swapped in.

A refresh of one target: learn its account if no role names it, check Macie's status when the
status interval has passed, then list, and describe what changed. Each AWS call is one task on
the call pool, so no thread waits on a target: a refresh is a small state machine whose steps
run on whichever worker takes them. After the list, jobs never seen before are published with
what the list says; the describes fill in the rest.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from exporter.collectors import Collector, CollectorApi
from exporter.logs import fields
from exporter.macie import ApiError
from exporter.mapping import MappingError, job_from_api
from exporter.model import (
    TERMINAL_STATUSES,
    UNKNOWN_ACCOUNT,
    Collected,
    CollectorHealth,
    Job,
    Snapshot,
    TargetKey,
    TargetResult,
    zero_filled_counts,
)
from exporter.pool import CallPool

log = logging.getLogger(__name__)


class MacieApi(CollectorApi, Protocol):
    """What a refresher needs from one target (exporter.macie.MacieTarget)."""

    key: TargetKey
    role_arn: str | None

    def resolve_account(self) -> str | None: ...
    def region_not_enabled(self, err: ApiError) -> bool: ...
    def get_macie_session(self) -> dict[str, Any]: ...
    def list_pages(self) -> Iterator[list[Any]]: ...
    def describe_job(self, job_id: str) -> dict[str, Any]: ...


class Rekeyable(Protocol):
    """Something keyed by target that follows an account learned late."""

    def rekey(self, old: TargetKey, new: TargetKey) -> None: ...


class SnapshotStore:
    """Holds the current snapshot; replacing one target's result swaps a new snapshot in."""

    def __init__(self, keys: Iterable[TargetKey] = (), pending: bool = False) -> None:
        self._lock = threading.Lock()
        self._results: dict[TargetKey, TargetResult] = {k: TargetResult(key=k) for k in keys}
        self._pending = pending
        self._serial = 0
        self._snapshot = Snapshot(tuple(self._results.values()), pending)
        self._listeners: list[Callable[[], None]] = []
        # Actions waiting for /metrics to show a snapshot: (its serial, action).
        self._rendered = False
        self._waiting: list[tuple[int, Callable[[], None]]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` is called after every swap (it must return quickly)."""
        self._listeners.append(listener)

    def get(self) -> Snapshot:
        return self._snapshot

    def result(self, key: TargetKey) -> TargetResult:
        return self._results.get(key) or TargetResult(key=key)

    def _swap(self) -> None:
        self._serial += 1
        self._snapshot = Snapshot(tuple(self._results.values()), self._pending, self._serial)

    def rendered_in_background(self) -> None:
        """From now on a background renderer publishes snapshots to /metrics (and calls
        `published`), so `when_published` waits for it."""
        with self._lock:
            self._rendered = True

    def when_published(self, action: Callable[[], None]) -> None:
        """Run `action` once /metrics shows the current snapshot (or a newer one): at once
        without a background renderer, else from the renderer's thread."""
        with self._lock:
            if self._rendered:
                self._waiting.append((self._serial, action))
                return
        action()

    def published(self, snapshot: Snapshot | None) -> None:
        """The renderer published `snapshot` (None: it stopped, and waits no more)."""
        with self._lock:
            if snapshot is None:
                self._rendered = False
                due, self._waiting = self._waiting, []
            else:
                due = [(s, a) for s, a in self._waiting if s <= snapshot.serial]
                self._waiting = [(s, a) for s, a in self._waiting if s > snapshot.serial]
        for _, action in due:
            action()

    def known(self) -> None:
        """The set of targets is known (discovery answered once, successfully or not)."""
        with self._lock:
            if not self._pending:
                return
            self._pending = False
            self._swap()
        self._changed()

    def update(self, key: TargetKey, change: Callable[[TargetResult], TargetResult]) -> None:
        """Replace a target's result with `change(current)`, atomically; a key the store does
        not hold (a target removed meanwhile) is left alone: only `put` adds targets."""
        with self._lock:
            current = self._results.get(key)
            if current is None:
                return
            self._results[key] = change(current)
            self._swap()
        self._changed()

    def put(self, result: TargetResult) -> None:
        """Store a target's result under its key (a target not held yet is added)."""
        with self._lock:
            self._results[result.key] = result
            self._swap()
        self._changed()

    def remove(self, key: TargetKey) -> None:
        with self._lock:
            if self._results.pop(key, None) is None:
                return
            self._swap()
        self._changed()

    def rekey(self, old: TargetKey, new: TargetKey) -> None:
        """Hold `old`'s result under `new`, in the same place (an account learned late)."""
        with self._lock:
            if new in self._results:  # another target has that key: it keeps its place
                self._results.pop(old, None)
            else:
                self._results = {(new if k == old else k): (replace(r, key=new) if k == old
                                                            else r)
                                 for k, r in self._results.items()}
            self._swap()
        self._changed()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()


@dataclass(frozen=True, slots=True)
class _Cached:
    job: Job
    listed_status: str
    described_at: float


@dataclass(frozen=True, slots=True)
class RefreshSettings:
    tag_keys: tuple[str, ...] = ()
    interval: float = 60.0
    full_redescribe_interval: float = 86400.0
    terminal_max_age: float = 0.0
    status_interval: float = 3600.0
    collectors: tuple[Collector, ...] = ()
    # Spread the collectors' rounds over their interval, by a stable hash of the target, so
    # that thousands of targets do not all collect in the same minute.
    spread_collectors: bool = False


_GONE = object()
# A refresh with at least this many jobs never seen before starts its describes once /metrics
# shows the jobs from the list (fewer are described about as fast as they would be rendered).
WAIT_FOR_METRICS_JOBS = 500
_denials_logged: set[str] = set()
_denials_lock = threading.Lock()


def _log_denied_once(action: str, message: str, **labels: str) -> None:
    with _denials_lock:
        if action in _denials_logged:
            return
        _denials_logged.add(action)
    log.error(message, extra=fields(**labels, missing_permission=action))


def _phase(key: TargetKey) -> float:
    """A number in [0, 1) that every process computes alike for `key`."""
    digest = hashlib.sha256(f"{key.account_id}/{key.region}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class TargetRefresher:
    """Refreshes one target; terminal jobs are described once and then served from cache."""

    def __init__(self, api: MacieApi, store: SnapshotStore, pool: CallPool,
                 settings: RefreshSettings = RefreshSettings(), *,
                 counters: Sequence[Rekeyable] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.settings = settings
        self._store = store
        self._pool = pool
        self._counters = tuple(counters)
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._failing = False
        self.macie_status: str | None = None
        self._status_checked_at: float | None = None
        self._collected_at: dict[str, float] = {}
        self._collecting: set[str] = set()
        self.last_ok = False
        self.closed = False
        # Called with (old, new) before the target moves to an account learned late.
        self.before_rekey: Callable[[TargetRefresher, TargetKey], None] | None = None

    @property
    def key(self) -> TargetKey:
        return self.api.key

    @property
    def running(self) -> bool:
        """True while a refresh of this target is under way."""
        return self._run is not None

    def labels(self) -> dict[str, str]:
        return {"account_id": self.key.account_id, "region": self.key.region}

    def trigger(self) -> threading.Event | None:
        """Start a refresh unless one is under way; returns the event set when it ends."""
        with self._lock:
            if self.closed:
                return None
            if self._run is not None:
                log.debug("refresh skipped: the previous one is still running",
                          extra=fields(**self.labels()))
                return None
            run = self._run = _Run(self)
        self._pool.submit(self, run.step(run.begin), urgent=True)
        return run.done

    def refresh(self, timeout: float | None = None) -> bool:
        """One refresh, waited for (tests, --once); True if it succeeded."""
        done = self.trigger()
        if done is None:
            return False
        done.wait(timeout)
        return self.last_ok

    def close(self) -> None:
        """Stop for good (a target that went away): nothing more is queued or stored."""
        with self._lock:
            self.closed = True
        self._pool.forget(self)

    # ------------------------------------------------------------ what runs use

    def adopt_account(self, account: str) -> None:
        """Re-key the target to the account learned late: its result, counts and labels."""
        old = self.key
        if old.account_id == account:
            return
        new = TargetKey(account, old.region)
        if self.before_rekey is not None:
            self.before_rekey(self, new)
        self.api.key = new
        for keyed in (self._store, *self._counters):
            keyed.rekey(old, new)

    def _due(self, last: float | None, interval: float, now: float) -> bool:
        """Whether something done every `interval` is due in the refresh starting at `now`:
        the refresh nearest its due time does it (a tick a few milliseconds early would
        otherwise slip it a whole refresh interval)."""
        return last is None or now - last >= interval - self.settings.interval / 2

    def status_due(self, now: float) -> bool:
        return self._due(self._status_checked_at, self.settings.status_interval, now)

    def set_status(self, status: str | None, now: float) -> None:
        if status != self.macie_status and self.macie_status is not None:
            log.info("Macie status changed", extra=fields(
                **self.labels(), previous=self.macie_status, status=status or "unknown"))
        self.macie_status = status
        self._status_checked_at = now

    def describe(self, job_id: str, account: str) -> Job | ApiError | object:
        try:
            return job_from_api(self.api.describe_job(job_id), account, self.settings.tag_keys)
        except ApiError as err:
            if err.code == "ResourceNotFoundException":
                return _GONE
            return err
        except MappingError as err:
            return ApiError("DescribeClassificationJob", "MalformedResponse", str(err))

    def fallback(self, job_id: str, summary: dict[str, Any], account: str) -> Job | None:
        """Last known values; for a job never described, what the list said."""
        cached = self._cache.get(job_id)
        if cached is not None:
            return cached.job
        try:
            return job_from_api(summary, account, self.settings.tag_keys)
        except MappingError:
            return None

    def too_old(self, job: Job, now: float) -> bool:
        """A terminal job past --jobs.terminal-max-age (counted, but not exported per job)."""
        if not self.settings.terminal_max_age or job.status not in TERMINAL_STATUSES:
            return False
        last = job.last_run_at if job.last_run_at is not None else job.created_at
        return last is not None and now - last > self.settings.terminal_max_age

    def ended(self, run: _Run, result: TargetResult | None, error: ApiError | None,
              duration: float) -> None:
        """Store what a run left behind (called once per run, with the run's lock held)."""
        key, status = self.key, self.macie_status
        if result is None:
            # Keep serving the last good jobs; only the health fields change.
            self._store.update(key, lambda previous: replace(
                previous, key=key, success=False, completed=True, duration_seconds=duration,
                macie_status=status))
            if error is not None:
                self._log_failure(error)
            self._failing = True
            self.last_ok = False
        else:
            # What the collectors found stays (they keep their own cadence), unless Macie is off.
            disabled = result.macie_status == "DISABLED"
            self._store.update(key, lambda previous: replace(
                result, duration_seconds=duration,
                collected=Collected() if disabled else previous.collected))
            if self._failing:
                log.info("refresh recovered", extra=fields(**self.labels()))
                self._failing = False
            self.last_ok = True
            if duration > self.settings.interval:
                log.warning("refresh took longer than the interval; the next one waits for it",
                            extra=fields(**self.labels(), duration_seconds=round(duration, 3),
                                         interval_seconds=self.settings.interval))

    def release(self, run: _Run) -> None:
        """A run is over, however it ended: the next one may start."""
        with self._lock:
            if self._run is run:
                self._run = None
        run.done.set()

    # ------------------------------------------------------------ collectors

    def _collect_due(self, now: float) -> None:
        """Queue the collectors whose interval has passed (none while Macie is off)."""
        if self.macie_status == "DISABLED" or self.closed:
            return
        result = self._store.result(self.key)
        for collector in self.settings.collectors:
            last = self._collected_at.get(collector.name)
            due = (self._due(last, collector.interval, now)
                   or (collector.stale is not None and collector.stale(result)))
            with self._lock:
                if collector.name in self._collecting or not due:
                    continue
                self._collecting.add(collector.name)
            # The first round runs at once; with spreading, the next comes a fraction of the
            # interval later (this target's phase), and then every interval.
            spread = _phase(self.key) if last is None and self.settings.spread_collectors else 0
            self._collected_at[collector.name] = now - spread * collector.interval
            # Background: every target's jobs refresh goes first (at start-up, all of them).
            self._pool.submit(self, functools.partial(self._collect, collector), background=True)

    def _collect(self, collector: Collector) -> None:
        try:
            error = self._collect_once(collector)
        finally:
            with self._lock:
                self._collecting.discard(collector.name)
        if error is None:
            return
        if error.missing_permission:
            _log_denied_once(error.missing_permission,
                             f"{collector.name} collector denied; it keeps its last values",
                             **self.labels(), collector=collector.name,
                             operation=error.operation, error_code=error.code)
        elif error.code != "CollectorCrashed":
            log.warning("collector failed; it keeps its last values", extra=fields(
                **self.labels(), collector=collector.name, operation=error.operation,
                error_code=error.code, error=error.message))

    def _collect_once(self, collector: Collector) -> ApiError | None:
        if self.closed:
            return None
        started = time.monotonic()
        jobs = [job.job_id for job in self._store.result(self.key).jobs]
        value: Any = None
        error: ApiError | None = None
        try:
            value = collector.fetch(self.api, jobs)
        except ApiError as err:
            error = err
        except MappingError as err:
            error = ApiError(collector.name, "MalformedResponse", str(err))
        except Exception:  # a bug in one collector must not touch the rest
            log.exception("collector crashed", extra=fields(**self.labels(),
                                                            collector=collector.name))
            error = ApiError(collector.name, "CollectorCrashed")
        health = CollectorHealth(error is None, time.monotonic() - started)

        def change(result: TargetResult) -> TargetResult:
            if result.macie_status == "DISABLED":  # Macie went off meanwhile
                return result
            collected = (result.collected if error is not None
                         else collector.apply(result.collected, value))
            return replace(result, collected=collected.healthy(collector.name, health))

        self._store.update(self.key, change)
        return error

    def _log_failure(self, err: ApiError) -> None:
        extra = {**self.labels(), "operation": err.operation, "error_code": err.code}
        if err.missing_permission:
            log.error("refresh failed: access denied",
                      extra=fields(**extra, missing_permission=err.missing_permission))
        else:
            log.warning("refresh failed", extra=fields(**extra, error=err.message))


class _Run:
    """One refresh of one target; its steps run as tasks on the call pool."""

    def __init__(self, refresher: TargetRefresher) -> None:
        self.r = refresher
        self.started = time.monotonic()
        self.now = refresher._clock()
        self.done = threading.Event()
        self.lock = threading.RLock()
        self.outstanding = 0  # describes queued or under way
        self.listed_all = False
        self.error: ApiError | None = None
        self.crashed = False
        self.finished = False
        self.disabled = False
        self.listed: dict[str, tuple[str, str]] = {}  # job id -> (status, type) as listed
        self.pending: dict[str, dict[str, Any]] = {}  # summaries of the jobs being described
        self.jobs: dict[str, Job] = {}
        self.failures: list[tuple[str, ApiError]] = []
        self.new_jobs = 0  # jobs being described that have no last known values
        self.pages: Iterator[list[Any]] | None = None
        self.to_describe: list[str] = []  # listed, to be described once the list is whole

    @property
    def account(self) -> str:
        return self.r.key.account_id

    def step(self, action: Callable[[], None]) -> Callable[[], None]:
        """A pool task: `action`, with any crash ending the run as failed."""
        def task() -> None:
            try:
                action()
            except Exception:  # a bug must not leave the target stuck mid-refresh
                log.exception("refresh crashed", extra=fields(**self.r.labels()))
                with self.lock:
                    self.crashed = True
                    self._finish_if_done(force=True)
        return task

    def _submit(self, action: Callable[[], None], *, urgent: bool) -> None:
        if self.r.closed:  # the target went away: end here, store nothing
            with self.lock:
                self.error = self.error or ApiError("Refresh", "TargetRemoved")
                self.outstanding = 0
                self._finish_if_done(force=True)
            return
        self.r._pool.submit(self.r, self.step(action), urgent=urgent)

    # ------------------------------------------------------------ steps

    def begin(self) -> None:
        r = self.r
        if self.account == UNKNOWN_ACCOUNT and not r.api.role_arn:
            account = r.api.resolve_account()
            if account:
                r.adopt_account(account)
        if r.status_due(self.now):
            self._check_status()
        if r.macie_status == "DISABLED":
            self._end_disabled()
            return
        self.pages = r.api.list_pages()
        self.next_page()

    def _check_status(self) -> None:
        r = self.r
        try:
            status = str(r.api.get_macie_session().get("status") or "ENABLED")
        except ApiError as err:
            if err.macie_disabled or self._region_not_enabled(err):
                r.set_status("DISABLED", self.now)
            elif err.missing_permission and err.operation == "GetMacieSession":
                _log_denied_once(
                    err.missing_permission,
                    "Macie status check denied; jobs are polled without it", **r.labels(),
                    operation=err.operation, error_code=err.code)
                r.set_status(None, self.now)
            else:  # a passing failure: keep the status known, ask again next refresh
                log.warning("Macie status check failed", extra=fields(
                    **r.labels(), operation=err.operation, error_code=err.code))
            return
        r.set_status(status, self.now)

    def _region_not_enabled(self, err: ApiError) -> bool:
        """An opt-in region the account has not enabled: Macie rejects there credentials it
        accepts elsewhere. Credentials never accepted anywhere are a real failure."""
        if not self.r.api.region_not_enabled(err):
            return False
        log.info("credentials rejected in this opt-in region but accepted elsewhere: taken as "
                 "a region the account has not enabled", extra=fields(
                     **self.r.labels(), operation=err.operation, error_code=err.code))
        return True

    def _end_disabled(self) -> None:
        with self.lock:
            self.disabled = True
            self._finish_if_done(force=True)

    def next_page(self) -> None:
        assert self.pages is not None
        try:
            page = next(self.pages, None)
        except ApiError as err:
            if err.macie_disabled or self._region_not_enabled(err):
                self.r.set_status("DISABLED", self.now)
                self._end_disabled()
                return
            with self.lock:
                self.error = err
                self._finish_if_done()
            return
        with self.lock:
            if self.error is not None:
                self._finish_if_done()
                return
            wait = False
            if page is None:
                self.listed_all = True
                to_describe, self.to_describe = self.to_describe, []
                self.outstanding += len(to_describe)
                if self.new_jobs and self.outstanding:
                    self.r._store.update(self.r.key, self._partial)
                    wait = self.new_jobs >= WAIT_FOR_METRICS_JOBS
                self._finish_if_done()
            else:
                self.to_describe += self._take(page)
                to_describe = []
        if page is not None:
            self._submit(self.next_page, urgent=True)
        # The describes start once the list is whole: pages go first, and a target with many
        # new jobs shows all of them (from the list) before it describes any. With very many,
        # the describes wait until /metrics shows them: rendering 10,000 jobs while 16 workers
        # describe them would take most of the refresh.
        describe = functools.partial(self._describe_all, to_describe)
        if wait:
            self.r._store.when_published(describe)
        else:
            describe()

    def _describe_all(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._submit(functools.partial(self.describe, job_id), urgent=False)

    def _take(self, page: list[Any]) -> list[str]:
        """Record a page of summaries; returns the job ids to describe."""
        cache, full = self.r._cache, self.r.settings.full_redescribe_interval
        to_describe = []
        for summary in page:
            job_id = summary.get("jobId") if isinstance(summary, dict) else None
            if not isinstance(job_id, str) or not job_id or job_id in self.listed:
                continue
            status = str(summary.get("jobStatus") or "UNKNOWN")
            self.listed[job_id] = (status, str(summary.get("jobType") or ""))
            cached = cache.get(job_id)
            if (cached is not None and status in TERMINAL_STATUSES
                    and cached.listed_status == status
                    and self.now - cached.described_at < full):
                self.jobs[job_id] = cached.job
            else:
                self.pending[job_id] = summary
                self.new_jobs += cached is None
                to_describe.append(job_id)
        return to_describe

    def describe(self, job_id: str) -> None:
        outcome = self.r.describe(job_id, self.account) if self.error is None else None
        with self.lock:
            self.outstanding -= 1
            if isinstance(outcome, Job):
                self.jobs[job_id] = outcome
            elif outcome is _GONE:
                self.listed.pop(job_id, None)
                self.pending.pop(job_id, None)
            elif isinstance(outcome, ApiError):
                self.failures.append((job_id, outcome))
            self._finish_if_done()

    # ------------------------------------------------------------ results (lock held)

    def _finish_if_done(self, force: bool = False) -> None:
        if self.finished:
            return
        if not force and (self.outstanding or not (self.listed_all or self.error)):
            return
        self.finished = True
        duration = time.monotonic() - self.started
        try:
            if self.r.closed:
                pass
            elif self.crashed or (self.error is not None and not self.disabled):
                self.r.ended(self, None, self.error, duration)
            elif self.disabled:
                self.r._cache = {}
                self.r.ended(self, TargetResult(
                    key=self.r.key, success=True, completed=True, last_success_at=self.now,
                    macie_status="DISABLED"), None, duration)
            else:
                self.r.ended(self, self._result(), None, duration)
        finally:
            self.r.release(self)
        self.r._collect_due(self.now)

    def _current_jobs(self) -> dict[str, Job]:
        """The described jobs, plus last known (or listed) values for the rest."""
        jobs = dict(self.jobs)
        for job_id, summary in self.pending.items():
            if job_id not in jobs:
                fallback = self.r.fallback(job_id, summary, self.account)
                if fallback is not None:
                    jobs[job_id] = fallback
        return jobs

    def _counts(self, jobs: dict[str, Job]) -> tuple[tuple[tuple[str, str, str], int], ...]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for job_id, (status, job_type) in self.listed.items():
            job = jobs.get(job_id)
            counts[(job.account_id if job else self.account, status, job_type)] += 1
        return zero_filled_counts(dict(counts), {self.account} | {k[0] for k in counts})

    def _exported(self, jobs: dict[str, Job]) -> tuple[Job, ...]:
        return tuple(sorted((j for j in jobs.values() if not self.r.too_old(j, self.now)),
                            key=lambda j: j.job_id))

    def _partial(self, previous: TargetResult) -> TargetResult:
        """The list's view while describes are under way; health fields stay as they were."""
        jobs = self._current_jobs()
        return replace(previous, jobs=self._exported(jobs), counts=self._counts(jobs),
                       macie_status=self.r.macie_status)

    def _result(self) -> TargetResult:
        r = self.r
        cache = {k: v for k, v in r._cache.items() if k in self.listed}
        for job_id, job in self.jobs.items():
            if job_id in self.pending:
                cache[job_id] = _Cached(job, self.listed[job_id][0], self.now)
        jobs = self._current_jobs()
        r._cache = cache
        if self.failures:
            job_id, first = self.failures[0]
            log.warning("describe failed; those jobs keep their last known values",
                        extra=fields(**r.labels(), failed_jobs=len(self.failures),
                                     job_id=job_id, error_code=first.code,
                                     missing_permission=first.missing_permission or ""))
        if self.account == UNKNOWN_ACCOUNT:
            # STS could not tell the account: a job ARN can.
            learned = next((j.account_id for j in jobs.values()
                            if j.account_id != UNKNOWN_ACCOUNT), None)
            if learned:
                r.adopt_account(learned)
                jobs = {k: replace(j, account_id=learned) if j.account_id == UNKNOWN_ACCOUNT
                        else j for k, j in jobs.items()}
        return TargetResult(
            key=r.key, jobs=self._exported(jobs), counts=self._counts(jobs),
            success=True, completed=True, last_success_at=self.now,
            describe_failures=len(self.failures), macie_status=r.macie_status,
        )


def refresh_all_once(refreshers: Sequence[TargetRefresher]) -> bool:
    """Refresh every target once; True if all succeeded (`--once`)."""
    events = [r.trigger() for r in refreshers]
    for event in events:
        if event is not None:
            event.wait()
    return all(r.last_ok for r in refreshers)
