"""A small fake of the AWS-facing protocol a refresher uses, for tests without sockets."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from exporter.macie import ApiError
from exporter.model import TargetKey

ACCOUNT = "111122223333"
REGION = "eu-west-1"
NOT_ENABLED = ApiError("GetMacieSession", "AccessDeniedException", "Macie is not enabled.", 401)


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


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

    def list_pages(self) -> Iterator[list[Any]]:
        ids = sorted(self.jobs)
        for start in range(0, max(1, len(ids)), 2):
            self.calls["ListClassificationJobs"] += 1
            if self.list_error is not None:
                raise self.list_error
            yield [{"jobId": i, "name": f"name-{i}", "jobStatus": self.jobs[i],
                    "jobType": "ONE_TIME"} for i in ids[start:start + 2]]

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
