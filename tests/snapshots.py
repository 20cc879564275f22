"""A snapshot with every kind of job and target, shared by the collector and exposition tests."""

from __future__ import annotations

from exporter.model import (
    Collected,
    CollectorHealth,
    Job,
    Snapshot,
    TargetKey,
    TargetResult,
    Usage,
    zero_filled_counts,
)

ACCOUNT = "111122223333"
MEMBER = "222233334444"


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
    healthy = TargetResult(
        key=TargetKey(ACCOUNT, "eu-west-1"), jobs=(paused, running, odd),
        counts=zero_filled_counts({(ACCOUNT, "RUNNING", "SCHEDULED"): 1,
                                   (ACCOUNT, "USER_PAUSED", "ONE_TIME"): 1,
                                   (ACCOUNT, "ARCHIVED", "ONE_TIME"): 1}, [ACCOUNT]),
        success=True, completed=True, last_success_at=1_795_000_100.5, duration_seconds=1.25,
        macie_status="ENABLED",
        collected=Collected(
            # job-odd was asked and has none: a real zero; an unexported job's count is not
            # shown.
            findings=(("gone", (9, 9, 9)), ("job-odd", (0, 0, 0)), ("job-paused", (1, 0, 4)),
                      ("job-run", (12, 3, 0))),
            usage=(Usage(ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "USD", 12.5, True, 5 * 2.0**40),
                   Usage(ACCOUNT, "DATA_INVENTORY_EVALUATION", "USD", 0.1),
                   Usage(MEMBER, "SENSITIVE_DATA_DISCOVERY", "USD", 3.0, False, 2.0**40)),
            members=((MEMBER, "Enabled"), ("444455556666", "Removed"),
                     ("777788889999", "Quarantined")),
            health=(("findings", CollectorHealth(True, 0.25)),
                    ("usage", CollectorHealth(False, 1.5)))),
    )
    failing = TargetResult(key=TargetKey(ACCOUNT, "us-east-1"), success=False, completed=True,
                           duration_seconds=0.5, describe_failures=0, macie_status="PAUSED")
    off = TargetResult(key=TargetKey(ACCOUNT, "ap-southeast-2"), success=True, completed=True,
                       last_success_at=1_795_000_100.5, duration_seconds=0.01,
                       macie_status="DISABLED")
    pending = TargetResult(key=TargetKey("unknown", "ap-south-1"))
    return Snapshot((healthy, failing, off, pending))
