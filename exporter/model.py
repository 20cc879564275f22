"""What the exporter knows, as immutable values: target keys, jobs, per-target results, the
snapshot that /metrics serves, and the naming rules they share. Imports nothing of the project."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

# Documented JobStatus values, in the API's order (botocore macie2 model).
JOB_STATUSES = ("RUNNING", "PAUSED", "CANCELLED", "COMPLETE", "IDLE", "USER_PAUSED")
# Documented JobType values.
JOB_TYPES = ("ONE_TIME", "SCHEDULED")
# Macie never changes a job in these states again.
TERMINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED"})
# Macie's state in one account and region: GetMacieSession's MacieStatus values, plus DISABLED
# for "Macie is not enabled" (the API answers AccessDeniedException then).
MACIE_STATUSES = ("ENABLED", "PAUSED", "DISABLED")
UNKNOWN_ACCOUNT = "unknown"
# Finding severities (SeverityDescription), lowest first.
SEVERITIES = ("Low", "Medium", "High")
# Documented RelationshipStatus values of a Macie member account.
MEMBER_STATUSES = ("Enabled", "Paused", "Invited", "Created", "Removed", "Resigned",
                   "EmailVerificationInProgress", "EmailVerificationFailed", "RegionDisabled",
                   "AccountSuspended")

_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def tag_label_name(key: str) -> str:
    """`tag_<key>` with every character that a label name cannot hold replaced by `_`."""
    return "tag_" + _INVALID_LABEL_CHARS.sub("_", key)


@dataclass(frozen=True, slots=True, order=True)
class TargetKey:
    """One account x region pair the exporter polls: the one name of a target everywhere."""

    account_id: str
    region: str


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


Counts = tuple[tuple[tuple[str, str, str], int], ...]


@dataclass(frozen=True, slots=True)
class Usage:
    """One usage type of one account, month to date (GetUsageStatistics)."""

    account_id: str
    usage_type: str
    currency: str
    estimated_cost: float | None = None
    quota_reached: bool | None = None
    quota_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class CollectorHealth:
    """How a collector's last run for a target went."""

    success: bool
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Collected:
    """What the collectors beside the jobs refresh found for a target; None: not (yet) known.

    Kept as the last good values when a collector fails."""

    # job id -> findings per severity, in SEVERITIES order (archived findings not counted).
    findings: tuple[tuple[str, tuple[int, int, int]], ...] | None = None
    usage: tuple[Usage, ...] | None = None
    # (member account, relationship status)
    members: tuple[tuple[str, str], ...] | None = None
    health: tuple[tuple[str, CollectorHealth], ...] = ()

    def healthy(self, name: str, health: CollectorHealth) -> Collected:
        """A copy with `name`'s health replaced."""
        others = tuple((n, h) for n, h in self.health if n != name)
        return replace(self, health=tuple(sorted((*others, (name, health)))))


def zero_filled_counts(counted: dict[tuple[str, str, str], int],
                       accounts: Iterable[str]) -> Counts:
    """(account, status, type) counts with every documented status x type present, sorted."""
    full = dict(counted)
    for account in accounts:
        for state in JOB_STATUSES:
            for job_type in JOB_TYPES:
                full.setdefault((account, state, job_type), 0)
    return tuple(sorted(full.items()))


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What one target's latest refresh left behind: the last good jobs plus health."""

    key: TargetKey
    jobs: tuple[Job, ...] = ()
    # (account_id, status, job_type) -> number of listed jobs.
    counts: Counts = ()
    success: bool = False
    completed: bool = False
    last_success_at: float | None = None
    duration_seconds: float | None = None
    describe_failures: int = 0
    # One of MACIE_STATUSES, or None while unknown (not checked yet, or GetMacieSession denied).
    macie_status: str | None = None
    collected: Collected = Collected()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything /metrics serves, swapped in as one reference."""

    targets: tuple[TargetResult, ...] = ()
    # True until the set of targets is known (discovery has not answered yet, once).
    pending: bool = False
    # The store's swap count when this snapshot was made (newer snapshots have higher ones).
    serial: int = 0

    @property
    def ready(self) -> bool:
        """True once the targets are known and every one has finished at least one refresh,
        successful or not (no targets at all, e.g. a shard that owns none, is ready)."""
        return not self.pending and all(t.completed for t in self.targets)
