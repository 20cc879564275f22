"""Findings per job and severity (GetFindingStatistics), archived findings left out.

One call per severity, grouped by job. If an answer holds as many groups as asked for, Macie
may have left jobs out: those are asked for by id, in batches. Also due as soon as the target
exports a job the last answers did not cover, so that every job's counts come from Macie (a new
job has no series until then).
"""

from __future__ import annotations

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
# Groups asked for per GetFindingStatistics call (its `size`), and job ids per criterion when
# an answer was capped and the jobs it left out are asked for by id.
FINDINGS_GROUPS = 1000
FINDINGS_JOBS_PER_CALL = 50

# job id -> findings per severity, in SEVERITIES order, for every job exported when asked.
Findings = tuple[tuple[str, tuple[int, int, int]], ...]
SLOT: Slot[Findings] = Slot("findings")


def _statistics(criteria: dict[str, Any]) -> Fetch[list[dict[str, Any]]]:
    """GetFindingStatistics grouped by job: [{groupKey, count}], largest counts first."""
    answer = yield from call(GET_FINDING_STATISTICS, findingCriteria={"criterion": criteria},
                             groupBy="classificationDetails.jobId", size=FINDINGS_GROUPS,
                             sortCriteria={"attributeName": "count", "orderBy": "DESC"})
    groups = answer.get("countsByGroup") or []
    if not isinstance(groups, list):
        raise ApiError.of(GET_FINDING_STATISTICS, "MalformedResponse", "countsByGroup")
    return [group for group in groups if isinstance(group, dict)]


def fetch(ctx: Context[Findings]) -> Fetch[Findings]:
    job_ids = [job.job_id for job in jobs.jobs_of(ctx.result)]
    counts = {job_id: [0, 0, 0] for job_id in job_ids}
    for index, severity in enumerate(SEVERITIES):
        base = {"severity.description": {"eq": [severity]}, "archived": {"eq": ["false"]}}
        seen: set[str] = set()

        def record(groups: list[dict[str, Any]], index: int = index,
                   seen: set[str] = seen) -> None:
            for group in groups:
                job_id, count = group.get("groupKey"), group.get("count")
                if isinstance(job_id, str) and isinstance(count, int):
                    seen.add(job_id)
                    if job_id in counts:
                        counts[job_id][index] = count

        groups = yield from _statistics(base)
        record(groups)
        if len(groups) >= FINDINGS_GROUPS:
            missing = [job_id for job_id in job_ids if job_id not in seen]
            for start in range(0, len(missing), FINDINGS_JOBS_PER_CALL):
                batch = missing[start:start + FINDINGS_JOBS_PER_CALL]
                record((yield from _statistics(
                    {**base, "classificationDetails.jobId": {"eq": batch}})))
    return tuple(sorted((job_id, (c[0], c[1], c[2])) for job_id, c in counts.items()))


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


COLLECTOR = Collector(
    name="findings", slot=SLOT, operations=(GET_FINDING_STATISTICS,), fetch=fetch,
    families=families, stale=_misses_a_job,
    switch=Switch("5m", "Collect findings per job and severity (GetFindingStatistics)."),
)
