"""Findings per job and severity (GetFindingStatistics), archived findings left out.

One call per severity, grouped by job. If an answer holds as many groups as asked for, Macie
may have left jobs out: those are asked for by id, in batches. Also due as soon as the target
exports a job the last answers did not cover, so that every job's counts come from Macie (a new
job has no series until then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exporter.aws.errors import ApiError
from exporter.aws.operations import MACIE, Operation
from exporter.collectors import jobs
from exporter.collectors.base import Collector, Context, Fetch, Settings, Switch, call
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import AnySpec, Family, FamilySpec, Section, gauge

GET_FINDING_STATISTICS = Operation(MACIE, "GetFindingStatistics", "macie2:GetFindingStatistics")
# Finding severities (SeverityDescription), lowest first.
SEVERITIES = ("Low", "Medium", "High")
# Groups asked for per GetFindingStatistics call (its `size`), and keys (job ids, bucket
# names) per criterion when an answer was capped and the keys it left out are asked for.
FINDINGS_GROUPS = 1000
FINDINGS_JOBS_PER_CALL = 50

# job id -> findings per severity, in SEVERITIES order, for every job exported when asked.
Findings = tuple[tuple[str, tuple[int, int, int]], ...]
SLOT: Slot[Findings] = Slot("findings")


def _statistics(criteria: dict[str, Any], group_by: str) -> Fetch[list[dict[str, Any]]]:
    """GetFindingStatistics grouped by `group_by`: [{groupKey, count}], largest counts first."""
    answer = yield from call(GET_FINDING_STATISTICS, findingCriteria={"criterion": criteria},
                             groupBy=group_by, size=FINDINGS_GROUPS,
                             sortCriteria={"attributeName": "count", "orderBy": "DESC"})
    groups = answer.get("countsByGroup") or []
    if not isinstance(groups, list):
        raise ApiError.of(GET_FINDING_STATISTICS, "MalformedResponse", "countsByGroup")
    return [group for group in groups if isinstance(group, dict)]


def counts_by(group_by: str, keys: Sequence[str]) -> Fetch[dict[str, tuple[int, int, int]]]:
    """Findings per key (a job id, a bucket name) and severity, archived ones left out.

    One GetFindingStatistics per severity, grouped by `group_by`. If an answer holds as many
    groups as asked for, Macie may have left keys out: those are asked for by value, in
    batches (`group_by` is also the criterion that selects them).
    """
    counts = {key: [0, 0, 0] for key in keys}
    for index, severity in enumerate(SEVERITIES):
        base = {"severity.description": {"eq": [severity]}, "archived": {"eq": ["false"]}}
        seen: set[str] = set()

        def record(groups: list[dict[str, Any]], index: int = index,
                   seen: set[str] = seen) -> None:
            for group in groups:
                key, count = group.get("groupKey"), group.get("count")
                if isinstance(key, str) and isinstance(count, int):
                    seen.add(key)
                    if key in counts:
                        counts[key][index] = count

        groups = yield from _statistics(base, group_by)
        record(groups)
        if len(groups) >= FINDINGS_GROUPS:
            missing = [key for key in keys if key not in seen]
            per_call = min(FINDINGS_JOBS_PER_CALL, FINDINGS_GROUPS)  # never capped again
            for start in range(0, len(missing), per_call):
                batch = missing[start:start + per_call]
                record((yield from _statistics({**base, group_by: {"eq": batch}}, group_by)))
    return {key: (c[0], c[1], c[2]) for key, c in counts.items()}


def fetch(ctx: Context[Findings]) -> Fetch[Findings]:
    job_ids = [job.job_id for job in jobs.jobs_of(ctx.result)]
    counts = yield from counts_by("classificationDetails.jobId", job_ids)
    return tuple(sorted(counts.items()))


def _misses_a_job(result: TargetResult) -> bool:
    known = result.get(SLOT)
    if known is None:
        return False
    asked = {job_id for job_id, _ in known}
    return any(job.job_id not in asked for job in jobs.jobs_of(result))


Part = tuple[tuple[jobs.Job, ...], Findings | None]


def _part(target: TargetResult) -> Part:
    return jobs.jobs_of(target), target.get(SLOT)


def _size(part: Part) -> int:
    return len(part[0])


def _add(family: Family, key: TargetKey, part: Part, lo: int, hi: int) -> None:
    exported, found = part
    if found is None:  # the findings collector has not succeeded for this target yet
        return
    counts = dict(found)
    for job in exported[lo:hi]:
        # A job the last findings answers did not cover (new since) has no series until they do.
        job_counts = counts.get(job.job_id)
        if job_counts is not None:
            ids = jobs.job_ids(key.region, job)
            for severity, count in zip(SEVERITIES, job_counts, strict=True):
                family.add_metric([*ids, severity], count)


def families(_settings: Settings) -> list[AnySpec]:
    return [FamilySpec("macie_classification_job_findings", lambda: gauge(
        "macie_classification_job_findings",
        "Findings the job produced, by severity, archived (suppressed) findings not "
        "counted (GetFindingStatistics). Macie keeps findings for 90 days, so a count can "
        "fall.", (*jobs.JOB_LABELS, "severity")), _add, part=_part, size=_size,
        section=Section.JOB)]


def _idle(target: TargetResult, since: float | None) -> bool:
    """No job is active, and none has run (or been created) since the last round: findings
    change only while jobs run. What this can miss until the next full round (every
    --refresh.full-redescribe-interval): findings archived or unarchived by a user, and
    findings Macie deletes after 90 days."""
    value = target.get(jobs.SLOT)
    if value is None or value.active or since is None:
        return False
    return all((job.last_run_at or job.created_at or 0) < since for job in value.jobs)


def _idle_interval(settings: Settings) -> float:
    return settings.full_redescribe_interval


COLLECTOR = Collector(
    name="findings", slot=SLOT, operations=(GET_FINDING_STATISTICS,), fetch=fetch,
    families=families, stale=_misses_a_job, idle=_idle, idle_interval=_idle_interval,
    switch=Switch("5m", "Collect findings per job and severity (GetFindingStatistics)."),
)
