"""The families /metrics serves: the registered collectors' families and the engine's health
families over the snapshot (in exposition order), and the live self-metrics (API request
counts, rate-limit waits, the fleet, build information), which are read at every scrape."""

from __future__ import annotations

import platform
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from importlib.metadata import version

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector

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
                      enabled: Collection[str] | None = None) -> tuple[AnySpec, ...]:
    """The families of the snapshot for the collectors named in `enabled` (None: all of
    them), in exposition order: per-job families, per-target ones, then health. A collector
    switched off has no families, no HELP/TYPE lines either."""
    specs = [spec for spec in health_families() if spec.section == Section.REFRESH_HEALTH]
    for collector in REGISTRY:
        if enabled is None or collector.name in enabled:
            specs += collector.families(settings or Settings())
    specs += [spec for spec in health_families() if spec.section != Section.REFRESH_HEALTH]
    return ordered(specs)


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


def _fleet_families(fleet: FleetStatus) -> Iterator[Metric]:
    targets = gauge("macie_exporter_targets",
                    "Targets (account x region) this process polls: its shard of the static "
                    "and discovered targets.", ())
    targets.add_metric([], fleet.targets)
    yield targets
    if not fleet.discovery_enabled:
        return
    success = gauge("macie_exporter_discovery_success",
                    "1 if the last discovery of the organisation's accounts succeeded, 0 if it "
                    "failed (the last discovered targets are kept).", ())
    last = gauge("macie_exporter_discovery_last_success_timestamp_seconds",
                 "When discovery last succeeded, in seconds since the Unix epoch.", ())
    if fleet.discovery_success is not None:
        success.add_metric([], 1 if fleet.discovery_success else 0)
    if fleet.discovery_last_success is not None:
        last.add_metric([], fleet.discovery_last_success)
    yield success
    yield last


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
        assert isinstance(family, CounterFamily)
        for operation, outcome, count in counts:
            family.add_metric([key.account_id, key.region, operation, outcome], count)

    # Live figures, not the snapshot's: the argument parts() passes is not needed.
    return FamilySpec("macie_exporter_api_requests", make, add,
                      all_parts=lambda _snapshot: requests.by_target())


class SelfCollector(RegistryCollector):
    """Live self-metrics: API request counts, rate-limit waits and build information."""

    def __init__(self, requests: ApiRequestCounter, waits: WaitCounter | None = None,
                 fleet: FleetStatus | None = None, build: Sequence[str] | None = None) -> None:
        self.requests = api_requests_spec(requests)
        self._waits = waits
        self._fleet = fleet
        self._build = list(build or (__version__, platform.python_version(), version("boto3")))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield self.requests.family(Snapshot())
        yield from self.collect_rest()

    def collect_rest(self) -> Iterator[Metric]:
        """Every family but the request counts (`requests`), which come first."""
        if self._waits is not None:
            waits = CounterFamily(
                "macie_exporter_rate_limit_wait_seconds",
                "Time AWS calls for this target waited for --aws.requests-per-second.",
                labels=list(TARGET_LABELS),
            )
            for target, seconds in self._waits.items():
                waits.add_metric(list(target), seconds)
            yield waits
        if self._fleet is not None:
            yield from _fleet_families(self._fleet)
        build = gauge(
            "macie_exporter_build_info",
            "Build information of the exporter; the value is always 1.",
            ("version", "python_version", "boto3_version"),
        )
        build.add_metric(self._build, 1)
        yield build
