"""Snapshot → exposition: a golden file compared byte for byte, and linted by promtool."""

from __future__ import annotations

import os
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.collectors.base import Settings
from exporter.engine.counters import FleetStatus, WaitCounter
from exporter.engine.selfmetrics import SelfCollector, SnapshotCollector, snapshot_families
from exporter.model import TargetKey, tag_label_name
from exporter.reload import ReloadStatus
from exporter.web.server import endpoints
from exporter.web.stats import MALFORMED, HttpStats
from tests.conftest import FIXTURES, parse, require_tool, series, value
from tests.snapshots import ACCOUNT, snapshot

GOLDEN = FIXTURES / "golden.prom"


def render() -> bytes:
    requests = ApiRequestCounter()
    target = TargetKey(ACCOUNT, "eu-west-1")
    for outcome in ("success", "success", "ThrottlingException"):
        requests.inc(target, "ListClassificationJobs", outcome)
    waits = WaitCounter()
    waits.add(target, 1.5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, snapshot_families(
        Settings(tag_keys=("team", "cost-center")))))
    fleet = FleetStatus(targets=3, discovery_enabled=True, discovery_success=True,
                        discovery_last_success=1_795_000_000.0)
    registry.register(SelfCollector(requests, waits, fleet, build=("0.0.0", "3.11.0", "1.0.0")))
    reloads = ReloadStatus(clock=lambda: 1_795_000_000.0)
    reloads.successful = False  # a reload failed since
    registry.register(reloads)
    http = HttpStats(endpoints("/metrics"))
    for path, code in (("/metrics", 200), ("/metrics", 200), ("/healthz", 200),
                       ("/wp-login.php", 404), (None, 400)):
        http.answered(path, code)
    http.dropped(MALFORMED)
    registry.register(http)
    return generate_latest(registry)


def test_golden_exposition() -> None:
    output = render()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(output)
    assert output == GOLDEN.read_bytes(), "run with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.tools
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


def test_macie_status_is_a_state_set_per_target() -> None:
    samples = parse(render().decode())
    for region, current in (("eu-west-1", "ENABLED"), ("us-east-1", "PAUSED"),
                            ("ap-southeast-2", "DISABLED")):
        states = {s["status"]: value(samples, "macie_status", region=region, status=s["status"])
                  for s in series(samples, "macie_status", region=region)}
        assert states == {s: (1 if s == current else 0)
                          for s in ("ENABLED", "PAUSED", "DISABLED")}, region
    # Unknown status (not checked yet, or GetMacieSession denied): no series.
    assert not series(samples, "macie_status", region="ap-south-1")
    # Macie off: a successful refresh with no job series.
    assert value(samples, "macie_exporter_refresh_success", region="ap-southeast-2") == 1
    assert not series(samples, "macie_classification_jobs", region="ap-southeast-2")


def test_rate_limit_waits_counter() -> None:
    samples = parse(render().decode())
    assert value(samples, "macie_exporter_rate_limit_wait_seconds_total",
                 region="eu-west-1") == 1.5


def test_fleet_figures() -> None:
    samples = parse(render().decode())
    assert value(samples, "macie_exporter_targets") == 3
    assert value(samples, "macie_exporter_discovery_success") == 1
    assert value(samples, "macie_exporter_discovery_last_success_timestamp_seconds") == 1.795e9
