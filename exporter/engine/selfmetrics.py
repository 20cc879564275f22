"""The families /metrics serves: the registered collectors' families and the engine's health
families over the snapshot (in exposition order), and the live self-metrics (API request
counts, rate-limit waits, the fleet, the shard, build information) and prometheus-client's
process and Python collectors, which are read at every scrape."""

from __future__ import annotations

import platform
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from importlib.metadata import version

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.aws.counting import ApiRequestCounter
from exporter.collectors import REGISTRY
from exporter.collectors.base import Settings
from exporter.engine.counters import FleetStatus, WaitCounter
from exporter.model import Snapshot, TargetKey, TargetResult
from exporter.render.families import (
    TARGET_LABELS,
    AnySpec,
    CounterFamily,
    Family,
    FamilySpec,
    Section,
    gauge,
    ordered,
    target_family,
)
from exporter.render.filter import KEEP_ALL, MetricFilter


def _refresh_health(target: TargetResult) -> tuple[bool, bool | None, float | None,
                                                   float | None]:
    """(completed, success, last success, duration) of the refresh (the jobs collector)."""
    for collector in REGISTRY:
        if collector.health == "refresh":
            health = target.health_of(collector.name)
            if health is not None:
                return (target.completed, health.success, health.last_success_at,
                        health.duration_seconds)
    return target.completed, None, None, None


def _success(target: TargetResult) -> tuple[bool, bool | None]:
    """(completed, success): all the success series depends on, so that a refresh that only
    changes the duration does not encode it again."""
    completed, success, _, _ = _refresh_health(target)
    return completed, success


def _add_success(family: Family, key: TargetKey, part: tuple[bool, bool | None]) -> None:
    completed, success = part
    if completed:
        family.add_metric([key.account_id, key.region], 1 if success else 0)


def _add_optional(family: Family, key: TargetKey, value: float | None) -> None:
    if value is not None:
        family.add_metric([key.account_id, key.region], value)


def _collector_health(index: int) -> Callable[[TargetResult], tuple[tuple[str, float], ...]]:
    """Per collector reporting as a collector: (name, success or duration)."""
    names = frozenset(c.name for c in REGISTRY if c.health == "collector")

    def part(target: TargetResult) -> tuple[tuple[str, float], ...]:
        return tuple((name, (1.0 if health.success else 0.0) if index == 0
                      else health.duration_seconds)
                     for name, health in target.health if name in names)
    return part


def _add_per_collector(family: Family, key: TargetKey,
                       values: tuple[tuple[str, float], ...]) -> None:
    for name, value in values:
        family.add_metric([key.account_id, key.region, name], value)


def health_families() -> list[AnySpec]:
    """The engine's families: how each target's refresh and collectors went."""
    return [
        target_family("macie_exporter_refresh_success", lambda: gauge(
            "macie_exporter_refresh_success",
            "1 if the last refresh of this target succeeded, 0 if it failed.", TARGET_LABELS),
            _success, _add_success, section=Section.REFRESH_HEALTH),
        target_family("macie_exporter_last_refresh_success_timestamp_seconds", lambda: gauge(
            "macie_exporter_last_refresh_success_timestamp_seconds",
            "When this target last refreshed successfully, in seconds since the Unix epoch.",
            TARGET_LABELS), lambda t: _refresh_health(t)[2], _add_optional,
            section=Section.REFRESH_HEALTH),
        target_family("macie_exporter_refresh_duration_seconds", lambda: gauge(
            "macie_exporter_refresh_duration_seconds",
            "How long the last refresh of this target took.", TARGET_LABELS),
            lambda t: _refresh_health(t)[3], _add_optional, section=Section.REFRESH_HEALTH),
        target_family("macie_exporter_collector_success", lambda: gauge(
            "macie_exporter_collector_success",
            "1 if the collector's last run for this target succeeded, 0 if it failed (its "
            "series keep their last values).", (*TARGET_LABELS, "collector")),
            _collector_health(0), _add_per_collector, section=Section.COLLECTOR_HEALTH),
        target_family("macie_exporter_collector_duration_seconds", lambda: gauge(
            "macie_exporter_collector_duration_seconds",
            "How long the collector's last run for this target took.",
            (*TARGET_LABELS, "collector")),
            _collector_health(1), _add_per_collector, section=Section.COLLECTOR_HEALTH),
    ]


def snapshot_families(settings: Settings | None = None,
                      enabled: Collection[str] | None = None,
                      keep: MetricFilter = KEEP_ALL) -> tuple[AnySpec, ...]:
    """The families of the snapshot for the collectors named in `enabled` (None: all of
    them) that `keep` keeps, in exposition order: per-job families, per-target ones, then
    health. A collector switched off, or a family filtered out, has no HELP/TYPE lines
    either, and is never rendered."""
    specs = [spec for spec in health_families() if spec.section == Section.REFRESH_HEALTH]
    for collector in REGISTRY:
        if enabled is None or collector.name in enabled:
            specs += collector.families(settings or Settings())
    specs += [spec for spec in health_families() if spec.section != Section.REFRESH_HEALTH]
    return ordered(spec for spec in specs if keep.keeps(spec.name, spec.kind))


class SnapshotCollector(RegistryCollector):
    """Metric families for the current snapshot; `snapshot` is read once per collection."""

    def __init__(self, snapshot: Callable[[], Snapshot],
                 families: Sequence[AnySpec] | None = None) -> None:
        self._snapshot = snapshot
        self.families = tuple(families) if families is not None else snapshot_families()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        for spec in self.families:
            yield spec.family(snapshot)


# ------------------------------------------------------------------ live self-metrics


def _fleet_families(fleet: FleetStatus, keep: MetricFilter) -> Iterator[Metric]:
    if keep.keeps("macie_exporter_targets", "gauge"):
        targets = gauge("macie_exporter_targets",
                        "Targets (account x region) this process polls: its shard of the "
                        "static and discovered targets.", ())
        targets.add_metric([], fleet.targets)
        yield targets
    if not fleet.discovery_enabled:
        return
    if keep.keeps("macie_exporter_discovery_success", "gauge"):
        success = gauge("macie_exporter_discovery_success",
                        "1 if the last discovery of the organisation's accounts succeeded, 0 if "
                        "it failed (the last discovered targets are kept).", ())
        if fleet.discovery_success is not None:
            success.add_metric([], 1 if fleet.discovery_success else 0)
        yield success
    if keep.keeps("macie_exporter_discovery_last_success_timestamp_seconds", "gauge"):
        last = gauge("macie_exporter_discovery_last_success_timestamp_seconds",
                     "When discovery last succeeded, in seconds since the Unix epoch.", ())
        if fleet.discovery_last_success is not None:
            last.add_metric([], fleet.discovery_last_success)
        yield last


def _shard_families(index: int, total: int, keep: MetricFilter) -> Iterator[Metric]:
    if keep.keeps("macie_exporter_shard_index", "gauge"):
        shard = gauge("macie_exporter_shard_index",
                      "This replica's shard (--shard.index): it polls the targets whose stable "
                      "hash modulo the number of shards is this index; 0 when unsharded.", ())
        shard.add_metric([], index)
        yield shard
    if keep.keeps("macie_exporter_shards", "gauge"):
        shards = gauge("macie_exporter_shards",
                       "Number of shards the targets are split across (--shard.total); 1 when "
                       "unsharded.", ())
        shards.add_metric([], total)
        yield shards


def api_requests_spec(requests: ApiRequestCounter) -> AnySpec:
    """The request counts, target by target: a target's part is its (operation, outcome,
    count) triples, so the targets not called since the last scrape are not encoded again."""
    def make() -> CounterFamily:
        return CounterFamily(
            "macie_exporter_api_requests",
            "HTTP requests sent to AWS, retried attempts included, by operation and outcome "
            "(success or the AWS error code).",
            labels=[*TARGET_LABELS, "operation", "outcome"],
        )

    def add(family: Family, key: TargetKey, counts: tuple[tuple[str, str, int], ...],
            lo: int, hi: int) -> None:
        for operation, outcome, count in counts:
            family.add_metric([key.account_id, key.region, operation, outcome], count)

    # Live figures, not the snapshot's: the argument parts() passes is not needed.
    return FamilySpec("macie_exporter_api_requests", make, add,
                      all_parts=lambda _snapshot: requests.by_target())


class SelfCollector(RegistryCollector):
    """Live self-metrics: API request counts, rate-limit waits, the fleet, the shard and build
    information; a family `keep` leaves out is not built."""

    def __init__(self, requests: ApiRequestCounter, waits: WaitCounter | None = None,
                 fleet: FleetStatus | None = None, build: Sequence[str] | None = None,
                 shard: tuple[int, int] = (0, 1), keep: MetricFilter = KEEP_ALL) -> None:
        spec = api_requests_spec(requests)
        self.requests = spec if keep.keeps(spec.name, spec.kind) else None
        self._waits = waits
        self._fleet = fleet
        self.shard = shard
        self._keep = keep
        self._build = list(build or (__version__, platform.python_version(), version("boto3")))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.requests is not None:
            yield self.requests.family(Snapshot())
        yield from self.collect_rest()

    def collect_rest(self) -> Iterator[Metric]:
        """Every family but the request counts (`requests`), which come first."""
        keep = self._keep
        if self._waits is not None and keep.keeps("macie_exporter_rate_limit_wait_seconds",
                                                  "counter"):
            waits = CounterFamily(
                "macie_exporter_rate_limit_wait_seconds",
                "Time AWS calls for this target waited for --aws.requests-per-second.",
                labels=list(TARGET_LABELS),
            )
            for target, seconds in self._waits.items():
                waits.add_metric(list(target), seconds)
            yield waits
        if self._fleet is not None:
            yield from _fleet_families(self._fleet, keep)
        yield from _shard_families(*self.shard, keep)
        if keep.keeps("macie_exporter_build_info", "gauge"):
            build = gauge(
                "macie_exporter_build_info",
                "Build information of the exporter; the value is always 1.",
                ("version", "python_version", "boto3_version"),
            )
            build.add_metric(self._build, 1)
            yield build


def runtime_collectors() -> CollectorRegistry:
    """prometheus-client's own process_*, python_info and python_gc_* collectors, on a
    registry of their own (not the library's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
