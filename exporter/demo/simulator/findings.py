"""Findings: GetFindingStatistics (`POST /findings/statistics`), counts of findings grouped by
one property, filtered by `findingCriteria`; `size` up to 1000 (the default; the model gives no
maximum, so the bound is the simulator's own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.jobs import first_bucket
from exporter.demo.simulator.session import Session, macie
from exporter.demo.simulator.wire import Answer, Call, Invalid, bounded, json_answer

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

MAX_STATISTICS_SIZE = 1000  # GetFindingStatistics `size`: default and maximum (the model: none)
SEVERITIES = ("Low", "Medium", "High")  # SeverityDescription
SEVERITY_SCORES = {"Low": 1, "Medium": 2, "High": 3}
FINDING_TYPE = "SensitiveData:S3Object/Personal"  # every simulated finding's type
GROUP_BY = ("resourcesAffected.s3Bucket.name", "type", "classificationDetails.jobId",
            "severity.description")


@macie
def get_finding_statistics(sim: Simulator, call: Call, session: Session) -> Answer:
    """GetFindingStatistics."""
    request = call.params
    group_by = request.get("groupBy")
    if group_by not in GROUP_BY:
        raise Invalid(f"groupBy must be one of {', '.join(GROUP_BY)}")
    size = bounded(request.get("size"), "size", MAX_STATISTICS_SIZE)
    sort = request.get("sortCriteria") or {}
    attribute, order = sort.get("attributeName", "count"), sort.get("orderBy", "DESC")
    if attribute not in ("count", "groupKey") or order not in ("ASC", "DESC"):
        raise Invalid("sortCriteria: attributeName count or groupKey, orderBy ASC or DESC")
    criteria = request.get("findingCriteria") or {}
    if not isinstance(criteria, dict):
        raise Invalid("findingCriteria must be an object")
    wanted = _finding_filter(criteria.get("criterion") or {})
    key = (call.account_id, call.region)
    with sim.lock:
        records = list(sim._findings.get(key, Counter()).items())
        jobs = sim._jobs.get(key, {})
        buckets = {job_id: first_bucket(jobs.get(job_id), job_id)
                   for job_id in {job_id for (job_id, _, _), _ in records}}
    counts: Counter[str] = Counter()
    for (job_id, severity, archived), count in records:
        finding = {
            "classificationDetails.jobId": job_id, "severity.description": severity,
            "severity.score": SEVERITY_SCORES[severity],
            "archived": "true" if archived else "false", "type": FINDING_TYPE,
            "resourcesAffected.s3Bucket.name": buckets[job_id],
        }
        if count and wanted(finding):
            counts[str(finding[group_by])] += count
    ascending = order == "ASC"
    if attribute == "count":
        groups = sorted(counts.items(), key=lambda g: (g[1] if ascending else -g[1], g[0]))
    else:
        groups = sorted(counts.items(), reverse=not ascending)
    return json_answer(200, {"countsByGroup": [
        {"groupKey": group, "count": count} for group, count in groups[:size]]})


_FINDING_PROPERTIES = ("classificationDetails.jobId", "severity.description", "severity.score",
                       "archived", "type", "resourcesAffected.s3Bucket.name")
_LIST_OPERATORS = ("eq", "eqExactMatch", "neq")
_NUMBER_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b}


def _finding_filter(criterion: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for FindingCriteria.criterion: every condition holds (eq: any value)."""
    if not isinstance(criterion, dict):
        raise Invalid("findingCriteria.criterion must be a map")
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for name, condition in criterion.items():
        if name not in _FINDING_PROPERTIES:
            raise Invalid(f"the simulator does not support the finding property {name!r}; "
                          f"it knows {', '.join(_FINDING_PROPERTIES)}")
        if not isinstance(condition, dict) or not condition:
            raise Invalid(f"the condition for {name} must name an operator")
        for operator, operand in condition.items():
            tests.append(_condition(name, operator, operand))
    return lambda finding: all(test(finding) for test in tests)


def _condition(name: str, operator: str, operand: Any) -> Callable[[dict[str, Any]], bool]:
    if operator in _LIST_OPERATORS:
        if not isinstance(operand, list) or not all(isinstance(v, str) for v in operand):
            raise Invalid(f"{name}.{operator} must be a list of strings")
        values = frozenset(operand)
        if operator == "neq":
            return lambda finding: str(finding[name]) not in values
        return lambda finding: str(finding[name]) in values
    if operator in _NUMBER_OPERATORS:
        if name != "severity.score":
            raise Invalid(f"{operator} applies to numeric properties, not {name}")
        if isinstance(operand, bool) or not isinstance(operand, int):
            raise Invalid(f"{name}.{operator} must be an integer")
        compare = _NUMBER_OPERATORS[operator]
        return lambda finding: compare(finding[name], operand)
    raise Invalid(f"unknown operator {operator!r} for {name}")
