"""A snapshot with every kind of job and target, shared by the collector and exposition tests."""

from __future__ import annotations

from exporter.collectors import (
    automated_discovery,
    buckets,
    findings,
    job_errors,
    jobs,
    members,
    status,
    usage,
)
from exporter.collectors.buckets import Bucket
from exporter.collectors.job_errors import JobErrors, RunErrors
from exporter.collectors.jobs import Job, Jobs, zero_filled_counts
from exporter.collectors.usage import Usage
from exporter.model import Health, Snapshot, TargetKey, TargetResult

ACCOUNT = "111122223333"
MEMBER = "222233334444"


def target(key: TargetKey, *, jobs_value: Jobs | None = None, success: bool | None = None,
           last_success_at: float | None = None, duration: float = 0.0,
           macie_status: str | None = None) -> TargetResult:
    """A target's result as the engine leaves it after a refresh (`success` None: none yet)."""
    result = TargetResult(key, completed=success is not None)
    if success is not None:
        result = result.with_health("jobs", Health(success, duration, last_success_at))
    return result.with_value(jobs.SLOT, jobs_value).with_value(status.SLOT, macie_status)


def snapshot() -> Snapshot:
    running = Job("job-run", "nightly scan", ACCOUNT, "RUNNING", "SCHEDULED", "daily",
                  "RECOMMENDED", runs=12, objects_to_process=3400, last_run_error=False,
                  created_at=1_790_000_000, last_run_at=1_795_000_000,
                  tags=(("team", "privacy"), ("cost-center", "42")))
    paused = Job("job-paused", 'Données "clients" \\ EU', ACCOUNT, "USER_PAUSED", "ONE_TIME",
                 "none", "ALL", runs=1, objects_to_process=10, last_run_error=True,
                 created_at=1_790_000_000, paused_at=1_794_000_000,
                 pause_expires_at=1_796_592_000, tags=())
    odd = Job("job-odd", "from the future", ACCOUNT, "ARCHIVED", "ONE_TIME", "none", "")
    healthy = target(
        TargetKey(ACCOUNT, "eu-west-1"), jobs_value=Jobs(
            (paused, running, odd),
            zero_filled_counts({(ACCOUNT, "RUNNING", "SCHEDULED"): 1,
                                (ACCOUNT, "USER_PAUSED", "ONE_TIME"): 1,
                                (ACCOUNT, "ARCHIVED", "ONE_TIME"): 1}, [ACCOUNT])),
        success=True, last_success_at=1_795_000_100.5, duration=1.25, macie_status="ENABLED",
    ).with_value(
        # job-odd was asked and has none: a real zero; an unexported job's count is not shown.
        findings.SLOT, (("gone", (9, 9, 9)), ("job-odd", (0, 0, 0)), ("job-paused", (1, 0, 4)),
                        ("job-run", (12, 3, 0)))
    ).with_value(
        usage.SLOT, (Usage(ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "USD", 12.5, True, 5 * 2.0**40),
                     Usage(ACCOUNT, "DATA_INVENTORY_EVALUATION", "USD", 0.1),
                     Usage(MEMBER, "SENSITIVE_DATA_DISCOVERY", "USD", 3.0, False, 2.0**40)),
    ).with_value(
        members.SLOT, ((MEMBER, "Enabled"), ("444455556666", "Removed"),
                       ("777788889999", "Quarantined")),
    ).with_value(
        buckets.SLOT, (
            Bucket(ACCOUNT, "acme-public", "PUBLIC", "EXTERNAL", "NONE", True, 87, 1200, 5e9,
                   1000, 4e9, 200, None, True, False, 1_795_000_000, (3, 1, 2)),
            Bucket(ACCOUNT, "acme-denied", "NOT_PUBLIC", "NOT_SHARED", "aws:kms", False,
                   error_code="ACCESS_DENIED", monitored_by_discovery=False,
                   monitored_by_job=False, findings=(0, 0, 0)),
            # A member's bucket, seen by its administrator: its owner is not polled here.
            Bucket(MEMBER, "member-logs", "UNKNOWN", "UNKNOWN", "AES256", None, -1, 10, 1e6,
                   findings=(0, 0, 0)))
    ).with_value(
        automated_discovery.SLOT, ((ACCOUNT, "ENABLED"), (MEMBER, "DISABLED")),
    ).with_value(
        # job-paused's last run had errors: two buckets denied, one gone, and an event that
        # could not be read. job-run's last run had none: what was read before is not shown.
        job_errors.SLOT, JobErrors((
            RunErrors("job-paused", None, 1_794_000_000.0, (
                (("BUCKET_ACCESS_DENIED", "finance-ledgers"), 2),
                (("BUCKET_DOES_NOT_EXIST", "scratch-2023"), 1), (("unparsed", ""), 1))),
            RunErrors("job-run", 1_795_000_000, 1_795_000_000.0, (
                (("ACCOUNT_SUSPENDED", MEMBER), 1),))))
    ).with_health("findings", Health(True, 0.25)).with_health("usage", Health(False, 1.5))
    failing = target(TargetKey(ACCOUNT, "us-east-1"), success=False, duration=0.5,
                     macie_status="PAUSED")
    off = target(TargetKey(ACCOUNT, "ap-southeast-2"), success=True,
                 last_success_at=1_795_000_100.5, duration=0.01, macie_status="DISABLED")
    pending = TargetResult(TargetKey("unknown", "ap-south-1"))
    return Snapshot((healthy, failing, off, pending))
