"""Turn a `Snapshot` into Prometheus metric families; no AWS call happens here."""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import version

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.counters import ApiRequestCounter, FleetStatus, WaitCounter
from exporter.model import (
    JOB_STATUSES,
    MACIE_STATUSES,
    MEMBER_STATUSES,
    SEVERITIES,
    Job,
    Snapshot,
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


# (region, job, the job's findings per severity: None until the findings collector succeeded)
JobRow = tuple[str, Job, tuple[int, int, int] | None]


def job_rows(snapshot: Snapshot) -> list[JobRow]:
    rows: list[JobRow] = []
    for target in snapshot.targets:
        found = target.collected.findings
        counts = dict(found) if found is not None else None
        # A job the last findings answers did not cover (new since) has no series until they do.
        rows.extend((target.key.region, job, None if counts is None else counts.get(job.job_id))
                    for job in target.jobs)
    return rows


def _ids(region: str, job: Job) -> list[str]:
    return [job.account_id, region, job.job_id, job.name]


class SnapshotCollector(Collector):
    """Metric families for the current snapshot; `snapshot` is read once per collection."""

    def __init__(self, snapshot: Callable[[], Snapshot], tag_keys: Sequence[str] = ()) -> None:
        self._snapshot = snapshot
        self._tag_keys = tuple(tag_keys)
        self._tag_labels = tuple(tag_label_name(k) for k in self._tag_keys)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        rows = job_rows(snapshot)
        for build in self.job_family_builders():
            yield build(rows)
        yield from self.summary_families(snapshot)

    def job_family_builders(self) -> list[Callable[[Sequence[JobRow]], Metric]]:
        """One builder per per-job family, in exposition order; each takes (region, job) rows.

        Building a family from a slice of the rows lets a renderer work in bounded memory.
        """
        builders: list[Callable[[Sequence[JobRow]], Metric]] = [self._info, self._status]
        builders += [functools.partial(self._value, *spec) for spec in _JOB_VALUES]
        if self._tag_keys:
            builders.append(self._tags)
        builders.append(self._findings)
        return builders

    @staticmethod
    def _findings(rows: Sequence[JobRow]) -> Metric:
        family = _gauge(
            "macie_classification_job_findings",
            "Findings the job produced, by severity, archived (suppressed) findings not "
            "counted (GetFindingStatistics). Macie keeps findings for 90 days, so a count can "
            "fall.",
            (*JOB_LABELS, "severity"),
        )
        for region, job, counts in rows:
            if counts is not None:
                ids = _ids(region, job)
                for severity, count in zip(SEVERITIES, counts, strict=True):
                    family.add_metric([*ids, severity], count)
        return family

    def summary_families(self, snapshot: Snapshot) -> Iterator[Metric]:
        """The families that do not grow with the number of jobs, after the per-job ones."""
        yield self._counts(snapshot)
        yield self._macie_status(snapshot)
        yield from self._usage(snapshot)
        yield self._members(snapshot)
        yield from self._target_families(snapshot)
        yield from self._collector_families(snapshot)

    @staticmethod
    def _info(rows: Sequence[JobRow]) -> Metric:
        family = _gauge(
            "macie_classification_job_info",
            "Information about a classification job; the value is always 1.",
            (*JOB_LABELS, "job_type", "schedule", "managed_data_identifier_selector"),
        )
        for region, job, _ in rows:
            family.add_metric([*_ids(region, job), job.job_type, job.schedule,
                               job.managed_data_identifier_selector], 1)
        return family

    @staticmethod
    def _status(rows: Sequence[JobRow]) -> Metric:
        family = _gauge(
            "macie_classification_job_status",
            "Current status of the job: 1 for the current status, 0 for the others.",
            (*JOB_LABELS, "status"),
        )
        for region, job, _ in rows:
            _state_set(family, _ids(region, job), JOB_STATUSES, job.status)
        return family

    @staticmethod
    def _value(name: str, documentation: str, get: Callable[[Job], float | bool | None],
               rows: Sequence[JobRow]) -> Metric:
        family = _gauge(name, documentation, JOB_LABELS)
        for region, job, _ in rows:
            value = get(job)
            if value is not None:
                family.add_metric(_ids(region, job), float(value))
        return family

    def _tags(self, rows: Sequence[JobRow]) -> Metric:
        family = _gauge(
            "macie_classification_job_tags",
            "Allow-listed tags of the job as labels; the value is always 1.",
            (*JOB_LABELS, *self._tag_labels),
        )
        for region, job, _ in rows:
            if job.tags is not None:
                present = dict(job.tags)
                family.add_metric([*_ids(region, job),
                                   *(present.get(k, "") for k in self._tag_keys)], 1)
        return family

    @staticmethod
    def _counts(snapshot: Snapshot) -> Metric:
        family = _gauge(
            "macie_classification_jobs",
            "Number of classification jobs listed, by status and type.",
            (*TARGET_LABELS, "status", "job_type"),
        )
        for target in snapshot.targets:
            for (account, state, job_type), count in target.counts:
                family.add_metric([account, target.key.region, state, job_type], count)
        return family

    @staticmethod
    def _macie_status(snapshot: Snapshot) -> Metric:
        family = _gauge(
            "macie_status",
            "Macie's status in the account and region, from GetMacieSession: 1 for the current "
            "status, 0 for the others. DISABLED means Macie is not enabled there.",
            (*TARGET_LABELS, "status"),
        )
        for target in snapshot.targets:
            if target.macie_status is None:
                continue
            _state_set(family, [target.key.account_id, target.key.region], MACIE_STATUSES,
                       target.macie_status)
        return family

    @staticmethod
    def _usage(snapshot: Snapshot) -> Iterator[Metric]:
        cost = _gauge(
            "macie_usage_estimated_cost",
            "Estimated cost of Macie this month to date, by account and usage type "
            "(GetUsageStatistics estimatedCost). An administrator account reports its members.",
            (*TARGET_LABELS, "usage_type", "currency"),
        )
        reached = _gauge(
            "macie_usage_quota_reached",
            "1 if the account has reached the quota of this usage type "
            "(serviceLimit.isServiceLimited), 0 otherwise. Macie pauses jobs that would go past "
            "it.",
            (*TARGET_LABELS, "usage_type"),
        )
        quota = _gauge(
            "macie_usage_quota_bytes",
            "The quota of this usage type in bytes (serviceLimit.value, a terabyte being 2^40 "
            "bytes); absent when the API gives no quota.",
            (*TARGET_LABELS, "usage_type"),
        )
        seen: set[tuple[str, str, str]] = set()
        # An account's own target first: its record wins over its administrator's copy.
        targets = sorted(snapshot.targets, key=lambda t: t.collected.usage is None)
        for own in (True, False):
            for target in targets:
                for item in target.collected.usage or ():
                    if (item.account_id == target.key.account_id) != own:
                        continue
                    key = (item.account_id, target.key.region, item.usage_type)
                    if key in seen:
                        continue
                    seen.add(key)
                    labels = list(key)
                    if item.estimated_cost is not None:
                        cost.add_metric([*labels, item.currency], item.estimated_cost)
                    if item.quota_reached is not None:
                        reached.add_metric(labels, 1 if item.quota_reached else 0)
                    if item.quota_bytes is not None:
                        quota.add_metric(labels, item.quota_bytes)
        yield from (cost, reached, quota)

    @staticmethod
    def _members(snapshot: Snapshot) -> Metric:
        family = _gauge(
            "macie_member_relationship_status",
            "Relationship of each member account with this Macie administrator account "
            "(ListMembers): 1 for the current status, 0 for the others.",
            (*TARGET_LABELS, "member_account_id", "status"),
        )
        for target in snapshot.targets:
            for member, status in target.collected.members or ():
                _state_set(family, [target.key.account_id, target.key.region, member],
                           MEMBER_STATUSES, status)
        return family

    @staticmethod
    def _collector_families(snapshot: Snapshot) -> Iterator[Metric]:
        success = _gauge(
            "macie_exporter_collector_success",
            "1 if the collector's last run for this target succeeded, 0 if it failed (its "
            "series keep their last values).",
            (*TARGET_LABELS, "collector"),
        )
        duration = _gauge(
            "macie_exporter_collector_duration_seconds",
            "How long the collector's last run for this target took.",
            (*TARGET_LABELS, "collector"),
        )
        for target in snapshot.targets:
            for name, health in target.collected.health:
                labels = [target.key.account_id, target.key.region, name]
                success.add_metric(labels, 1 if health.success else 0)
                duration.add_metric(labels, health.duration_seconds)
        yield from (success, duration)

    def _target_families(self, snapshot: Snapshot) -> Iterator[Metric]:
        success = _gauge(
            "macie_exporter_refresh_success",
            "1 if the last refresh of this target succeeded, 0 if it failed.",
            TARGET_LABELS,
        )
        last_success = _gauge(
            "macie_exporter_last_refresh_success_timestamp_seconds",
            "When this target last refreshed successfully, in seconds since the Unix epoch.",
            TARGET_LABELS,
        )
        duration = _gauge(
            "macie_exporter_refresh_duration_seconds",
            "How long the last refresh of this target took.",
            TARGET_LABELS,
        )
        failures = _gauge(
            "macie_exporter_describe_failures",
            "Jobs whose DescribeClassificationJob call failed in the last refresh; they keep "
            "their last known values.",
            TARGET_LABELS,
        )
        for target in snapshot.targets:
            labels = [target.key.account_id, target.key.region]
            if target.completed:
                success.add_metric(labels, 1 if target.success else 0)
                failures.add_metric(labels, target.describe_failures)
            if target.last_success_at is not None:
                last_success.add_metric(labels, target.last_success_at)
            if target.duration_seconds is not None:
                duration.add_metric(labels, target.duration_seconds)
        yield from (success, last_success, duration, failures)


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


class SelfCollector(Collector):
    """Live self-metrics: API request counts, rate-limit waits and build information."""

    def __init__(self, requests: ApiRequestCounter, waits: WaitCounter | None = None,
                 fleet: FleetStatus | None = None, build: Sequence[str] | None = None) -> None:
        self._requests = requests
        self._waits = waits
        self._fleet = fleet
        self._build = list(build or (__version__, platform.python_version(), version("boto3")))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "macie_exporter_api_requests",
            "HTTP requests sent to AWS, retried attempts included, by operation and outcome "
            "(success or the AWS error code).",
            labels=[*TARGET_LABELS, "operation", "outcome"],
        )
        for labels, count in self._requests.items():
            requests.add_metric(list(labels), count)
        yield requests
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
