"""Refresh logic against a small fake of the AWS-facing protocol: no sockets, no sleeps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.errors import ApiError
from exporter.collectors.jobs import WAIT_FOR_METRICS_JOBS
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.model import UNKNOWN_ACCOUNT, Snapshot, TargetKey, TargetResult
from tests.conftest import wait_for
from tests.fakes import ACCOUNT, NOT_ENABLED, REGION, Clock, FakeMacie, View, view


def make(api: FakeMacie, pool: CallPool, clock: Clock, **settings: Any,
         ) -> tuple[TargetRefresher, SnapshotStore, ApiRequestCounter]:
    store = SnapshotStore([api.key])
    requests = ApiRequestCounter()
    refresher = TargetRefresher(api, store, pool, RefreshSettings(**settings),
                                counters=(requests,), clock=clock)
    return refresher, store, requests


def result(store: SnapshotStore) -> View:
    (target,) = store.get().targets
    return view(target)


def test_macie_off_is_a_successful_refresh_without_jobs_and_is_not_polled(
        pool: CallPool) -> None:
    clock = Clock()
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"}, status=NOT_ENABLED)
    refresher, store, _ = make(api, pool, clock, status_interval=3600)
    assert refresher.refresh(10)
    target = result(store)
    assert (target.success, target.completed, target.macie_status) == (True, True, "DISABLED")
    assert target.jobs == () and target.counts == ()
    for _ in range(5):  # every interval until the status interval has passed: no call at all
        clock.now += 60
        assert refresher.refresh(10)
    assert api.calls == Counter({"GetMacieSession": 1})
    api.status = "ENABLED"
    clock.now += 3600
    assert refresher.refresh(10)
    assert result(store).macie_status == "ENABLED"
    assert {j.job_id for j in result(store).jobs} == {"a"}
    assert api.calls["GetMacieSession"] == 2


def test_macie_off_is_stamped_at_the_idle_cadence_and_listed_once_found_on(
        pool: CallPool) -> None:
    clock = Clock()
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"}, status=NOT_ENABLED)
    refresher, store, _ = make(api, pool, clock, interval=60, idle_interval=300,
                               status_interval=3600, spread_collectors=False)
    assert refresher.refresh(10)
    start = clock.now
    stamps = []
    results = []
    for _ in range(10):  # nothing to ask, and nothing new to show between the stamps
        clock.now += 60
        refresher.refresh(10)
        stamps.append((result(store).last_success_at or 0) - start)
        results.append(store.get().targets[0])
    assert api.calls == Counter({"GetMacieSession": 1})
    assert stamps == [0.0] * 4 + [300.0] * 5 + [600.0]  # every 300 s, not every 60 s
    assert len({id(r) for r in results}) == 3  # the result replaced at each stamp only
    api.status = "ENABLED"
    clock.now = start + 3600 + 120  # the status check is due; the idle stamp is not (at 3,900 s)
    assert refresher.refresh(10)
    assert result(store).macie_status == "ENABLED"
    assert {j.job_id for j in result(store).jobs} == {"a"}  # listed in the same refresh
    assert api.calls == Counter({"GetMacieSession": 2, "ListClassificationJobs": 1,
                                 "DescribeClassificationJob": 1})


def test_the_status_check_runs_in_the_refresh_nearest_its_due_time(pool: CallPool) -> None:
    clock = Clock()
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"})
    refresher, _, _ = make(api, pool, clock, interval=60, status_interval=3600)
    start = clock.now
    assert refresher.refresh(10)
    checks = []
    for tick in range(1, 62):  # the scheduler's ticks come a few milliseconds early
        clock.now = start + 60 * tick - 0.005
        before = api.calls["GetMacieSession"]
        assert refresher.refresh(10)
        if api.calls["GetMacieSession"] > before:
            checks.append(tick)
    assert checks == [60]  # at 3,599.995 s, not one interval later


def test_paused_macie_is_still_polled(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "PAUSED"}, status="PAUSED")
    refresher, store, _ = make(api, pool, Clock())
    assert refresher.refresh(10)
    assert result(store).macie_status == "PAUSED"
    assert api.calls["ListClassificationJobs"] == 1 and len(result(store).jobs) == 1


def test_denied_status_check_logs_once_and_polls_as_before(
        pool: CallPool, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    denied = ApiError("GetMacieSession", "AccessDeniedException",
                      "User is not authorized to perform: macie2:GetMacieSession", 403)
    keys = [TargetKey(ACCOUNT, r) for r in ("eu-west-1", "eu-west-2", "eu-west-3")]
    apis = [FakeMacie(k, {"a": "RUNNING"}, status=denied) for k in keys]
    refreshers = [make(api, pool, clock)[0] for api in apis]
    for refresher in refreshers:
        assert refresher.refresh(10)
        clock.now += 60
        assert refresher.refresh(10)
    assert all(r.macie_status is None for r in refreshers)
    assert all(api.calls["GetMacieSession"] == 1 for api in apis)  # not every refresh
    assert all(api.calls["ListClassificationJobs"] == 2 for api in apis)
    lines = [r for r in caplog.records if getattr(r, "kv", {}).get("missing_permission")
             == "macie2:GetMacieSession"]
    assert len(lines) <= 1  # once per process (earlier tests may have logged it already)


def test_a_list_that_says_macie_is_off_turns_the_target_disabled(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"},
                    status=ApiError("GetMacieSession", "ThrottlingException", "slow down"))
    api.list_error = ApiError("ListClassificationJobs", "AccessDeniedException",
                              "Macie is not enabled.", 401)
    refresher, store, _ = make(api, pool, Clock())
    assert refresher.refresh(10)
    assert result(store).macie_status == "DISABLED" and result(store).success


def test_jobs_show_from_the_list_before_their_describes_finish(pool: CallPool) -> None:
    jobs = {f"job{i:02d}": "RUNNING" for i in range(9)}
    api = FakeMacie(TargetKey(ACCOUNT, REGION), jobs)
    api.describe_gate.clear()
    refresher, store, _ = make(api, pool, Clock())
    done = refresher.trigger()
    assert done is not None
    wait_for(lambda: len(result(store).jobs) == 9, what="the listed jobs in the snapshot")
    partial = result(store)
    assert {j.status for j in partial.jobs} == {"RUNNING"}
    assert all(j.runs is None for j in partial.jobs)  # only what the list says
    assert not partial.completed and not store.get().ready  # /readyz keeps its meaning
    assert dict(partial.counts)[(ACCOUNT, "RUNNING", "ONE_TIME")] == 9
    api.describe_gate.set()
    assert done.wait(10)
    final = result(store)
    assert final.completed and all(j.runs == 3 for j in final.jobs)


def test_list_failure_keeps_the_last_jobs(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING", "b": "IDLE", "c": "COMPLETE"})
    refresher, store, _ = make(api, pool, Clock())
    assert refresher.refresh(10)
    api.list_error = ApiError("ListClassificationJobs", "InternalServerException")
    assert not refresher.refresh(10)
    target = result(store)
    assert not target.success and target.completed and len(target.jobs) == 3
    assert not refresher.running


def test_an_account_learned_late_is_rekeyed_everywhere(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(UNKNOWN_ACCOUNT, REGION), {"a": "RUNNING"})
    refresher, store, requests = make(api, pool, Clock())
    requests.inc(api.key, "GetCallerIdentity", "EndpointConnectionError")
    assert refresher.refresh(10)  # STS said nothing (account None): the job ARN tells it
    assert store.get().targets[0].key == TargetKey(ACCOUNT, REGION) == refresher.key
    assert {j.account_id for j in result(store).jobs} == {ACCOUNT}
    assert requests.items() == [((ACCOUNT, REGION, "GetCallerIdentity",
                                  "EndpointConnectionError"), 1)]
    assert refresher.refresh(10)
    assert api.calls["GetCallerIdentity"] == 1


def test_caller_identity_names_the_account_before_anything_is_stored(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(UNKNOWN_ACCOUNT, REGION), {"a": "RUNNING"})
    api.account = "444455556666"
    refresher, store, _ = make(api, pool, Clock())
    assert refresher.refresh(10)
    assert [t.key for t in store.get().targets] == [TargetKey("444455556666", REGION)]


def test_a_second_trigger_during_a_refresh_is_skipped(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"})
    api.describe_gate.clear()
    refresher, _, _ = make(api, pool, Clock())
    first = refresher.trigger()
    assert first is not None and refresher.running
    assert refresher.trigger() is None
    api.describe_gate.set()
    assert first.wait(10)
    wait_for(lambda: not refresher.running, what="the refresh to end")
    assert api.calls["ListClassificationJobs"] == 1


def test_a_big_target_does_not_hold_back_the_others() -> None:
    """One worker; a big target's 400 describes are queued (its first one held at a gate) when
    ten small targets start: they come in turn with the describes, not after them. Counted from
    the worker itself, so no timing is involved."""
    pool = CallPool(1)
    clock = Clock()
    big = FakeMacie(TargetKey(ACCOUNT, "us-east-1"),
                    {f"j{i:04d}": "RUNNING" for i in range(400)})
    big.describe_gate.clear()
    big_describes_when_small_listed: list[int] = []

    class Small(FakeMacie):
        def list_pages(self) -> Iterator[list[Any]]:
            big_describes_when_small_listed.append(big.calls["DescribeClassificationJob"])
            yield from super().list_pages()

    smalls = [Small(TargetKey(ACCOUNT, f"region-{i}"), {"x": "RUNNING"}) for i in range(10)]
    big_refresher, _, _ = make(big, pool, clock)
    small_refreshers = [make(api, pool, clock)[0] for api in smalls]
    pool.start()
    try:
        big_done = big_refresher.trigger()
        wait_for(lambda: pool.pending() >= 399, what="the big target's describes queued")
        small_done = [r.trigger() for r in small_refreshers]
        big.describe_gate.set()
        for event in small_done:
            assert event is not None and event.wait(10)
        assert big_done is not None and big_done.wait(30)
    finally:
        pool.stop()
    assert len(big_describes_when_small_listed) == 10
    assert max(big_describes_when_small_listed) < 40  # first in, first out: 400


def test_credentials_rejected_only_here_mean_a_region_the_account_has_not_enabled(
        pool: CallPool) -> None:
    rejected = ApiError("GetMacieSession", "UnrecognizedClientException",
                        "The security token included in the request is invalid.", 403)
    api = FakeMacie(TargetKey(ACCOUNT, "af-south-1"), {"a": "RUNNING"}, status=rejected)
    api.list_error = ApiError("ListClassificationJobs", "UnrecognizedClientException")
    refresher, store, _ = make(api, pool, Clock())
    assert refresher.refresh(10)
    assert result(store).macie_status == "DISABLED" and result(store).success
    # Credentials that never worked anywhere are a failing target, not a quiet one.
    other = FakeMacie(TargetKey(ACCOUNT, "eu-west-1"), {"a": "RUNNING"}, status=rejected)
    other.list_error = ApiError("ListClassificationJobs", "UnrecognizedClientException")
    other.accepted = False
    refresher, store, _ = make(other, pool, Clock())
    assert not refresher.refresh(10)
    assert result(store).macie_status is None and not result(store).success


def test_a_target_removed_mid_refresh_stores_nothing_and_ends(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING", "b": "IDLE", "c": "IDLE"})
    api.describe_gate.clear()
    refresher, store, _ = make(api, pool, Clock())
    done = refresher.trigger()
    wait_for(lambda: api.calls["ListClassificationJobs"] == 2, what="the list")
    refresher.close()
    store.remove(refresher.key)
    api.describe_gate.set()
    assert done is not None and done.wait(10)
    assert pool.wait_idle(10)
    assert store.get().targets == ()  # nothing came back
    assert refresher.trigger() is None and not refresher.running


def test_a_run_ends_even_when_storing_its_result_fails(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"})
    refresher, store, _ = make(api, pool, Clock())
    broken = [True]

    def listener() -> None:
        if broken.pop() if broken else False:
            raise RuntimeError("a listener bug")

    store.subscribe(listener)
    done = refresher.trigger()
    assert done is not None and done.wait(10)
    wait_for(lambda: not refresher.running, what="the run to be released")
    assert refresher.refresh(10)  # the next one runs


def test_a_denied_assume_role_is_not_taken_for_a_denied_status_check(pool: CallPool) -> None:
    clock = Clock()
    denied = ApiError("AssumeRole", "AccessDenied", "not authorized to perform sts:AssumeRole")
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"}, status=denied)
    api.list_error = denied
    refresher, store, _ = make(api, pool, clock)
    assert not refresher.refresh(10)
    clock.now += 60
    assert not refresher.refresh(10)
    assert api.calls["GetMacieSession"] == 2  # asked again: the check never happened
    assert result(store).macie_status is None


def test_readiness_waits_for_the_targets_to_be_known() -> None:
    assert Snapshot().ready  # no targets at all (a shard that owns none)
    assert not Snapshot(pending=True).ready  # discovery has not answered yet
    assert not Snapshot((TargetResult(TargetKey(ACCOUNT, REGION)),)).ready


def test_many_new_jobs_are_described_once_metrics_show_them_from_the_list(
        pool: CallPool) -> None:
    jobs = {f"j{n:04d}": "RUNNING" for n in range(WAIT_FOR_METRICS_JOBS)}
    api = FakeMacie(TargetKey(ACCOUNT, REGION), jobs)
    refresher, store, _ = make(api, pool, Clock())
    store.rendered_in_background()
    done = refresher.trigger()
    assert done is not None
    wait_for(lambda: len(result(store).jobs) == len(jobs), what="the jobs from the list")
    listed = store.get()
    assert not done.wait(0.5)  # nothing renders here, so the describes wait
    assert api.calls["DescribeClassificationJob"] == 0
    store.published(Snapshot(serial=listed.serial - 1))  # an older snapshot: still waiting
    assert not done.wait(0.2) and api.calls["DescribeClassificationJob"] == 0
    store.published(listed)
    assert done.wait(10) and refresher.last_ok
    assert api.calls["DescribeClassificationJob"] == len(jobs)
    assert all(job.runs == 3 for job in result(store).jobs)


def test_few_new_jobs_and_a_stopped_renderer_do_not_wait(pool: CallPool) -> None:
    api = FakeMacie(TargetKey(ACCOUNT, REGION), {f"j{n}": "RUNNING" for n in range(10)})
    refresher, store, _ = make(api, pool, Clock())
    store.rendered_in_background()
    assert refresher.refresh(10)  # 10 new jobs: described at once
    api.jobs.update({f"k{n:04d}": "RUNNING" for n in range(WAIT_FOR_METRICS_JOBS)})
    done = refresher.trigger()
    assert done is not None
    wait_for(lambda: len(result(store).jobs) == 10 + WAIT_FOR_METRICS_JOBS)
    store.published(None)  # the renderer stopped: nothing waits for it any more
    assert done.wait(10) and refresher.last_ok
    # The 10 running jobs are described in both refreshes.
    assert api.calls["DescribeClassificationJob"] == 20 + WAIT_FOR_METRICS_JOBS
