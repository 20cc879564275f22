"""The demo account behind `--demo`: jobs in several states, findings, usage, member accounts
and an organisation, evolving with time.

`python -m exporter.demo --port 9999` runs the demo simulator on its own.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, ClassVar

from exporter.demo.simulator import (
    DAY,
    DEFAULT_ACCOUNT,
    Simulator,
    macie_job_event,
    make_bucket,
    make_job,
)

DEMO_REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
# Any access key the simulator has not issued itself is the default account's.
DEMO_ACCESS_KEY = "AKIADEMOMACIEEXPORTER"
DEMO_SECRET_KEY = "demo-secret-key-not-a-real-one"  # noqa: S105 - the demo's fixed key
DEMO_ACCOUNT = DEFAULT_ACCOUNT
# The member role that discovery assumes in each account of the demo's organisation.
DEMO_ORGANIZATION_ROLE = "macie-exporter"
ANALYTICS_ACCOUNT, PAYMENTS_ACCOUNT = "234567890123", "345678901234"
# The organisation the demo account manages (ListAccounts), with the accounts' names.
DEMO_ORGANIZATION = {DEMO_ACCOUNT: "ACTIVE", ANALYTICS_ACCOUNT: "ACTIVE",
                     PAYMENTS_ACCOUNT: "ACTIVE", "456789012345": "SUSPENDED"}
DEMO_ACCOUNT_NAMES = {DEMO_ACCOUNT: "security-tooling", ANALYTICS_ACCOUNT: "analytics",
                      PAYMENTS_ACCOUNT: "payments", "456789012345": "legacy-sandbox"}
# The demo account is Macie administrator in eu-west-1 of these members (ListMembers).
DEMO_MEMBERS_REGION = "eu-west-1"
DEMO_MEMBERS = {ANALYTICS_ACCOUNT: "Enabled", PAYMENTS_ACCOUNT: "Enabled",
                "567890123456": "Enabled", "678901234567": "Paused", "789012345678": "Removed"}


class DemoAccount:
    """A realistic account that evolves with time (an `Evolve` hook for the simulator).

    eu-west-1: a fast and a slow one-time scan running (objects to process falling until they
    complete), a daily job cycling IDLE → RUNNING → IDLE with its runs rising, a weekly job whose
    last run had errors, a USER_PAUSED job four days from expiry, a quota-PAUSED job, and a
    history of COMPLETE and CANCELLED jobs. us-east-1: a smaller second region. ap-southeast-2:
    Macie not enabled.

    Job log events (CloudWatch Logs): the weekly job's last run could not read two buckets
    (BUCKET_ACCESS_DENIED) and found one deleted (BUCKET_DOES_NOT_EXIST); its run the week
    before was denied another bucket, since fixed. Every other run of the daily job (the first
    one the demo shows, then every second) is denied one bucket, and the next run clears it.

    Findings: the data-lake scan's Low, Medium and High findings grow while it runs, the paused
    legal-hold scan holds High findings, and a few archived findings (which never count) sit
    beside them. Usage: in eu-west-1 the account has reached its sensitive data discovery quota
    (why bulk-backup-scan is PAUSED); in us-east-1 that cost keeps rising towards the quota.
    Members: the account is Macie administrator in eu-west-1 of three Enabled members, one
    Paused and one Removed. Organisation: it manages two ACTIVE accounts (analytics, payments),
    each with jobs in eu-west-1, and a SUSPENDED one.

    S3 buckets (eu-west-1): a public bucket with a high sensitivity score whose High findings
    grow with the data-lake scan, a bucket Macie is denied access to, an unencrypted bucket that
    nothing monitors, and the members' buckets (seen by the administrator, reported by their
    owners' targets). Automated discovery is on for the account and analytics, off for
    payments (a member), and each monitored bucket's last analysis moves on every demo day.
    """

    CYCLE = 300.0  # seconds per demo "day" of the scheduled job
    # The buckets some jobs scan (the others scan `bucket-<jobId>`): their findings are the
    # buckets' findings.
    JOB_BUCKETS: ClassVar[dict[str, str]] = {
        "datalake000000000000000000000001": "acme-marketing-public",
        "legalhold0000000000000000000001": "acme-data-lake-raw",
        "paymentscards000000000000000001": "payments-card-vault",
        "crmexport00000000000000000000001": "acme-crm-exports"}
    RUNNING_FOR = 120.0
    DENIED_AFTER = 20.0  # seconds into an erroring run of the daily job

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start
        # The daily job's log: the first run whose events are not all written yet, and the
        # last run whose start is.
        self._next_run, self._started = 0, -1

    def populate(self, sim: Simulator) -> None:
        t0 = self.start
        history = [
            ("Quarterly PII sweep 2026-Q1", "COMPLETE", 240), ("Onboarding bucket audit",
             "COMPLETE", 200), ("Données \"clients\" \\ EU", "COMPLETE", 150),
            ("Marketing exports check", "CANCELLED", 120), ("Legacy archive scan", "COMPLETE",
             90), ("Vendor share review", "CANCELLED", 75), ("Quarterly PII sweep 2026-Q2",
             "COMPLETE", 60), ("Log bucket spot check", "COMPLETE", 45),
            ("Test run (aborted)", "CANCELLED", 40), ("Quarterly PII sweep 2026-Q3",
             "COMPLETE", 30), ("Data lake baseline", "COMPLETE", 20),
            ("Support attachments scan", "COMPLETE", 12),
        ]
        for i, (name, status, age_days) in enumerate(history):
            created = t0 - age_days * DAY
            sim.put_job("eu-west-1", make_job(
                f"hist{i:02d}{'0' * 24}"[:32], name, status, created_at=created,
                last_run_time=created + 600, objects_to_process=0 if status == "COMPLETE"
                else 1200 + 37 * i, tags={"team": "privacy", "environment": "prod"},
            ))
        sim.put_job("eu-west-1", make_job(
            "weeklyfinance000000000000000001", "weekly-finance-archive", "IDLE",
            job_type="SCHEDULED", schedule="weekly:MONDAY", created_at=t0 - 180 * DAY,
            runs=25, last_run_time=t0 - 2 * DAY, last_run_error=True,
            tags={"team": "finance", "environment": "prod", "cost-center": "fin-042"},
        ))
        self._weekly_log(sim)
        sim.put_job("eu-west-1", make_job(
            "monthlyhr0000000000000000000001", "monthly-hr-records", "IDLE",
            job_type="SCHEDULED", schedule="monthly:1", created_at=t0 - 400 * DAY, runs=13,
            last_run_time=t0 - 21 * DAY, tags={"team": "hr", "environment": "prod"},
        ))
        sim.put_job("eu-west-1", make_job(
            "legalhold0000000000000000000001", "legal-hold-scan", "USER_PAUSED",
            created_at=t0 - 27 * DAY, runs=1, objects_to_process=48211,
            last_run_time=t0 - 27 * DAY, paused_at=t0 - 26 * DAY, expires_at=t0 + 4 * DAY,
            tags={"team": "legal", "environment": "prod"},
            bucket=self.JOB_BUCKETS["legalhold0000000000000000000001"],
        ))
        sim.put_job("eu-west-1", make_job(
            "backupquota00000000000000000001", "bulk-backup-scan", "PAUSED",
            created_at=t0 - 3 * DAY, runs=1, objects_to_process=912334,
            last_run_time=t0 - 3 * DAY, tags={"team": "platform", "environment": "prod"},
        ))
        sim.put_job("us-east-1", make_job(
            "useastbaseline00000000000000001", "us-baseline", "COMPLETE",
            created_at=t0 - 50 * DAY, last_run_time=t0 - 50 * DAY,
        ))
        # (job, archived, (Low, Medium, High)): the paused legal-hold scan holds High findings.
        for job_id, archived, counts in (
            ("legalhold0000000000000000000001", False, (63, 17, 4)),
            ("legalhold0000000000000000000001", True, (5, 0, 0)),
            ("weeklyfinance000000000000000001", False, (15, 8, 0)),
            (f"hist09{'0' * 24}", False, (48, 11, 0)),  # Quarterly PII sweep 2026-Q3
            (f"hist10{'0' * 24}", False, (120, 30, 2)),  # Data lake baseline
            (f"hist10{'0' * 24}", True, (9, 0, 1)),
        ):
            for severity, count in zip(("Low", "Medium", "High"), counts, strict=True):
                sim.set_findings("eu-west-1", job_id, severity, count, archived=archived)
        sim.set_findings("us-east-1", "useastbaseline00000000000000001", "Low", 12)
        # The monthly sensitive data discovery quota reached in eu-west-1.
        sim.set_usage(DEMO_ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "5093.72", limit_value=5,
                      limited=True, region="eu-west-1")
        sim.set_macie_status("ap-southeast-2", "DISABLED")
        self._populate_organization(sim)
        self._populate_buckets(sim)
        self(t0, sim)

    # (owner, name, make_bucket arguments), in eu-west-1 but for the last one.
    BUCKETS: tuple[tuple[str, str, dict[str, Any]], ...] = (
        (DEMO_ACCOUNT, "acme-marketing-public", {"public": True, "shared": "EXTERNAL",
                                                 "score": 87, "objects": 250000}),
        (DEMO_ACCOUNT, "acme-data-lake-raw", {"score": 72, "encryption": "aws:kms",
                                              "by_job": "TRUE", "objects": 48211}),
        (DEMO_ACCOUNT, "acme-hr-records", {"score": None, "error": "ACCESS_DENIED",
                                           "discovery": "NOT_MONITORED"}),
        (DEMO_ACCOUNT, "acme-backups-cold", {"score": 50, "encryption": "NONE",
                                             "unencrypted_uploads": "TRUE",
                                             "discovery": "NOT_MONITORED", "objects": 912334}),
        (DEMO_ACCOUNT, "acme-app-logs", {"score": 12, "objects": 5_400_000,
                                         "classifiable": 5_396_900}),
        (DEMO_ACCOUNT, "acme-ml-features", {"score": -1, "objects": 2200}),
        (DEMO_ACCOUNT, "acme-crm-exports", {"score": 50, "shared": "INTERNAL",
                                            "by_job": "TRUE", "objects": 40000}),
        (ANALYTICS_ACCOUNT, "analytics-warehouse", {"score": 64, "objects": 120000}),
        (PAYMENTS_ACCOUNT, "payments-card-vault", {"score": 95, "encryption": "aws:kms",
                                                   "discovery": "NOT_MONITORED",
                                                   "by_job": "TRUE"}),
        ("567890123456", "ml-training-sets", {"score": -1, "objects": 800}),
    )
    US_BUCKET: tuple[str, str, dict[str, Any]] = (
        DEMO_ACCOUNT, "acme-us-uploads", {"score": 33, "objects": 90000})

    def _populate_buckets(self, sim: Simulator) -> None:
        for account, status in ((DEMO_ACCOUNT, "ENABLED"), (ANALYTICS_ACCOUNT, "ENABLED"),
                                (PAYMENTS_ACCOUNT, "DISABLED"), ("567890123456", "ENABLED")):
            sim.set_automated_discovery(account, "eu-west-1", status)
        sim.set_automated_discovery(DEMO_ACCOUNT, "us-east-1", "ENABLED")
        self._buckets(sim, 0.0)

    def _buckets(self, sim: Simulator, days: float) -> None:
        """Every bucket, its last automated analysis a demo day ago at most."""
        analysed = self.start + days * self.CYCLE - 3600.0
        for region, (account, name, details) in (
                *(("eu-west-1", bucket) for bucket in self.BUCKETS),
                ("us-east-1", self.US_BUCKET)):
            monitored = details.get("discovery", "MONITORED") == "MONITORED"
            sim.put_bucket(region, make_bucket(
                name, account, region, **details,
                last_discovery=analysed if monitored else None))

    def _weekly_log(self, sim: Simulator) -> None:
        """The weekly job's last two runs in its log stream: the latest could not read two
        buckets and found one deleted; the one before was denied a bucket fixed since."""
        job_id, name = "weeklyfinance000000000000000001", "weekly-finance-archive"
        events = []
        for run, failures in (
            (self.start - 9 * DAY, (("BUCKET_ACCESS_DENIED", "finance-archive-2019"),)),
            (self.start - 2 * DAY, (("BUCKET_ACCESS_DENIED", "finance-ledgers-eu"),
                                    ("BUCKET_ACCESS_DENIED", "finance-payroll-archive"),
                                    ("BUCKET_DOES_NOT_EXIST", "finance-scratch-2023"))),
        ):
            events.append((run, macie_job_event(job_id, name, "SCHEDULED_RUN_STARTED", run,
                                                run_date=run)))
            for i, (event_type, bucket) in enumerate(failures, 1):
                events.append((run + 60 * i, macie_job_event(
                    job_id, name, event_type, run + 60 * i, run_date=run, account=DEMO_ACCOUNT,
                    bucket=bucket, operation="ListObjectsV2")))
            events.append((run + 3600, macie_job_event(job_id, name, "SCHEDULED_RUN_COMPLETED",
                                                       run + 3600, run_date=run)))
        sim.put_log_events("eu-west-1", job_id, events)

    def _daily_log(self, sim: Simulator, now: float) -> bool:
        """Write the daily job's log events up to `now`: each run's start, and in every other
        run (the even ones) a bucket denied; True if the current run has had that error."""
        job_id, name = "dailyuploads0000000000000000001", "daily-customer-uploads"
        cycles = int((max(0.0, now - self.start) + 30.0) // self.CYCLE)
        while self._next_run <= cycles:
            cycle = self._next_run
            run = self.start - 30.0 + cycle * self.CYCLE
            if self._started < cycle:
                sim.put_log_events("eu-west-1", job_id, [(run, macie_job_event(
                    job_id, name, "SCHEDULED_RUN_STARTED", run, run_date=run))])
                self._started = cycle
            if cycle % 2 == 0:
                denied = run + self.DENIED_AFTER
                if now < denied:
                    break  # this run's error is still to come
                sim.put_log_events("eu-west-1", job_id, [(denied, macie_job_event(
                    job_id, name, "BUCKET_ACCESS_DENIED", denied, run_date=run,
                    account=DEMO_ACCOUNT, bucket="customer-uploads-legacy",
                    operation="ListObjectsV2"))])
            self._next_run += 1
        return cycles % 2 == 0 and self._next_run > cycles

    def _populate_organization(self, sim: Simulator) -> None:
        t0 = self.start
        for member, status in DEMO_MEMBERS.items():
            sim.set_member(DEMO_ACCOUNT, DEMO_MEMBERS_REGION, member, status)
        sim.set_organization(DEMO_ACCOUNT, DEMO_ORGANIZATION, names=DEMO_ACCOUNT_NAMES)
        for account in (ANALYTICS_ACCOUNT, PAYMENTS_ACCOUNT):
            sim.set_macie_status("ap-southeast-2", "DISABLED", account_id=account)
        sim.put_job("eu-west-1", make_job(
            "analyticsweekly0000000000000001", "analytics-weekly-pii", "IDLE",
            job_type="SCHEDULED", schedule="weekly:WEDNESDAY", created_at=t0 - 120 * DAY,
            runs=17, last_run_time=t0 - 3 * DAY, account_id=ANALYTICS_ACCOUNT,
            tags={"team": "analytics", "environment": "prod"},
        ), account_id=ANALYTICS_ACCOUNT)
        sim.put_job("eu-west-1", make_job(
            "analyticsonboard000000000000001", "analytics-onboarding-scan", "COMPLETE",
            created_at=t0 - 14 * DAY, last_run_time=t0 - 14 * DAY, account_id=ANALYTICS_ACCOUNT,
            tags={"team": "analytics", "environment": "staging"},
        ), account_id=ANALYTICS_ACCOUNT)
        sim.put_job("eu-west-1", make_job(
            "paymentsquarterly00000000000001", "payments-quarterly-review", "COMPLETE",
            created_at=t0 - 40 * DAY, last_run_time=t0 - 40 * DAY, account_id=PAYMENTS_ACCOUNT,
            tags={"team": "payments", "environment": "prod"},
        ), account_id=PAYMENTS_ACCOUNT)
        for account, job_id, counts in (
            (ANALYTICS_ACCOUNT, "analyticsweekly0000000000000001", (22, 5, 0)),
            (ANALYTICS_ACCOUNT, "analyticsonboard000000000000001", (9, 0, 1)),
            (PAYMENTS_ACCOUNT, "paymentsquarterly00000000000001", (31, 6, 2)),
        ):
            for severity, count in zip(("Low", "Medium", "High"), counts, strict=True):
                sim.set_findings("eu-west-1", job_id, severity, count, account_id=account)

    def __call__(self, now: float, sim: Simulator) -> None:
        t0, elapsed = self.start, max(0.0, now - self.start)
        processed: dict[str, float] = {}
        for account, region, job_id, name, total, rate in (
            (DEMO_ACCOUNT, "eu-west-1", "datalake000000000000000000000001",
             "pii-scan-prod-data-lake", 250000, 70.0),
            (DEMO_ACCOUNT, "eu-west-1", "crmexport00000000000000000000001",
             "crm-exports-deep-scan", 40000, 2.0),
            (DEMO_ACCOUNT, "us-east-1", "useastrun000000000000000000001",
             "us-customer-uploads", 90000, 40.0),
            (PAYMENTS_ACCOUNT, "eu-west-1", "paymentscards000000000000000001",
             "payments-card-data-scan", 60000, 10.0),
        ):
            left = max(0.0, total - rate * elapsed)
            processed[job_id] = total - left
            team = "payments" if account == PAYMENTS_ACCOUNT else "privacy"
            sim.put_job(region, make_job(
                job_id, name, "RUNNING" if left else "COMPLETE", created_at=t0 - 3600,
                runs=1, objects_to_process=round(left), last_run_time=t0 - 3600,
                tags={"team": team, "environment": "prod"}, account_id=account,
                bucket=self.JOB_BUCKETS.get(job_id),
            ), account_id=account)
        cycles, into = divmod(elapsed + 30.0, self.CYCLE)
        running = into < self.RUNNING_FOR
        sim.put_job("eu-west-1", make_job(
            "dailyuploads0000000000000000001", "daily-customer-uploads",
            "RUNNING" if running else "IDLE", job_type="SCHEDULED", schedule="daily",
            created_at=t0 - 90 * DAY, runs=88 + cycles,
            objects_to_process=round(5000 * (1 - into / self.RUNNING_FOR)) if running else 0,
            last_run_time=now - into, last_run_error=self._daily_log(sim, now),
            tags={"team": "privacy", "environment": "prod"},
        ))
        self._findings(sim, processed, cycles)
        self._usage(sim, elapsed)
        self._buckets(sim, cycles)

    @staticmethod
    def _findings(sim: Simulator, processed: dict[str, float], cycles: float) -> None:
        """Findings that grow as the running jobs process objects and the daily job runs."""
        lake = processed["datalake000000000000000000000001"]
        crm = processed["crmexport00000000000000000000001"]
        us = processed["useastrun000000000000000000001"]
        cards = processed["paymentscards000000000000000001"]
        for account, region, job_id, (low, medium, high) in (
            (DEMO_ACCOUNT, "eu-west-1", "datalake000000000000000000000001",
             (31 + lake // 1000, 9 + lake // 5000, 2 + lake // 25000)),
            (DEMO_ACCOUNT, "eu-west-1", "crmexport00000000000000000000001",
             (20 + crm // 800, 3 + crm // 4000, 0)),
            (DEMO_ACCOUNT, "eu-west-1", "dailyuploads0000000000000000001",
             (140 + 3 * cycles, 12 + cycles // 4, 0)),
            (DEMO_ACCOUNT, "us-east-1", "useastrun000000000000000000001",
             (us // 2000, us // 15000, 0)),
            (PAYMENTS_ACCOUNT, "eu-west-1", "paymentscards000000000000000001",
             (4 + cards // 3000, 2 + cards // 12000, 1 + cards // 20000)),
        ):
            for severity, count in (("Low", low), ("Medium", medium), ("High", high)):
                sim.set_findings(region, job_id, severity, int(count), account_id=account)
        # Reviewed and archived: never counted.
        for severity, count in (("Low", 6), ("Medium", 2), ("High", 1)):
            sim.set_findings("eu-west-1", "datalake000000000000000000000001", severity, count,
                             archived=True)

    @staticmethod
    def _usage(sim: Simulator, elapsed: float) -> None:
        """Costs that rise while jobs run: us-east-1 nears its quota, payments' scan adds up."""
        sim.set_usage(DEMO_ACCOUNT, "SENSITIVE_DATA_DISCOVERY",
                      f"{min(3874.10 + 0.05 * elapsed, 4990.0):.2f}", limit_value=5,
                      region="us-east-1")
        sim.set_usage(DEMO_ACCOUNT, "DATA_INVENTORY_EVALUATION",
                      f"{38.40 + 0.001 * elapsed:.2f}", region="eu-west-1")
        sim.set_usage(PAYMENTS_ACCOUNT, "SENSITIVE_DATA_DISCOVERY",
                      f"{812.55 + min(elapsed, 6000.0) * 0.02:.2f}", limit_value=5,
                      region="eu-west-1")


def demo_simulator(start: float | None = None) -> Simulator:
    """A simulator holding the demo account."""
    demo = DemoAccount(start)
    sim = Simulator(evolve=demo)
    demo.populate(sim)
    return sim


def main() -> None:
    """Run the demo simulator on its own until interrupted."""
    parser = argparse.ArgumentParser(description="The simulated Macie API with the demo account.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    demo_simulator().run(args.host, args.port)


if __name__ == "__main__":
    main()
