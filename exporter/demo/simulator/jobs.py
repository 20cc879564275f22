"""Classification jobs: ListClassificationJobs (`POST /jobs/list`, `nextToken` paging, up to
200 a page, default 100; `filterCriteria`) and DescribeClassificationJob (`GET /jobs/{jobId}`),
and `make_job`, which builds the jobs the simulator holds."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.session import Session, macie
from exporter.demo.simulator.wire import (
    DAY,
    DEFAULT_ACCOUNT,
    Answer,
    Call,
    iso,
    json_answer,
    json_error,
    offset_of,
    token,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

MAX_PAGE_SIZE = 200  # ListClassificationJobs


def make_job(
    job_id: str, name: str | None = None, status: str = "COMPLETE", *,
    job_type: str = "ONE_TIME", created_at: float | None = None, schedule: str = "none",
    runs: float | None = 1, objects_to_process: float | None = 0,
    last_run_error: bool | None = False, last_run_time: float | None = None,
    paused_at: float | None = None, expires_at: float | None = None,
    tags: dict[str, str] | None = None, selector: str = "RECOMMENDED",
    account_id: str = DEFAULT_ACCOUNT, bucket: str | None = None,
) -> dict[str, Any]:
    """A DescribeClassificationJob answer (without `jobArn`: the simulator adds it); its one
    bucket, `bucket` (default `bucket-<jobId>`), belongs to `account_id`."""
    created = time.time() - DAY if created_at is None else created_at
    job: dict[str, Any] = {
        "jobId": job_id, "name": name or job_id, "jobStatus": status, "jobType": job_type,
        "createdAt": iso(created), "managedDataIdentifierSelector": selector,
        "initialRun": True, "samplingPercentage": 100,
        "s3JobDefinition": {"bucketDefinitions": [
            {"accountId": account_id, "buckets": [bucket or f"bucket-{job_id}"]}]},
    }
    if job_type == "SCHEDULED":
        if schedule == "daily":
            job["scheduleFrequency"] = {"dailySchedule": {}}
        elif schedule.startswith("weekly:"):
            job["scheduleFrequency"] = {"weeklySchedule": {"dayOfWeek": schedule[7:]}}
        elif schedule.startswith("monthly:"):
            job["scheduleFrequency"] = {"monthlySchedule": {"dayOfMonth": int(schedule[8:])}}
    stats = {}
    if runs is not None:
        stats["numberOfRuns"] = float(runs)
    if objects_to_process is not None:
        stats["approximateNumberOfObjectsToProcess"] = float(objects_to_process)
    if stats:
        job["statistics"] = stats
    if last_run_error is not None:
        job["lastRunErrorStatus"] = {"code": "ERROR" if last_run_error else "NONE"}
    if last_run_time is not None:
        job["lastRunTime"] = iso(last_run_time)
    if paused_at is not None or expires_at is not None:
        details: dict[str, Any] = {}
        if paused_at is not None:
            details["jobPausedAt"] = iso(paused_at)
        if expires_at is not None:
            details["jobExpiresAt"] = iso(expires_at)
        job["userPausedDetails"] = details
    if tags is not None:
        job["tags"] = dict(tags)
    return job


_SUMMARY_KEYS = ("bucketDefinitions", "createdAt", "jobId", "jobStatus", "jobType",
                 "lastRunErrorStatus", "name", "userPausedDetails")


def summary_of(job: dict[str, Any]) -> dict[str, Any]:
    """The JobSummary that ListClassificationJobs returns for a described job."""
    summary = {k: job[k] for k in _SUMMARY_KEYS if k in job}
    definition = job.get("s3JobDefinition", {})
    if "bucketDefinitions" in definition:
        summary["bucketDefinitions"] = definition["bucketDefinitions"]
    return summary


def first_bucket(job: dict[str, Any] | None, job_id: str) -> str:
    """The name of a job's first bucket (its findings' bucket); `bucket-<jobId>` if unknown."""
    definitions = ((job or {}).get("s3JobDefinition") or {}).get("bucketDefinitions") or []
    for definition in definitions:
        for bucket in definition.get("buckets") or []:
            return str(bucket)
    return f"bucket-{job_id}"


# ListJobsSortAttributeName (botocore's macie2 model).
SORT_ATTRIBUTES = ("createdAt", "jobStatus", "name", "jobType")


@macie
def list_classification_jobs(sim: Simulator, call: Call, session: Session) -> Answer:
    """ListClassificationJobs: the jobs in list order (created, then jobId; `sortCriteria`
    sorts by createdAt, jobStatus, name or jobType, ASC or DESC, ties by jobId), filtered."""
    request, key = call.params, (call.account_id, call.region)
    size = request.get("maxResults", 100)
    if not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        return json_error(400, "ValidationException",
                          f"maxResults must be between 1 and {MAX_PAGE_SIZE}")
    offset = offset_of(request.get("nextToken"))
    sort = request.get("sortCriteria") or {}
    attribute, order = sort.get("attributeName", "createdAt"), sort.get("orderBy", "ASC")
    if attribute not in SORT_ATTRIBUTES or order not in ("ASC", "DESC"):
        return json_error(400, "ValidationException",
                          f"sortCriteria: attributeName one of {', '.join(SORT_ATTRIBUTES)}, "
                          "orderBy ASC or DESC")
    with sim.lock:
        criteria = request.get("filterCriteria") or {}
        if key not in sim._ordered:
            sim._ordered[key] = sorted(sim._jobs.get(key, {}).values(),
                                       key=lambda j: (j["createdAt"], j["jobId"]))
        ordered = sim._ordered[key]
        if attribute != "createdAt":
            ordered = sorted(ordered, key=lambda j: (str(j.get(attribute, "")), j["jobId"]))
        if order == "DESC":
            ordered = ordered[::-1]
        if criteria:
            ordered = [j for j in ordered if _matches(j, criteria)]
        page = [summary_of(j) for j in ordered[offset:offset + size]]
        more = offset + len(page) < len(ordered)
    answer: dict[str, Any] = {"items": page}
    if more:
        answer["nextToken"] = token(offset + len(page))
    return json_answer(200, answer)


@macie
def describe_classification_job(sim: Simulator, call: Call, session: Session) -> Answer:
    """DescribeClassificationJob."""
    job_id = call.params["jobId"]
    with sim.lock:
        job = sim._jobs.get((call.account_id, call.region), {}).get(job_id)
    if job is None:
        return json_error(404, "ResourceNotFoundException", f"job {job_id} not found")
    return json_answer(200, job)


def _term_matches(job: dict[str, Any], term: dict[str, Any]) -> bool:
    field, values = str(job.get(term.get("key", ""), "")), term.get("values") or []
    comparator = term.get("comparator", "EQ")
    if comparator == "EQ":
        return field in values
    if comparator == "NE":
        return field not in values
    if comparator == "CONTAINS":
        return any(v in field for v in values)
    if comparator == "STARTS_WITH":
        return any(field.startswith(v) for v in values)
    first = values[0] if values else ""
    return {"GT": field > first, "GTE": field >= first, "LT": field < first,
            "LTE": field <= first}.get(comparator, False)


def _matches(job: dict[str, Any], criteria: dict[str, Any]) -> bool:
    """ListJobsFilterCriteria: every include term holds, and no exclude term does."""
    includes = criteria.get("includes") or []
    excludes = criteria.get("excludes") or []
    return (all(_term_matches(job, t) for t in includes)
            and not any(_term_matches(job, t) for t in excludes))
