"""What a reload does to the fleet (Fleet.update), against the small fake of the AWS-facing
protocol: no sockets, no sleeps. Which target keeps its refresher, data and schedule, which go
and come, and what an unchanged target keeps when shared settings change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings
from exporter.collectors import findings, jobs
from exporter.engine.counters import WaitCounter
from exporter.engine.fleet import Fleet, shard_of
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, Scheduled, TargetRefresher
from exporter.engine.store import SnapshotStore
from exporter.model import TargetConfig, TargetKey, TargetResult
from tests.fakes import Clock, FakeMacie

ROLE = "arn:aws:iam::{account}:role/macie-exporter"
A, B, C = "111111111111", "222222222222", "333333333333"
REGION = "eu-west-1"
SETTINGS = RefreshSettings(tag_keys=("team",),
                           collectors=(Scheduled(findings.COLLECTOR, 300),))


def target(account: str, region: str = REGION, external_id: str | None = None
           ) -> TargetConfig:
    return TargetConfig(region, ROLE.format(account=account), external_id)


class Tagged(FakeMacie):
    """A target whose jobs carry a `team` and an `owner` tag."""

    def describe_job(self, job_id: str) -> dict[str, object]:
        answer = super().describe_job(job_id)
        answer["jobArn"] = str(answer["jobArn"]).replace("111122223333", self.key.account_id)
        return {**answer, "tags": {"team": "blue", "owner": f"owner-{job_id}"}}

    def finding_statistics(self, criteria: dict[str, object], size: int
                           ) -> list[dict[str, object]]:
        self.calls["GetFindingStatistics"] += 1
        return []


class World:
    """A fleet whose targets' calls go to fakes, one per (target, api made): a swapped api
    (new credentials) is a new fake."""

    def __init__(self, pool: CallPool, settings: RefreshSettings = SETTINGS) -> None:
        self.clock = Clock()
        self.store = SnapshotStore()
        self.apis: list[Tagged] = []
        aws = Aws(AwsSettings(None, "standard", 1, 1, 1), ApiRequestCounter())
        self.fleet = Fleet(aws, pool, self.store, settings, ApiRequestCounter(),
                           WaitCounter(), api=self.api, clock=self.clock)
        self.pool = pool

    def api(self, config: TargetConfig, key: TargetKey) -> Tagged:
        fake = Tagged(key, {"run": "RUNNING", "done1": "COMPLETE", "done2": "COMPLETE"},
                      role_arn=config.role_arn)
        self.apis.append(fake)
        return fake

    def of(self, account: str, region: str = REGION) -> TargetRefresher:
        (found,) = [r for r in self.fleet.refreshers
                    if r.key == TargetKey(account, region)]
        return found

    def refresh_all(self) -> None:
        self.clock.now += 60
        for refresher in self.fleet.refreshers:
            assert refresher.refresh(10)
        assert self.pool.wait_idle(10)

    def result(self, account: str, region: str = REGION) -> TargetResult:
        (found,) = [t for t in self.store.get().targets
                    if t.key == TargetKey(account, region)]
        return found

    def keys(self) -> set[tuple[str, str]]:
        return {(t.key.account_id, t.key.region) for t in self.store.get().targets}

    def calls(self, account: str, operation: str) -> int:
        return sum(api.calls[operation] for api in self.apis if api.key.account_id == account)


@pytest.fixture
def world(pool: CallPool) -> Iterator[World]:
    world = World(pool)
    yield world
    world.fleet.stop()


def test_an_unchanged_target_keeps_its_refresher_data_and_schedule(world: World) -> None:
    world.fleet.add_static([target(A), target(B)])
    world.refresh_all()
    kept, result = world.of(A), world.result(A)
    dropped = world.of(B)
    described = world.calls(A, "DescribeClassificationJob")
    assert described == 3

    added, removed = world.fleet.update(SETTINGS, [target(A), target(C)])

    assert (added, removed) == (1, 1)
    assert world.of(A) is kept and world.result(A) is result  # not even a new snapshot entry
    assert world.keys() == {(A, REGION), (C, REGION)}  # B's series are gone, C's come
    assert world.fleet.status.targets == 2
    assert kept in world.fleet.ticks and dropped not in world.fleet.ticks  # A's goes on
    assert world.of(C) in world.fleet.ticks and len(world.fleet.ticks) == 2
    world.refresh_all()
    # A steady refresh: the running job again, the terminal ones not (as without a reload).
    assert world.calls(A, "DescribeClassificationJob") == described + 1
    assert world.calls(C, "DescribeClassificationJob") == 3


def test_new_credentials_for_the_same_account_keep_the_data(world: World) -> None:
    world.fleet.add_static([target(A)])
    world.refresh_all()
    kept, old_api = world.of(A), world.of(A).api
    assert isinstance(old_api, Tagged)
    listed = old_api.calls["ListClassificationJobs"]

    assert world.fleet.update(SETTINGS, [target(A, external_id="rotated")]) == (0, 0)

    assert world.of(A) is kept and kept.api is not old_api
    assert kept.api.role_arn == ROLE.format(account=A)
    assert {j.job_id for j in jobs.jobs_of(world.result(A))} == {"run", "done1", "done2"}
    world.refresh_all()
    assert old_api.calls["ListClassificationJobs"] == listed  # the calls go to the new api
    assert world.apis[-1].calls["ListClassificationJobs"] == 1  # a steady refresh: one page


def test_a_static_target_takes_over_a_discovered_one_and_back(world: World) -> None:
    world.fleet.reconcile([target(A), target(B)])
    world.refresh_all()
    discovered = world.of(A)

    world.fleet.update(SETTINGS, [target(A)])  # A is static now: the same refresher
    assert world.of(A) is discovered and world.keys() == {(A, REGION), (B, REGION)}
    world.fleet.reconcile([target(A), target(B)])  # discovery again: A stays static
    assert world.of(A) is discovered

    world.fleet.update(SETTINGS, [])  # no static target: A is discovered again, kept
    assert world.of(A) is discovered and world.keys() == {(A, REGION), (B, REGION)}
    world.fleet.reconcile([target(B)])
    assert world.keys() == {(B, REGION)}


def test_a_new_shard_keeps_what_stays_and_takes_its_share_of_the_discovered(
        world: World) -> None:
    accounts = [f"{100000000000 + i}" for i in range(12)]
    world.fleet.add_static([target(accounts[0])])
    world.fleet.reconcile([target(a) for a in accounts[1:]])
    before = {r.key: r for r in world.fleet.refreshers}
    assert len(before) == 12

    world.fleet.update(SETTINGS, [target(accounts[0])], shard_index=1, shard_total=3)

    mine = {TargetKey(a, REGION) for a in accounts if shard_of(TargetKey(a, REGION), 3) == 1}
    assert {r.key for r in world.fleet.refreshers} == mine
    assert all(before[r.key] is r for r in world.fleet.refreshers)
    assert world.store.get().polled == frozenset(TargetKey(a, REGION) for a in accounts)
    world.fleet.update(SETTINGS, [target(accounts[0])])  # unsharded again: every target
    assert {r.key for r in world.fleet.refreshers} == set(before)
    assert world.store.get().polled is None


def test_a_new_interval_moves_every_target_to_its_phase_of_it(world: World) -> None:
    world.fleet.add_static([target(A), target(B)])
    kept = world.of(A), world.of(B)

    world.fleet.update(replace(SETTINGS, interval=600), [target(A), target(B)])

    assert world.fleet.ticks.interval == 600 and world.fleet.ticks.step == 1.0
    assert all(refresher in world.fleet.ticks for refresher in kept)
    assert len(world.fleet.ticks) == 2
    assert world.of(A).settings.interval == 600


def test_a_collector_switched_off_loses_its_series_and_on_again_runs(world: World) -> None:
    world.fleet.add_static([target(A)])
    world.refresh_all()
    assert world.result(A).get(findings.SLOT) is not None
    assert world.result(A).health_of("findings") is not None
    calls = world.calls(A, "GetFindingStatistics")

    off = replace(SETTINGS, collectors=())
    world.fleet.update(off, [target(A)])
    assert world.result(A).get(findings.SLOT) is None
    assert world.result(A).health_of("findings") is None
    assert world.result(A).get(jobs.SLOT) is not None  # the jobs stay
    world.refresh_all()
    assert world.calls(A, "GetFindingStatistics") == calls

    world.fleet.update(SETTINGS, [target(A)])  # on again: it runs after the next refresh
    world.refresh_all()
    assert world.calls(A, "GetFindingStatistics") == calls + 3
    assert world.result(A).get(findings.SLOT) is not None


def tags(world: World, account: str) -> dict[str, tuple[tuple[str, str], ...] | None]:
    return {j.job_id: j.tags for j in jobs.jobs_of(world.result(account))}


def test_a_new_tag_key_describes_every_job_once_a_removed_one_describes_none(
        world: World) -> None:
    world.fleet.add_static([target(A)])
    world.refresh_all()
    assert tags(world, A)["done1"] == (("team", "blue"),)
    described = world.calls(A, "DescribeClassificationJob")

    removed = replace(SETTINGS, tag_keys=())
    world.fleet.update(removed, [target(A)])
    world.refresh_all()
    assert world.calls(A, "DescribeClassificationJob") == described + 1  # the running job

    added = replace(SETTINGS, tag_keys=("team", "owner"))
    world.fleet.update(added, [target(A)])
    # Until the next refresh the jobs keep their values: no gap in their series.
    assert set(tags(world, A)) == {"run", "done1", "done2"}
    world.refresh_all()
    assert world.calls(A, "DescribeClassificationJob") == described + 1 + 3  # every job
    assert tags(world, A)["done1"] == (("team", "blue"), ("owner", "owner-done1"))
    world.refresh_all()  # and then steady again
    assert world.calls(A, "DescribeClassificationJob") == described + 1 + 3 + 1


def test_a_new_filter_lists_in_full_and_describes_no_known_terminal_job(
        world: World) -> None:
    world.fleet.add_static([target(A)])
    world.refresh_all()
    listed = world.calls(A, "ListClassificationJobs")
    described = world.calls(A, "DescribeClassificationJob")
    world.fleet.update(replace(SETTINGS, list_filter={"includes": [
        {"key": "jobType", "comparator": "EQ", "values": ["ONE_TIME"]}]}), [target(A)])
    world.refresh_all()
    assert world.calls(A, "ListClassificationJobs") == listed + 2  # every page (of two)
    assert world.calls(A, "DescribeClassificationJob") == described + 1


def test_a_reload_during_a_refresh_applies_to_the_next_one(world: World) -> None:
    world.fleet.add_static([target(A)])
    world.refresh_all()
    api = world.of(A).api
    assert isinstance(api, Tagged)
    api.describe_gate.clear()  # the next refresh waits in its describe
    world.clock.now += 60
    done = world.of(A).trigger()
    assert done is not None
    world.fleet.update(replace(SETTINGS, tag_keys=("team", "owner")), [target(A)])
    api.describe_gate.set()
    assert done.wait(10) and world.pool.wait_idle(10)
    # That refresh was made with the old keys; the next describes every job with the new.
    described = world.calls(A, "DescribeClassificationJob")
    world.refresh_all()
    assert world.calls(A, "DescribeClassificationJob") == described + 3
    assert tags(world, A)["done2"] == (("team", "blue"), ("owner", "owner-done2"))
