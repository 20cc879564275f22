"""Calls follow activity (issue 23) in the real exporter process against the simulator: an
idle target is listed at the idle interval and finds a new job; a big history is read one
list page a refresh, and its counts stay exact when a job completes and when more new jobs
than a page arrive between two refreshes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.demo.simulator import Answer, Call, Simulator, make_job
from exporter.demo.simulator.wire import offset_of
from tests.conftest import ExporterProcess, Samples, value, wait_for

Start = Callable[..., ExporterProcess]
REGION = "eu-west-1"


class Recording(Simulator):
    """The simulator, noting where each ListClassificationJobs page starts."""

    def __init__(self) -> None:
        super().__init__()
        self.list_offsets: list[int] = []
        self.held: dict[str, tuple[str, str]] = {}  # job id -> (status, type), as put

    def _intercept(self, call: Call) -> Answer | None:
        if call.operation == "ListClassificationJobs":
            with self.lock:
                self.list_offsets.append(offset_of(call.params.get("nextToken")))
        return None

    def put(self, job: dict[str, Any]) -> None:
        self.put_job(REGION, job)
        self.held[job["jobId"]] = (job["jobStatus"], job["jobType"])

    def truth(self) -> Counter[tuple[str, str]]:
        """What a full list of the jobs counts."""
        return Counter(self.held.values())


@pytest.fixture
def sim() -> Iterator[Recording]:
    simulator = Recording()
    simulator.start()
    yield simulator
    simulator.stop()


def lists(sim: Simulator) -> int:
    return sim.target_requests[("ListClassificationJobs", sim.account_id, REGION)]


def counts(samples: Samples) -> Counter[tuple[str, str]]:
    """macie_classification_jobs by (status, job_type), zeros left out."""
    return Counter({(labels["status"], labels["job_type"]): int(v)
                    for (name, ls), v in samples.items()
                    if name == "macie_classification_jobs" and v
                    for labels in [dict(ls)]})


def test_an_idle_target_is_listed_at_the_idle_interval_and_finds_a_new_job(
        sim: Recording, start: Start) -> None:
    for i in range(3):
        sim.put(make_job(f"done-{i}", status="COMPLETE", created_at=time.time() - 86400 * (i + 1)))
    exporter = start("--refresh.idle-interval=4s")
    exporter.wait_metric(lambda s: value(s, "macie_exporter_refresh_success") == 1,
                         what="the first refresh")
    # Idle: refreshed every second, listed about every 4 s (not every second).
    first = lists(sim)
    time.sleep(8.5)
    idle_lists = lists(sim) - first
    assert 1 <= idle_lists <= 4, idle_lists
    # A job created on the idle target is found within the idle interval plus one interval
    # (generous bound: the machine may be busy), and then read every interval.
    created = time.time()
    sim.put(make_job("new-run", status="RUNNING", objects_to_process=500, created_at=created))
    exporter.wait_metric(lambda s: value(s, "macie_classification_job_objects_to_process",
                                         job_id="new-run") == 500,
                         timeout=15, what="the new job on /metrics")
    sim.put(make_job("new-run", status="RUNNING", objects_to_process=120, created_at=created))
    exporter.wait_metric(lambda s: value(s, "macie_classification_job_objects_to_process",
                                         job_id="new-run") == 120,
                         timeout=10, what="the running job's progress")
    active = lists(sim)
    time.sleep(4.5)
    assert lists(sim) - active >= 3  # active again: listed every interval


def test_a_big_history_reads_one_page_and_stays_exact(sim: Recording, start: Start) -> None:
    now = time.time()
    for i in range(1000):
        sim.put(make_job(f"h{i:04d}", status="COMPLETE" if i % 4 else "CANCELLED",
                         created_at=now - 86400 - i * 60))
    for i in range(3):
        sim.put(make_job(f"run-{i}", status="RUNNING", created_at=now - 3600 + i))
    exporter = start("--refresh.concurrency=8")
    exporter.wait_metric(lambda s: counts(s) == sim.truth(), timeout=60,
                         what="the full list's counts")
    # The full list read every page (offsets 0, 200, ..., 1000); steady refreshes read the
    # first page only.
    assert {0, 200, 400, 600, 800, 1000} <= set(sim.list_offsets)
    describes = ("DescribeClassificationJob", sim.account_id, REGION)
    wait_for(lambda: sim.target_requests[describes] >= 3 * 3, what="steady refreshes")
    steady_from = len(sim.list_offsets)
    wait_for(lambda: len(sim.list_offsets) >= steady_from + 3, what="three steady lists")
    assert set(sim.list_offsets[steady_from:]) == {0}

    # A RUNNING job completes: seen by its describe, counts exact.
    sim.put(make_job("run-0", status="COMPLETE", created_at=now - 3600))
    exporter.wait_metric(lambda s: counts(s) == sim.truth(), what="counts after a completion")
    assert counts(exporter.scrape())[("RUNNING", "ONE_TIME")] == 2

    # 250 new jobs between two refreshes (more than a page; some created in the same second
    # as the newest known job): every one counted, and no refresh reads past the second
    # page (a full list would read six).
    burst_from = len(sim.list_offsets)
    for i in range(250):
        sim.put(make_job(f"burst-{i:03d}", status="RUNNING" if i % 25 == 0 else "COMPLETE",
                         created_at=now - 3600 + 2 if i < 3 else now + i))
    exporter.wait_metric(lambda s: counts(s) == sim.truth(), timeout=20,
                         what="counts after 250 new jobs")
    assert sum(counts(exporter.scrape()).values()) == 1253
    assert set(sim.list_offsets[burst_from:]) <= {0, 200}, sim.list_offsets[burst_from:]
    assert 200 in sim.list_offsets[burst_from:]
