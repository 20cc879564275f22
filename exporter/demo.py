"""The demo account behind `--demo`: jobs in several states, evolving with time.

`python -m exporter.demo --port 9999` runs the demo simulator on its own.
"""

from __future__ import annotations

import argparse
import time

from exporter.simulator import DAY, Simulator, make_job

DEMO_REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
# Any access key the simulator has not issued itself is the default account's.
DEMO_ACCESS_KEY = "AKIADEMOMACIEEXPORTER"
DEMO_SECRET_KEY = "demo-secret-key-not-a-real-one"  # noqa: S105 - the demo's fixed key


class DemoAccount:
    """A realistic account that evolves with time (an `Evolve` hook for the simulator).

    eu-west-1: a fast and a slow one-time scan running (objects to process falling until they
    complete), a daily job cycling IDLE → RUNNING → IDLE with its runs rising, a weekly job whose
    last run had errors, a USER_PAUSED job four days from expiry, a quota-PAUSED job, and a
    history of COMPLETE and CANCELLED jobs. us-east-1: a smaller second region. ap-southeast-2:
    Macie not enabled.
    """

    CYCLE = 300.0  # seconds per demo "day" of the scheduled job
    RUNNING_FOR = 120.0

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start

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
        sim.set_macie_status("ap-southeast-2", "DISABLED")
        self(t0, sim)

    def __call__(self, now: float, sim: Simulator) -> None:
        t0, elapsed = self.start, max(0.0, now - self.start)
        for region, job_id, name, total, rate in (
            ("eu-west-1", "datalake000000000000000000000001", "pii-scan-prod-data-lake",
             250000, 70.0),
            ("eu-west-1", "crmexport00000000000000000000001", "crm-exports-deep-scan",
             40000, 2.0),
            ("us-east-1", "useastrun000000000000000000001", "us-customer-uploads",
             90000, 40.0),
        ):
            left = max(0.0, total - rate * elapsed)
            sim.put_job(region, make_job(
                job_id, name, "RUNNING" if left else "COMPLETE", created_at=t0 - 3600,
                runs=1, objects_to_process=round(left), last_run_time=t0 - 3600,
                tags={"team": "privacy", "environment": "prod"},
            ))
        cycles, into = divmod(elapsed + 30.0, self.CYCLE)
        running = into < self.RUNNING_FOR
        sim.put_job("eu-west-1", make_job(
            "dailyuploads0000000000000000001", "daily-customer-uploads",
            "RUNNING" if running else "IDLE", job_type="SCHEDULED", schedule="daily",
            created_at=t0 - 90 * DAY, runs=88 + cycles,
            objects_to_process=round(5000 * (1 - into / self.RUNNING_FOR)) if running else 0,
            last_run_time=now - into, tags={"team": "privacy", "environment": "prod"},
        ))


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
    sim = demo_simulator()
    print(sim.start(args.host, args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
