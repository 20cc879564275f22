"""A small fake of the AWS-facing protocol the engine uses (exporter.engine.runner.TargetApi),
for tests without sockets: calls are answered by operation, through one method per operation
that tests override."""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.aws.errors import ApiError
from exporter.aws.operations import Operation
from exporter.aws.target import Pages
from exporter.collectors import findings, jobs, members, status, usage
from exporter.collectors.findings import Findings
from exporter.collectors.jobs import Counts, Job
from exporter.collectors.members import Members
from exporter.collectors.usage import Usage
from exporter.model import Health, TargetKey, TargetResult

ACCOUNT = "111122223333"
REGION = "eu-west-1"
NOT_ENABLED = ApiError("GetMacieSession", "AccessDeniedException", "Macie is not enabled.", 401,
                       service="macie2", action="macie2:GetMacieSession")


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


def _as_from(err: ApiError, operation: Operation) -> ApiError:
    """An error a test raised, as the AWS layer reports it: with the declared operation's
    service and IAM action."""
    if not err.service:
        err.service = operation.service
        err.action = err.action or (operation.action if err.operation == operation.name
                                    else None)
    return err


@dataclass(frozen=True)
class View:
    """A target's result as the tests read it."""

    jobs: tuple[Job, ...]
    counts: Counts
    success: bool
    completed: bool
    macie_status: str | None
    describe_failures: int
    last_success_at: float | None
    findings: Findings | None
    usage: tuple[Usage, ...] | None
    members: Members | None
    health: tuple[tuple[str, Health], ...]


def view(target: TargetResult) -> View:
    value = target.get(jobs.SLOT)
    refresh = target.health_of("jobs")
    return View(
        jobs=value.jobs if value else (), counts=value.counts if value else (),
        success=bool(refresh and refresh.success), completed=target.completed,
        macie_status=status.status_of(target),
        describe_failures=value.describe_failures if value else 0,
        last_success_at=refresh.last_success_at if refresh else None,
        findings=target.get(findings.SLOT), usage=target.get(usage.SLOT),
        members=target.get(members.SLOT),
        health=tuple((n, h) for n, h in target.health if n != "jobs"))


class FakeMacie:
    """One target's answers; `describe_gate` holds every describe until it is set."""

    def __init__(self, key: TargetKey, jobs: dict[str, str] | None = None,
                 status: str | ApiError = "ENABLED", role_arn: str | None = None) -> None:
        self.key = key
        self.role_arn = role_arn
        self.jobs = dict(jobs or {})  # job id -> status
        self.status = status
        self.list_error: ApiError | None = None
        self.account: str | None = None  # what GetCallerIdentity says
        self.arn_account = ACCOUNT
        self.accepted = True  # the credentials worked in another region
        self.calls: Counter[str] = Counter()
        self.describe_gate = threading.Event()
        self.describe_gate.set()
        self._created: dict[str, int] = {}
        self._pages: weakref.WeakKeyDictionary[Pages, Iterator[list[dict[str, Any]]]] = (
            weakref.WeakKeyDictionary())

    # ------------------------------------------------------------ the protocol

    def call(self, operation: Operation, region: str | None = None,
             **arguments: Any) -> dict[str, Any]:
        try:
            return self._call(operation, arguments)
        except ApiError as err:
            raise _as_from(err, operation) from None

    def _call(self, operation: Operation, arguments: dict[str, Any]) -> dict[str, Any]:
        if operation.name == "GetMacieSession":
            return self.get_macie_session()
        if operation.name == "DescribeClassificationJob":
            return self.describe_job(arguments["jobId"])
        if operation.name == "GetFindingStatistics":
            return {"countsByGroup": self.finding_statistics(
                arguments["findingCriteria"]["criterion"], arguments["size"])}
        raise AssertionError(f"unexpected call {operation.name}")

    def next_page(self, pages: Pages, region: str | None = None
                  ) -> list[dict[str, Any]] | None:
        found = self._pages.get(pages)
        if found is None:
            found = self._pages[pages] = self._paged(pages.operation.name)
        try:
            return next(found, None)
        except ApiError as err:
            raise _as_from(err, pages.operation) from None

    def _paged(self, name: str) -> Iterator[list[dict[str, Any]]]:
        if name == "ListClassificationJobs":
            yield from self.list_pages()
        elif name == "GetUsageStatistics":
            yield self.usage_records()
        elif name == "ListMembers":
            yield self.members()
        else:
            raise AssertionError(f"unexpected paged call {name}")

    # ------------------------------------------------------------ one method per operation

    def region_not_enabled(self, err: ApiError) -> bool:
        return err.auth_failed and self.accepted

    def resolve_account(self) -> str | None:
        self.calls["GetCallerIdentity"] += 1
        return self.account

    def get_macie_session(self) -> dict[str, Any]:
        self.calls["GetMacieSession"] += 1
        if isinstance(self.status, ApiError):
            raise self.status
        return {"status": self.status}

    def created(self, job_id: str) -> datetime:
        """When a job was created: the order the fake first saw it in (ties by id)."""
        if job_id not in self._created:
            self._created[job_id] = len(self._created)
        return datetime.fromtimestamp(1_700_000_000 + self._created[job_id], UTC)

    def list_pages(self) -> Iterator[list[dict[str, Any]]]:
        """Pages of two, newest first (as the exporter asks: createdAt descending)."""
        ids = sorted(self.jobs, key=lambda i: (self.created(i), i), reverse=True)
        for start in range(0, max(1, len(ids)), 2):
            self.calls["ListClassificationJobs"] += 1
            if self.list_error is not None:
                raise self.list_error
            yield [{"jobId": i, "name": f"name-{i}", "jobStatus": self.jobs[i],
                    "jobType": "ONE_TIME", "createdAt": self.created(i)}
                   for i in ids[start:start + 2]]

    def describe_job(self, job_id: str) -> dict[str, Any]:
        assert self.describe_gate.wait(10)
        self.calls["DescribeClassificationJob"] += 1
        return {"jobId": job_id, "name": f"name-{job_id}", "jobStatus": self.jobs[job_id],
                "jobType": "ONE_TIME", "statistics": {"numberOfRuns": 3.0},
                "jobArn": f"arn:aws:macie2:{REGION}:{self.arn_account}:classification-job/"
                          f"{job_id}"}

    def finding_statistics(self, criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
        return []

    def usage_records(self) -> list[dict[str, Any]]:
        return []

    def members(self) -> list[dict[str, Any]]:
        return []
