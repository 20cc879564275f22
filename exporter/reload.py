"""Live reload: SIGHUP, `POST /-/reload` (with --web.enable-lifecycle) and a changed
--config.file load the configuration again and apply it to the running process.

A configuration that does not load changes nothing: the running one stays, one error line
names the key, and `macie_exporter_config_last_reload_successful` is 0 until a reload
succeeds. One that loads is applied in place: targets, discovery, filters, tag labels,
collectors and their intervals, sharding, AWS client settings, the call pool's size and rate
limit, the log level and format. What a running process cannot change (the listen address,
the telemetry path, the web config file's path, --demo, --once) keeps its running value, with
a warning naming the option. A target that is still configured keeps its refresher, so its
series, caches and schedule go on. Reloads run one at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector

from exporter import logs
from exporter.aws.session import AwsSettings
from exporter.collectors import by_name
from exporter.config import Config, ConfigError, load
from exporter.engine.discovery import OrganizationsDiscovery
from exporter.engine.runner import RefreshSettings, Scheduled
from exporter.engine.selfmetrics import snapshot_families
from exporter.logs import fields
from exporter.model import TargetConfig
from exporter.render.families import AnySpec, gauge
from exporter.render.filter import KEEP_ALL, MetricFilter
from exporter.web.server import LIFECYCLE_DISABLED

if TYPE_CHECKING:
    from exporter.cli import Exporter

log = logging.getLogger("exporter")

# How often --config.file is looked at (a stat; read only when that changed). A Kubernetes
# ConfigMap reaches the pod's volume within about a minute; this adds at most 30 s.
CONFIG_CHECK_INTERVAL = 30.0
# For tests only: a shorter period, in seconds.
CHECK_INTERVAL_ENV = "MACIE_EXPORTER_TEST_CONFIG_CHECK_INTERVAL"

# What a running process cannot change: the option, and the Config fields it sets.
KEPT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("web.listen-address", ("listen_addresses",)),
    ("web.telemetry-path", ("telemetry_path",)),
    ("web.config.file", ("web_config_file",)),
    ("demo", ("demo",)),
    ("once", ("once",)),
    # The live collectors are wrapped in them once, at start-up.
    ("metrics.allowlist", ("metric_filter",)),
    ("metrics.denylist", ("metric_filter",)),
    ("web.disable-exporter-metrics", ("disable_exporter_metrics",)),
)


def check_interval(environ: Mapping[str, str]) -> float:
    """CONFIG_CHECK_INTERVAL, or the tests' shorter period."""
    try:
        seconds = float(environ.get(CHECK_INTERVAL_ENV, CONFIG_CHECK_INTERVAL))
    except ValueError:
        return CONFIG_CHECK_INTERVAL
    return seconds if seconds > 0 else CONFIG_CHECK_INTERVAL


def refresh_settings(config: Config) -> RefreshSettings:
    """How every target refreshes, from the configuration."""
    return RefreshSettings(
        tag_keys=config.tag_keys, interval=config.refresh_interval,
        full_redescribe_interval=config.full_redescribe_interval,
        terminal_max_age=config.terminal_max_age, status_interval=config.status_interval,
        collectors=tuple(Scheduled(by_name(name), interval)
                         for name, interval in config.collectors),
        spread_collectors=True, list_filter=config.list_filter,
        buckets_only=config.buckets_only, idle_interval=config.idle_interval,
    )


def switched_on(settings: RefreshSettings) -> frozenset[str]:
    return frozenset(s.collector.name for s in (*settings.refresh, *settings.collectors))


def families_of(settings: RefreshSettings,
                keep: MetricFilter = KEEP_ALL) -> tuple[AnySpec, ...]:
    """The snapshot's families: the refresh's collectors and the ones switched on (a
    collector switched off, or a family the metric filters leave out, has none, not even
    HELP and TYPE lines)."""
    return snapshot_families(settings.collect, switched_on(settings), keep)


@dataclass(frozen=True)
class Plan:
    """A configuration and what it means for this process: the targets with their regions
    filled in, discovery's regions, the engine's settings. Made before anything changes, so
    that a configuration that cannot be applied changes nothing."""

    config: Config
    static: tuple[TargetConfig, ...]
    discovery_regions: tuple[str, ...]
    refresh: RefreshSettings
    aws: AwsSettings


class ReloadStatus(RegistryCollector):
    """`macie_exporter_config_last_reload_successful` and `..._success_timestamp_seconds`,
    read at every scrape (a live collector)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.successful = True
        self.last_success = clock()  # the configuration loaded at start-up

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        successful = gauge("macie_exporter_config_last_reload_successful",
                           "1 if the last configuration reload succeeded (or none was asked "
                           "for yet), 0 if it failed and the running configuration was kept.",
                           ())
        successful.add_metric([], 1 if self.successful else 0)
        yield successful
        last = gauge("macie_exporter_config_last_reload_success_timestamp_seconds",
                     "When the configuration was last loaded, at start-up or by a reload, in "
                     "seconds since the Unix epoch.", ())
        last.add_metric([], self.last_success)
        yield last


def _fingerprint(path: str) -> tuple[object, ...] | None:
    """What the file is now: a ConfigMap update swaps a symlink, so the resolved path and
    its inode, not only its mtime."""
    try:
        resolved = os.path.realpath(path)
        info = os.stat(resolved)
    except (OSError, ValueError):
        return None
    return resolved, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (OSError, ValueError):
        return None


class Reloader:
    """Loads the configuration again and applies it, one reload at a time; watches
    --config.file, and takes SIGHUP from the signal handler (`signalled`)."""

    def __init__(self, exporter: Exporter, argv: Sequence[str],
                 environ: Mapping[str, str] | None = None, *,
                 interval: float = CONFIG_CHECK_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self._exporter = exporter
        self._argv = list(argv)
        self._environ = environ
        self._interval = interval
        self._clock = clock
        self.status = exporter.reload_status
        self._lock = threading.Lock()
        self._path = exporter.config.config_file
        # What the running configuration was loaded from.
        self._stamp = _fingerprint(self._path) if self._path else None
        self._digest = _digest(self._path) if self._path else None
        self._signalled = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ triggers

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="config-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def signalled(self) -> None:
        """SIGHUP: the watcher thread reloads (a signal handler must not wait for a lock)."""
        self._signalled.set()
        self._wake.set()

    def _watch(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if self._signalled.is_set():
                    self._signalled.clear()
                    self.reload("signal")
                else:
                    self.check()
            except Exception:  # the watcher must outlive a surprise; the running config stays
                log.exception("config reload crashed")

    def check(self) -> bool | None:
        """Reload if --config.file changed since it was last loaded (a stat otherwise);
        None when it did not change, else whether the reload succeeded."""
        if not self._path:
            return None
        stamp = _fingerprint(self._path)
        if stamp == self._stamp:
            return None
        if _digest(self._path) == self._digest:  # touched, or swapped for the same content
            self._stamp = stamp
            log.debug("config file changed on disk, its content did not; not reloaded",
                      extra=fields(path=self._path))
            return None
        return self.reload("file")[0]

    def http(self) -> tuple[int, str]:
        """POST /-/reload: 200 when the reload succeeded, 400 with the error when the
        configuration does not load, 403 without --web.enable-lifecycle."""
        if not self._exporter.config.enable_lifecycle:
            return HTTPStatus.FORBIDDEN, LIFECYCLE_DISABLED
        ok, message = self.reload("http")
        return (HTTPStatus.OK if ok else HTTPStatus.BAD_REQUEST), message

    # ------------------------------------------------------------ the reload

    def reload(self, trigger: str) -> tuple[bool, str]:
        """Load the configuration and apply it; (succeeded, one line saying how it went)."""
        with self._lock:
            # Taken before loading: a file changed while it loads is loaded again.
            stamp = _fingerprint(self._path) if self._path else None
            digest = _digest(self._path) if self._path else None
            try:
                config = load(self._argv, os.environ if self._environ is None
                              else self._environ)
                plan = self._exporter.plan(self._kept(config))
            except ConfigError as err:
                self._stamp, self._digest = stamp, digest  # not tried again until it changes
                self.status.successful = False
                log.error("config not reloaded; the running configuration is kept",
                          extra=fields(trigger=trigger, error=str(err)))
                return False, f"config not reloaded: {err}"
            self._stamp, self._digest = stamp, digest
            try:
                summary = apply(self._exporter, plan)
            except Exception as err:  # a bug: say so, and report the reload as failed
                self.status.successful = False
                log.exception("config reload failed while applying it",
                              extra=fields(trigger=trigger))
                return False, f"config reload failed: {err}"
            self.status.successful = True
            self.status.last_success = self._clock()
            log.info("config reloaded", extra=fields(trigger=trigger, **summary))
            return True, "config reloaded: " + " ".join(f"{k}={v}" for k, v in summary.items())

    def _kept(self, config: Config) -> Config:
        """`config` with the running values of what cannot change, each named in a warning."""
        running = self._exporter.config
        for option, names in KEPT:
            if any(getattr(config, name) != getattr(running, name) for name in names):
                log.warning("this setting cannot change without a restart; the running value "
                            "is kept", extra=fields(option=option))
                config = replace(config, **{name: getattr(running, name) for name in names})
        return config


def apply(exporter: Exporter, plan: Plan) -> dict[str, object]:
    """Apply a plan to the running process; what changed, for the log line."""
    old, new = exporter.current, plan
    changed = [f.name for f in dataclasses.fields(Config)
               if getattr(old.config, f.name) != getattr(new.config, f.name)]
    config = new.config
    if (config.log_level, config.log_format) != (old.config.log_level, old.config.log_format):
        logs.setup(config.log_level, config.log_format)
    exporter.aws.reconfigure(new.aws)
    if config.concurrency != old.config.concurrency:
        exporter.pool.resize(config.concurrency)
    if config.requests_per_second != old.config.requests_per_second:
        exporter.pool.set_rate(config.requests_per_second)
    added, removed = exporter.fleet.update(new.refresh, new.static,
                                           shard_index=config.shard_index,
                                           shard_total=config.shard_total)
    if (config.discovery, new.discovery_regions) != (old.config.discovery,
                                                     old.discovery_regions):
        _rediscover(exporter, plan)
    if (new.refresh.collect, switched_on(new.refresh)) != (old.refresh.collect,
                                                           switched_on(old.refresh)):
        exporter.set_families(families_of(new.refresh, config.metric_filter))
    if (config.shard_index, config.shard_total) != (old.config.shard_index,
                                                    old.config.shard_total):
        exporter.live.shard = (config.shard_index, config.shard_total)
    exporter.current = plan
    exporter.config = config
    return {"changed": ",".join(changed) or "nothing", "targets": exporter.fleet.status.targets,
            "added": added, "removed": removed}


def _rediscover(exporter: Exporter, plan: Plan) -> None:
    """Discovery switched on, off or changed: the old one stops; a new one runs at once, and
    the targets it discovered last are kept until it answers."""
    if exporter.discovery is not None:
        exporter.discovery.close()
    if exporter.discovery_job is not None:
        exporter.discovery_job.remove()
        exporter.discovery_job = None
    exporter.discovery = None
    status = exporter.fleet.status
    discovery = plan.config.discovery
    if discovery is None:
        exporter.fleet.reconcile([])
        status.discovery_enabled = False
        status.discovery_success = status.discovery_last_success = None
        return
    exporter.discovery = OrganizationsDiscovery(exporter.aws, discovery,
                                                plan.discovery_regions, exporter.fleet,
                                                exporter.store)
    exporter.discovery_job = exporter.fleet.every(discovery.interval,
                                                  exporter.discovery.discover)
