"""Which targets exist and when they run: static and discovered targets, one refresher each,
sharded across replicas, scheduled on one APScheduler.

Refreshes are started by one scheduler job, `Ticks`, that runs every second or so and triggers
the targets whose phase of the refresh interval falls in that tick: a target's first refresh
at once, then one every interval at its own second of it. One job per target cost 10,200 job
runs a minute (APScheduler's futures, locks and bookkeeping for each) at 10,200 targets, and
they all fell in the same second."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws
from exporter.aws.target import AwsTarget
from exporter.engine.counters import FleetStatus, WaitCounter
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, TargetApi, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.logs import fields
from exporter.model import UNKNOWN_ACCOUNT, TargetConfig, TargetKey

log = logging.getLogger(__name__)


def shard_of(key: TargetKey, total: int) -> int:
    """The shard that polls `key`: a hash that every process and Python computes alike."""
    return key.stable_hash % total


def key_of(target: TargetConfig) -> TargetKey:
    """A target's key; without a role the account is unknown until GetCallerIdentity."""
    account = target.role_arn.split(":")[4] if target.role_arn else UNKNOWN_ACCOUNT
    return TargetKey(account, target.region or "")


class Ticks:
    """Which targets a tick triggers: the interval cut into `slots` ticks of at most a second,
    each target in the slot of its phase; targets added since the last tick are triggered by
    the next one. A tick that comes late triggers every slot it passed (at most one interval's
    worth), so a slow tick delays refreshes but skips none."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: list[dict[int, TargetRefresher]] = []
        self._new: dict[int, TargetRefresher] = {}
        self._slot: dict[int, int] = {}  # id(refresher) -> its slot
        self.interval = 0.0
        self.step = 1.0
        self._epoch = clock()
        self._last = -1  # the last tick number triggered
        self.retime(interval)

    def retime(self, interval: float) -> None:
        """A new interval: every target moves to its phase of it."""
        with self._lock:
            held = [r for slot in self._slots for r in slot.values()]
            self.interval = interval
            count = max(1, math.ceil(interval))
            self.step = interval / count
            self._slots = [{} for _ in range(count)]
            self._slot.clear()
            self._epoch, self._last = self._clock(), -1
            for refresher in held:
                self._place(refresher)

    def _place(self, refresher: TargetRefresher) -> None:
        slot = min(len(self._slots) - 1, int(refresher.key.phase * len(self._slots)))
        self._slots[slot][id(refresher)] = refresher
        self._slot[id(refresher)] = slot

    def add(self, refresher: TargetRefresher) -> None:
        """Triggered by the next tick, then at its phase of every interval."""
        with self._lock:
            self._new[id(refresher)] = refresher
            self._place(refresher)

    def remove(self, refresher: TargetRefresher) -> None:
        with self._lock:
            self._new.pop(id(refresher), None)
            slot = self._slot.pop(id(refresher), None)
            if slot is not None:
                self._slots[slot].pop(id(refresher), None)

    def __contains__(self, refresher: object) -> bool:
        return id(refresher) in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def due(self) -> list[TargetRefresher]:
        """The targets this tick triggers."""
        with self._lock:
            now = int((self._clock() - self._epoch) / self.step)
            first = max(self._last + 1, now - len(self._slots) + 1)
            due = dict(self._new)
            self._new.clear()
            for tick in range(first, now + 1):
                due.update(self._slots[tick % len(self._slots)])
            self._last = max(self._last, now)
        return list(due.values())


def _key(planned: TargetRefresher | tuple[TargetConfig, TargetKey]) -> TargetKey:
    return planned.key if isinstance(planned, TargetRefresher) else planned[1]


class Fleet:
    """Holds one refresher per target this shard polls and schedules their refreshes."""

    def __init__(self, aws: Aws, pool: CallPool, store: SnapshotStore,
                 settings: RefreshSettings, requests: ApiRequestCounter, waits: WaitCounter, *,
                 shard_index: int = 0,
                 shard_total: int = 1, status: FleetStatus | None = None,
                 api: Callable[[TargetConfig, TargetKey], TargetApi] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._aws = aws
        self._clock = clock
        # How a target's calls are made (tests: a fake of the AWS-facing protocol).
        self._api = api or (lambda target, key: AwsTarget(self._aws, key, target.role_arn,
                                                          target.external_id))
        self._pool = pool
        self._store = store
        self._settings = settings
        self._requests = requests
        self._waits = waits
        self._shard = (shard_index, shard_total)
        self.status = status or FleetStatus()
        self._lock = threading.Lock()
        self._static: list[TargetRefresher] = []
        self._discovered: dict[TargetKey, TargetRefresher] = {}
        self.ticks = Ticks(settings.interval)
        self._targets: dict[int, TargetConfig] = {}  # id(refresher) -> its target
        # The configured targets and the last discovered ones, every shard's.
        self._static_targets: list[TargetConfig] = []
        self._discovered_targets: list[TargetConfig] = []
        # Every shard's targets (known accounts): who reports what several targets see.
        self._static_keys: set[TargetKey] = set()
        self._discovered_keys: set[TargetKey] = set()
        # Ticks only queue work on the call pool, so two scheduler threads are plenty.
        self.scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self._tick_job = self.scheduler.add_job(self._tick, "interval",
                                                seconds=self.ticks.step,
                                                next_run_time=datetime.now(UTC))

    def _tick(self) -> None:
        for refresher in self.ticks.due():
            try:
                refresher.trigger()
            except Exception:  # one target's bug must not hold the others back
                log.exception("refresh crashed", extra=fields(**refresher.labels()))

    @property
    def refreshers(self) -> list[TargetRefresher]:
        with self._lock:
            return [*self._static, *self._discovered.values()]

    def mine(self, key: TargetKey) -> bool:
        index, total = self._shard
        return total == 1 or shard_of(key, total) == index

    def _new(self, target: TargetConfig, key: TargetKey) -> TargetRefresher:
        refresher = TargetRefresher(self._api(target, key), self._store, self._pool,
                                    self._settings, counters=(self._requests, self._waits),
                                    clock=self._clock, targets=lambda: self.status.targets)
        refresher.before_rekey = self._rekeying
        for counter in (self._requests, self._waits):
            counter.revive(key)
        self._store.put(self._store.result(key))
        self._targets[id(refresher)] = target
        self.ticks.add(refresher)
        return refresher

    def add_static(self, targets: Sequence[TargetConfig]) -> None:
        """The configured targets (flags or `targets`), less the other shards' and duplicates."""
        with self._lock:
            self._static_targets += targets
            self._assign(warn=True)

    def reconcile(self, discovered: Sequence[TargetConfig]) -> tuple[int, int]:
        """Make the discovered targets this shard polls exactly `discovered`'s; a target that is
        also static stays static. Returns (added, removed)."""
        with self._lock:
            self._discovered_targets = list(discovered)
            return self._assign()

    def update(self, settings: RefreshSettings, static: Sequence[TargetConfig], *,
               shard_index: int = 0, shard_total: int = 1) -> tuple[int, int]:
        """A reload: new settings, static targets and shard. A target still wanted keeps its
        refresher (its data, caches and schedule); a changed refresh interval reschedules every
        target. Returns (added, removed)."""
        with self._lock:
            old, self._settings = self._settings, settings
            self._shard = (shard_index, shard_total)
            for refresher in (*self._static, *self._discovered.values()):
                refresher.reconfigure(settings)
            if settings.interval != old.interval:
                self.ticks.retime(settings.interval)
                self._tick_job.reschedule("interval", seconds=self.ticks.step)
            self._static_targets = list(static)
            return self._assign(warn=True)

    def _assign(self, warn: bool = False) -> tuple[int, int]:
        """Hold exactly one refresher per static and discovered target this shard polls; a
        target also static stays static (lock held). A refresher whose target is still wanted,
        as the same target or as the same account and region, is kept with its data (with the
        target's new credentials if they changed). Returns (added, removed)."""
        held_before = [*self._static, *self._discovered.values()]
        by_target = {self._targets[id(r)]: r for r in self._static}
        by_key = {r.key: r for r in held_before if r.key.account_id != UNKNOWN_ACCOUNT}

        def claim(target: TargetConfig, key: TargetKey) -> TargetRefresher | None:
            refresher = by_target.pop(target, None)
            if refresher is None and key.account_id != UNKNOWN_ACCOUNT:
                refresher = by_key.get(key)
            if refresher is None:
                return None
            by_key.pop(refresher.key, None)
            by_target.pop(self._targets[id(refresher)], None)
            if self._targets[id(refresher)] != target:
                refresher.api = self._api(target, refresher.key)
                self._targets[id(refresher)] = target
            return refresher

        # Claimed refreshers, and the targets still to create (after the removals: a new
        # target may take a removed one's key).
        static: list[TargetRefresher | tuple[TargetConfig, TargetKey]] = []
        static_keys: set[TargetKey] = set()  # theirs, known accounts only
        self._static_keys = set()
        for target in dict.fromkeys(self._static_targets):  # the same target twice: once
            key = key_of(target)
            if key.account_id != UNKNOWN_ACCOUNT:
                self._static_keys.add(key)
            if not self.mine(key):
                continue
            if key.account_id != UNKNOWN_ACCOUNT and key in static_keys:
                if warn:
                    log.warning("target polled already; the duplicate is ignored",
                                extra=fields(account_id=key.account_id, region=key.region,
                                             role_arn=target.role_arn or ""))
                continue
            planned = claim(target, key) or (target, key)
            static.append(planned)
            if _key(planned).account_id != UNKNOWN_ACCOUNT:
                static_keys.add(_key(planned))
        held = {_key(p) for p in static}
        self._discovered_keys = {key_of(target) for target in self._discovered_targets}
        discovered: dict[TargetKey, TargetRefresher | tuple[TargetConfig, TargetKey]] = {}
        for target in self._discovered_targets:
            key = key_of(target)
            if self.mine(key) and key not in held and key not in discovered:
                discovered[key] = claim(target, key) or (target, key)
        kept = {id(p) for p in (*static, *discovered.values())}
        gone = [r for r in held_before if id(r) not in kept]
        for refresher in gone:
            self._remove(refresher)
        made = [self._made(p) for p in static]
        self._static = [r for r, _ in made]
        self._discovered = {}
        added = sum(new for _, new in made)
        for key, planned in discovered.items():
            refresher, new = self._made(planned)
            self._discovered[key] = refresher
            added += new
        self.status.targets = len(self._static) + len(self._discovered)
        self._publish_polled()
        return added, len(gone)

    def _made(self, planned: TargetRefresher | tuple[TargetConfig, TargetKey]
              ) -> tuple[TargetRefresher, bool]:
        """(the refresher, True if it is new)."""
        if isinstance(planned, TargetRefresher):
            return planned, False
        return self._new(*planned), True

    def _publish_polled(self) -> None:
        """Tell the store every shard's targets (lock held); unsharded, its own are all."""
        self._store.polled(self._static_keys | self._discovered_keys if self._shard[1] > 1
                           else None)

    def _remove(self, refresher: TargetRefresher) -> None:
        self.ticks.remove(refresher)
        self._targets.pop(id(refresher), None)
        refresher.close()
        self._store.remove(refresher.key)
        self._requests.forget(refresher.key)
        self._waits.forget(refresher.key)

    def _rekeying(self, refresher: TargetRefresher, new: TargetKey) -> None:
        """A static target learned its account: a discovered target with that key gives way,
        so that no account x region is polled twice."""
        with self._lock:
            duplicate = self._discovered.get(new)
            if duplicate is not None and duplicate is not refresher:
                del self._discovered[new]
                self._remove(duplicate)
                self.status.targets = len(self._static) + len(self._discovered)
            for counter in (self._requests, self._waits):
                counter.revive(new)

    def every(self, interval: float, action: Callable[[], object]) -> Any:
        """Run `action` now and every `interval` seconds (discovery); returns its job (its
        `remove()` stops it)."""
        return self.scheduler.add_job(action, "interval", seconds=interval,
                                      next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
