"""What is collected per target beside the jobs, each on its own cadence: findings per job,
usage and quota, member accounts. A collector fetches through the shared AWS layer (on the
call pool) and returns model values; collect.py turns them into metric families."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from exporter.mapping import members_from_api, usage_from_api
from exporter.model import SEVERITIES, Collected, TargetResult

# Groups asked for per GetFindingStatistics call (its `size`), and job ids per criterion when
# an answer was capped and the jobs it left out are asked for by id.
FINDINGS_GROUPS = 1000
FINDINGS_JOBS_PER_CALL = 50


class CollectorApi(Protocol):
    """What collectors need from one target (exporter.macie.MacieTarget)."""

    def finding_statistics(self, criteria: dict[str, Any], size: int
                           ) -> list[dict[str, Any]]: ...
    def usage_records(self) -> list[dict[str, Any]]: ...
    def members(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Collector:
    name: str
    interval: float
    # (api, ids of the target's exported jobs) -> the value `apply` stores.
    fetch: Callable[[CollectorApi, Sequence[str]], Any]
    apply: Callable[[Collected, Any], Collected]
    # Due before its interval when this says the stored values miss something (new jobs).
    stale: Callable[[TargetResult], bool] | None = None


def fetch_findings(api: CollectorApi, job_ids: Sequence[str]
                   ) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """Findings per exported job and severity, archived ones left out.

    One GetFindingStatistics per severity, grouped by job. If an answer holds as many groups
    as asked for, Macie may have left jobs out: those are asked for by id, in batches.
    """
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

        groups = api.finding_statistics(base, FINDINGS_GROUPS)
        record(groups)
        if len(groups) >= FINDINGS_GROUPS:
            missing = [job_id for job_id in job_ids if job_id not in seen]
            for start in range(0, len(missing), FINDINGS_JOBS_PER_CALL):
                batch = missing[start:start + FINDINGS_JOBS_PER_CALL]
                record(api.finding_statistics(
                    {**base, "classificationDetails.jobId": {"eq": batch}}, FINDINGS_GROUPS))
    return tuple(sorted((job_id, (c[0], c[1], c[2])) for job_id, c in counts.items()))


def _findings_miss_a_job(result: TargetResult) -> bool:
    known = result.collected.findings
    if known is None:
        return False
    asked = {job_id for job_id, _ in known}
    return any(job.job_id not in asked for job in result.jobs)


def findings(interval: float) -> Collector:
    """Also due as soon as the target exports a job the last answers did not cover, so that
    every job's counts come from Macie (a new job has no series until then)."""
    return Collector("findings", interval, fetch_findings,
                     lambda collected, value: replace(collected, findings=value),
                     _findings_miss_a_job)


def usage(interval: float) -> Collector:
    return Collector("usage", interval, lambda api, _: usage_from_api(api.usage_records()),
                     lambda collected, value: replace(collected, usage=value))


def members(interval: float) -> Collector:
    return Collector("members", interval, lambda api, _: members_from_api(api.members()),
                     lambda collected, value: replace(collected, members=value))
