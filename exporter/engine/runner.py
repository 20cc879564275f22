"""Every collector of one target, run by one engine on the shared call pool.

A target's refresh starts every `--refresh.interval`: it learns the account if no role names
it, checks Macie's status when that is due, then runs the jobs collector; once the refresh has
ended, the other collectors whose interval has passed run behind every target's refresh calls.
Every collector runs the same way: its fetch is a generator of requests, and each request is
one task on the call pool (one AWS call, or one page), so no thread waits on a target and a
collector that pages 200 times takes 200 turns, not one worker for 200 calls. Each run leaves
the collector's value (or keeps the last one when it fails) and its health in the target's
result, swapped into the snapshot.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from exporter.aws.errors import ApiError
from exporter.aws.operations import Operation
from exporter.aws.target import Pages
from exporter.collectors import jobs, status
from exporter.collectors.base import (
    AnyCollector,
    Call,
    MacieDisabled,
    MappingError,
    NextPage,
    Parallel,
    Published,
    Request,
    ResolveAccount,
    Settings,
)
from exporter.engine.pool import CallPool
from exporter.engine.store import Rekeyable, SnapshotStore
from exporter.logs import fields, log_once
from exporter.model import UNKNOWN_ACCOUNT, Health, TargetKey, TargetResult

log = logging.getLogger(__name__)
# When spreading, the collectors' first rounds after start start at this rate at most, per
# collector, on average: each target's first round waits its phase of `targets / rate`
# seconds (never more than the collector's interval, or its idle cadence if it has one). A few
# targets start at once; 10,200 spread over 17 minutes instead of 73,000 calls queued in the
# first minute (at 20 a second, 8.5 minutes, the process was still saturated).
FIRST_ROUNDS_PER_SECOND = 10.0
_NONE: frozenset[str] = frozenset()
# What a trigger that has nothing to do returns: an event already set.
_NOTHING_TO_DO = threading.Event()
_NOTHING_TO_DO.set()


class TargetApi(Protocol):
    """What the engine needs from one target (exporter.aws.target.AwsTarget)."""

    key: TargetKey
    role_arn: str | None

    def call(self, operation: Operation, region: str | None = None,
             **arguments: Any) -> dict[str, Any]: ...
    def next_page(self, pages: Pages, region: str | None = None
                  ) -> list[dict[str, Any]] | None: ...
    def region_not_enabled(self, err: ApiError) -> bool: ...
    def resolve_account(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A collector switched on, and how often it runs."""

    collector: AnyCollector
    interval: float


@dataclass(frozen=True)
class RefreshSettings:
    tag_keys: tuple[str, ...] = ()
    interval: float = 60.0
    full_redescribe_interval: float = 86400.0
    terminal_max_age: float = 0.0
    status_interval: float = 3600.0
    # The collectors beside Macie's status and the jobs, with their intervals.
    collectors: tuple[Scheduled, ...] = ()
    # Spread the collectors' rounds over their interval, by a stable hash of the target, so
    # that thousands of targets do not all collect in the same minute.
    spread_collectors: bool = False
    list_filter: dict[str, Any] | None = None
    buckets_only: frozenset[str] = frozenset()
    # How often an idle target (no active job) is listed; 0: every interval.
    idle_interval: float = 0.0
    collect: Settings = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "collect", Settings(
            tag_keys=self.tag_keys, interval=self.interval,
            full_redescribe_interval=self.full_redescribe_interval,
            terminal_max_age=self.terminal_max_age, list_filter=self.list_filter,
            buckets_only=self.buckets_only, idle_interval=self.idle_interval,
            spread=self.spread_collectors))

    @property
    def refresh(self) -> tuple[Scheduled, ...]:
        """The refresh's collectors, in order: Macie's status (the gate), then the jobs."""
        return (Scheduled(status.COLLECTOR, self.status_interval),
                Scheduled(jobs.COLLECTOR, self.interval))


@dataclass(frozen=True, slots=True)
class _Outcome:
    value: object = None
    error: ApiError | None = None
    disabled: bool = False  # Macie is not enabled there
    crashed: bool = False
    removed: bool = False  # the target went away meanwhile

    @property
    def ok(self) -> bool:
        return not (self.error or self.disabled or self.crashed or self.removed)


class _Context:
    """A collector run's view of its target (exporter.collectors.base.Context)."""

    def __init__(self, refresher: TargetRefresher, collector: AnyCollector) -> None:
        self._refresher = refresher
        self._collector = collector
        self.now = refresher.clock()
        self.started = time.monotonic()
        self.settings = refresher.settings.collect
        self.result = refresher.store.result(refresher.key)
        self.previous = refresher.reconfigured(collector, self.result.get(collector.slot))

    @property
    def key(self) -> TargetKey:
        return self._refresher.key

    def region_not_enabled(self, err: ApiError) -> bool:
        """An opt-in region the account has not enabled: Macie rejects there credentials it
        accepts elsewhere. Credentials never accepted anywhere are a real failure."""
        if not self._refresher.api.region_not_enabled(err):
            return False
        log.info("credentials rejected in this opt-in region but accepted elsewhere: taken as "
                 "a region the account has not enabled", extra=fields(
                     **self._refresher.labels(), operation=err.operation, error_code=err.code))
        return True

    def adopt_account(self, account: str) -> None:
        self._refresher.adopt_account(account)

    def publish(self, value: object, ready: bool = False) -> None:
        slot = self._collector.slot
        if ready and self._collector.foreground:
            self._refresher.store_foreground(self._collector, _Outcome(value=value),
                                             time.monotonic() - self.started, self.now)
        else:
            self._refresher.store.update(self.key, lambda r: r.with_value(slot, value))


class _Run:
    """One run of one collector for one target: its fetch's requests as pool tasks."""

    def __init__(self, refresher: TargetRefresher, collector: AnyCollector, *,
                 background: bool, done: Callable[[_Outcome, float], None]) -> None:
        self.r = refresher
        self.collector = collector
        self.background = background
        self.done = done
        self.started = time.monotonic()
        self.context = _Context(refresher, collector)
        self.fetch = collector.fetch(self.context)
        self._lock = threading.Lock()
        self._answers: list[object] = []
        self._left = 0
        self._ended = False

    def start(self) -> None:
        """Run the fetch up to its first request (in the caller's thread: it makes no call),
        then each request as a pool task."""
        self._advance(None, None)

    def _submit(self, task: Callable[[], None], *, urgent: bool,
                background: bool = False) -> None:
        if self.r.closed:  # the target went away: end here, store nothing
            self._end(_Outcome(removed=True))
            return
        background = background or self.background
        self.r.pool.submit(self.r, task, urgent=urgent and not background,
                           background=background)

    def _end(self, outcome: _Outcome) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.fetch.close()
        self.done(outcome, time.monotonic() - self.started)

    def _advance(self, answer: object, error: ApiError | None) -> None:
        try:
            request = self.fetch.throw(error) if error is not None else self.fetch.send(answer)
        except StopIteration as stop:
            self._end(_Outcome(value=stop.value))
            return
        except MacieDisabled:
            self._end(_Outcome(disabled=True))
            return
        except ApiError as err:
            self._end(_Outcome(error=err))
            return
        except MappingError as err:
            self._end(_Outcome(error=ApiError(self.collector.name, "MalformedResponse",
                                              str(err))))
            return
        except Exception:  # a bug in one collector must not touch the rest
            log.exception(f"{'collector' if self.background else 'refresh'} crashed",
                          extra=fields(**self.r.labels(), collector=self.collector.name))
            self._end(_Outcome(crashed=True))
            return
        self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        if isinstance(request, Parallel):
            self._answers = [None] * len(request.calls)
            self._left = len(request.calls)
            for index, one in enumerate(request.calls):
                self._submit(functools.partial(self._parallel, index, one), urgent=False,
                             background=request.background)
        elif isinstance(request, Published):
            self.r.store.when_published(
                lambda: self._submit(lambda: self._advance(None, None), urgent=False))
        else:
            self._submit(lambda: self._perform(request), urgent=True)

    def _perform(self, request: Request) -> None:
        try:
            answer = self._answer(request)
        except ApiError as err:
            self._advance(None, err)
        except Exception:
            log.exception("AWS call crashed", extra=fields(**self.r.labels(),
                                                           collector=self.collector.name))
            self._end(_Outcome(crashed=True))
        else:
            self._advance(answer, None)

    def _answer(self, request: Request) -> object:
        api = self.r.api
        if isinstance(request, Call):
            return api.call(request.operation, **request.arguments)
        if isinstance(request, NextPage):
            return api.next_page(request.pages)
        if isinstance(request, ResolveAccount):
            return api.resolve_account()
        raise TypeError(f"not a single request: {request!r}")

    def _parallel(self, index: int, one: Call) -> None:
        try:
            answer: object = self.r.api.call(one.operation, **one.arguments)
        except ApiError as err:
            answer = err
        except Exception:  # a bug: reported like a failed call, the others go on
            log.exception("AWS call crashed", extra=fields(**self.r.labels(),
                                                           collector=self.collector.name))
            answer = ApiError(one.operation.name, "CallCrashed")
        with self._lock:
            self._answers[index] = answer
            self._left -= 1
            last = self._left == 0
        if last:
            self._advance(self._answers, None)


class TargetRefresher:
    """Runs every collector of one target: the refresh (status, jobs) and, after it, the
    collectors that are due."""

    def __init__(self, api: TargetApi, store: SnapshotStore, pool: CallPool,
                 settings: RefreshSettings = RefreshSettings(), *,
                 counters: Sequence[Rekeyable] = (),
                 clock: Callable[[], float] = time.time,
                 targets: Callable[[], int] | None = None) -> None:
        self.api = api
        # How many targets the fleet holds (how widely the first rounds are spread).
        self._targets = targets or (lambda: 1)
        self.settings = settings
        self.store = store
        self.pool = pool
        self.clock = clock
        self._counters = tuple(counters)
        self._lock = threading.Lock()
        self._refreshing: threading.Event | None = None
        self._ran_at: dict[str, float] = {}  # collector -> when its last run was due
        # Frozen sets, replaced on change: almost always empty, and the empty one is shared
        # (10,200 targets' own sets, grown for the first rounds, held 13 MB).
        self._collecting = _NONE
        self._first_rounds = _NONE  # collectors whose first round is still to come
        # Collector -> the settings of its stored value, when a reload changed them in a way
        # that matters to it: its next run starts from `reconfigured` and is due at once.
        self._made_with: dict[str, Settings] = {}
        self._failing = False
        self._ended = False  # a refresh has ended (the first one is not the next one)
        # (result, until): a trigger before `until` that finds this very result has nothing
        # to do (no refresh step and no collector due, none stale). Most triggers at scale are
        # of idle targets; each cost a refresh and a look at every collector, 140 µs, 170 a
        # second at 10,200 targets. Anything that changes what is due drops it.
        self._quiet: tuple[TargetResult, float] | None = None
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
        return self._refreshing is not None

    @property
    def macie_status(self) -> str | None:
        return status.status_of(self.store.result(self.key))

    def labels(self) -> dict[str, str]:
        return {"account_id": self.key.account_id, "region": self.key.region}

    # ------------------------------------------------------------ the refresh

    def trigger(self) -> threading.Event | None:
        """Start a refresh unless one is under way; returns the event set when it ends."""
        with self._lock:
            if self.closed:
                return None
            if self._refreshing is not None:
                log.debug("refresh skipped: the previous one is still running",
                          extra=fields(**self.labels()))
                return None
            quiet = self._quiet
            if quiet is not None and self.clock() < quiet[1] and (
                    self.store.result(self.key) is quiet[0]):
                return _NOTHING_TO_DO
            done = self._refreshing = threading.Event()
        _Refresh(self, done).begin()
        return done

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
        self.pool.forget(self)

    def adopt_account(self, account: str) -> None:
        """Re-key the target to the account learned late: its result, counts and labels."""
        old = self.key
        if old.account_id == account:
            return
        new = TargetKey(account, old.region)
        if self.before_rekey is not None:
            self.before_rekey(self, new)
        self.api.key = new
        for keyed in (self.store, *self._counters):
            keyed.rekey(old, new)

    def due(self, scheduled: Scheduled, now: float, interval: float | None = None) -> bool:
        """Whether a collector is due in the refresh starting at `now`: the refresh nearest
        its due time runs it (a tick a few milliseconds early would otherwise slip it a whole
        refresh interval)."""
        return now >= self.due_at(scheduled, interval)

    def idle_interval(self, collector: AnyCollector, result: TargetResult) -> float | None:
        """The collector's idle cadence while nothing it reads can have changed since its last
        successful run, else None (its own interval)."""
        if collector.idle is None or collector.idle_interval is None or (
                collector.name in self._first_rounds):
            return None
        every = collector.idle_interval(self.settings.collect)
        health = result.health_of(collector.name)
        if every <= 0 or (health is not None and not health.success):
            return None  # a failing collector is tried again at its own interval
        if collector is jobs.COLLECTOR and status.status_of(result) == status.DISABLED:
            # Macie off: nothing to list until a status check finds it on; the refresh only
            # stamps its time, at the idle cadence (1,020 targets re-rendered each minute).
            return every
        if not collector.idle(result, self._ran_at.get(collector.name)):
            return None
        return every

    # ------------------------------------------------------------ a reload

    def reconfigure(self, settings: RefreshSettings) -> None:
        """Take a reload's settings. A collector switched off loses its values and health;
        one whose stored value the change affects (`Collector.reconfigured`) runs at the next
        refresh; the rest keep their values and schedules."""
        old = self.settings
        if settings == old:
            return
        self.settings = settings
        self._quiet = None
        on = {s.collector.name for s in (*settings.refresh, *settings.collectors)}
        off = [s.collector for s in old.collectors if s.collector.name not in on]
        result = self.store.result(self.key)
        with self._lock:
            for collector in off:
                self._ran_at.pop(collector.name, None)
                self._first_rounds = self._first_rounds - {collector.name} or _NONE
                self._made_with.pop(collector.name, None)
            for scheduled in (*settings.refresh, *settings.collectors):
                collector = scheduled.collector
                if collector.reconfigured is None:
                    continue
                value = result.get(collector.slot)
                # No value yet: one may be on its way, made with the old settings.
                running = collector.name in self._collecting or (
                    collector.foreground and self._refreshing is not None)
                if (running if value is None else collector.reconfigured(
                        value, old.collect, settings.collect) is not None):
                    self._made_with.setdefault(collector.name, old.collect)
        if off:
            def drop(result: TargetResult) -> TargetResult:
                for collector in off:
                    result = result.with_value(collector.slot, None).with_health(
                        collector.name, None)
                return result
            self.store.update(self.key, drop)

    def reconfigured(self, collector: AnyCollector, value: object) -> object:
        """The value a run of `collector` starts from: the stored one, or what a reload made
        of it (once: the run's own value is made with the current settings)."""
        with self._lock:
            made_with = self._made_with.pop(collector.name, None)
        if made_with is None or value is None or collector.reconfigured is None:
            return value
        changed = collector.reconfigured(value, made_with, self.settings.collect)
        return value if changed is None else changed

    def switched_on(self, collector: AnyCollector) -> bool:
        return any(s.collector is collector
                   for s in (*self.settings.refresh, *self.settings.collectors))

    def mark_ran(self, name: str, at: float) -> None:
        """The collector `name` ran (or is taken as run) at `at`: `due` counts from there."""
        self._ran_at[name] = at
        self._quiet = None

    def due_at(self, scheduled: Scheduled, interval: float | None = None) -> float:
        """When `due` turns true for the collector (-inf: now)."""
        if scheduled.collector.name in self._made_with:
            return -math.inf
        last = self._ran_at.get(scheduled.collector.name)
        if last is None:
            return -math.inf
        every = scheduled.interval if interval is None else interval
        return last + every - self.settings.interval / 2

    def anchored(self, name: str, now: float, cadence: float) -> float:
        """When a run of `name` at `now` counts as made: when spreading, the due time it was
        late for (a whole number of cadences after the last), so that a run delayed by a
        backlog keeps its target's phase; targets that all ran late would otherwise all be
        due together again."""
        last = self._ran_at.get(name)
        if last is None or not self.settings.spread_collectors or cadence <= 0:
            return now
        slack = self.settings.interval / 2
        elapsed = now - last
        if elapsed < cadence - slack:
            return now
        return last + cadence * math.floor((elapsed + slack) / cadence)

    def first_round_window(self, scheduled: Scheduled) -> float:
        """The time after start over which the fleet's first rounds of a collector are spread
        (each target's waits its phase of it)."""
        collector = scheduled.collector
        longest = scheduled.interval
        if collector.idle_interval is not None:
            longest = max(longest, collector.idle_interval(self.settings.collect))
        return min(longest, self._targets() / FIRST_ROUNDS_PER_SECOND)

    def mark_started(self, scheduled: Scheduled, now: float) -> None:
        """A refresh collector ran (or starts) at `now`. Its first run is counted from this
        target's phase of its cadence earlier, when spreading: targets that start together
        would otherwise all be read again in the same refresh, once per cadence (10,000 status
        checks in one minute every hour; 10,000 idle targets listed in one minute, then none
        for four). The cadence is the idle interval for the jobs (an active target is read
        every interval whatever its phase), the interval for the status."""
        collector = scheduled.collector
        if collector.idle_interval is not None:
            cadence = collector.idle_interval(self.settings.collect)
        else:
            cadence = scheduled.interval
        if collector.name in self._ran_at or not self.settings.spread_collectors:
            self.mark_ran(collector.name, self.anchored(collector.name, now, cadence))
            return
        # Due again at the target's phase of the cadence, one interval from now at the soonest
        # (this refresh is the read at start-up).
        every = self.settings.interval
        self.mark_ran(collector.name, now - self.key.phase * max(0.0, cadence - every))

    def ended_refresh(self, done: threading.Event, ok: bool) -> None:
        with self._lock:
            if self._refreshing is done:
                self._refreshing = None
            self.last_ok = ok
            self._ended = True
        done.set()

    # ------------------------------------------------------------ storing outcomes

    def store_foreground(self, collector: AnyCollector, outcome: _Outcome, duration: float,
                         now: float) -> None:
        """What a refresh collector's run leaves in the target's result."""
        key, name = self.key, collector.name
        if outcome.removed or self.closed:
            return
        if outcome.disabled:
            if collector is not status.COLLECTOR:  # the status collector's run is marked
                # A list that found Macie off counts as the status check.
                self.mark_started(Scheduled(status.COLLECTOR, self.settings.status_interval),
                                  now)
            self.disable(now, duration)
            return
        if collector.health != "refresh":  # the status: its value only, when it has one
            if outcome.ok:
                self.store.update(key, lambda r: r.with_value(collector.slot, outcome.value))
            return

        def change(result: TargetResult) -> TargetResult:
            previous = result.health_of(name)
            if outcome.ok:
                health = Health(True, duration, now)
                result = result.with_value(collector.slot, outcome.value)
            else:
                health = Health(False, duration, previous.last_success_at if previous else None)
            return replace(result.with_health(name, health), key=key, completed=True)
        self.store.update(key, change)
        if outcome.ok:
            if self._failing:
                log.info("refresh recovered", extra=fields(**self.labels()))
                self._failing = False
            # A first refresh waits behind every target's at start-up: not worth a line each.
            if duration > self.settings.interval and self._ended:
                log.warning("refresh took longer than the interval; the next one waits for it",
                            extra=fields(**self.labels(), duration_seconds=round(duration, 3),
                                         interval_seconds=self.settings.interval))
            return
        self._failing = True
        err = outcome.error
        if err is None:
            return
        extra = {**self.labels(), "operation": err.operation, "error_code": err.code}
        if err.missing_permission:
            log.error("refresh failed: access denied",
                      extra=fields(**extra, missing_permission=err.missing_permission))
        else:
            log.warning("refresh failed", extra=fields(**extra, error=err.message))

    def disable(self, now: float, duration: float) -> None:
        """Macie is off in this account and region: a successful refresh with nothing but the
        status; what the collectors found is dropped."""
        result = TargetResult(self.key, completed=True).with_value(
            status.SLOT, status.DISABLED).with_health(jobs.COLLECTOR.name,
                                                      Health(True, duration, now))
        self.store.put(result)
        if self._failing:
            log.info("refresh recovered", extra=fields(**self.labels()))
            self._failing = False

    # ------------------------------------------------------------ the other collectors

    def collect_due(self, now: float) -> float:
        """Queue the collectors whose interval has passed (none while Macie is off); returns
        when the next one not queued is due (inf: none; -inf: one was queued)."""
        if self.macie_status == status.DISABLED or self.closed:
            return math.inf
        result = self.store.result(self.key)
        soonest = math.inf
        for scheduled in self.settings.collectors:
            collector = scheduled.collector
            name = collector.name
            if name not in self._ran_at and self.settings.spread_collectors:
                # The first round: this target's phase of the start-up window from now; the
                # next one at its phase of the interval, then every interval.
                wait = self.key.phase * self.first_round_window(scheduled)
                self.mark_ran(name, now + wait - scheduled.interval)
                self._first_rounds |= {name}
            stale = collector.stale is not None and collector.stale(result) and (
                name not in self._first_rounds)  # a first round waits its turn even so
            idle = self.idle_interval(collector, result)
            every = max(idle, scheduled.interval) if idle else scheduled.interval
            due = self.due(scheduled, now, every)
            with self._lock:
                if name in self._collecting or not (due or stale):
                    soonest = min(soonest, self.due_at(scheduled, every))
                    continue
                self._collecting |= {name}
            soonest = -math.inf
            if name in self._first_rounds:
                self._first_rounds = self._first_rounds - {name} or _NONE
                # Made at its phase of the window: the next within an interval, at its phase.
                earlier = max(0.0, scheduled.interval - self.first_round_window(scheduled))
                self.mark_ran(name, now - self.key.phase * earlier)
            else:
                self.mark_ran(name, self.anchored(name, now, every))
            _Run(self, collector, background=True,
                 done=functools.partial(self._collected, collector)).start()
        return soonest

    def _collected(self, collector: AnyCollector, outcome: _Outcome, duration: float) -> None:
        with self._lock:
            self._collecting = self._collecting - {collector.name} or _NONE
            self._quiet = None
        if outcome.removed or self.closed or not self.switched_on(collector):
            return  # the target went away, or a reload switched the collector off meanwhile
        health = Health(outcome.ok, duration)

        def change(result: TargetResult) -> TargetResult:
            if status.status_of(result) == status.DISABLED:  # Macie went off meanwhile
                return result
            if outcome.ok:
                result = result.with_value(collector.slot, outcome.value)
            return result.with_health(collector.name, health)
        self.store.update(self.key, change)
        error = outcome.error
        if error is None:
            return
        if error.missing_permission:
            log_once(error.missing_permission,
                     f"{collector.name} collector denied; it keeps its last values",
                     **self.labels(), collector=collector.name, operation=error.operation,
                     error_code=error.code)
        else:
            log.warning("collector failed; it keeps its last values", extra=fields(
                **self.labels(), collector=collector.name, operation=error.operation,
                error_code=error.code, error=error.message))


class _Refresh:
    """One refresh of one target: the account if unknown, the status if due, the jobs."""

    def __init__(self, refresher: TargetRefresher, done: threading.Event) -> None:
        self.r = refresher
        self.done = done
        self.now = refresher.clock()
        self.started = time.monotonic()
        # The jobs collector is the refresh itself, every interval unless the target is idle
        # (then every idle interval); the status check when it is due.
        result = self.result = refresher.store.result(refresher.key)
        self.steps = []
        self.soonest = math.inf  # when the first step not due now is
        checking = False  # the status is checked in this refresh
        for scheduled in refresher.settings.refresh:
            idle = refresher.idle_interval(scheduled.collector, result)
            if idle is not None:
                # Macie off: a status check that finds it on lists the jobs at once.
                due = refresher.due(scheduled, self.now, idle) or (
                    checking and status.status_of(result) == status.DISABLED)
            else:
                due = scheduled.collector.health == "refresh" or refresher.due(scheduled,
                                                                              self.now)
            if due:
                self.steps.append(scheduled)
                checking = checking or scheduled.collector is status.COLLECTOR
            else:
                self.soonest = min(self.soonest, refresher.due_at(scheduled, idle))
        self.idle = not self.steps

    def begin(self) -> None:
        r = self.r
        if self.r.key.account_id == UNKNOWN_ACCOUNT and not r.api.role_arn:
            r.pool.submit(r, self._resolve, urgent=True)
        else:
            self.next()

    def _resolve(self) -> None:
        try:
            account = self.r.api.resolve_account()
            if account:
                self.r.adopt_account(account)
        except Exception:
            log.exception("refresh crashed", extra=fields(**self.r.labels()))
        self.next()

    def next(self) -> None:
        r = self.r
        if r.closed:
            self.end(False)
            return
        if not self.steps:
            self.end(True)
            return
        scheduled = self.steps.pop(0)
        if scheduled.collector is jobs.COLLECTOR and r.macie_status == status.DISABLED:
            r.mark_started(scheduled, self.now)  # due again at its phase of the idle cadence
            r.disable(self.now, time.monotonic() - self.started)
            self.end(True)
            return
        if scheduled.collector.retry_failed is False:
            r.mark_started(scheduled, self.now)
        _Run(r, scheduled.collector, background=False,
             done=lambda outcome, _duration: self.ran(scheduled, outcome)).start()

    def ran(self, scheduled: Scheduled, outcome: _Outcome) -> None:
        r = self.r
        collector = scheduled.collector
        if collector.retry_failed and (outcome.ok or outcome.disabled):
            r.mark_started(scheduled, self.now)
        try:
            r.store_foreground(collector, outcome, time.monotonic() - self.started, self.now)
        except Exception:
            log.exception("refresh crashed", extra=fields(**r.labels()))
            outcome = _Outcome(crashed=True)
        if outcome.disabled:
            self.end(True)
        elif collector.health == "refresh":
            self.end(outcome.ok)
        else:
            self.next()

    def end(self, ok: bool) -> None:
        r = self.r
        r.ended_refresh(self.done, ok)
        soonest = min(self.soonest, r.collect_due(self.now))
        if self.idle and soonest > self.now and r.store.result(r.key) is self.result:
            # Nothing to do until then, while the result stays this one.
            r._quiet = (self.result, soonest)


def refresh_all_once(refreshers: Sequence[TargetRefresher]) -> bool:
    """Refresh every target once; True if all succeeded (`--once`)."""
    events = [r.trigger() for r in refreshers]
    for event in events:
        if event is not None:
            event.wait()
    return all(r.last_ok for r in refreshers)
