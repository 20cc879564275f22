"""Many targets in one process, against the simulator over HTTP through botocore."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.aws.session import available_regions
from exporter.demo.simulator import Simulator, make_job
from tests.conftest import ExporterProcess, Samples, series, value, wait_for

Start = Callable[..., ExporterProcess]
ROLE = "arn:aws:iam::{account}:role/macie-exporter"
REGIONS = ("eu-west-1", "eu-west-2", "us-east-1")


def all_refreshed(count: int) -> Callable[[Samples], bool]:
    return lambda s: len([v for (n, _), v in s.items()
                          if n == "macie_exporter_refresh_success" and v == 1]) == count


def threads(process: ExporterProcess) -> int:
    status = Path(f"/proc/{process.proc.pid}/status").read_text(encoding="utf-8")
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def test_macie_off_region_is_a_quiet_success(sim: Simulator, start: Start) -> None:
    sim.put_job("eu-west-1", make_job("a", status="RUNNING"))
    sim.put_job("us-east-1", make_job("b", status="RUNNING"))
    sim.set_macie_status("us-east-1", "DISABLED")
    sim.set_macie_status("eu-west-2", "PAUSED")
    exporter = start("--aws.regions=eu-west-1,eu-west-2,us-east-1")
    samples = exporter.wait_metric(all_refreshed(3), what="three successful targets")
    assert value(samples, "macie_status", region="us-east-1", status="DISABLED") == 1
    assert value(samples, "macie_status", region="eu-west-1", status="ENABLED") == 1
    assert value(samples, "macie_status", region="eu-west-2", status="PAUSED") == 1
    assert not series(samples, "macie_classification_job_info", region="us-east-1")
    assert not series(samples, "macie_classification_jobs", region="us-east-1")
    assert series(samples, "macie_classification_job_info", region="eu-west-1")
    # Refreshes go on every second; the Macie-off region gets the status check and nothing else.
    wait_for(lambda: sim.target_requests[("ListClassificationJobs", sim.account_id,
                                          "eu-west-1")] >= 4, what="several refreshes")
    calls = {op: n for (op, _, region), n in sim.target_requests.items()
             if region == "us-east-1" and op != "GetCallerIdentity"}
    assert calls == {"GetMacieSession": 1}
    # Without a role, one GetCallerIdentity names the account for every region.
    assert sim.requests["GetCallerIdentity"] == 1
    assert "refresh failed" not in exporter.logs()


def test_one_assume_role_per_account_and_bounded_threads(sim: Simulator, start: Start,
                                                         tmp_path: Path) -> None:
    accounts = [f"{100000000000 + i}" for i in range(30)]
    for account in accounts:
        for region in REGIONS:
            sim.put_job(region, make_job(f"job-{account}", status="RUNNING"), account)
    config = tmp_path / "targets.yaml"
    config.write_text("targets:\n" + "".join(
        f"  - {{role_arn: '{ROLE.format(account=a)}', regions: [{', '.join(REGIONS)}]}}\n"
        for a in accounts), encoding="utf-8")
    exporter = start(f"--config.file={config}", "--refresh.interval=2s",
                     "--log.level=info")
    samples = exporter.wait_metric(all_refreshed(90), timeout=60, what="90 targets refreshed")
    assert len(series(samples, "macie_classification_job_info")) == 90
    assert value(samples, "macie_classification_job_info", account_id=accounts[7],
                 region="us-east-1", job_id=f"job-{accounts[7]}") == 1
    wait_for(lambda: sim.requests["ListClassificationJobs"] >= 3 * 90, timeout=30,
             what="three rounds of refreshes")
    assert sim.requests["AssumeRole"] == len(accounts)  # one per account, not per region
    assert threads(exporter) <= 64


def test_rate_limit_waits_are_counted(sim: Simulator, start: Start) -> None:
    for i in range(30):
        sim.put_job("eu-west-1", make_job(f"r{i:02d}", status="RUNNING"))
    exporter = start("--aws.requests-per-second=10", "--refresh.interval=30s")
    samples = exporter.wait_metric(all_refreshed(1), timeout=30, what="a rate-limited refresh")
    waited = value(samples, "macie_exporter_rate_limit_wait_seconds_total",
                   region="eu-west-1")
    assert waited is not None and waited > 0


def test_the_demo_discovers_its_organisation(demo_exporter: ExporterProcess) -> None:
    samples = demo_exporter.wait_metric(
        lambda s: value(s, "macie_exporter_discovery_success") == 1
        and len(series(s, "macie_exporter_refresh_success")) == 9,
        timeout=30, what="the demo's three accounts in three regions")
    assert value(samples, "macie_exporter_targets") == 9
    accounts = {s["account_id"] for s in series(samples, "macie_exporter_refresh_success")}
    assert len(accounts) == 3  # the suspended account is left out


def test_all_regions_are_botocore_s_macie_regions() -> None:
    regions = available_regions("aws")
    assert {"eu-west-1", "us-east-1", "ap-southeast-2"} <= set(regions)
    assert all(r.count("-") >= 2 for r in regions) and regions == tuple(sorted(regions))
    assert set(available_regions("aws-us-gov")) <= {"us-gov-west-1", "us-gov-east-1"}
