"""Findings, usage and members collectors: fetching against a fake, families, cadence, failure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.errors import ApiError
from exporter.collectors import findings, jobs, members, usage
from exporter.collectors.base import Call, MappingError, Settings
from exporter.collectors.findings import GET_FINDING_STATISTICS
from exporter.collectors.jobs import Job, Jobs
from exporter.collectors.members import members_from_api
from exporter.collectors.usage import Usage, usage_from_api
from exporter.config import ConfigError, load
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, Scheduled, TargetRefresher
from exporter.engine.selfmetrics import SnapshotCollector
from exporter.engine.store import SnapshotStore
from exporter.model import Snapshot, TargetKey, TargetResult
from tests.conftest import parse, series, value
from tests.fakes import NOT_ENABLED, Clock, FakeMacie, View, view
from tests.snapshots import ACCOUNT, MEMBER, snapshot, target

REGION = "eu-west-1"
TB = 2.0**40


class Findings:
    """GetFindingStatistics over a list of (job id, severity, archived) findings."""

    def __init__(self, findings: list[tuple[str, str, bool]]) -> None:
        self.findings = findings
        self.calls: list[dict[str, Any]] = []

    def finding_statistics(self, criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
        self.calls.append(criteria)
        severity = criteria["severity.description"]["eq"]
        archived = criteria["archived"]["eq"] == ["true"]
        jobs = criteria.get("classificationDetails.jobId", {}).get("eq")
        counts = Counter(job for job, sev, arch in self.findings
                         if [sev] == severity and arch == archived
                         and (jobs is None or job in jobs))
        return [{"groupKey": job, "count": count}
                for job, count in counts.most_common()][:size]


@dataclass
class FindingsContext:
    """What findings.fetch sees of its target (exporter.collectors.base.Context)."""

    result: TargetResult
    key: TargetKey = field(default_factory=lambda: TargetKey(ACCOUNT, REGION))
    now: float = 0.0
    settings: Settings = field(default_factory=Settings)
    previous: findings.Findings | None = None

    def region_not_enabled(self, err: ApiError) -> bool:
        return False

    def adopt_account(self, account: str) -> None:
        raise AssertionError("findings.fetch adopts no account")

    def publish(self, value: findings.Findings, ready: bool = False) -> None:
        raise AssertionError("findings.fetch publishes nothing before it ends")


def fetch_findings(api: Findings, job_ids: Sequence[str]) -> findings.Findings:
    """findings.fetch for a target exporting `job_ids`, its calls answered by `api`."""
    exported = Jobs(tuple(Job(job_id, f"name-{job_id}", ACCOUNT, "RUNNING", "ONE_TIME", "none",
                              "ALL") for job_id in job_ids))
    context = FindingsContext(TargetResult(TargetKey(ACCOUNT, REGION)).with_value(jobs.SLOT,
                                                                                  exported))
    fetch = findings.fetch(context)
    answer: object = None
    while True:
        try:
            request = fetch.send(answer)
        except StopIteration as stop:
            counts: findings.Findings = stop.value
            return counts
        assert isinstance(request, Call) and request.operation is GET_FINDING_STATISTICS
        answer = {"countsByGroup": api.finding_statistics(
            request.arguments["findingCriteria"]["criterion"], request.arguments["size"])}


def test_findings_one_call_per_severity_without_archived() -> None:
    api = Findings([("a", "High", False)] * 3 + [("a", "High", True)] * 5
                   + [("a", "Low", False), ("b", "Medium", False), ("other", "High", False)])
    counts = fetch_findings(api, ["a", "b", "c"])
    assert dict(counts) == {"a": (1, 0, 3), "b": (0, 1, 0), "c": (0, 0, 0)}
    assert len(api.calls) == 3
    assert all(c["archived"] == {"eq": ["false"]} for c in api.calls)


def test_findings_are_exact_when_macie_caps_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(findings, "FINDINGS_GROUPS", 10)
    monkeypatch.setattr(findings, "FINDINGS_JOBS_PER_CALL", 4)
    found = [(f"job{i:02d}", "High", False) for i in range(30) for _ in range(i + 1)]
    api = Findings(found)
    job_ids = [f"job{i:02d}" for i in range(30)] + ["quiet"]
    counts = dict(fetch_findings(api, job_ids))
    assert counts == {**{f"job{i:02d}": (0, 0, i + 1) for i in range(30)}, "quiet": (0, 0, 0)}
    # High: one capped call, then the 21 jobs it left out in batches of 4; Low and Medium:
    # one call each (nothing there, not capped).
    assert len(api.calls) == 1 + 6 + 2


def test_usage_mapping() -> None:
    records: list[dict[str, Any]] = [{"accountId": ACCOUNT, "usage": [
        {"type": "SENSITIVE_DATA_DISCOVERY", "currency": "USD", "estimatedCost": "1234.5678",
         "serviceLimit": {"isServiceLimited": True, "unit": "TERABYTES", "value": 5}},
        {"type": "DATA_INVENTORY_EVALUATION", "currency": "USD", "estimatedCost": "0"}]},
        {"accountId": MEMBER, "usage": []}]
    assert usage_from_api(records) == (
        Usage(ACCOUNT, "DATA_INVENTORY_EVALUATION", "USD", 0.0, None, None),
        Usage(ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "USD", 1234.5678, True, 5 * TB))
    with pytest.raises(MappingError, match="estimatedCost"):
        usage_from_api([{"accountId": ACCOUNT, "usage": [{"type": "X", "estimatedCost": "lots"}]}])


def test_members_mapping() -> None:
    assert members_from_api([{"accountId": "2", "relationshipStatus": "Removed"},
                             {"accountId": "1", "relationshipStatus": "Enabled"},
                             {"relationshipStatus": "Enabled"}]) == (("1", "Enabled"),
                                                                     ("2", "Removed"))


def render(snap: Snapshot) -> dict[Any, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap))
    return parse(generate_latest(registry).decode())


def test_every_exported_job_has_three_findings_series_once_known() -> None:
    samples = render(snapshot())
    for job in ("job-run", "job-paused", "job-odd"):
        assert {s["severity"] for s in series(samples, "macie_classification_job_findings",
                                              job_id=job)} == {"Low", "Medium", "High"}
    assert value(samples, "macie_classification_job_findings", job_id="job-odd",
                 severity="High") == 0
    assert not series(samples, "macie_classification_job_findings", job_id="gone")
    # A job the last findings answers did not cover (new since) gets no made-up zero, and
    # makes the findings collector due at once.
    snap = snapshot()
    healthy = snap.targets[0]
    known = tuple(f for f in healthy.get(findings.SLOT) or () if f[0] != "job-odd")
    newer = healthy.with_value(findings.SLOT, known)
    samples = render(Snapshot((newer,)))
    assert not series(samples, "macie_classification_job_findings", job_id="job-odd")
    stale = findings.COLLECTOR.stale
    assert stale is not None and stale(newer) and not stale(healthy)
    # Before the findings collector succeeded for a target: no findings series at all.
    assert not series(samples, "macie_classification_job_findings", region="us-east-1")


def test_usage_of_an_account_is_exported_once() -> None:
    snap = snapshot()
    admin = snap.targets[0]
    # The member's own target reports a different figure: its own record wins.
    own = target(TargetKey(MEMBER, REGION), success=True).with_value(
        usage.SLOT, (Usage(MEMBER, "SENSITIVE_DATA_DISCOVERY", "USD", 3.5, False, TB),))
    samples = render(Snapshot((admin, own)))
    assert value(samples, "macie_usage_estimated_cost", account_id=MEMBER) == 3.5
    assert value(samples, "macie_usage_estimated_cost", account_id=ACCOUNT,
                 usage_type="SENSITIVE_DATA_DISCOVERY") == 12.5
    assert value(samples, "macie_usage_quota_reached", account_id=ACCOUNT,
                 usage_type="SENSITIVE_DATA_DISCOVERY") == 1
    assert value(samples, "macie_usage_quota_bytes", account_id=ACCOUNT,
                 usage_type="SENSITIVE_DATA_DISCOVERY") == 5 * TB
    # No serviceLimit in the answer: no quota series.
    assert not series(samples, "macie_usage_quota_bytes", usage_type="DATA_INVENTORY_EVALUATION")
    assert not series(samples, "macie_usage_quota_reached",
                      usage_type="DATA_INVENTORY_EVALUATION")


def test_members_are_a_state_set_with_unknown_values_kept() -> None:
    samples = render(snapshot())
    states = series(samples, "macie_member_relationship_status", member_account_id=MEMBER)
    assert len(states) == 10
    assert value(samples, "macie_member_relationship_status", member_account_id="444455556666",
                 status="Removed") == 1
    assert value(samples, "macie_member_relationship_status", member_account_id="777788889999",
                 status="Quarantined") == 1
    assert value(samples, "macie_exporter_collector_success", collector="usage") == 0
    assert value(samples, "macie_exporter_collector_duration_seconds",
                 collector="findings") == 0.25


# ---------------------------------------------------------------- the refresher's side


class FakeCollectorMacie(FakeMacie):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage: list[dict[str, Any]] | ApiError = [{"accountId": ACCOUNT, "usage": [
            {"type": "SENSITIVE_DATA_DISCOVERY", "currency": "USD", "estimatedCost": "2.5"}]}]
        self.member_list: list[dict[str, Any]] | ApiError = [
            {"accountId": MEMBER, "relationshipStatus": "Enabled"}]
        self.findings: list[tuple[str, str, bool]] | ApiError = [("a", "High", False)]

    def finding_statistics(self, criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
        self.calls["GetFindingStatistics"] += 1
        if isinstance(self.findings, ApiError):
            raise self.findings
        return Findings(self.findings).finding_statistics(criteria, size)

    def usage_records(self) -> list[dict[str, Any]]:
        self.calls["GetUsageStatistics"] += 1
        if isinstance(self.usage, ApiError):
            raise self.usage
        return self.usage

    def members(self) -> list[dict[str, Any]]:
        self.calls["ListMembers"] += 1
        if isinstance(self.member_list, ApiError):
            raise self.member_list
        return self.member_list


def setup(pool: CallPool, api: FakeCollectorMacie, clock: Clock
          ) -> tuple[TargetRefresher, SnapshotStore]:
    store = SnapshotStore([api.key])
    settings = RefreshSettings(collectors=(Scheduled(findings.COLLECTOR, 300),
                                           Scheduled(usage.COLLECTOR, 3600),
                                           Scheduled(members.COLLECTOR, 3600)))
    return TargetRefresher(api, store, pool, settings, clock=clock), store


def collected(store: SnapshotStore) -> View:
    return view(store.get().targets[0])


def settle(pool: CallPool) -> None:
    assert pool.wait_idle(10)


def test_collectors_run_on_their_own_cadence(pool: CallPool) -> None:
    clock = Clock()
    api = FakeCollectorMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING", "b": "COMPLETE"})
    refresher, store = setup(pool, api, clock)
    assert refresher.refresh(10)
    settle(pool)
    found = collected(store)
    assert dict(found.findings or ()) == {"a": (0, 0, 1), "b": (0, 0, 0)}
    assert found.usage == (Usage(ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "USD", 2.5),)
    assert found.members == ((MEMBER, "Enabled"),)
    assert {name: h.success for name, h in found.health} == {
        "findings": True, "usage": True, "members": True}
    for _ in range(4):  # four more refreshes, a minute apart: no collector is due yet
        clock.now += 60
        assert refresher.refresh(10)
    settle(pool)
    assert (api.calls["GetFindingStatistics"], api.calls["GetUsageStatistics"],
            api.calls["ListMembers"]) == (3, 1, 1)
    clock.now += 60  # five minutes since the first: findings again, usage and members not
    assert refresher.refresh(10)
    settle(pool)
    assert (api.calls["GetFindingStatistics"], api.calls["GetUsageStatistics"]) == (6, 1)
    # A jobs refresh keeps what the collectors found.
    assert collected(store).usage == found.usage


def test_a_denied_or_failing_collector_keeps_its_last_values(
        pool: CallPool, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    api = FakeCollectorMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"})
    refresher, store = setup(pool, api, clock)
    assert refresher.refresh(10)
    settle(pool)
    before = collected(store)
    api.usage = ApiError("GetUsageStatistics", "AccessDeniedException",
                         "not authorized to perform macie2:GetUsageStatistics", 403)
    api.findings = ApiError("GetFindingStatistics", "ThrottlingException", "slow down")
    clock.now += 3600
    assert refresher.refresh(10)  # the jobs refresh still succeeds
    settle(pool)
    after = collected(store)
    assert (after.usage, after.findings, after.members) == (
        before.usage, before.findings, before.members)
    health = dict(after.health)
    assert (health["usage"].success, health["findings"].success,
            health["members"].success) == (False, False, True)
    assert collected(store).success
    denied = [r for r in caplog.records
              if getattr(r, "kv", {}).get("missing_permission") == "macie2:GetUsageStatistics"]
    assert len(denied) <= 1
    clock.now += 3600
    assert refresher.refresh(10)
    settle(pool)
    assert len([r for r in caplog.records if getattr(r, "kv", {}).get("missing_permission")
                == "macie2:GetUsageStatistics"]) <= 1  # logged once, not every time


def test_no_collector_runs_where_macie_is_off(pool: CallPool) -> None:
    api = FakeCollectorMacie(TargetKey(ACCOUNT, REGION), {"a": "RUNNING"}, status=NOT_ENABLED)
    refresher, store = setup(pool, api, Clock())
    assert refresher.refresh(10)
    settle(pool)
    assert api.calls == Counter({"GetMacieSession": 1})
    nothing = collected(store)
    assert (nothing.findings, nothing.usage, nothing.members, nothing.health) == (
        None, None, None, ())


def test_collector_flags() -> None:
    assert load([], environ={}).collectors == (
        ("findings", 300), ("usage", 3600), ("members", 3600), ("buckets", 3600),
        ("automated_discovery", 3600), ("job_errors", 300))
    config = load(["--no-collector.findings", "--collector.usage.interval=2h",
                   "--no-collector.buckets", "--collector.automated-discovery.interval=6h",
                   "--no-collector.job-errors"],
                  environ={"MACIE_EXPORTER_COLLECTOR_MEMBERS": "false"})
    assert config.collectors == (("usage", 7200), ("automated_discovery", 21600))
    config = load(["--collector.job-errors.interval=10m", "--no-collector.buckets",
                   "--no-collector.automated-discovery"],
                  environ={"MACIE_EXPORTER_COLLECTOR_USAGE": "false",
                           "MACIE_EXPORTER_COLLECTOR_MEMBERS": "false",
                           "MACIE_EXPORTER_COLLECTOR_FINDINGS": "false"})
    assert config.collectors == (("job_errors", 600),)
    with pytest.raises(ConfigError, match=r"unknown flag --collector\.job_errors"):
        load(["--collector.job_errors"], environ={})
    with pytest.raises(ConfigError, match=r"--collector\.members\.interval: '500ms' is shorter"):
        load(["--collector.members.interval=500ms"], environ={})


def test_collector_keys_in_the_config_file(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("collector:\n  findings: false\n  usage_interval: 30m\n"
                    "  automated_discovery: false\n  buckets_interval: 2h\n"
                    "  job_errors_interval: 15m\n", encoding="utf-8")
    assert load([f"--config.file={path}"], environ={}).collectors == (
        ("usage", 1800), ("members", 3600), ("buckets", 7200), ("job_errors", 900))
    path.write_text("collector:\n  finding: false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key collector\.finding$"):
        load([f"--config.file={path}"], environ={})


def test_collector_rounds_are_spread_over_the_interval(pool: CallPool) -> None:
    """With spreading, each target's second round comes at its own phase of the interval."""
    clock = Clock()
    seconds: list[float] = []
    for region in ("eu-west-1", "eu-west-2", "eu-west-3", "us-east-1", "us-west-2"):
        api = FakeCollectorMacie(TargetKey(ACCOUNT, region), {"a": "RUNNING"})
        store = SnapshotStore([api.key])
        settings = RefreshSettings(collectors=(Scheduled(findings.COLLECTOR, 300),),
                                   spread_collectors=True)
        refresher = TargetRefresher(api, store, pool, settings, clock=clock)
        start = clock.now
        assert refresher.refresh(10)
        settle(pool)
        for minute in range(1, 6):
            clock.now = start + 60 * minute
            assert refresher.refresh(10)
            settle(pool)
            if api.calls["GetFindingStatistics"] > 3:
                seconds.append(60.0 * minute)
                break
        clock.now = start
    assert len(seconds) == 5  # every target's second round within the interval
    assert len(set(seconds)) > 1  # and not all in the same minute


def test_a_large_fleet_s_first_rounds_wait_their_phase_of_the_start_up_window(
        pool: CallPool) -> None:
    """3,000 targets: the first rounds of the findings are spread over 300 s (10 a second),
    each target's at its phase of it, even though a target with no findings yet is stale; the
    second comes within an interval after it."""
    clock = Clock()
    rounds: dict[TargetKey, list[int]] = {}
    for n in range(12):
        api = FakeCollectorMacie(TargetKey(f"{100000000000 + n}", "eu-west-1"),
                                 {"a": "RUNNING"})
        settings = RefreshSettings(collectors=(Scheduled(findings.COLLECTOR, 300),),
                                   spread_collectors=True)
        refresher = TargetRefresher(api, SnapshotStore([api.key]), pool, settings,
                                    clock=clock, targets=lambda: 3000)
        start = clock.now
        minutes = []
        for minute in range(11):
            clock.now = start + 60 * minute
            before = api.calls["GetFindingStatistics"]
            assert refresher.refresh(10)
            settle(pool)
            if api.calls["GetFindingStatistics"] > before:
                minutes.append(minute)
        clock.now = start
        rounds[api.key] = minutes
        # The first round at the refresh nearest its phase of the window.
        assert abs(minutes[0] - api.key.phase * 5) <= 0.5 + 1e-9, (api.key.phase, minutes)
        assert 0 < minutes[1] - minutes[0] <= 5
    assert len({minutes[0] for minutes in rounds.values()}) > 2  # not all in one minute


def test_a_few_targets_collect_at_once(pool: CallPool) -> None:
    key = TargetKey(ACCOUNT, "eu-west-1")
    refresher = TargetRefresher(FakeCollectorMacie(key, {}), SnapshotStore([key]), pool,
                                RefreshSettings(spread_collectors=True), targets=lambda: 10)
    assert refresher.first_round_window(Scheduled(findings.COLLECTOR, 3600)) == 1.0
