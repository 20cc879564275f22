"""Entry point: configuration → targets → scheduler + HTTP server (or one refresh with --once)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter import __version__, logs
from exporter.collect import ApiRequestCounter, SelfCollector, SnapshotCollector
from exporter.config import Config, ConfigError, TargetConfig, load
from exporter.exposition import CachedExposition
from exporter.logs import fields
from exporter.macie import ClientSettings, MacieTarget, default_region
from exporter.model import TargetKey
from exporter.refresh import Poller, SnapshotStore, TargetRefresher, refresh_all_once
from exporter.server import HttpServer, make_app
from exporter.simulator import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Simulator, demo_simulator
from exporter.webconfig import WebConfigError, WebConfigWatcher

log = logging.getLogger("exporter")
DEMO_REGIONS = ("eu-west-1", "us-east-1")


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


def _settings(config: Config) -> ClientSettings:
    return ClientSettings(
        endpoint_url=config.endpoint_url, retry_mode=config.retry_mode,
        max_attempts=config.max_attempts, connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout, concurrency=config.concurrency,
    )


def _regions(targets: Sequence[TargetConfig], fallback: Sequence[str]) -> list[TargetConfig]:
    """Targets with the SDK's default region (or the demo's regions) filled in."""
    out: list[TargetConfig] = []
    for target in targets:
        if target.region is not None:
            out.append(target)
            continue
        regions = list(fallback)
        if not regions:
            try:
                region = default_region()
            except ValueError as err:
                raise ConfigError(f"AWS SDK configuration: {err}") from None
            if region is None:
                raise ConfigError("--aws.regions: no region given and the AWS SDK has no "
                                  "default region (set --aws.regions or AWS_DEFAULT_REGION)")
            regions = [region]
        out.extend(replace(target, region=r) for r in regions)
    return out


class Exporter:
    """The assembled process: targets, refreshers, the registry and (optionally) the demo."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.simulator: Simulator | None = None
        settings = _settings(config)
        fallback: Sequence[str] = ()
        if config.demo:
            self.simulator = demo_simulator()
            url = self.simulator.start()
            settings = replace(settings, endpoint_url=url, sts_endpoint_url=url,
                               static_credentials=(DEMO_ACCESS_KEY, DEMO_SECRET_KEY))
            fallback = DEMO_REGIONS
        targets = _regions(config.targets, fallback)
        self.requests = ApiRequestCounter()
        apis = [MacieTarget(t, t.region or "", settings, self.requests, config.list_filter)
                for t in targets]
        self.store = SnapshotStore(
            [TargetKey(a.identity.account_id, a.identity.region) for a in apis]
        )
        self.refreshers = [
            TargetRefresher(
                i, api, self.store, tag_keys=config.tag_keys, concurrency=config.concurrency,
                full_redescribe_interval=config.full_redescribe_interval,
                interval=config.refresh_interval, terminal_max_age=config.terminal_max_age,
            )
            for i, api in enumerate(apis)
        ]
        live = SelfCollector(self.requests)
        # Our collectors describe nothing (registering does no work), so name[] filters need
        # support_collectors_without_names to reach them.
        self.registry = CollectorRegistry(auto_describe=False,
                                          support_collectors_without_names=True)
        self.registry.register(SnapshotCollector(self.store.get, config.tag_keys))
        self.registry.register(live)
        self.exposition = CachedExposition(self.store.get, config.tag_keys, [live])
        self.store.subscribe(self.exposition.snapshot_changed)

    def close(self) -> None:
        for refresher in self.refreshers:
            refresher.close()
        if self.simulator is not None:
            self.simulator.stop()


def _once(exporter: Exporter) -> int:
    ok = refresh_all_once(exporter.refreshers)
    sys.stdout.buffer.write(generate_latest(exporter.registry))
    sys.stdout.flush()
    exporter.close()
    return 0 if ok else 1


def _serve(exporter: Exporter) -> int:
    config = exporter.config
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
            exporter.registry, config.telemetry_path, exporter.exposition),
            web)
    except OSError as err:
        exporter.close()
        address = f"{config.listen_host}:{config.listen_port}"
        print(f"macie-exporter: error: --web.listen-address: cannot listen on {address}: "
              f"{err.strerror or err}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra=fields(signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    poller = Poller(exporter.refreshers, config.refresh_interval)
    exporter.exposition.start()
    server.start()
    poller.start()
    log.info("listening", extra=fields(
        address=server.address, telemetry_path=config.telemetry_path, version=__version__,
        tls=bool(web and web.current().ssl_context),
        targets=len(exporter.refreshers), demo=config.demo,
        refresh_interval_seconds=config.refresh_interval))
    stop.wait()
    poller.stop()
    server.stop()
    exporter.exposition.stop()
    exporter.close()
    # A refresh still waiting on AWS would hold the interpreter's exit (it joins the pool
    # threads) until its timeouts and retries run out: give it a moment, then leave without it.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(r.running for r in exporter.refreshers):
        time.sleep(0.05)
    in_flight = sum(r.running for r in exporter.refreshers)
    log.info("stopped", extra=fields(abandoned_refreshes=in_flight))
    if in_flight:
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    try:
        config = load(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"macie-exporter: error: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    try:
        exporter = Exporter(config)
    except ConfigError as err:
        print(f"macie-exporter: error: {err}", file=sys.stderr)
        return 2
    return _once(exporter) if config.once else _serve(exporter)
