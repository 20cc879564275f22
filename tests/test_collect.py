"""Snapshot → exposition: a golden file compared byte for byte, and linted by promtool."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.collect import (
    ApiRequestCounter,
    SelfCollector,
    SnapshotCollector,
    tag_label_name,
    zero_filled_counts,
)
from exporter.model import Job, Snapshot, TargetKey, TargetResult
from tests.conftest import FIXTURES, parse, require_tool, series, value

GOLDEN = FIXTURES / "golden.prom"
ACCOUNT = "111122223333"


@dataclass(eq=False)
class Target:
    account_id: str
    region: str


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
    )
    failing = TargetResult(key=TargetKey(ACCOUNT, "us-east-1"), success=False, completed=True,
                           duration_seconds=0.5, describe_failures=0)
    pending = TargetResult(key=TargetKey("unknown", "ap-south-1"))
    return Snapshot((healthy, failing, pending))


def render() -> bytes:
    requests = ApiRequestCounter()
    target = Target(ACCOUNT, "eu-west-1")
    for outcome in ("success", "success", "ThrottlingException"):
        requests.inc(target, "ListClassificationJobs", outcome)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, ["team", "cost-center"]))
    registry.register(SelfCollector(requests, build=("0.0.0", "3.11.0", "1.0.0")))
    return generate_latest(registry)


def test_golden_exposition() -> None:
    output = render()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(output)
    assert output == GOLDEN.read_bytes(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_golden_file_passes_promtool() -> None:
    promtool = require_tool("promtool")
    lint = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(),
                          capture_output=True, check=False)
    assert lint.returncode == 0 and not lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_status_is_a_state_set_with_unknown_values_kept() -> None:
    samples = parse(render().decode())
    statuses = {s["status"]: value(samples, "macie_classification_job_status",
                                   job_id="job-odd", status=s["status"])
                for s in series(samples, "macie_classification_job_status", job_id="job-odd")}
    assert statuses == {"RUNNING": 0, "PAUSED": 0, "CANCELLED": 0, "COMPLETE": 0, "IDLE": 0,
                        "USER_PAUSED": 0, "ARCHIVED": 1}
    assert value(samples, "macie_classification_job_status", job_id="job-run",
                 status="RUNNING") == 1


def test_absent_values_and_pending_targets_have_no_series() -> None:
    samples = parse(render().decode())
    assert value(samples, "macie_classification_job_runs", job_id="job-odd") is None
    assert value(samples, "macie_classification_job_pause_expiry_timestamp_seconds",
                 job_id="job-run") is None
    assert not series(samples, "macie_classification_job_tags", job_id="job-odd")
    # A target that has not finished a refresh yet reports no success value.
    assert not series(samples, "macie_exporter_refresh_success", region="ap-south-1")
    assert value(samples, "macie_exporter_refresh_success", region="us-east-1") == 0


def test_tags_become_sanitised_labels() -> None:
    samples = parse(render().decode())
    assert series(samples, "macie_classification_job_tags", job_id="job-run") == [{
        "account_id": ACCOUNT, "region": "eu-west-1", "job_id": "job-run",
        "job_name": "nightly scan", "tag_team": "privacy", "tag_cost_center": "42"}]
    assert series(samples, "macie_classification_job_tags", job_id="job-paused")[0][
        "tag_team"] == ""
    assert tag_label_name("aws:cloudformation:stack-name") == "tag_aws_cloudformation_stack_name"
    assert tag_label_name("Équipe") == "tag__quipe"


def test_no_tags_family_without_allow_list() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    assert b"macie_classification_job_tags" not in generate_latest(registry)


def test_api_requests_counter() -> None:
    samples = parse(render().decode())
    assert value(samples, "macie_exporter_api_requests_total",
                 operation="ListClassificationJobs", outcome="success") == 2
    assert value(samples, "macie_exporter_api_requests_total",
                 outcome="ThrottlingException") == 1
