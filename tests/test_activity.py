"""Calls follow activity (issue 23), against the small fake: no sockets, no sleeps.

A steady refresh lists newest first and stops at the first page that reaches known jobs; a
full list runs at start-up and every full-redescribe interval; idle targets are listed at the
idle interval; findings of idle targets are asked once a day; terminal jobs never described
wait behind every other call without holding readiness back."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from exporter.collectors import findings
from exporter.engine.fleet import Ticks
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, Scheduled, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.model import TargetKey
from tests.conftest import wait_for
from tests.fakes import ACCOUNT, REGION, Clock, FakeMacie, View, view

KEY = TargetKey(ACCOUNT, REGION)


def make(api: FakeMacie, pool: CallPool, clock: Clock, **settings: Any,
         ) -> tuple[TargetRefresher, SnapshotStore]:
    store = SnapshotStore([api.key])
    return TargetRefresher(api, store, pool, RefreshSettings(**settings), clock=clock), store


def seen(store: SnapshotStore) -> View:
    (target,) = store.get().targets
    return view(target)


def history(terminal: int, active: int) -> dict[str, str]:
    """Jobs in creation order: the terminal history first, then the active jobs."""
    jobs = {f"h{i:03d}": "COMPLETE" if i % 3 else "CANCELLED" for i in range(terminal)}
    jobs.update({f"r{i:03d}": "RUNNING" for i in range(active)})
    return jobs


def fake(jobs: dict[str, str]) -> FakeMacie:
    api = FakeMacie(KEY, {})
    for job_id, status in jobs.items():  # created in this order
        api.jobs[job_id] = status
        api.created(job_id)
    return api


def full_view(api: FakeMacie, pool: CallPool) -> View:
    """What a full list of the same answers gives (a fresh refresher)."""
    refresher, store = make(api, pool, Clock())
    calls = api.calls.copy()
    assert refresher.refresh(10)
    api.calls = calls
    return seen(store)


def test_a_steady_refresh_reads_one_page_of_a_long_history(pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=40, active=3))
    refresher, store = make(api, pool, clock)
    assert refresher.refresh(10)
    assert api.calls["ListClassificationJobs"] == 22  # pages of two: the full list
    assert api.calls["DescribeClassificationJob"] == 43
    for _ in range(3):
        api.calls.clear()
        clock.now += 60
        assert refresher.refresh(10)
        assert api.calls["ListClassificationJobs"] == 1
        assert api.calls["DescribeClassificationJob"] == 3  # the active jobs, as before
    assert seen(store).jobs == full_view(api, pool).jobs
    assert seen(store).counts == full_view(api, pool).counts


def test_more_new_jobs_than_a_page_are_all_read(pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=10, active=1))
    refresher, store = make(api, pool, clock)
    assert refresher.refresh(10)
    for i in range(5):
        api.jobs[f"n{i}"] = "RUNNING"
        api.created(f"n{i}")
    api.calls.clear()
    clock.now += 60
    assert refresher.refresh(10)
    # Newest first: [n4 n3] [n2 n1] [n0 r000] [h009 h008]. The third page reaches the newest
    # known job, r000, but ends at its creation time (another job of that second could come
    # next), so one more page is read; that one ends before it.
    assert api.calls["ListClassificationJobs"] == 4
    assert {f"n{i}" for i in range(5)} <= {j.job_id for j in seen(store).jobs}
    assert seen(store).counts == full_view(api, pool).counts


def test_jobs_created_at_the_same_time_as_the_newest_known_one_are_not_missed(
        pool: CallPool) -> None:
    clock = Clock()
    api = fake({"c": "COMPLETE", "d": "COMPLETE", "y": "COMPLETE", "z": "COMPLETE"})
    api._created["y"] = api._created["z"]  # y and z were created in the same second
    refresher, store = make(api, pool, clock)
    assert refresher.refresh(10)
    api.jobs["a"] = "RUNNING"
    api._created["a"] = api._created["z"]  # and so is a new job: it sorts after both
    api.calls.clear()
    clock.now += 60
    assert refresher.refresh(10)
    # [z y] holds only known jobs, but ends at the newest known time: a tie can follow.
    # [a d] then reaches an older known job.
    assert api.calls["ListClassificationJobs"] == 2
    assert "a" in {j.job_id for j in seen(store).jobs}
    assert seen(store).counts == full_view(api, pool).counts


def test_a_job_that_finished_between_two_refreshes_is_seen_and_then_left_alone(
        pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=20, active=2))
    refresher, store = make(api, pool, clock)
    assert refresher.refresh(10)
    api.jobs["r000"] = "COMPLETE"  # the oldest active job: on a page the steady list skips
    api.calls.clear()
    clock.now += 60
    assert refresher.refresh(10)
    assert {j.job_id: j.status for j in seen(store).jobs}["r000"] == "COMPLETE"
    assert api.calls["DescribeClassificationJob"] == 2
    assert seen(store).counts == full_view(api, pool).counts
    api.calls.clear()
    clock.now += 60
    assert refresher.refresh(10)
    assert api.calls["DescribeClassificationJob"] == 1  # r001 only: r000 is terminal now


def test_the_full_list_runs_again_every_full_redescribe_interval(pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=10, active=1))
    refresher, _ = make(api, pool, clock, full_redescribe_interval=3600)
    assert refresher.refresh(10)
    pages = []
    for _ in range(61):
        api.calls.clear()
        clock.now += 60
        assert refresher.refresh(10)
        pages.append(api.calls["ListClassificationJobs"])
    assert pages.count(6) == 1 and pages.index(6) == 59  # the refresh nearest 3,600 s
    assert set(pages) == {1, 6}


def test_spread_targets_list_in_full_again_at_their_own_phase(pool: CallPool) -> None:
    """With spreading, a target's second full list (and its terminal re-describes) comes at its
    own phase of the full-redescribe interval, not with every other target's."""
    clock = Clock()
    fulls = []
    for n in range(6):
        api = fake(history(terminal=10, active=1))
        api.key = TargetKey(f"{100000000000 + n}", REGION)
        refresher = TargetRefresher(api, SnapshotStore([api.key]), pool, RefreshSettings(
            full_redescribe_interval=3600, spread_collectors=True), clock=clock)
        start = clock.now
        assert refresher.refresh(10)
        pages, describes = [], []
        for _ in range(61):
            api.calls.clear()
            clock.now += 60
            assert refresher.refresh(10)
            pages.append(api.calls["ListClassificationJobs"])
            describes.append(api.calls["DescribeClassificationJob"])
        clock.now = start
        tick = pages.index(6)  # the one full list in the hour
        assert pages.count(6) == 1 and set(pages) == {1, 6}
        # At its phase: (1 - phase) x 3,600 s after start-up, to the nearest refresh.
        assert abs((tick + 1) - (1 - api.key.phase) * 60) <= 1, (tick, api.key.phase)
        # The 10 terminal jobs are described again in that refresh, and only then.
        assert describes[tick] == 11 and set(describes) - {describes[tick]} == {1}
        fulls.append(tick)
    assert len(set(fulls)) > 3, fulls  # not all in the same minute


def test_an_idle_target_is_listed_at_the_idle_interval(pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=4, active=0))
    refresher, store = make(api, pool, clock, interval=60, idle_interval=300)
    assert refresher.refresh(10)
    lists = []
    for tick in range(1, 11):
        before = api.calls["ListClassificationJobs"]
        clock.now += 60
        if tick == 2:  # a job is created on the idle target
            api.jobs["new"] = "RUNNING"
            api.created("new")
        assert refresher.refresh(10)
        lists.append(api.calls["ListClassificationJobs"] - before)
    # Idle: listed at 300 s only, where the new job is found (two pages: the first ends at the
    # newest known job's time), then every interval again, one page each.
    assert lists == [0, 0, 0, 0, 2, 1, 1, 1, 1, 1]
    assert "new" in {j.job_id for j in seen(store).jobs}
    assert seen(store).success


@pytest.mark.parametrize(("operation", "active"), [("ListClassificationJobs", 0),
                                                   ("GetMacieSession", 1)])
def test_targets_started_together_are_read_spread_over_the_cadence(
        pool: CallPool, operation: str, active: int) -> None:
    """Each target's second idle list, and second status check, comes at its own phase of
    the cadence (here 5 minutes for both), then once a cadence: 40 targets started together
    are not all read again in the same minute."""
    clock = Clock()
    targets = []
    for n in range(40):
        api = fake(history(terminal=2, active=active))
        api.key = TargetKey(f"{100000000000 + n}", REGION)
        store = SnapshotStore([api.key])
        targets.append((api, TargetRefresher(
            api, store, pool, RefreshSettings(interval=60, idle_interval=300,
                                              status_interval=300, spread_collectors=True),
            clock=clock)))
    for _, refresher in targets:
        assert refresher.refresh(10)
    per_minute = []
    for _ in range(10):
        clock.now += 60
        before = sum(api.calls[operation] for api, _ in targets)
        for _, refresher in targets:
            assert refresher.refresh(10)
        per_minute.append(sum(api.calls[operation] for api, _ in targets) - before)
    # Every target is read exactly once in each 5 minutes, and no minute reads all of them.
    assert sum(per_minute[:5]) == 40 and sum(per_minute[5:]) == 40
    assert per_minute[:5] == per_minute[5:]
    assert max(per_minute) < 20, per_minute


def test_findings_of_an_idle_target_are_asked_once_a_day(pool: CallPool) -> None:
    clock = Clock()
    api = fake(history(terminal=3, active=0))
    refresher, store = make(api, pool, clock, full_redescribe_interval=86400,
                            collectors=(Scheduled(findings.COLLECTOR, 300),))
    asked: list[int] = []
    original = api.finding_statistics

    def counting(criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
        asked.append(int(clock.now))
        return original(criteria, size)
    api.finding_statistics = counting  # type: ignore[method-assign]
    start = int(clock.now)
    for _ in range(30):  # 30 minutes, refreshing every minute
        assert refresher.refresh(10)
        assert pool.wait_idle(10)
        clock.now += 60
    assert asked == [start] * 3  # the first round only: no job ran since
    # A job runs: it is asked for at once (a job the last answers did not cover), and while it
    # runs, every interval again.
    api.jobs["r"] = "RUNNING"
    api.created("r")
    for _ in range(6):
        assert refresher.refresh(10)
        assert pool.wait_idle(10)
        clock.now += 60
    assert asked == [start] * 3 + [start + 1800] * 3 + [start + 2100] * 3
    assert seen(store).findings is not None


def test_first_describes_of_terminal_jobs_do_not_hold_readiness(pool: CallPool) -> None:
    release = threading.Event()

    class Slow(FakeMacie):
        def describe_job(self, job_id: str) -> dict[str, Any]:
            if self.jobs[job_id] == "COMPLETE":
                assert release.wait(10)
            return super().describe_job(job_id)

    api = Slow(KEY, {})
    for job_id, status in history(terminal=6, active=2).items():
        api.jobs[job_id] = status
        api.created(job_id)
    refresher, store = make(api, pool, Clock())
    done = refresher.trigger()
    assert done is not None
    try:
        # The refresh counts as done: every job shows (the terminal ones from the list), the
        # active ones described, while the terminal describes still wait.
        wait_for(lambda: store.get().ready, what="readiness before the terminal describes")
        assert seen(store).success and not done.is_set()
        running = {j.job_id: j.runs for j in seen(store).jobs if j.status == "RUNNING"}
        assert running == {"r000": 3.0, "r001": 3.0}
        assert len(seen(store).jobs) == 8
    finally:
        release.set()
    assert done.wait(10) and refresher.last_ok
    assert all(j.runs == 3.0 for j in seen(store).jobs)


def test_an_idle_list_delayed_by_a_backlog_keeps_the_target_s_phase(pool: CallPool) -> None:
    """Refreshes that could not run for a while (a saturated process) list late once, then at
    the target's phase again: targets delayed together are not due together ever after."""
    clock = Clock()
    for n in range(8):
        api = fake(history(terminal=2, active=0))
        api.key = TargetKey(f"{100000000000 + n}", REGION)
        refresher = TargetRefresher(api, SnapshotStore([api.key]), pool, RefreshSettings(
            interval=60, idle_interval=300, spread_collectors=True), clock=clock)
        start = clock.now
        assert refresher.refresh(10)
        listed = []
        for minute in range(1, 26):
            if 6 <= minute <= 9:
                continue  # no refresh could start
            clock.now = start + 60 * minute
            before = api.calls["ListClassificationJobs"]
            assert refresher.refresh(10)
            if api.calls["ListClassificationJobs"] > before:
                listed.append(minute)
        clock.now = start
        first = listed[0]
        late = [m for m in listed if m >= 10]
        # After the backlog: one late list (unless the grid fell at minute 10), then every
        # list on the target's own 5-minute grid again.
        assert len(late) >= 3 and all((m - first) % 5 == 0 for m in late[1:]), (first, listed)


class Ticking:
    """A target for `Ticks`: its key."""

    def __init__(self, n: int) -> None:
        self.key = TargetKey(f"{100000000000 + n}", REGION)


def test_refresh_ticks_fall_at_each_target_s_phase_of_the_interval() -> None:
    """A target's first refresh comes at the next tick; the later ones once an interval, at
    its phase of it: 40 targets spread over the minute, none skipped by a late tick."""
    clock = Clock()
    ticks = Ticks(60, clock=lambda: clock.now)
    targets = [Ticking(n) for n in range(40)]
    for target in targets:
        ticks.add(target)  # type: ignore[arg-type]
    assert ticks.step == 1.0
    assert {id(t) for t in ticks.due()} == {id(t) for t in targets}  # the first at once
    start = clock.now
    seconds: dict[int, list[float]] = {id(t): [] for t in targets}
    for second in range(1, 181):
        clock.now = start + second
        if 70 <= second < 75:
            continue  # the scheduler thread was busy: the next tick covers these
        for due in ticks.due():
            seconds[id(due)].append(second)
    for target in targets:
        slot = int(target.key.phase * 60)  # its second of every minute
        expected = [second for second in range(1, 181) if second % 60 == slot]
        # Once a minute at its phase; those of the busy seconds at the tick after them.
        assert seconds[id(target)] == [75 if 70 <= t < 75 else t for t in expected]
    assert len({seconds[id(t)][0] for t in targets}) > 20  # not all in the same second
    ticks.remove(targets[0])  # type: ignore[arg-type]
    assert targets[0] not in ticks and len(ticks) == 39
    clock.now += 60  # a minute's ticks at once: every other target, once
    assert sorted(id(t) for t in ticks.due()) == sorted(id(t) for t in targets[1:])


def test_only_a_refresh_after_the_first_is_logged_as_longer_than_the_interval(
        pool: CallPool, caplog: pytest.LogCaptureFixture) -> None:
    """At start-up every target's first refresh waits behind all the others: not a line
    each. A later one that takes longer than the interval is logged."""
    api = fake(history(terminal=1, active=1))
    refresher, _ = make(api, pool, Clock(), interval=1e-9)  # any refresh takes longer
    slow = "refresh took longer than the interval; the next one waits for it"
    assert refresher.refresh(10)
    assert slow not in caplog.messages
    assert refresher.refresh(10)
    assert caplog.messages.count(slow) == 1


def test_a_trigger_with_nothing_due_starts_no_refresh_until_something_is(
        pool: CallPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle target's triggers between its reads cost no refresh: not even a look at its
    collectors, until one is due or its result changes."""
    from exporter.engine import runner

    clock = Clock()
    api = fake(history(terminal=3, active=0))
    refresher, store = make(api, pool, clock, interval=60, idle_interval=300,
                            full_redescribe_interval=86400,
                            collectors=(Scheduled(findings.COLLECTOR, 300),))
    assert refresher.refresh(10)
    assert pool.wait_idle(10)
    made: list[float] = []

    class Counted(runner._Refresh):
        def __init__(self, *args: Any) -> None:
            made.append(clock.now)
            super().__init__(*args)
    monkeypatch.setattr(runner, "_Refresh", Counted)
    start = clock.now
    lists = api.calls["ListClassificationJobs"]
    for _ in range(9):  # 9 minutes: the idle list at 300 s, nothing else due
        clock.now += 60
        assert refresher.refresh(10)
        assert pool.wait_idle(10)
    # The first trigger looks (nothing due yet, so it learns when), the one at 300 s lists;
    # the next one looks again (a new result) and the rest start nothing.
    assert made == [start + 60, start + 300, start + 360]
    assert api.calls["ListClassificationJobs"] == lists + 1
    # A changed result is looked at again at the next trigger.
    store.update(KEY, lambda r: r.with_health("elsewhere", None))
    made.clear()
    clock.now += 60
    assert refresher.refresh(10)
    assert made == [clock.now]
