"""Synthetic fleets for the benchmarks: the simulator holding many jobs, or many targets.

    python -m benchmarks.fleets --jobs 10000 --active 300 --latency 0.005
        one target (the simulator's default account in --region) holding --jobs jobs, --active
        of them non-terminal (benchmarks/bench.py, benchmarks/soak.py)

    python -m benchmarks.fleets --accounts 200 --regions 10 --jobs-per-target 3 \\
        --running-per-target 1 --off-every 10 --erroring-every 20 --latency 0.005 \\
        [--running-every 20] [--config exporter.yaml]
        an organisation: accounts 100000000000, 100000000001, … in the first --regions of
        MACIE_REGIONS, each (account, region) holding --jobs-per-target jobs of which
        --running-per-target RUNNING (the others COMPLETE; with --running-every N, one
        RUNNING job in every Nth target and none in the others), and every --off-every-th account
        with Macie not enabled in any region. Every --erroring-every-th job of the enabled
        targets (in that order) had errors in its last run, and its log stream (CloudWatch
        Logs) holds that run's three error events. --config writes the exporter's config file, one
        target per account, assuming arn:aws:iam::<account>:role/macie-exporter.

    python -m benchmarks.fleets --buckets 10000 --members 50 --latency 0.005
        a Macie administrator (the simulator's default account) in --region with --members
        members, --buckets S3 buckets spread over them, automated discovery on for all but
        every tenth member, and findings on one bucket in twenty (benchmarks/buckets.py)

Every call is delayed by --latency seconds. The simulator's URL is the first line of stdout;
it runs until interrupted or terminated. `GET <url>/_simulator/requests` answers its request
counts (see `request_counts`).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.demo.simulator import (
    DAY,
    DEFAULT_ACCOUNT,
    Simulator,
    macie_job_event,
    make_bucket,
    make_job,
)

# Regions where Macie is available (botocore's endpoints data), the most used first.
MACIE_REGIONS = (
    "us-east-1", "eu-west-1", "us-west-2", "eu-central-1", "ap-southeast-2", "us-east-2",
    "eu-west-2", "ap-northeast-1", "ap-southeast-1", "ca-central-1", "ap-south-1",
    "eu-north-1", "eu-west-3", "ap-northeast-2", "sa-east-1", "us-west-1", "eu-south-1",
    "ap-northeast-3", "ap-east-1", "me-south-1", "af-south-1", "il-central-1",
)
FIRST_ACCOUNT = 100_000_000_000
ROLE_NAME = "macie-exporter"
# The organisation's management account in the discovery scenario (not a target itself).
MANAGEMENT_ACCOUNT = "099999999999"


def add_synthetic_jobs(sim: Simulator, region: str, total: int, active: int) -> None:
    """`total` jobs, `active` of them non-terminal, the rest a COMPLETE/CANCELLED history."""
    now = time.time()
    for i in range(total):
        if i < active:
            status = ("RUNNING", "IDLE", "USER_PAUSED", "PAUSED")[i % 4]
            job = make_job(f"active{i:026d}", f"active-job-{i}", status,
                           job_type="SCHEDULED" if status == "IDLE" else "ONE_TIME",
                           schedule="daily", created_at=now - 3600 - i, objects_to_process=i,
                           last_run_time=now - 600,
                           paused_at=now - DAY if status == "USER_PAUSED" else None,
                           expires_at=now + 29 * DAY if status == "USER_PAUSED" else None,
                           tags={"team": f"team-{i % 7}"})
        else:
            job = make_job(f"hist{i:028d}", f"history-job-{i}",
                           "COMPLETE" if i % 5 else "CANCELLED",
                           created_at=now - DAY * (1 + i % 700),
                           last_run_time=now - DAY * (i % 700),
                           tags={"team": f"team-{i % 7}"})
        sim.put_job(region, job)


def add_buckets(sim: Simulator, region: str, buckets: int, members: int) -> None:
    """An administrator with `members` members and `buckets` buckets among them all: every
    tenth public, one in twenty with findings (through a job that scans it), every tenth member
    with automated discovery off."""
    accounts = [DEFAULT_ACCOUNT, *(str(FIRST_ACCOUNT + i) for i in range(members))]
    for i, member in enumerate(accounts[1:]):
        sim.set_member(DEFAULT_ACCOUNT, region, member, "Enabled")
        sim.set_automated_discovery(member, region, "DISABLED" if i % 10 == 9 else "ENABLED")
    sim.set_automated_discovery(DEFAULT_ACCOUNT, region, "ENABLED")
    now = time.time()
    for i in range(buckets):
        account = accounts[i % len(accounts)]
        name = f"bench-{account}-{i:05d}"
        sim.put_bucket(region, make_bucket(
            name, account, region, public=i % 10 == 0, score=1 + i % 100,
            error="ACCESS_DENIED" if i % 97 == 0 else None, last_discovery=now - i % 86400))
        if i % 20 == 0 and account == DEFAULT_ACCOUNT:
            job_id = f"bucketjob{i:023d}"
            sim.put_job(region, make_job(job_id, bucket=name, created_at=now - DAY))
            sim.set_findings(region, job_id, "High", 1 + i % 7)


@dataclass(frozen=True)
class Fleet:
    """An organisation: every account in every region a small target, some with Macie off."""

    accounts: int
    regions: int
    jobs_per_target: int = 3
    running_per_target: int = 1
    off_every: int = 0  # every Nth account has Macie DISABLED everywhere (0: none)
    # The accounts form an organisation that the exporter discovers (ListAccounts), managed by
    # MANAGEMENT_ACCOUNT, instead of being listed as targets.
    discovery: bool = False
    # Every Nth job of the enabled targets had errors in its last run (0: none).
    erroring_every: int = 0
    # One RUNNING job in every Nth target (counted over every account x region, the others'
    # jobs all COMPLETE), instead of running_per_target in each (0).
    running_every: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.regions <= len(MACIE_REGIONS):
            raise ValueError(f"regions: expected 1 to {len(MACIE_REGIONS)}")
        if not 0 <= self.running_per_target <= self.jobs_per_target:
            raise ValueError("running_per_target: expected 0 to jobs_per_target")

    @property
    def account_ids(self) -> list[str]:
        return [str(FIRST_ACCOUNT + i) for i in range(self.accounts)]

    @property
    def region_names(self) -> tuple[str, ...]:
        return MACIE_REGIONS[:self.regions]

    @property
    def off_accounts(self) -> list[str]:
        """The accounts with Macie not enabled: every off_every-th one."""
        if not self.off_every:
            return []
        return [a for i, a in enumerate(self.account_ids, 1) if i % self.off_every == 0]

    def jobs(self) -> list[tuple[str, str, int, str, bool]]:
        """(account, region, index in the target, job id, last run had errors) of every job
        of the enabled targets."""
        off = set(self.off_accounts)
        found: list[tuple[str, str, int, str, bool]] = []
        for account in self.account_ids:
            if account in off:
                continue
            for r, region in enumerate(self.region_names):
                for k in range(self.jobs_per_target):
                    erroring = bool(self.erroring_every) and len(found) % self.erroring_every == 0
                    found.append((account, region, k, f"{account}{r:02d}{k:04d}", erroring))
        return found

    def running(self, account: str, region: str, k: int) -> bool:
        """Whether the k-th job of the target is RUNNING."""
        if not self.running_every:
            return k < self.running_per_target
        index = (int(account) - FIRST_ACCOUNT) * self.regions + self.region_names.index(region)
        return k == 0 and index % self.running_every == 0

    @property
    def active_targets(self) -> set[tuple[str, str]]:
        """The enabled targets holding a RUNNING job."""
        return {(a, r) for a, r, k, _, _ in self.jobs() if self.running(a, r, k)}

    @property
    def first_idle_target(self) -> tuple[str, str]:
        """The first enabled target without a RUNNING job (the probe's)."""
        active, off = self.active_targets, set(self.off_accounts)
        return next((a, r) for a in self.account_ids if a not in off
                    for r in self.region_names if (a, r) not in active)

    @property
    def erroring_targets(self) -> set[tuple[str, str]]:
        return {(account, region) for account, region, _, _, erroring in self.jobs()
                if erroring}

    def populate(self, sim: Simulator) -> None:
        now = time.time()
        if self.discovery:
            sim.set_organization(MANAGEMENT_ACCOUNT, dict.fromkeys(self.account_ids, "ACTIVE"))
        for account in self.off_accounts:
            for region in self.region_names:
                sim.set_macie_status(region, "DISABLED", account_id=account)
        for account, region, k, job_id, erroring in self.jobs():
            running = self.running(account, region, k)
            run = now - DAY * k - 600
            sim.put_job(region, make_job(
                job_id, f"fleet-job-{k}", "RUNNING" if running else "COMPLETE",
                created_at=now - DAY * (k + 1), objects_to_process=1000 if running else 0,
                last_run_time=run, last_run_error=erroring,
            ), account_id=account)
            if erroring:
                sim.put_log_events(region, job_id, [
                    (run + 60 + i, macie_job_event(
                        job_id, f"fleet-job-{k}", event_type, run + 60 + i, run_date=run,
                        account=account, bucket=bucket, operation="ListObjectsV2"))
                    for i, (event_type, bucket) in enumerate((
                        ("BUCKET_ACCESS_DENIED", f"{job_id}-a"),
                        ("BUCKET_ACCESS_DENIED", f"{job_id}-b"),
                        ("BUCKET_DOES_NOT_EXIST", f"{job_id}-c")))], account_id=account)

    def write_exporter_config(self, path: Path) -> None:
        """The exporter's config file: one target per account, assuming its ROLE_NAME role;
        with `discovery`, the discovery section that finds the same targets. (The exporter
        then needs AWS_ENDPOINT_URL_ORGANIZATIONS pointed at the simulator.)"""
        config: dict[str, Any]
        if self.discovery:
            config = {"aws": {"regions": list(self.region_names)}, "discovery": {
                "interval": "1h", "organizations": {
                    "role_arn": f"arn:aws:iam::{MANAGEMENT_ACCOUNT}:role/discovery",
                    "member_role_name": ROLE_NAME,
                    "exclude_accounts": [MANAGEMENT_ACCOUNT]}}}
        else:
            config = {"targets": [{"role_arn": f"arn:aws:iam::{account}:role/{ROLE_NAME}",
                                   "regions": list(self.region_names)}
                                  for account in self.account_ids]}
        path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None),
                        encoding="utf-8")


NEW_JOB_ID = "newjob000000000000000000000001"
NEW_JOB_OBJECTS, PROGRESSED_OBJECTS = 5000, 1234


def probe(fleet: Fleet, new_job_at: float, progress_at: float) -> Any:
    """The simulator's `evolve` hook for the probe: at `new_job_at` (epoch seconds) a RUNNING
    job NEW_JOB_ID appears in the first idle enabled target, and at `progress_at` its
    objects to process fall from NEW_JOB_OBJECTS to PROGRESSED_OBJECTS."""
    account, region = fleet.first_idle_target
    done: set[str] = set()

    def evolve(now: float, sim: Simulator) -> None:
        for step, at, objects in (("new", new_job_at, NEW_JOB_OBJECTS),
                                  ("progress", progress_at, PROGRESSED_OBJECTS)):
            if step not in done and now >= at:
                done.add(step)
                sim.put_job(region, make_job(
                    NEW_JOB_ID, "probe-job", "RUNNING", created_at=new_job_at,
                    objects_to_process=objects, last_run_time=new_job_at,
                ), account_id=account)
    return evolve


def request_counts(url: str) -> dict[str, Any]:
    """The request counts of a simulator running at `url` (`Simulator.counts()`)."""
    with urllib.request.urlopen(f"{url}/_simulator/requests", timeout=10) as response:
        counts: dict[str, Any] = json.loads(response.read())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per call")
    single = parser.add_argument_group("one target with many jobs")
    single.add_argument("--jobs", type=int, default=10_000)
    single.add_argument("--active", type=int, default=300, help="non-terminal jobs among them")
    single.add_argument("--region", default="eu-west-1")
    single.add_argument("--buckets", type=int, default=0,
                        help="S3 buckets of an administrator and its --members, instead of jobs")
    single.add_argument("--members", type=int, default=50)
    fleet = parser.add_argument_group("many targets (chosen by --accounts)")
    fleet.add_argument("--accounts", type=int, default=0)
    fleet.add_argument("--regions", type=int, default=1)
    fleet.add_argument("--jobs-per-target", type=int, default=3)
    fleet.add_argument("--running-per-target", type=int, default=1)
    fleet.add_argument("--off-every", type=int, default=0,
                       help="every Nth account has Macie not enabled (0: none)")
    fleet.add_argument("--config", type=Path, help="write the exporter's config file here")
    fleet.add_argument("--discovery", action="store_true",
                       help="an organisation to discover instead of a list of targets")
    fleet.add_argument("--erroring-every", type=int, default=0,
                       help="every Nth job had errors in its last run, logged (0: none)")
    fleet.add_argument("--new-job-at", type=float, default=0.0,
                       help="epoch seconds: a RUNNING job appears in the first idle target")
    fleet.add_argument("--progress-at", type=float, default=0.0,
                       help="epoch seconds: that job's objects to process fall")
    fleet.add_argument("--running-every", type=int, default=0,
                       help="one RUNNING job in every Nth target instead of "
                            "--running-per-target in each (0)")
    args = parser.parse_args()
    sim = Simulator()
    if args.accounts:
        try:
            scenario = Fleet(args.accounts, args.regions, args.jobs_per_target,
                             args.running_per_target, args.off_every, args.discovery,
                             args.erroring_every, args.running_every)
        except ValueError as err:
            parser.error(str(err))
        if args.new_job_at:
            sim = Simulator(evolve=probe(scenario, args.new_job_at, args.progress_at))
        scenario.populate(sim)
        if args.config:
            scenario.write_exporter_config(args.config)
    elif args.buckets:
        add_buckets(sim, args.region, args.buckets, args.members)
    else:
        add_synthetic_jobs(sim, args.region, args.jobs, min(args.active, args.jobs))
    sim.latency = args.latency
    sim.run(args.host, args.port)


if __name__ == "__main__":
    main()
