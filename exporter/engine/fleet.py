"""Which targets exist and when they run: static and discovered targets, one refresher each,
sharded across replicas, scheduled on one APScheduler."""

from __future__ import annotations

import hashlib
import logging
import threading
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
from exporter.engine.runner import RefreshSettings, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.logs import fields
from exporter.model import UNKNOWN_ACCOUNT, TargetConfig, TargetKey

log = logging.getLogger(__name__)


def shard_of(key: TargetKey, total: int) -> int:
    """The shard that polls `key`: a hash that every process and Python computes alike."""
    digest = hashlib.sha256(f"{key.account_id}/{key.region}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


def key_of(target: TargetConfig) -> TargetKey:
    """A target's key; without a role the account is unknown until GetCallerIdentity."""
    account = target.role_arn.split(":")[4] if target.role_arn else UNKNOWN_ACCOUNT
    return TargetKey(account, target.region or "")


class Fleet:
    """Holds one refresher per target this shard polls and schedules their refreshes."""

    def __init__(self, aws: Aws, pool: CallPool, store: SnapshotStore,
                 settings: RefreshSettings, requests: ApiRequestCounter, waits: WaitCounter, *,
                 shard_index: int = 0,
                 shard_total: int = 1, status: FleetStatus | None = None) -> None:
        self._aws = aws
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
        self._jobs: dict[int, Any] = {}  # id(refresher) -> its APScheduler job
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

    @property
    def refreshers(self) -> list[TargetRefresher]:
        with self._lock:
            return [*self._static, *self._discovered.values()]

    def mine(self, key: TargetKey) -> bool:
        index, total = self._shard
        return total == 1 or shard_of(key, total) == index

    def _held(self, key: TargetKey) -> bool:
        return any(r.key == key for r in (*self._static, *self._discovered.values()))

    def _new(self, target: TargetConfig, key: TargetKey) -> TargetRefresher:
        api = AwsTarget(self._aws, key, target.role_arn, target.external_id)
        refresher = TargetRefresher(api, self._store, self._pool, self._settings,
                                    counters=(self._requests, self._waits))
        refresher.before_rekey = self._rekeying
        for counter in (self._requests, self._waits):
            counter.revive(key)
        self._store.put(self._store.result(key))
        self._jobs[id(refresher)] = self.scheduler.add_job(
            refresher.trigger, "interval", seconds=self._settings.interval,
            next_run_time=datetime.now(UTC))
        return refresher

    def add_static(self, targets: Sequence[TargetConfig]) -> None:
        """The configured targets (flags or `targets`), less the other shards' and duplicates."""
        with self._lock:
            for target in targets:
                key = key_of(target)
                if key.account_id != UNKNOWN_ACCOUNT:
                    self._static_keys.add(key)
                if not self.mine(key):
                    continue
                if key.account_id != UNKNOWN_ACCOUNT and self._held(key):
                    log.warning("target polled already; the duplicate is ignored",
                                extra=fields(account_id=key.account_id, region=key.region,
                                             role_arn=target.role_arn or ""))
                    continue
                self._static.append(self._new(target, key))
            self.status.targets = len(self._static) + len(self._discovered)
            self._publish_polled()

    def _publish_polled(self) -> None:
        """Tell the store every shard's targets (lock held); unsharded, its own are all."""
        if self._shard[1] > 1:
            self._store.polled(self._static_keys | self._discovered_keys)

    def reconcile(self, discovered: Sequence[TargetConfig]) -> tuple[int, int]:
        """Make the discovered targets this shard polls exactly `discovered`'s; a target that is
        also static stays static. Returns (added, removed)."""
        with self._lock:
            wanted: dict[TargetKey, TargetConfig] = {}
            static = {r.key for r in self._static}
            self._discovered_keys = {key_of(target) for target in discovered}
            for target in discovered:
                key = key_of(target)
                if self.mine(key) and key not in static:
                    wanted.setdefault(key, target)
            gone = [k for k in self._discovered if k not in wanted]
            for key in gone:
                self._remove(self._discovered.pop(key))
            added = 0
            for key, target in wanted.items():
                if key not in self._discovered:
                    self._discovered[key] = self._new(target, key)
                    added += 1
            self.status.targets = len(self._static) + len(self._discovered)
            self._publish_polled()
        return added, len(gone)

    def _remove(self, refresher: TargetRefresher) -> None:
        job = self._jobs.pop(id(refresher), None)
        if job is not None:
            job.remove()
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

    def every(self, interval: float, action: Callable[[], object]) -> None:
        """Run `action` now and every `interval` seconds (discovery)."""
        self.scheduler.add_job(action, "interval", seconds=interval,
                               next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
