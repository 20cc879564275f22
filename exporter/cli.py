"""Entry point: configuration → targets → scheduler + HTTP server (or one refresh with --once)."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter import __version__, logs
from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings, available_regions, default_region, partition_of
from exporter.config import ALL_REGIONS, Config, ConfigError, load
from exporter.engine.counters import FleetStatus, WaitCounter
from exporter.engine.discovery import OrganizationsDiscovery
from exporter.engine.fleet import Fleet
from exporter.engine.pool import CallPool
from exporter.engine.runner import TargetRefresher, refresh_all_once
from exporter.engine.selfmetrics import SelfCollector, SnapshotCollector, runtime_collectors
from exporter.engine.store import SnapshotStore
from exporter.logs import fields
from exporter.model import (
    DiscoveryConfig,
    OrganizationsConfig,
    Snapshot,
    TargetConfig,
    TargetKey,
)
from exporter.reload import Plan, Reloader, ReloadStatus, check_interval, families_of
from exporter.reload import refresh_settings as _refresh_settings
from exporter.render.exposition import CachedExposition
from exporter.render.families import AnySpec
from exporter.render.filter import filtered
from exporter.web.server import HttpServer, ListenError, endpoints, make_app
from exporter.web.stats import HttpStats
from exporter.web.webconfig import WebConfigError, WebConfigWatcher, load_web_config

if TYPE_CHECKING:
    from exporter.demo.simulator import Simulator

log = logging.getLogger("exporter")
# The exposition is rendered once swaps pause for half a second, at most 10 s after a change.
RENDER_SETTLE, RENDER_MAX_DELAY, RENDER_MIN_GAP = 0.5, 10.0, 5.0
# The whole gap from 100 targets on: at the default 60 s interval they swap more than once a
# second, each at its phase, so the settle wait alone would render about every second.
RENDER_GAP_FULL_AT = 100

M_ARENA_MAX = -8  # glibc's malloc.h
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at two, unless MALLOC_ARENA_MAX is set; True if capped.

    glibc gives threads their own arenas, up to 8 per core. With a thread per scrape, a pool of
    describe threads and the renderer, freed memory ends up spread over many arenas and RSS
    steps up over hundreds of refreshes (benchmarks/README.md). It must run before any thread
    starts; on another libc (musl, macOS) it does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS) == 1)


def _demo(config: Config) -> Config:
    """The demo discovers its small organisation, as a real deployment would, unless the
    configuration names its own targets or discovery."""
    from exporter.demo.story import DEMO_ORGANIZATION_ROLE  # only the demo loads demo code

    if config.discovery is not None or config.targets != (TargetConfig(None),):
        return config
    return replace(config, targets=(), discovery=DiscoveryConfig(
        config.refresh_interval * 10, OrganizationsConfig(DEMO_ORGANIZATION_ROLE)))


def _settings(config: Config) -> AwsSettings:
    return AwsSettings(
        endpoint_url=config.endpoint_url, retry_mode=config.retry_mode,
        max_attempts=config.max_attempts, connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout, max_pool_connections=config.concurrency + 2,
    )


def _phase(key: TargetKey) -> float:
    return key.phase


def _sdk_region() -> str | None:
    try:
        return default_region()
    except ValueError as err:
        raise ConfigError(f"AWS SDK configuration: {err}") from None


def _expand(regions: Sequence[str | None], fallback: Sequence[str],
            partition: str) -> list[str]:
    """Regions with `all` and the default (None: the demo's, or the SDK's) filled in."""
    out: list[str] = []
    for region in regions:
        if region == ALL_REGIONS:
            out.extend(available_regions(partition))
        elif region is not None:
            out.append(region)
        elif fallback:
            out.extend(fallback)
        else:
            found = _sdk_region()
            if found is None:
                raise ConfigError("--aws.regions: no region given and the AWS SDK has no "
                                  "default region (set --aws.regions or AWS_DEFAULT_REGION)")
            out.append(found)
    return list(dict.fromkeys(out))


def _regions(targets: Sequence[TargetConfig], fallback: Sequence[str]) -> list[TargetConfig]:
    """One target per region, `all` and the default region filled in."""
    return [replace(target, region=region) for target in targets
            for region in _expand([target.region], fallback, partition_of(target.role_arn))]


def _targets_and_regions(config: Config, fallback: Sequence[str]
                         ) -> tuple[tuple[TargetConfig, ...], tuple[str, ...]]:
    """The configured targets one per region, and the regions discovery looks in (none
    without discovery), `all` and the default region filled in; raises ConfigError."""
    regions: Sequence[str] = ()
    if config.discovery is not None:
        partition = partition_of(config.discovery.organizations.role_arn)
        regions = _expand(config.regions or (None,), fallback, partition)
    return tuple(_regions(config.targets, fallback)), tuple(regions)


class Exporter:
    """The assembled process: AWS plumbing, call pool, fleet, registry, optional demo."""

    def __init__(self, config: Config) -> None:
        self._began = time.monotonic()
        self.simulator: Simulator | None = None
        # What the demo, or the process's own region, sets in every AwsSettings.
        self._adjust: Callable[[AwsSettings], AwsSettings]
        self._fallback: Sequence[str] = ()  # the regions of a target that names none
        if config.demo:
            from exporter.demo.story import (  # only the demo loads demo code
                DEMO_ACCESS_KEY,
                DEMO_REGIONS,
                DEMO_SECRET_KEY,
                demo_simulator,
            )
            self.simulator = demo_simulator()
            url = self.simulator.start()
            self._adjust = lambda settings: replace(
                settings, endpoint_url=url, sts_endpoint_url=url,
                organizations_endpoint_url=url, logs_endpoint_url=url,
                static_credentials=(DEMO_ACCESS_KEY, DEMO_SECRET_KEY))
            self._fallback = DEMO_REGIONS
        else:
            # AssumeRole goes to STS in the exporter's own region when it has one (else the
            # partition's first region), never to an opt-in region an account may not have on.
            region = _sdk_region()
            self._adjust = lambda settings: replace(settings, sts_region=region)
        plan = self.current = self.plan(config)
        config = self.config = plan.config
        settings = plan.aws
        self.requests = ApiRequestCounter()
        self.waits = WaitCounter()
        self.status = FleetStatus()
        self.aws = Aws(settings, self.requests)
        # Targets in phase order: those that refresh in the same seconds are neighbours in
        # every family, so a render encodes again a few chunks, not nearly all of them.
        self.store = SnapshotStore(pending=config.discovery is not None, order=_phase)
        # Until every target has refreshed, background calls (the collectors, the first
        # describes of terminal jobs) take only the turns the refreshes leave; then none until
        # the render that turns /readyz 200 is published.
        self.pool = CallPool(config.concurrency, rate=config.requests_per_second,
                             on_wait=self._waited, calls_made=Aws.calls_made,
                             hold_background=lambda: not self.store.ready(),
                             pause_background=lambda: self.exposition.readying())
        self.fleet = Fleet(self.aws, self.pool, self.store, plan.refresh, self.requests,
                           self.waits, shard_index=config.shard_index,
                           shard_total=config.shard_total, status=self.status)
        self.fleet.add_static(plan.static)
        self.discovery: OrganizationsDiscovery | None = None
        self.discovery_job: Any = None  # its APScheduler job, once started
        if config.discovery is not None:
            self.discovery = OrganizationsDiscovery(self.aws, config.discovery,
                                                    plan.discovery_regions, self.fleet,
                                                    self.store)
        # The metric filters cannot change in place (exporter.reload.KEPT).
        keep = config.metric_filter
        self.live = SelfCollector(self.requests, self.waits, self.status, keep=keep,
                                  shard=(config.shard_index, config.shard_total))
        self.reload_status = ReloadStatus()
        # What --once prints (the server serves the cached exposition).
        self.registry = CollectorRegistry(auto_describe=False)
        # The refresh's collectors and the ones switched on: a collector switched off, or a
        # family --metrics.* filters out, has no families, not even HELP and TYPE lines.
        families = families_of(plan.refresh, keep)
        self.snapshot_collector = SnapshotCollector(self.store.get, families)
        self.registry.register(self.snapshot_collector)
        self.registry.register(self.live)
        self.http_stats = HttpStats(endpoints(config.telemetry_path))
        others = [filtered(self.reload_status, keep), filtered(self.http_stats, keep)]
        if not config.disable_exporter_metrics:
            others.append(filtered(runtime_collectors(), keep))
        for collector in others:
            self.registry.register(collector)
        self.exposition = CachedExposition(self.store.get, families, [self.live, *others],
                                           settle=RENDER_SETTLE, max_delay=RENDER_MAX_DELAY,
                                           min_gap=RENDER_MIN_GAP,
                                           gap_full_at=RENDER_GAP_FULL_AT,
                                           published=self._published,
                                           ready=self.store.ready)
        self.store.subscribe(self.exposition.snapshot_changed)
        self._frozen = False
        self._served_ready = False
        self.store.subscribe(self._freeze_when_ready)

    def _published(self, snapshot: Snapshot | None) -> None:
        """The renderer published `snapshot` (None: it stopped): the store learns it, paused
        background calls may go on, and the first ready one is logged (/readyz turns 200)."""
        self.store.published(snapshot)
        self.pool.wake()
        if snapshot is not None and snapshot.ready and not self._served_ready:
            self._served_ready = True
            log.info("ready: /metrics serves every target's first refresh",
                     extra=fields(targets=len(snapshot.targets),
                                  after_s=round(time.monotonic() - self._began, 1)))

    def _freeze_when_ready(self) -> None:
        """Once ready, what the process holds (the start-up's results, caches and chunks: over
        a million objects at 10,200 targets) leaves the garbage collector's generations
        (`gc.freeze`). Each full collection had walked all of it, 1.2 s at that size, every
        minute or so; what is made later is collected as before, and what was frozen is
        still freed when nothing refers to it."""
        if self._frozen or not self.store.ready():
            return
        self._frozen = True
        log.info("every target refreshed once; rendering", extra=fields(
            targets=len(self.store.get().targets),
            after_s=round(time.monotonic() - self._began, 1)))
        gc.collect()  # garbage in cycles first: frozen, it would never be collected
        gc.freeze()

    def plan(self, config: Config) -> Plan:
        """What `config` means for this process (the demo's organisation, regions filled in);
        raises ConfigError as loading does. Changes nothing."""
        config = _demo(config) if config.demo else config
        targets, regions = _targets_and_regions(config, self._fallback)
        return Plan(config, targets, regions, _refresh_settings(config),
                    self._adjust(_settings(config)))

    def set_families(self, families: Sequence[AnySpec]) -> None:
        """The snapshot's families from now on (a reload switched collectors or tag labels)."""
        self.snapshot_collector.families = tuple(families)
        self.exposition.set_families(families)

    @property
    def refreshers(self) -> list[TargetRefresher]:
        return self.fleet.refreshers

    def _waited(self, owner: object, seconds: float) -> None:
        if isinstance(owner, TargetRefresher):
            self.waits.add(owner.key, seconds)

    def start(self) -> None:
        """Start the call pool and the schedules (discovery first, then every target)."""
        self.pool.start()
        if self.discovery is not None:
            assert self.config.discovery is not None
            self.discovery_job = self.fleet.every(self.config.discovery.interval,
                                                  self.discovery.discover)
        self.fleet.start()

    def close(self) -> None:
        self.fleet.stop()
        self.pool.stop()
        if self.simulator is not None:
            self.simulator.stop()


def _once(exporter: Exporter) -> int:
    exporter.pool.start()
    discovered = exporter.discovery.discover() if exporter.discovery is not None else True
    ok = refresh_all_once(exporter.refreshers) and discovered
    # The collectors queued after each refresh; their answers are part of the output.
    exporter.pool.wait_idle(exporter.config.read_timeout * exporter.config.max_attempts * 4)
    sys.stdout.buffer.write(generate_latest(exporter.registry))
    sys.stdout.flush()
    exporter.close()
    return 0 if ok else 1


def _serve(exporter: Exporter, argv: Sequence[str]) -> int:
    config = exporter.config
    reloader = Reloader(exporter, argv, interval=check_interval(os.environ))
    web = None
    if config.web_config_file:
        try:
            web = WebConfigWatcher(config.web_config_file)
        except WebConfigError as err:
            exporter.close()
            print(f"macie-exporter: error: --web.config.file: {err}", file=sys.stderr)
            return 2
    try:
        server = HttpServer(config.listen_host, config.listen_port, make_app(
            config.telemetry_path, exporter.exposition, reloader.http), web,
            exporter.http_stats, also=config.listen_addresses[1:])
    except ListenError as err:
        exporter.close()
        print(f"macie-exporter: error: --web.listen-address: cannot listen on {err.address}: "
              f"{err.strerror or err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra=fields(signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reloader.signalled())
    exporter.store.rendered_in_background()
    exporter.exposition.start()
    exporter.start()
    reloader.start()
    server.start()
    for address in server.addresses:  # one line per address, the first as before
        log.info("listening", extra=fields(
            address=address, telemetry_path=config.telemetry_path, version=__version__,
            tls=bool(web and web.current().ssl_context),
            targets=len(exporter.refreshers), demo=config.demo,
            refresh_interval_seconds=config.refresh_interval))
    # Waited on in slices: a SIGTERM that the kernel hands to another thread only sets
    # Python's flag, and a wait without a timeout would never run the handler (seen in CI:
    # the exporter ignored SIGTERM until killed).
    while not stop.wait(0.5):
        pass
    reloader.stop()
    server.stop()
    exporter.exposition.stop()
    exporter.close()
    # A refresh still waiting on AWS would hold the interpreter's exit (it joins the pool
    # threads) until its timeouts and retries run out: give it a moment, then leave without it.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and exporter.pool.busy:
        time.sleep(0.05)
    in_flight = exporter.pool.busy
    log.info("stopped", extra=fields(abandoned_calls=in_flight))
    # Interpreter exit joins non-daemon threads, such as a scheduler thread still in a
    # discovery's AWS call: leave without them too.
    if in_flight or any(t.is_alive() and not t.daemon for t in threading.enumerate()
                        if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def check(config: Config) -> None:
    """What start-up would refuse beyond `load()`: the web config file (TLS files included)
    and the targets' regions. No AWS call, no socket, no thread: raises ConfigError."""
    if config.web_config_file:
        try:
            load_web_config(config.web_config_file)
        except WebConfigError as err:
            raise ConfigError(f"--web.config.file: {err}") from None
    if not config.demo:  # the demo's own story fills in its targets and regions
        _targets_and_regions(config, ())


# Full garbage collections at most once per this many of the middle generation's (Python's
# default: 10). At 10,200 targets the heap grows to a million long-lived objects in the first
# two minutes, and each full collection walks all of them: the default made a dozen, 8.5 s.
FULL_COLLECTION_EVERY = 100
# A young collection once this many more containers are alive than at the last (Python's
# default: 700). Each render and scrape makes containers of 10,200 items that live until the
# next, and a young collection walked whatever was alive: at 10,200 targets, in the steady
# state, 400 young and 36 middle collections a minute took 0.65 s of CPU.
YOUNG_COLLECTION_EVERY = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, FULL_COLLECTION_EVERY)
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = load(argv)
        if config.check:
            check(config)
    except ConfigError as err:
        print(f"macie-exporter: error: {err}", file=sys.stderr)
        return 2
    if config.check:
        print("config OK")
        return 0
    logs.setup(config.log_level, config.log_format)
    try:
        exporter = Exporter(config)
    except ConfigError as err:
        print(f"macie-exporter: error: {err}", file=sys.stderr)
        return 2
    return _once(exporter) if config.once else _serve(exporter, argv)
