"""Faults against the real process: throttling storms, hangs, malformed answers, a failing target.

Two targets (eu-west-1 healthy, us-east-1 faulty) show that one target's trouble stays its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.demo.simulator import Simulator, make_job
from tests.conftest import ExporterProcess, Samples, series, value, wait_for
from tests.simfaults import FaultySimulator

Start = Callable[..., ExporterProcess]
HEALTHY, FAULTY = "eu-west-1", "us-east-1"
BOTH = f"--aws.regions={HEALTHY},{FAULTY}"


def seed(sim: Simulator) -> None:
    for region in (HEALTHY, FAULTY):
        sim.put_job(region, make_job(f"{region}-run", "scan", "RUNNING", objects_to_process=7))
        sim.put_job(region, make_job(f"{region}-done", "old scan", "COMPLETE"))


def success(samples: Samples, region: str) -> float | None:
    return value(samples, "macie_exporter_refresh_success", region=region)


def healthy_target_is_whole(samples: Samples) -> None:
    assert success(samples, HEALTHY) == 1
    assert value(samples, "macie_classification_job_objects_to_process",
                 job_id=f"{HEALTHY}-run") == 7
    assert len(series(samples, "macie_classification_job_info", region=HEALTHY)) == 2


def test_throttling_storm(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.throttle_every = 2  # half of all requests
    exporter = start(BOTH, "--aws.max-attempts=8")
    wait_for(lambda: sim.requests["ListClassificationJobs"] >= 8, timeout=60,
             what="several refreshes")
    samples = exporter.wait_metric(
        lambda s: success(s, HEALTHY) == 1 and success(s, FAULTY) == 1, timeout=30)
    throttled = sum(v for (name, labels), v in samples.items()
                    if name == "macie_exporter_api_requests_total"
                    and ("outcome", "ThrottlingException") in labels)
    assert throttled >= 4
    assert "refresh failed" not in exporter.logs()


def test_api_hang_is_bounded_and_recovers(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    exporter = start(BOTH, "--aws.max-attempts=2")  # 1 s interval, so a 0.5 s read timeout
    exporter.wait_metric(lambda s: success(s, FAULTY) == 1)
    sim.faults.regions = {FAULTY}
    sim.faults.latency = 3600  # the API stops answering
    samples = exporter.wait_metric(lambda s: success(s, FAULTY) == 0, timeout=30,
                                   what="the hanging target to fail by timeout")
    healthy_target_is_whole(samples)
    for _ in range(10):  # scrapes stay fast while requests hang
        began = time.monotonic()
        exporter.scrape()
        assert time.monotonic() - began < 0.5
    # Each refresh of the hanging target waits 2 attempts x 0.5 s read timeout, and the next one
    # starts only after it: in 3 s at most ~4 refreshes, never a pile of stacked ones.
    before = sim.region_requests[("ListClassificationJobs", FAULTY)]
    time.sleep(3)
    assert sim.region_requests[("ListClassificationJobs", FAULTY)] - before <= 8
    assert "error_code=ReadTimeoutError" in exporter.logs()
    sim.faults.latency = 0
    exporter.wait_metric(lambda s: success(s, FAULTY) == 1, timeout=30, what="recovery")


MALFORMED_LISTS: dict[str, tuple[dict[str, Any], str]] = {
    "bad-json": ({"raw_list": b'{"items": [ {"jobId": '}, "error_code=MalformedResponse"),
    "items-not-a-list": ({"raw_list": b'{"items": {"jobId": "x"}}'},
                         "error_code=MalformedResponse"),
    "token-loop": ({"list_script": lambda token: {"items": [], "nextToken": "b" if token == "a"
                                                  else "a"}}, "error_code=PaginationLoop"),
    "endless-empty-pages": ({"list_script": lambda token: {
        "items": [], "nextToken": str(int(token or 0) + 1)}}, "error_code=TooManyPages"),
}


@pytest.mark.parametrize("case", MALFORMED_LISTS, ids=list(MALFORMED_LISTS))
def test_malformed_list_fails_only_its_target(sim: FaultySimulator, start: Start,
                                              case: str) -> None:
    seed(sim)
    faults, logged = MALFORMED_LISTS[case]
    sim.faults.regions = {FAULTY}
    for name, setting in faults.items():
        setattr(sim.faults, name, setting)
    exporter = start(BOTH, "--aws.max-attempts=1", "--refresh.interval=5s")
    samples = exporter.wait_metric(lambda s: success(s, FAULTY) == 0 and success(s, HEALTHY),
                                   timeout=60, what=f"{FAULTY} to fail cleanly")
    healthy_target_is_whole(samples)
    wait_for(lambda: logged in exporter.logs(), what=logged)
    assert "Traceback" not in exporter.logs()
    assert exporter.proc.poll() is None


def test_malformed_describes_fail_only_their_jobs(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    for i, body in enumerate([
        b'{"jobId": "bad0", "jobStatus": 5}',  # wrong type
        b'{"jobStatus": "RUNNING"}',  # required jobId missing
        b'{"jobId": "bad2", "statistics": {"numberOfRuns": 1e999}}',  # enormous number
        b'{"jobId": "bad3", "createdAt": "yesterday"}',  # not a timestamp
        b"<html>not json</html>",
    ]):
        sim.put_job(HEALTHY, make_job(f"bad{i}", f"bad job {i}", "RUNNING"))
        sim.faults.raw_describe[f"bad{i}"] = body
    sim.put_job(HEALTHY, {"jobId": "huge", "name": "huge", "jobStatus": "RUNNING",
                          "createdAt": "2026-11-01T00:00:00Z",
                          "statistics": {"numberOfRuns": 123456789012345678901234567890}})
    exporter = start(BOTH)
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_describe_failures", region=HEALTHY) == 5,
        what="five failed describes")
    assert success(samples, HEALTHY) == 1 and success(samples, FAULTY) == 1
    assert value(samples, "macie_classification_job_runs", job_id="huge") == pytest.approx(
        1.2345678901234568e29)
    # Never described successfully: exported from what the list said, nothing made up.
    assert value(samples, "macie_classification_job_status", job_id="bad0",
                 status="RUNNING") == 1
    assert value(samples, "macie_classification_job_runs", job_id="bad2") is None
    assert "Traceback" not in exporter.logs()


def test_a_failing_target_leaves_the_other_whole(sim: FaultySimulator, start: Start) -> None:
    seed(sim)
    sim.faults.regions = {FAULTY}
    sim.faults.denied = {"ListClassificationJobs"}
    exporter = start(BOTH)
    samples = exporter.wait_metric(lambda s: success(s, FAULTY) == 0 and success(s, HEALTHY))
    healthy_target_is_whole(samples)
    assert not series(samples, "macie_classification_job_info", region=FAULTY)
