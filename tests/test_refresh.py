"""Refresh logic over a real HTTP round trip through boto3 to the simulator, in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings
from exporter.aws.target import AwsTarget
from exporter.collectors.jobs import LIST_PAGE_SIZE
from exporter.demo.simulator import MAX_PAGE_SIZE, Simulator, make_job
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.model import UNKNOWN_ACCOUNT, Snapshot, TargetKey
from tests.fakes import View, view
from tests.simfaults import FaultySimulator

REGION = "eu-west-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def refresher(sim: Simulator, clock: Clock,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetRefresher]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTEXAMPLE00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sim.url)
    settings = AwsSettings(endpoint_url=sim.url, retry_mode="standard", max_attempts=3,
                           connect_timeout=2, read_timeout=5)
    key = TargetKey(UNKNOWN_ACCOUNT, REGION)
    api = AwsTarget(Aws(settings, ApiRequestCounter()), key)
    store = SnapshotStore([key])
    pool = CallPool(4)
    pool.start()
    refresher = TargetRefresher(api, store, pool,
                                RefreshSettings(full_redescribe_interval=3600), clock=clock)
    yield refresher
    pool.stop()


def snapshot(refresher: TargetRefresher) -> Snapshot:
    return refresher.store.get()


def first(refresher: TargetRefresher) -> View:
    return view(snapshot(refresher).targets[0])


def jobs(refresher: TargetRefresher) -> dict[str, str]:
    return {j.job_id: j.status for j in first(refresher).jobs}


def history(sim: Simulator, terminal: int, active: int) -> None:
    """Jobs a second apart, the active ones newest. (Created within the same millisecond, a
    page could end on the newest known job's creation time, and a steady refresh rightly reads
    one more page for the jobs that may tie with it: the test flaked when put_job was fast.)"""
    start = time.time() - 86400
    for i in range(terminal):
        sim.put_job(REGION, make_job(f"old{i:05d}", status="COMPLETE" if i % 3 else "CANCELLED",
                                     created_at=start + i))
    for i in range(active):
        sim.put_job(REGION, make_job(f"act{i:05d}", status="RUNNING" if i % 2 else "IDLE",
                                     job_type="ONE_TIME" if i % 2 else "SCHEDULED",
                                     created_at=start + terminal + i))


def test_terminal_jobs_are_described_once(sim: Simulator, refresher: TargetRefresher,
                                          clock: Clock) -> None:
    history(sim, terminal=430, active=25)
    assert refresher.refresh()
    assert sim.requests["DescribeClassificationJob"] == 455
    # Every page at the largest page size the API accepts.
    assert LIST_PAGE_SIZE == MAX_PAGE_SIZE
    assert dict(sim.page_sizes) == {MAX_PAGE_SIZE: 3}
    for _ in range(3):
        sim.reset_counts()
        clock.now += 60
        assert refresher.refresh()
        assert sim.requests["DescribeClassificationJob"] == 25  # the non-terminal jobs only
        # Newest first, and the first page reaches known jobs: one page for the history.
        assert sim.requests["ListClassificationJobs"] == 1
    assert len(jobs(refresher)) == 455


def test_changed_status_is_described_again(sim: Simulator, refresher: TargetRefresher,
                                           clock: Clock) -> None:
    sim.put_job(REGION, make_job("a", status="RUNNING", objects_to_process=5))
    sim.put_job(REGION, make_job("b", status="COMPLETE"))
    refresher.refresh()
    sim.put_job(REGION, make_job("a", status="COMPLETE", objects_to_process=0))
    refresher.refresh()
    assert jobs(refresher) == {"a": "COMPLETE", "b": "COMPLETE"}
    sim.reset_counts()
    refresher.refresh()
    assert sim.requests["DescribeClassificationJob"] == 0  # both terminal and cached now
    # A terminal job listed with a different status is described again.
    sim.put_job(REGION, make_job("b", status="CANCELLED"))
    refresher.refresh()
    assert sim.requests["DescribeClassificationJob"] == 1
    assert jobs(refresher)["b"] == "CANCELLED"


def test_full_redescribe_picks_up_tag_changes(sim: Simulator, refresher: TargetRefresher,
                                              clock: Clock) -> None:
    sim.put_job(REGION, make_job("t", status="COMPLETE", tags={"team": "a"}))
    refresher.settings = replace(refresher.settings, tag_keys=("team",))
    refresher.refresh()
    sim.put_job(REGION, make_job("t", status="COMPLETE", tags={"team": "b"}))
    clock.now += 600
    refresher.refresh()
    assert first(refresher).jobs[0].tags == (("team", "a"),)
    clock.now += 3600
    refresher.refresh()
    assert first(refresher).jobs[0].tags == (("team", "b"),)


def test_small_pages_are_followed(sim: FaultySimulator, refresher: TargetRefresher) -> None:
    history(sim, terminal=20, active=3)
    sim.faults.page_size_cap = 7
    assert refresher.refresh()
    assert sim.requests["ListClassificationJobs"] == 4
    assert len(jobs(refresher)) == 23


def test_failed_describe_of_a_new_job_exports_what_the_list_said(
        sim: FaultySimulator, refresher: TargetRefresher) -> None:
    sim.put_job(REGION, make_job("n", "new job", status="RUNNING", objects_to_process=9))
    sim.faults.describe_errors["n"] = (500, "InternalServerException")
    assert refresher.refresh()
    target = first(refresher)
    (job,) = target.jobs
    assert (job.job_id, job.name, job.status) == ("n", "new job", "RUNNING")
    assert job.objects_to_process is None  # not in the list answer, so not made up
    assert target.describe_failures == 1
    assert sim.requests["DescribeClassificationJob"] == 3  # --aws.max-attempts=3, first included


def test_snapshots_are_swapped_not_mutated(sim: Simulator, refresher: TargetRefresher) -> None:
    sim.put_job(REGION, make_job("a", status="RUNNING"))
    before = snapshot(refresher)
    assert not before.ready
    refresher.refresh()
    after = snapshot(refresher)
    assert after is not before and after.ready
    assert view(before.targets[0]).jobs == ()
    assert after.targets[0].key == TargetKey(sim.account_id, REGION)


def test_old_terminal_jobs_are_counted_but_not_exported(sim: Simulator,
                                                        refresher: TargetRefresher,
                                                        clock: Clock) -> None:
    day = 86400.0
    sim.put_job(REGION, make_job("old", status="COMPLETE", created_at=clock.now - 90 * day,
                                 last_run_time=clock.now - 89 * day))
    sim.put_job(REGION, make_job("recent", status="CANCELLED", created_at=clock.now - 2 * day))
    sim.put_job(REGION, make_job("ancient-running", status="RUNNING",
                                 created_at=clock.now - 400 * day))
    refresher.settings = replace(refresher.settings, terminal_max_age=30 * day)
    refresher.refresh()
    target = first(refresher)
    assert {j.job_id for j in target.jobs} == {"recent", "ancient-running"}
    counts = dict(target.counts)
    assert counts[(sim.account_id, "COMPLETE", "ONE_TIME")] == 1
    assert counts[(sim.account_id, "CANCELLED", "ONE_TIME")] == 1
