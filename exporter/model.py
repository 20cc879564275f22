"""Immutable snapshot of what the exporter knows: jobs per target, plus refresh health."""

from __future__ import annotations

from dataclasses import dataclass

# Documented JobStatus values, in the API's order (botocore macie2 model).
JOB_STATUSES = ("RUNNING", "PAUSED", "CANCELLED", "COMPLETE", "IDLE", "USER_PAUSED")
# Documented JobType values.
JOB_TYPES = ("ONE_TIME", "SCHEDULED")
# Macie never changes a job in these states again.
TERMINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED"})


@dataclass(frozen=True, slots=True)
class Job:
    """One classification job as exported. `None` means the API did not return the field."""

    job_id: str
    name: str
    account_id: str
    status: str
    job_type: str
    schedule: str
    managed_data_identifier_selector: str
    runs: float | None = None
    objects_to_process: float | None = None
    last_run_error: bool | None = None
    created_at: float | None = None
    last_run_at: float | None = None
    paused_at: float | None = None
    pause_expires_at: float | None = None
    tags: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class TargetKey:
    """One account x region pair the exporter polls."""

    account_id: str
    region: str


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What one target's latest refresh left behind: the last good jobs plus health."""

    key: TargetKey
    jobs: tuple[Job, ...] = ()
    # (account_id, status, job_type) -> number of listed jobs.
    counts: tuple[tuple[tuple[str, str, str], int], ...] = ()
    success: bool = False
    completed: bool = False
    last_success_at: float | None = None
    duration_seconds: float | None = None
    describe_failures: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything /metrics serves, swapped in as one reference."""

    targets: tuple[TargetResult, ...] = ()

    @property
    def ready(self) -> bool:
        """True once every target has finished at least one refresh, successful or not."""
        return bool(self.targets) and all(t.completed for t in self.targets)
