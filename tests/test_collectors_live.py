"""The findings, usage and members collectors in the real exporter process, through botocore
to the simulator over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from exporter.demo.simulator import make_job
from tests.conftest import ExporterProcess, Samples, series, value, wait_for
from tests.simfaults import FaultySimulator

Start = Callable[..., ExporterProcess]
REGION = "eu-west-1"
FAST = ("--collector.findings.interval=1s", "--collector.usage.interval=1s",
        "--collector.members.interval=1s", "--aws.regions=eu-west-1")


def seed(sim: FaultySimulator) -> str:
    account = sim.account_id
    sim.put_job(REGION, make_job("scan", "pii-scan", "RUNNING"))
    sim.put_job(REGION, make_job("quiet", "quiet-scan", "COMPLETE"))
    sim.add_findings(REGION, "scan", "High", 4)
    sim.add_findings(REGION, "scan", "Low", 7)
    sim.add_findings(REGION, "scan", "High", 5, archived=True)  # suppressed: not counted
    sim.set_usage(account, "SENSITIVE_DATA_DISCOVERY", "4999.50", limit_value=5, limited=True)
    for i in range(30):  # two pages of ListMembers
        sim.set_member(account, REGION, f"{200000000000 + i}",
                       "Removed" if i == 29 else "Enabled")
    return account


def collected(samples: Samples) -> bool:
    return all(value(samples, "macie_exporter_collector_success", collector=c) == 1
               for c in ("findings", "usage", "members"))


def test_findings_usage_and_members_reach_metrics(sim: FaultySimulator, start: Start) -> None:
    account = seed(sim)
    exporter = start(*FAST)
    samples = exporter.wait_metric(collected, timeout=30, what="every collector's success")
    ids = {"account_id": account, "region": REGION}
    assert value(samples, "macie_classification_job_findings", job_id="scan",
                 severity="High", **ids) == 4
    assert value(samples, "macie_classification_job_findings", job_id="scan",
                 severity="Low", **ids) == 7
    assert {s["severity"]: value(samples, "macie_classification_job_findings", job_id="quiet",
                                 severity=s["severity"])
            for s in series(samples, "macie_classification_job_findings", job_id="quiet")} == {
        "Low": 0, "Medium": 0, "High": 0}
    assert value(samples, "macie_usage_estimated_cost", usage_type="SENSITIVE_DATA_DISCOVERY",
                 currency="USD", **ids) == 4999.5
    assert value(samples, "macie_usage_quota_reached", usage_type="SENSITIVE_DATA_DISCOVERY",
                 **ids) == 1
    assert value(samples, "macie_usage_quota_bytes", usage_type="SENSITIVE_DATA_DISCOVERY",
                 **ids) == 5 * 2**40
    members = {s["member_account_id"] for s in series(samples,
                                                      "macie_member_relationship_status")}
    assert len(members) == 30  # every page, the removed member included
    assert value(samples, "macie_member_relationship_status", member_account_id="200000000029",
                 status="Removed") == 1
    # Findings grow: the next collection shows it.
    sim.add_findings(REGION, "scan", "High", 3)
    exporter.wait_metric(lambda s: value(s, "macie_classification_job_findings", job_id="scan",
                                         severity="High") == 7, what="the new High findings")
    assert sim.requests["ListMembers"] >= 2
    # The administrator's usage holds its members' records too: 30 records, two pages.
    assert value(samples, "macie_usage_estimated_cost", account_id="200000000003",
                 usage_type="SENSITIVE_DATA_DISCOVERY", region=REGION) is not None
    assert sim.requests["GetUsageStatistics"] >= 2


def test_a_denied_collector_fails_alone_and_names_its_action(sim: FaultySimulator,
                                                             start: Start) -> None:
    seed(sim)
    sim.faults.denied = {"GetUsageStatistics"}
    exporter = start(*FAST)
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_collector_success", collector="usage") == 0
        and value(s, "macie_exporter_collector_success", collector="findings") == 1,
        timeout=30, what="usage denied while findings work")
    assert value(samples, "macie_exporter_refresh_success", region=REGION) == 1
    assert not series(samples, "macie_usage_estimated_cost")
    wait_for(lambda: sim.requests["GetUsageStatistics"] >= 3, what="several denied attempts")
    denied = [line for line in exporter.lines
              if "missing_permission=macie2:GetUsageStatistics" in line]
    assert len(denied) == 1  # logged once


def test_switched_off_collectors_make_no_calls(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    exporter = start("--no-collector.members", "--no-collector.usage",
                     "--collector.findings.interval=1s", "--aws.regions=eu-west-1")
    exporter.wait_metric(lambda s: value(s, "macie_exporter_collector_success",
                                         collector="findings") == 1, what="findings collected")
    wait_for(lambda: sim.requests["ListClassificationJobs"] >= 3, what="a few refreshes")
    assert sim.requests["ListMembers"] == 0 and sim.requests["GetUsageStatistics"] == 0
