"""The real exporter process against the simulator, over HTTP through boto3.

One test per behaviour of the issue's "Failures and bad input" list, plus the endpoints.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.cli import limit_malloc_arenas
from exporter.demo.simulator import DAY, Simulator, make_job
from tests.conftest import (
    REPO,
    ExporterProcess,
    Samples,
    exporter_env,
    parse,
    require_tool,
    series,
    value,
    wait_for,
)
from tests.simfaults import FaultySimulator

Start = Callable[..., ExporterProcess]
REGION = "eu-west-1"
ACCOUNT = "123456789012"
ODD_NAME = 'Données "clients" \\ EU ✓'
NOW = time.time()


def seed(sim: Simulator) -> None:
    sim.put_job(REGION, make_job("run1", "nightly-scan", "RUNNING", objects_to_process=1000,
                                 runs=1, last_run_time=NOW - 600))
    sim.put_job(REGION, make_job("run2", "other-scan", "RUNNING", objects_to_process=500))
    sim.put_job(REGION, make_job("idle1", "daily-uploads", "IDLE", job_type="SCHEDULED",
                                 schedule="daily", runs=40, last_run_error=True))
    sim.put_job(REGION, make_job("paused1", "legal-hold", "USER_PAUSED",
                                 paused_at=NOW - 26 * DAY, expires_at=NOW + 4 * DAY))
    sim.put_job(REGION, make_job("done1", ODD_NAME, "COMPLETE"))
    sim.put_job(REGION, make_job("gone1", "cancelled-scan", "CANCELLED"))
    bare = make_job("bare1", "no-statistics", "COMPLETE", runs=None, objects_to_process=None,
                    last_run_error=None)
    sim.put_job(REGION, bare)


def healthy(samples: Samples) -> bool:
    return value(samples, "macie_exporter_refresh_success", region=REGION) == 1


def described(*job_ids: str) -> Callable[[Samples], bool]:
    """Healthy, and `job_ids` on /metrics (from the list: terminal jobs' first describes
    follow readiness at background priority, so their describes may still be under way)."""
    def condition(samples: Samples) -> bool:
        return healthy(samples) and all(
            series(samples, "macie_classification_job_info", job_id=job_id)
            for job_id in job_ids)
    return condition


def test_exports_the_simulated_account(sim: Simulator, start: Start) -> None:
    seed(sim)
    exporter = start()
    samples = exporter.wait_metric(described("done1", "gone1", "bare1"),
                                   what="a successful refresh, every job described")

    ids = {"account_id": ACCOUNT, "region": REGION}
    assert value(samples, "macie_classification_job_status", job_id="run1",
                 status="RUNNING", **ids) == 1
    assert value(samples, "macie_classification_job_status", job_id="run1", status="IDLE") == 0
    assert len(series(samples, "macie_classification_job_status", job_id="run1")) == 6
    assert value(samples, "macie_classification_job_objects_to_process", job_id="run1") == 1000
    assert value(samples, "macie_classification_job_runs", job_id="idle1") == 40
    assert value(samples, "macie_classification_job_last_run_error", job_id="idle1") == 1
    assert value(samples, "macie_classification_job_last_run_error", job_id="run1") == 0
    expiry = value(samples, "macie_classification_job_pause_expiry_timestamp_seconds",
                   job_id="paused1")
    assert expiry == pytest.approx(NOW + 4 * DAY, abs=0.01)
    assert series(samples, "macie_classification_job_info", job_id="idle1") == [
        {**ids, "job_id": "idle1", "job_name": "daily-uploads", "job_type": "SCHEDULED",
         "schedule": "daily", "managed_data_identifier_selector": "RECOMMENDED"}]
    # Names are exported verbatim: unicode, quotes and backslashes intact.
    assert series(samples, "macie_classification_job_info", job_id="done1")[0][
        "job_name"] == ODD_NAME
    # Absent API fields give absent series, never a fake 0.
    for absent in ("runs", "objects_to_process", "last_run_error", "paused_timestamp_seconds"):
        assert value(samples, f"macie_classification_job_{absent}", job_id="bare1") is None
    assert value(samples, "macie_classification_job_paused_timestamp_seconds",
                 job_id="run1") is None
    assert value(samples, "macie_classification_jobs", status="RUNNING",
                 job_type="ONE_TIME", **ids) == 2
    assert value(samples, "macie_classification_jobs", status="PAUSED",
                 job_type="ONE_TIME", **ids) == 0
    listed = value(samples, "macie_exporter_api_requests_total",
                   operation="ListClassificationJobs", outcome="success", **ids)
    assert listed is not None
    assert listed >= 1
    assert value(samples, "macie_exporter_build_info") == 1
    assert not [labels for (_, ls), _ in samples.items() for labels in [dict(ls)]
                if "job" in labels or "instance" in labels]


@pytest.mark.tools
def test_the_live_exposition_passes_promtool(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    exporter = start()
    exporter.wait_metric(healthy)
    promtool = require_tool("promtool")
    _, _, body = exporter.get()
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                          check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout + lint.stderr == b""


def test_endpoints_and_readiness(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.latency = 1.5  # keep the first refresh's list in flight
    sim.faults.slow = {"ListClassificationJobs"}
    exporter = start("--web.telemetry-path=/custom-metrics", "--refresh.interval=5s")
    status, _, body = exporter.get("/readyz")
    assert status == 503, body
    assert exporter.get("/healthz")[0] == 200
    status, headers, body = exporter.get("/")
    assert status == 200 and b'href="/custom-metrics"' in body
    assert headers["Content-Type"].startswith("text/html")
    wait_for(lambda: exporter.get("/readyz")[0] == 200, what="/readyz to turn 200")
    status, _, body = exporter.get("/custom-metrics")
    assert status == 200 and b"macie_classification_job_info{" in body
    assert exporter.get("/metrics")[0] == 404
    status, headers, _ = exporter.get("/custom-metrics",
                                      {"Accept": "application/openmetrics-text"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    status, headers, _ = exporter.get("/custom-metrics", {"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    head = urllib.request.Request(f"http://{exporter.address}/custom-metrics", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 1000
        assert response.read() == b""
    status, _, body = exporter.get("/custom-metrics?name[]=macie_exporter_build_info")
    assert status == 200
    assert {name for name, _ in parse(body.decode())} == {"macie_exporter_build_info"}


def test_throttling_and_5xx_are_retried(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.operations = {"ListClassificationJobs"}
    sim.faults.fail_next = 1  # 500 InternalServerException first,
    sim.faults.throttle_next = 2  # then two ThrottlingExceptions; the 4th attempt succeeds.
    exporter = start("--aws.max-attempts=5")
    samples = exporter.wait_metric(healthy, timeout=30, what="a successful refresh")
    count = {"operation": "ListClassificationJobs", "region": REGION}
    assert value(samples, "macie_exporter_api_requests_total", outcome="ThrottlingException",
                 **count) == 2
    assert value(samples, "macie_exporter_api_requests_total",
                 outcome="InternalServerException", **count) == 1
    assert value(samples, "macie_classification_job_status", job_id="run1",
                 status="RUNNING") == 1
    assert "refresh failed" not in exporter.logs()


def test_one_failing_describe_keeps_that_jobs_last_values(sim: FaultySimulator,
                                                          start: Start) -> None:
    seed(sim)
    exporter = start()
    exporter.wait_metric(healthy, what="a successful refresh")
    sim.faults.describe_errors["run1"] = (500, "InternalServerException")
    sim.put_job(REGION, make_job("run1", "nightly-scan", "RUNNING", objects_to_process=10))
    sim.put_job(REGION, make_job("run2", "other-scan", "RUNNING", objects_to_process=20))
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_classification_job_objects_to_process", job_id="run2") == 20,
        what="run2's new value")
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_describe_failures", region=REGION) == 1)
    assert value(samples, "macie_classification_job_objects_to_process", job_id="run1") == 1000
    assert value(samples, "macie_exporter_refresh_success", region=REGION) == 1
    assert 'msg="describe failed; those jobs keep their last known values"' in exporter.logs()


def test_job_gone_between_list_and_describe(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    exporter = start()
    exporter.wait_metric(healthy)
    sim.faults.vanished.add("run1")
    samples = exporter.wait_metric(
        lambda s: not series(s, "macie_classification_job_info", job_id="run1"),
        what="run1 to disappear")
    assert value(samples, "macie_exporter_refresh_success", region=REGION) == 1
    assert series(samples, "macie_classification_job_info", job_id="run2")


def test_list_failure_keeps_last_data_and_recovers(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    exporter = start("--aws.max-attempts=1")
    exporter.wait_metric(healthy)
    sim.faults.operations = {"ListClassificationJobs"}
    sim.faults.fail_all = True
    samples = exporter.wait_metric(lambda s: not healthy(s), what="refresh_success 0")
    assert value(samples, "macie_classification_job_status", job_id="run1",
                 status="RUNNING") == 1, "the last good data must still be served"
    assert value(samples, "macie_exporter_last_refresh_success_timestamp_seconds",
                 region=REGION) is not None
    failures = [line for line in exporter.lines if 'msg="refresh failed"' in line]
    assert failures and all("error_code=InternalServerException" in f for f in failures)
    assert "Traceback" not in exporter.logs()
    sim.faults.fail_all = False
    exporter.wait_metric(healthy, what="recovery")
    wait_for(lambda: 'msg="refresh recovered"' in exporter.logs())


def test_api_down_then_back(sim: Simulator, start: Start) -> None:
    seed(sim)
    exporter = start("--aws.max-attempts=1", "--aws.connect-timeout=200ms")
    exporter.wait_metric(healthy)
    port = int(sim.url.rsplit(":", 1)[1])
    sim.stop()
    samples = exporter.wait_metric(lambda s: not healthy(s), what="refresh_success 0")
    assert series(samples, "macie_classification_job_info", job_id="run1")
    wait_for(lambda: "error_code=EndpointConnectionError" in exporter.logs())
    sim.start(port=port)
    exporter.wait_metric(healthy, what="recovery")


def test_access_denied_names_the_missing_iam_action(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.denied = {"DescribeClassificationJob"}
    exporter = start()
    wait_for(lambda: "missing_permission=macie2:DescribeClassificationJob" in exporter.logs(),
             what="a log line naming macie2:DescribeClassificationJob")
    sim.faults.denied = {"ListClassificationJobs"}
    wait_for(lambda: "missing_permission=macie2:ListClassificationJobs" in exporter.logs(),
             what="a log line naming macie2:ListClassificationJobs")
    line = next(x for x in exporter.lines if "macie2:ListClassificationJobs" in x)
    assert "level=error" in line and "error_code=AccessDeniedException" in line
    exporter.wait_metric(lambda s: not healthy(s))


def test_unlisted_job_disappears_and_status_changes_show(sim: Simulator, start: Start) -> None:
    """Macie has no call that deletes a job; one that vanishes anyway is dropped at the next
    full list (every --refresh.full-redescribe-interval)."""
    seed(sim)
    exporter = start("--refresh.full-redescribe-interval=2s")
    exporter.wait_metric(healthy)
    sim.remove_job(REGION, "gone1")
    sim.put_job(REGION, make_job("run2", "other-scan", "ARCHIVED"))  # not a documented status
    samples = exporter.wait_metric(
        lambda s: not series(s, "macie_classification_job_info", job_id="gone1")
        and value(s, "macie_classification_job_status", job_id="run2", status="ARCHIVED") == 1,
        what="gone1 to disappear and run2 to show ARCHIVED")
    assert value(samples, "macie_classification_job_status", job_id="run2", status="RUNNING") == 0
    assert len(series(samples, "macie_classification_job_status", job_id="run2")) == 7
    assert value(samples, "macie_classification_jobs", status="ARCHIVED",
                 job_type="ONE_TIME") == 1


def test_slow_refreshes_are_logged_not_stacked(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.latency = 0.6  # list + describe ≈ 1.2 s against a 1 s interval
    sim.faults.slow = {"ListClassificationJobs", "DescribeClassificationJob"}
    exporter = start("--refresh.interval=1s", "--aws.read-timeout=900ms")
    wait_for(lambda: sim.requests["ListClassificationJobs"] >= 3, timeout=30,
             what="three refreshes")
    assert sim.max_in_flight["ListClassificationJobs"] == 1
    logs = exporter.logs()
    assert "refresh took longer than the interval" in logs or "refresh skipped" in logs
    exporter.wait_metric(healthy)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_promptly_with_exit_0(sim: FaultySimulator, start: Start, sig: int) -> None:
    seed(sim)
    sim.faults.latency = 8  # a refresh is waiting on the API (read timeout 15 s) at the signal
    sim.faults.slow = {"ListClassificationJobs"}
    exporter = start("--refresh.interval=30s")
    wait_for(lambda: sim.in_flight["ListClassificationJobs"] >= 1)
    began = time.monotonic()
    assert exporter.stop(sig) == 0, exporter.logs()
    assert time.monotonic() - began < 5
    assert "msg=stopped abandoned_calls=1" in exporter.logs()
    assert "Traceback" not in exporter.logs()


def test_once_prints_metrics_and_reports_failure(sim: FaultySimulator) -> None:
    seed(sim)
    base = [sys.executable, "-m", "exporter", "--once", f"--aws.endpoint-url={sim.url}"]
    ok = subprocess.run(base, env=exporter_env(sim), cwd=REPO, capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert value(parse(ok.stdout), "macie_classification_job_runs", job_id="idle1") == 40
    sim.faults.fail_all = True
    failed = subprocess.run([*base, "--aws.max-attempts=1"], env=exporter_env(sim), cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1
    assert value(parse(failed.stdout), "macie_exporter_refresh_success", region=REGION) == 0


def test_assumed_role_credentials_renew_across_expiries(sim: FaultySimulator, start: Start) -> None:
    member = "210987654321"
    sim.put_job(REGION, make_job("member1", "member-scan", "RUNNING"), account_id=member)
    sim.faults.credential_ttl = 1.5
    exporter = start(f"--aws.role-arn=arn:aws:iam::{member}:role/macie-read",
                     "--aws.external-id=ext-123")
    wait_for(lambda: sim.requests["AssumeRole"] >= 3, timeout=30, what="three AssumeRole calls")
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_refresh_success", account_id=member) == 1)
    assert value(samples, "macie_classification_job_status", account_id=member,
                 job_id="member1", status="RUNNING") == 1
    assert "ExpiredToken" not in exporter.logs()
    assert "ext-123" not in exporter.logs() and "sim-secret" not in exporter.logs()


def test_json_logs(sim: Simulator, start: Start) -> None:
    seed(sim)
    exporter = start("--log.format=json")
    exporter.wait_metric(healthy)
    assert exporter.stop() == 0
    records = [json.loads(line) for line in exporter.lines if line]
    assert {r["msg"] for r in records} >= {"listening", "stopped"}
    assert all({"ts", "level", "msg"} <= r.keys() for r in records)


def test_filters_from_the_config_file_reach_the_api(sim: Simulator, start: Start,
                                                    tmp_path: Path) -> None:
    seed(sim)
    config = tmp_path / "config.yaml"
    config.write_text(
        "filters:\n"
        "  includes:\n    - {key: jobType, comparator: EQ, values: [ONE_TIME]}\n"
        "  excludes:\n    - {key: name, comparator: STARTS_WITH, values: [other-]}\n",
        encoding="utf-8")
    exporter = start(f"--config.file={config}")
    samples = exporter.wait_metric(described("done1", "gone1", "bare1"))
    exported = {s["job_id"] for s in series(samples, "macie_classification_job_info")}
    assert exported == {"run1", "paused1", "done1", "gone1", "bare1"}  # not idle1, not run2
    # The terminal ones are described in the background, once /metrics serves the first
    # refresh: shown from the list until then.
    wait_for(lambda: sim.requests["DescribeClassificationJob"] >= 5,
             what="every filtered job described")


def test_account_comes_from_job_arns_when_sts_is_unreachable(sim: Simulator,
                                                             start: Start) -> None:
    seed(sim)
    env = exporter_env(sim, AWS_ENDPOINT_URL_STS="http://127.0.0.1:9")  # nothing listens there
    exporter = start("--aws.max-attempts=1", env=env)
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_refresh_success", account_id=ACCOUNT) == 1,
        what="a successful refresh labelled with the account from the job ARNs")
    assert value(samples, "macie_classification_job_status", account_id=ACCOUNT,
                 job_id="run1", status="RUNNING") == 1
    assert not series(samples, "macie_classification_jobs", account_id="unknown")
    assert "account lookup failed" in exporter.logs()


def test_denied_assume_role_names_sts_assume_role(sim: FaultySimulator, start: Start) -> None:
    sim.faults.denied = {"AssumeRole"}
    exporter = start("--aws.role-arn=arn:aws:iam::210987654321:role/macie-read")
    wait_for(lambda: "missing_permission=sts:AssumeRole" in exporter.logs(),
             what="a log line naming sts:AssumeRole")
    assert "missing_permission=macie2:" not in exporter.logs()


def test_malloc_arenas_are_capped_unless_the_environment_sets_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is True  # Debian's glibc accepts M_ARENA_MAX
