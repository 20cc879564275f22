"""Turn a `Snapshot` into Prometheus metric families; no AWS call happens here."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.counters import ApiRequestCounter, FleetStatus, WaitCounter
from exporter.model import (
    JOB_STATUSES,
    MACIE_STATUSES,
    MEMBER_STATUSES,
    SEVERITIES,
    Counts,
    Job,
    Snapshot,
    TargetKey,
    TargetResult,
    Usage,
    tag_label_name,
)

JOB_LABELS = ("account_id", "region", "job_id", "job_name")
TARGET_LABELS = ("account_id", "region")


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _state_set(family: GaugeMetricFamily, labels: Sequence[str], states: Sequence[str],
               current: str) -> None:
    """One series per documented state, 1 for the current one; an undocumented one is kept."""
    for state in states:
        family.add_metric([*labels, state], 1 if current == state else 0)
    if current not in states:
        family.add_metric([*labels, current], 1)


# Per-job numeric series: (metric suffix, HELP text, Job attribute).
_JOB_VALUES: tuple[tuple[str, str, Callable[[Job], float | bool | None]], ...] = (
    (
        "macie_classification_job_runs",
        "Number of times the job has run (statistics.numberOfRuns).",
        lambda j: j.runs,
    ),
    (
        "macie_classification_job_objects_to_process",
        "Approximate number of objects the job has yet to process during its current run "
        "(statistics.approximateNumberOfObjectsToProcess).",
        lambda j: j.objects_to_process,
    ),
    (
        "macie_classification_job_last_run_error",
        "1 if account- or bucket-level errors occurred during the job's most recent run "
        "(lastRunErrorStatus.code is ERROR), 0 otherwise.",
        lambda j: j.last_run_error,
    ),
    (
        "macie_classification_job_created_timestamp_seconds",
        "When the job was created, in seconds since the Unix epoch.",
        lambda j: j.created_at,
    ),
    (
        "macie_classification_job_last_run_timestamp_seconds",
        "When the job's most recent run started, in seconds since the Unix epoch.",
        lambda j: j.last_run_at,
    ),
    (
        "macie_classification_job_paused_timestamp_seconds",
        "When a user paused the job (userPausedDetails.jobPausedAt), in seconds since the "
        "Unix epoch.",
        lambda j: j.paused_at,
    ),
    (
        "macie_classification_job_pause_expiry_timestamp_seconds",
        "When Macie cancels the user-paused job or job run unless it is resumed "
        "(userPausedDetails.jobExpiresAt), in seconds since the Unix epoch.",
        lambda j: j.pause_expires_at,
    ),
)


Part = Any
Family = GaugeMetricFamily


@dataclass(frozen=True)
class FamilySpec:
    """One metric family of the snapshot, built target by target.

    A target's samples in the family depend on its key and its *part* alone (`parts`), so a
    renderer may keep a target's rendered samples for as long as its part stays equal. `add`
    adds the samples of units `lo` to `hi` of a part: the jobs of a per-job family, so that a
    target with many jobs can be rendered a slice at a time; other parts are one unit.
    """

    make: Callable[[], Any]  # an empty family (a prometheus-client *MetricFamily)
    add: Callable[[Any, TargetKey, Part, int, int], None]
    part: Callable[[TargetResult], Part] | None = None
    size: Callable[[Part], int] = lambda part: 1
    # Parts that depend on more than their own target (usage: who reports an account).
    all_parts: Callable[[Snapshot], Iterable[tuple[TargetKey, Part]]] | None = None

    def parts(self, snapshot: Snapshot) -> Iterable[tuple[TargetKey, Part]]:
        if self.all_parts is not None:
            return self.all_parts(snapshot)
        part = self.part
        assert part is not None
        return ((target.key, part(target)) for target in snapshot.targets)

    def family(self, snapshot: Snapshot) -> Metric:
        """The whole family for `snapshot`."""
        family: Metric = self.make()
        for key, part in self.parts(snapshot):
            self.add(family, key, part, 0, self.size(part))
        return family


def _ids(region: str, job: Job) -> list[str]:
    return [job.account_id, region, job.job_id, job.name]


def _jobs(target: TargetResult) -> tuple[Job, ...]:
    return target.jobs


def _count_jobs(jobs: tuple[Job, ...]) -> int:
    return len(jobs)


def _job_spec(make: Callable[[], Family],
              add_job: Callable[[Family, str, Job], None]) -> FamilySpec:
    """A per-job family: a target's part is its jobs."""
    def add(family: Family, key: TargetKey, jobs: tuple[Job, ...], lo: int, hi: int) -> None:
        for job in jobs[lo:hi]:
            add_job(family, key.region, job)
    return FamilySpec(make, add, part=_jobs, size=_count_jobs)


def _target_spec(make: Callable[[], Family], part: Callable[[TargetResult], Part],
                 add: Callable[[Family, TargetKey, Part], None]) -> FamilySpec:
    """A family with a few series per target; `add` gets the target's key and part."""
    def add_all(family: Family, key: TargetKey, value: Part, lo: int, hi: int) -> None:
        add(family, key, value)
    return FamilySpec(make, add_all, part=part)


def _info_family() -> Family:
    return _gauge(
        "macie_classification_job_info",
        "Information about a classification job; the value is always 1.",
        (*JOB_LABELS, "job_type", "schedule", "managed_data_identifier_selector"),
    )


def _add_info(family: Family, region: str, job: Job) -> None:
    family.add_metric([*_ids(region, job), job.job_type, job.schedule,
                       job.managed_data_identifier_selector], 1)


def _status_family() -> Family:
    return _gauge(
        "macie_classification_job_status",
        "Current status of the job: 1 for the current status, 0 for the others.",
        (*JOB_LABELS, "status"),
    )


def _add_status(family: Family, region: str, job: Job) -> None:
    _state_set(family, _ids(region, job), JOB_STATUSES, job.status)


def _value_spec(name: str, documentation: str,
                get: Callable[[Job], float | bool | None]) -> FamilySpec:
    def make() -> Family:
        return _gauge(name, documentation, JOB_LABELS)

    def add_job(family: Family, region: str, job: Job) -> None:
        value = get(job)
        if value is not None:
            family.add_metric(_ids(region, job), float(value))
    return _job_spec(make, add_job)


def _tags_spec(tag_keys: tuple[str, ...]) -> FamilySpec:
    labels = tuple(tag_label_name(k) for k in tag_keys)

    def make() -> Family:
        return _gauge(
            "macie_classification_job_tags",
            "Allow-listed tags of the job as labels; the value is always 1.",
            (*JOB_LABELS, *labels),
        )

    def add_job(family: Family, region: str, job: Job) -> None:
        if job.tags is not None:
            present = dict(job.tags)
            family.add_metric([*_ids(region, job), *(present.get(k, "") for k in tag_keys)], 1)
    return _job_spec(make, add_job)


def _findings_family() -> Family:
    return _gauge(
        "macie_classification_job_findings",
        "Findings the job produced, by severity, archived (suppressed) findings not "
        "counted (GetFindingStatistics). Macie keeps findings for 90 days, so a count can "
        "fall.",
        (*JOB_LABELS, "severity"),
    )


FindingsPart = tuple[tuple[Job, ...], tuple[tuple[str, tuple[int, int, int]], ...] | None]


def _findings_part(target: TargetResult) -> FindingsPart:
    return target.jobs, target.collected.findings


def _findings_size(part: FindingsPart) -> int:
    return len(part[0])


def _add_findings(family: Family, key: TargetKey, part: FindingsPart, lo: int, hi: int) -> None:
    jobs, found = part
    if found is None:  # the findings collector has not succeeded for this target yet
        return
    counts = dict(found)
    for job in jobs[lo:hi]:
        # A job the last findings answers did not cover (new since) has no series until they do.
        job_counts = counts.get(job.job_id)
        if job_counts is not None:
            ids = _ids(key.region, job)
            for severity, count in zip(SEVERITIES, job_counts, strict=True):
                family.add_metric([*ids, severity], count)


def _counts_family() -> Family:
    return _gauge(
        "macie_classification_jobs",
        "Number of classification jobs listed, by status and type.",
        (*TARGET_LABELS, "status", "job_type"),
    )


def _add_counts(family: Family, key: TargetKey, counts: Counts) -> None:
    for (account, state, job_type), count in counts:
        family.add_metric([account, key.region, state, job_type], count)


def _macie_status_family() -> Family:
    return _gauge(
        "macie_status",
        "Macie's status in the account and region, from GetMacieSession: 1 for the current "
        "status, 0 for the others. DISABLED means Macie is not enabled there.",
        (*TARGET_LABELS, "status"),
    )


def _add_macie_status(family: Family, key: TargetKey, status: str | None) -> None:
    if status is not None:
        _state_set(family, [key.account_id, key.region], MACIE_STATUSES, status)


def _usage_parts(snapshot: Snapshot) -> list[tuple[TargetKey, tuple[Usage, ...]]]:
    """Each target's usage records that are shown: one per (account, region, usage type), an
    account's own record winning over its administrator's copy."""
    winner: dict[tuple[str, str, str], tuple[int, int]] = {}  # -> (target, record) positions
    for own in (True, False):
        for t, target in enumerate(snapshot.targets):
            for i, item in enumerate(target.collected.usage or ()):
                if (item.account_id == target.key.account_id) == own:
                    winner.setdefault((item.account_id, target.key.region, item.usage_type),
                                      (t, i))
    shown = set(winner.values())
    return [(target.key, tuple(item for i, item in enumerate(target.collected.usage or ())
                               if (t, i) in shown))
            for t, target in enumerate(snapshot.targets)]


def _usage_spec(make: Callable[[], Family],
                add_item: Callable[[Family, list[str], Usage], None]) -> FamilySpec:
    def add(family: Family, key: TargetKey, items: tuple[Usage, ...], lo: int, hi: int) -> None:
        for item in items:
            add_item(family, [item.account_id, key.region, item.usage_type], item)
    return FamilySpec(make, add, all_parts=_usage_parts)


def _cost_family() -> Family:
    return _gauge(
        "macie_usage_estimated_cost",
        "Estimated cost of Macie this month to date, by account and usage type "
        "(GetUsageStatistics estimatedCost). An administrator account reports its members.",
        (*TARGET_LABELS, "usage_type", "currency"),
    )


def _add_cost(family: Family, labels: list[str], item: Usage) -> None:
    if item.estimated_cost is not None:
        family.add_metric([*labels, item.currency], item.estimated_cost)


def _reached_family() -> Family:
    return _gauge(
        "macie_usage_quota_reached",
        "1 if the account has reached the quota of this usage type "
        "(serviceLimit.isServiceLimited), 0 otherwise. Macie pauses jobs that would go past "
        "it.",
        (*TARGET_LABELS, "usage_type"),
    )


def _add_reached(family: Family, labels: list[str], item: Usage) -> None:
    if item.quota_reached is not None:
        family.add_metric(labels, 1 if item.quota_reached else 0)


def _quota_family() -> Family:
    return _gauge(
        "macie_usage_quota_bytes",
        "The quota of this usage type in bytes (serviceLimit.value, a terabyte being 2^40 "
        "bytes); absent when the API gives no quota.",
        (*TARGET_LABELS, "usage_type"),
    )


def _add_quota(family: Family, labels: list[str], item: Usage) -> None:
    if item.quota_bytes is not None:
        family.add_metric(labels, item.quota_bytes)


def _members_family() -> Family:
    return _gauge(
        "macie_member_relationship_status",
        "Relationship of each member account with this Macie administrator account "
        "(ListMembers): 1 for the current status, 0 for the others.",
        (*TARGET_LABELS, "member_account_id", "status"),
    )


def _add_members(family: Family, key: TargetKey,
                 members: tuple[tuple[str, str], ...] | None) -> None:
    for member, status in members or ():
        _state_set(family, [key.account_id, key.region, member], MEMBER_STATUSES, status)


def _refresh_success_family() -> Family:
    return _gauge(
        "macie_exporter_refresh_success",
        "1 if the last refresh of this target succeeded, 0 if it failed.",
        TARGET_LABELS,
    )


def _add_when_completed(family: Family, key: TargetKey, part: tuple[bool, float]) -> None:
    """(completed, value): the value once the target has finished a refresh."""
    completed, value = part
    if completed:
        family.add_metric([key.account_id, key.region], value)


def _last_success_family() -> Family:
    return _gauge(
        "macie_exporter_last_refresh_success_timestamp_seconds",
        "When this target last refreshed successfully, in seconds since the Unix epoch.",
        TARGET_LABELS,
    )


def _duration_family() -> Family:
    return _gauge(
        "macie_exporter_refresh_duration_seconds",
        "How long the last refresh of this target took.",
        TARGET_LABELS,
    )


def _add_optional(family: Family, key: TargetKey, value: float | None) -> None:
    if value is not None:
        family.add_metric([key.account_id, key.region], value)


def _describe_failures_family() -> Family:
    return _gauge(
        "macie_exporter_describe_failures",
        "Jobs whose DescribeClassificationJob call failed in the last refresh; they keep "
        "their last known values.",
        TARGET_LABELS,
    )


def _collector_success_family() -> Family:
    return _gauge(
        "macie_exporter_collector_success",
        "1 if the collector's last run for this target succeeded, 0 if it failed (its "
        "series keep their last values).",
        (*TARGET_LABELS, "collector"),
    )


def _collector_duration_family() -> Family:
    return _gauge(
        "macie_exporter_collector_duration_seconds",
        "How long the collector's last run for this target took.",
        (*TARGET_LABELS, "collector"),
    )


def _add_per_collector(family: Family, key: TargetKey,
                       values: tuple[tuple[str, float], ...]) -> None:
    for name, value in values:
        family.add_metric([key.account_id, key.region, name], value)


def _collector_successes(target: TargetResult) -> tuple[tuple[str, float], ...]:
    return tuple((name, 1 if health.success else 0) for name, health in target.collected.health)


def _collector_durations(target: TargetResult) -> tuple[tuple[str, float], ...]:
    return tuple((name, health.duration_seconds) for name, health in target.collected.health)


def snapshot_families(tag_keys: Sequence[str] = ()) -> tuple[FamilySpec, ...]:
    """Every family of the snapshot, in exposition order: the per-job families, then those
    that do not grow with the number of jobs."""
    specs = [_job_spec(_info_family, _add_info), _job_spec(_status_family, _add_status)]
    specs += [_value_spec(*spec) for spec in _JOB_VALUES]
    if tag_keys:
        specs.append(_tags_spec(tuple(tag_keys)))
    specs += [
        FamilySpec(_findings_family, _add_findings, part=_findings_part, size=_findings_size),
        _target_spec(_counts_family, lambda t: t.counts, _add_counts),
        _target_spec(_macie_status_family, lambda t: t.macie_status, _add_macie_status),
        _usage_spec(_cost_family, _add_cost),
        _usage_spec(_reached_family, _add_reached),
        _usage_spec(_quota_family, _add_quota),
        _target_spec(_members_family, lambda t: t.collected.members, _add_members),
        _target_spec(_refresh_success_family, lambda t: (t.completed, 1 if t.success else 0),
                     _add_when_completed),
        _target_spec(_last_success_family, lambda t: t.last_success_at, _add_optional),
        _target_spec(_duration_family, lambda t: t.duration_seconds, _add_optional),
        _target_spec(_describe_failures_family, lambda t: (t.completed, t.describe_failures),
                     _add_when_completed),
        _target_spec(_collector_success_family, _collector_successes, _add_per_collector),
        _target_spec(_collector_duration_family, _collector_durations, _add_per_collector),
    ]
    return tuple(specs)


class SnapshotCollector(Collector):
    """Metric families for the current snapshot; `snapshot` is read once per collection."""

    def __init__(self, snapshot: Callable[[], Snapshot], tag_keys: Sequence[str] = ()) -> None:
        self._snapshot = snapshot
        self.families = snapshot_families(tag_keys)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        for spec in self.families:
            yield spec.family(snapshot)


def _fleet_families(fleet: FleetStatus) -> Iterator[Metric]:
    targets = _gauge("macie_exporter_targets",
                     "Targets (account x region) this process polls: its shard of the static "
                     "and discovered targets.", ())
    targets.add_metric([], fleet.targets)
    yield targets
    if not fleet.discovery_enabled:
        return
    success = _gauge("macie_exporter_discovery_success",
                     "1 if the last discovery of the organisation's accounts succeeded, 0 if it "
                     "failed (the last discovered targets are kept).", ())
    last = _gauge("macie_exporter_discovery_last_success_timestamp_seconds",
                  "When discovery last succeeded, in seconds since the Unix epoch.", ())
    if fleet.discovery_success is not None:
        success.add_metric([], 1 if fleet.discovery_success else 0)
    if fleet.discovery_last_success is not None:
        last.add_metric([], fleet.discovery_last_success)
    yield success
    yield last


def api_requests_spec(requests: ApiRequestCounter) -> FamilySpec:
    """The request counts, target by target: a target's part is its (operation, outcome,
    count) triples, so the targets not called since the last scrape are not encoded again."""
    def make() -> CounterMetricFamily:
        return CounterMetricFamily(
            "macie_exporter_api_requests",
            "HTTP requests sent to AWS, retried attempts included, by operation and outcome "
            "(success or the AWS error code).",
            labels=[*TARGET_LABELS, "operation", "outcome"],
        )

    def add(family: CounterMetricFamily, key: TargetKey,
            counts: tuple[tuple[str, str, int], ...], lo: int, hi: int) -> None:
        for operation, outcome, count in counts:
            family.add_metric([key.account_id, key.region, operation, outcome], count)

    # Live figures, not the snapshot's: the argument parts() passes is not needed.
    return FamilySpec(make, add, all_parts=lambda _snapshot: requests.by_target())


class SelfCollector(Collector):
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
            waits = CounterMetricFamily(
                "macie_exporter_rate_limit_wait_seconds",
                "Time AWS calls for this target waited for --aws.requests-per-second.",
                labels=list(TARGET_LABELS),
            )
            for target, seconds in self._waits.items():
                waits.add_metric(list(target), seconds)
            yield waits
        if self._fleet is not None:
            yield from _fleet_families(self._fleet)
        build = _gauge(
            "macie_exporter_build_info",
            "Build information of the exporter; the value is always 1.",
            ("version", "python_version", "boto3_version"),
        )
        build.add_metric(self._build, 1)
        yield build
