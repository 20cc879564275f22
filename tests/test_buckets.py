"""S3 bucket posture and automated discovery: mapping, the collectors on the real engine against
the simulator over HTTP, each bucket and status shown once across the fleet (shards
included), paging, bounding, denial and failure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings
from exporter.aws.target import AwsTarget
from exporter.collectors import automated_discovery, buckets
from exporter.collectors.base import MappingError, Settings
from exporter.collectors.buckets import Bucket, bucket_from_api, kept
from exporter.demo.simulator import make_bucket
from exporter.engine.pool import CallPool
from exporter.engine.runner import RefreshSettings, Scheduled, TargetRefresher
from exporter.engine.selfmetrics import SnapshotCollector, snapshot_families
from exporter.engine.store import SnapshotStore
from exporter.model import Snapshot, TargetKey
from tests.conftest import Samples, parse, series, value, wait_for
from tests.simfaults import FaultySimulator

REGION = "eu-west-1"
ADMIN, MEMBER_A, MEMBER_B = "111111111111", "222222222222", "333333333333"


def test_a_bucket_is_mapped_field_by_field() -> None:
    when = datetime(2026, 11, 30, 12, tzinfo=UTC)
    bucket = bucket_from_api({
        "accountId": ADMIN, "bucketName": "b", "sensitivityScore": 87,
        "publicAccess": {"effectivePermission": "PUBLIC"}, "sharedAccess": "EXTERNAL",
        "serverSideEncryption": {"type": "aws:kms"}, "allowsUnencryptedObjectUploads": "TRUE",
        "objectCount": 10, "sizeInBytes": 2048, "classifiableObjectCount": 8,
        "classifiableSizeInBytes": 1024, "unclassifiableObjectCount": {"total": 2},
        "errorCode": "ACCESS_DENIED", "automatedDiscoveryMonitoringStatus": "MONITORED",
        "lastAutomatedDiscoveryTime": when, "jobDetails": {"isMonitoredByJob": "FALSE"}})
    assert bucket == Bucket(ADMIN, "b", "PUBLIC", "EXTERNAL", "aws:kms", True, 87, 10, 2048, 8,
                            1024, 2, "ACCESS_DENIED", True, False, when.timestamp())


def test_absent_fields_give_no_value_and_wrong_ones_name_the_field() -> None:
    bucket = bucket_from_api({"accountId": ADMIN, "bucketName": "b",
                              "jobDetails": {"isMonitoredByJob": "UNKNOWN"}})
    assert bucket.sensitivity_score is None and bucket.objects is None
    assert bucket.monitored_by_job is None and bucket.error_code is None
    assert bucket.effective_permission == ""
    with pytest.raises(MappingError, match="objectCount"):
        bucket_from_api({"accountId": ADMIN, "bucketName": "b", "objectCount": "many"})
    with pytest.raises(MappingError, match="publicAccess"):
        bucket_from_api({"accountId": ADMIN, "bucketName": "b", "publicAccess": []})
    with pytest.raises(MappingError, match="bucketName"):
        bucket_from_api({"accountId": ADMIN})


def test_buckets_only_keeps_buckets_meeting_any_condition() -> None:
    plain = Bucket(ADMIN, "plain", "NOT_PUBLIC", "NOT_SHARED", "AES256", False, 12,
                   monitored_by_discovery=True, findings=(0, 0, 0))
    public = Bucket(ADMIN, "public", "PUBLIC", "NOT_SHARED", "AES256", False, 12,
                    monitored_by_discovery=True, findings=(0, 0, 0))
    sensitive = Bucket(ADMIN, "s", "NOT_PUBLIC", "NOT_SHARED", "AES256", False, 51,
                       monitored_by_job=True, findings=(0, 0, 0))
    unmonitored = Bucket(ADMIN, "u", "NOT_PUBLIC", "NOT_SHARED", "AES256", False, 12,
                         findings=(1, 0, 0))
    assert kept(plain, frozenset())
    assert not kept(plain, frozenset({"public", "sensitive", "findings", "unmonitored"}))
    assert kept(public, frozenset({"public"})) and not kept(public, frozenset({"sensitive"}))
    assert kept(sensitive, frozenset({"sensitive"}))
    assert kept(unmonitored, frozenset({"unmonitored"}))
    assert kept(unmonitored, frozenset({"findings"}))


# ------------------------------------------------------------------ on the engine, over HTTP


def organisation(sim: FaultySimulator, buckets_per_account: int = 3) -> None:
    """An administrator with two members in REGION, each with buckets; findings on one."""
    for member in (MEMBER_A, MEMBER_B):
        sim.set_member(ADMIN, REGION, member, "Enabled")
    for account in (ADMIN, MEMBER_A, MEMBER_B):
        for i in range(buckets_per_account):
            sim.put_bucket(REGION, make_bucket(f"{account}-b{i:03d}", account, REGION,
                                               score=40 + i))
    sim.set_automated_discovery(ADMIN, REGION, "ENABLED")
    sim.set_automated_discovery(MEMBER_A, REGION, "ENABLED")
    sim.set_automated_discovery(MEMBER_B, REGION, "DISABLED")


class Fleet:
    """Targets on one store and pool (one shard), collecting buckets and discovery."""

    def __init__(self, sim: FaultySimulator, accounts: Sequence[str], *,
                 polled: Sequence[str] | None = None, **settings: Any) -> None:
        aws = Aws(AwsSettings(endpoint_url=sim.url, sts_endpoint_url=sim.url,
                              retry_mode="standard", max_attempts=1, connect_timeout=2,
                              read_timeout=5, static_credentials=("AKIATESTEXAMPLE00001", "s")),
                  ApiRequestCounter())
        keys = [TargetKey(a, REGION) for a in accounts]
        self.store = SnapshotStore(keys)
        if polled is not None:
            self.store.polled(TargetKey(a, REGION) for a in polled)
        self.pool = CallPool(4)
        self.pool.start()
        scheduled = (Scheduled(buckets.COLLECTOR, 3600),
                     Scheduled(automated_discovery.COLLECTOR, 3600))
        self.settings = RefreshSettings(collectors=scheduled, **settings)
        self.refreshers = [
            TargetRefresher(AwsTarget(aws, key, f"arn:aws:iam::{key.account_id}:role/x"),
                            self.store, self.pool, self.settings) for key in keys]

    def collect(self) -> Samples:
        for refresher in self.refreshers:
            assert refresher.refresh(20)
        wait_for(lambda: all(
            target.health_of("buckets") and target.health_of("automated_discovery")
            for target in self.store.get().targets), timeout=20, what="both collectors ran")
        return self.samples()

    def samples(self, snapshot: Snapshot | None = None) -> Samples:
        registry = CollectorRegistry(auto_describe=False)
        snap = snapshot or self.store.get()
        registry.register(SnapshotCollector(lambda: snap, snapshot_families(
            self.settings.collect)))
        return parse(generate_latest(registry).decode())

    def close(self) -> None:
        self.pool.stop()


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.close()


def buckets_shown(samples: Samples) -> list[tuple[str, str]]:
    return sorted((s["account_id"], s["bucket"]) for s in series(samples,
                                                                 "macie_s3_bucket_info"))


def test_an_administrator_alone_shows_its_members_buckets_and_statuses(
        sim: FaultySimulator, fleets: list[Fleet]) -> None:
    organisation(sim)
    fleet = Fleet(sim, [ADMIN])
    fleets.append(fleet)
    samples = fleet.collect()
    assert buckets_shown(samples) == sorted(
        (a, f"{a}-b{i:03d}") for a in (ADMIN, MEMBER_A, MEMBER_B) for i in range(3))
    assert value(samples, "macie_s3_bucket_sensitivity_score", bucket=f"{MEMBER_B}-b002") == 42
    assert value(samples, "macie_automated_discovery_status", account_id=MEMBER_B,
                 status="DISABLED") == 1
    assert value(samples, "macie_automated_discovery_status", account_id=ADMIN,
                 status="ENABLED") == 1
    # Every bucket has its three findings series once the collector succeeded: a real zero.
    assert value(samples, "macie_s3_bucket_findings", bucket=f"{ADMIN}-b000",
                 severity="High") == 0


def test_each_bucket_is_shown_once_with_its_members_polled_too(
        sim: FaultySimulator, fleets: list[Fleet]) -> None:
    organisation(sim)
    sim.put_job(REGION, make_bucket_job("scan", f"{MEMBER_A}-b001"), account_id=MEMBER_A)
    sim.set_findings(REGION, "scan", "High", 3, account_id=MEMBER_A)
    fleet = Fleet(sim, [ADMIN, MEMBER_A, MEMBER_B])
    fleets.append(fleet)
    samples = fleet.collect()
    shown = buckets_shown(samples)
    assert len(shown) == len(set(shown)) == 9  # each once
    # A member's bucket comes from the member's own target (with its own findings).
    owners = {s["bucket"]: s for s in series(samples, "macie_s3_bucket_findings",
                                             severity="High")}
    assert owners[f"{MEMBER_A}-b001"]["account_id"] == MEMBER_A
    assert value(samples, "macie_s3_bucket_findings", bucket=f"{MEMBER_A}-b001",
                 severity="High") == 3
    statuses = [s["account_id"] for s in series(samples, "macie_automated_discovery_status",
                                                status="ENABLED")]
    assert sorted(statuses) == sorted([ADMIN, MEMBER_A, MEMBER_B])
    # The administrator still holds the copies: they are not shown while the owner is polled.
    (admin,) = [t for t in fleet.store.get().targets if t.key.account_id == ADMIN]
    copies = admin.get(buckets.SLOT)
    assert copies is not None and len(copies) == 9


def test_shards_agree_on_who_shows_a_bucket_without_talking(
        sim: FaultySimulator, fleets: list[Fleet]) -> None:
    organisation(sim)
    every = [ADMIN, MEMBER_A, MEMBER_B]
    one = Fleet(sim, [ADMIN, MEMBER_A], polled=every)
    two = Fleet(sim, [MEMBER_B], polled=every)
    fleets += [one, two]
    shown = buckets_shown(one.collect()) + buckets_shown(two.collect())
    assert sorted(shown) == sorted(set(shown)) and len(shown) == 9
    assert {a for a, _ in buckets_shown(two.samples())} == {MEMBER_B}
    statuses = [s["account_id"] for s in series(one.samples(),
                                                "macie_automated_discovery_status",
                                                status="ENABLED")]
    statuses += [s["account_id"] for s in series(two.samples(),
                                                 "macie_automated_discovery_status",
                                                 status="ENABLED")]
    assert sorted(statuses) == sorted(every)
    # Unaware of the other shard, the first would show member B's buckets a second time.
    alone = Fleet(sim, [ADMIN, MEMBER_A])
    fleets.append(alone)
    assert len(buckets_shown(alone.collect())) == 9


def test_describe_buckets_is_read_page_by_page(sim: FaultySimulator,
                                               fleets: list[Fleet]) -> None:
    for i in range(120):  # three pages of 50
        sim.put_bucket(REGION, make_bucket(f"bulk-{i:03d}", ADMIN, REGION))
    fleet = Fleet(sim, [ADMIN])
    fleets.append(fleet)
    samples = fleet.collect()
    assert len(series(samples, "macie_s3_bucket_info")) == 120
    assert sim.requests["DescribeBuckets"] == 3


def test_bucket_findings_are_exact_when_an_answer_is_capped(
        sim: FaultySimulator, fleets: list[Fleet], monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.collectors import findings
    monkeypatch.setattr(findings, "FINDINGS_GROUPS", 4)
    for i in range(10):
        name = f"b{i}"
        sim.put_bucket(REGION, make_bucket(name, ADMIN, REGION))
        sim.put_job(REGION, make_bucket_job(f"job{i}", name), account_id=ADMIN)
        sim.set_findings(REGION, f"job{i}", "High", i + 1, account_id=ADMIN)
    fleet = Fleet(sim, [ADMIN])
    fleets.append(fleet)
    samples = fleet.collect()
    # One call per severity; High's answer is capped (4 groups), so the six buckets it left
    # out are asked for by name, four at most a call (an answer of 4 could be capped again).
    assert sim.requests["GetFindingStatistics"] == 3 + 2
    assert {s["bucket"]: value(samples, "macie_s3_bucket_findings", bucket=s["bucket"],
                               severity="High")
            for s in series(samples, "macie_s3_bucket_findings", severity="High")} == {
        f"b{i}": i + 1 for i in range(10)}


def test_buckets_only_bounds_the_series(sim: FaultySimulator, fleets: list[Fleet]) -> None:
    sim.put_bucket(REGION, make_bucket("open", ADMIN, REGION, public=True, score=12))
    sim.put_bucket(REGION, make_bucket("quiet", ADMIN, REGION, score=12))
    sim.put_bucket(REGION, make_bucket("denied", ADMIN, REGION, error="ACCESS_DENIED"))
    fleet = Fleet(sim, [ADMIN], buckets_only=frozenset({"public", "error"}))
    fleets.append(fleet)
    samples = fleet.collect()
    assert [b for _, b in buckets_shown(samples)] == ["denied", "open"]
    assert value(samples, "macie_s3_bucket_analysis_error", bucket="denied",
                 error_code="ACCESS_DENIED") == 1


def test_a_denied_or_failing_collector_keeps_its_last_values(
        sim: FaultySimulator, fleets: list[Fleet], caplog: pytest.LogCaptureFixture) -> None:
    organisation(sim)
    fleet = Fleet(sim, [ADMIN])
    fleets.append(fleet)
    before = fleet.collect()
    sim.faults.denied = {"DescribeBuckets", "ListAutomatedDiscoveryAccounts"}
    refresher = fleet.refreshers[0]
    for _ in range(2):  # two rounds, each denied: one log line per action
        refresher.mark_ran("buckets", 0.0)
        refresher.mark_ran("automated_discovery", 0.0)
        assert refresher.refresh(20)
        assert fleet.pool.wait_idle(20)
    target = fleet.store.get().targets[0]
    health = target.health_of("buckets")
    assert health is not None and not health.success
    after = fleet.samples()
    assert buckets_shown(after) == buckets_shown(before)
    assert value(after, "macie_automated_discovery_status", account_id=MEMBER_B,
                 status="DISABLED") == 1
    denied = [r for r in caplog.records
              if getattr(r, "missing_permission", "") == "macie2:DescribeBuckets"]
    assert len(denied) <= 1  # once per process (an earlier test may have logged it)
    assert value(after, "macie_exporter_refresh_success", account_id=ADMIN) == 1


def test_a_standalone_account_has_its_own_status(sim: FaultySimulator,
                                                 fleets: list[Fleet]) -> None:
    sim.set_automated_discovery(ADMIN, REGION, "ENABLED")
    sim.faults.operations = {"ListAutomatedDiscoveryAccounts"}
    sim.faults.fail_all, sim.faults.fail_status = True, 400
    sim.faults.fail_code = "ValidationException"
    fleet = Fleet(sim, [ADMIN])
    fleets.append(fleet)
    samples = fleet.collect()
    assert value(samples, "macie_automated_discovery_status", account_id=ADMIN,
                 status="ENABLED") == 1
    health = fleet.store.get().targets[0].health_of("automated_discovery")
    assert health is not None and health.success


def make_bucket_job(job_id: str, bucket: str) -> dict[str, Any]:
    from exporter.demo.simulator import make_job
    return make_job(job_id, bucket=bucket)


def test_settings_carry_the_conditions() -> None:
    assert Settings(buckets_only=frozenset({"public"})).buckets_only == {"public"}
