"""Organizations discovery and sharding, against moto's Organizations in server mode (an
independent implementation of the API) and the simulator's Macie and STS."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.demo.simulator import Simulator
from exporter.engine.counters import FleetStatus
from exporter.engine.fleet import key_of, shard_of
from exporter.engine.store import SnapshotStore
from exporter.model import DiscoveryConfig, OrganizationsConfig, TargetConfig, TargetKey
from tests.conftest import ExporterProcess, Samples, exporter_env, value
from tests.motoserver import Moto

pytestmark = pytest.mark.tools  # moto's server
Start = Callable[..., ExporterProcess]
REGIONS = ("eu-west-1", "us-east-1")


def organisation(moto: Moto, members: int) -> tuple[str, list[str]]:
    """An organisation with `members` accounts; (management account, member accounts)."""
    client = moto.organizations()
    management = client.create_organization(FeatureSet="ALL")["Organization"][
        "MasterAccountId"]
    accounts = [client.create_account(AccountName=f"member-{i}",
                                      Email=f"member-{i}@example.com")["CreateAccountStatus"][
        "AccountId"] for i in range(members)]
    return management, accounts


def config_file(tmp_path: Path, exclude: list[str], interval: str = "1s") -> Path:
    path = tmp_path / "discovery.yaml"
    path.write_text(
        f"aws:\n  regions: [{', '.join(REGIONS)}]\n"
        f"discovery:\n  interval: {interval}\n  organizations:\n"
        "    member_role_name: macie-exporter\n"
        f"    exclude_accounts: [{', '.join(repr(a) for a in exclude)}]\n",
        encoding="utf-8")
    return path


def polled(samples: Samples) -> set[tuple[str, str]]:
    return {(dict(labels)["account_id"], dict(labels)["region"])
            for (name, labels), _ in samples.items() if name == "macie_exporter_refresh_success"}


def launch(start: Start, sim: Simulator, moto: Moto, config: Path, *args: str
           ) -> ExporterProcess:
    env = exporter_env(sim, AWS_ENDPOINT_URL_ORGANIZATIONS=moto.url)
    return start(f"--config.file={config}", "--aws.max-attempts=1", "--log.level=info", *args,
                 env=env)


def test_discovery_follows_the_organisation(sim: Simulator, start: Start, moto: Moto,
                                            tmp_path: Path) -> None:
    management, accounts = organisation(moto, 44)  # 45 accounts: three pages of 20
    closed, excluded = accounts[3], accounts[5]
    moto.organizations().close_account(AccountId=closed)
    exporter = launch(start, sim, moto, config_file(tmp_path, [excluded]))
    expected = {(a, r) for a in [management, *accounts] if a not in (closed, excluded)
                for r in REGIONS}
    samples = exporter.wait_metric(lambda s: polled(s) == expected, timeout=60,
                                   what="every ACTIVE, not excluded account in each region")
    assert value(samples, "macie_exporter_targets") == len(expected) == 86
    assert value(samples, "macie_exporter_discovery_success") == 1
    assert (value(samples, "macie_exporter_api_requests_total", operation="ListAccounts",
                  outcome="success") or 0) >= 3  # every page

    # An account added after start is picked up at the next discovery, without a restart.
    added = moto.organizations().create_account(
        AccountName="late", Email="late@example.com")["CreateAccountStatus"]["AccountId"]
    expected |= {(added, r) for r in REGIONS}
    exporter.wait_metric(lambda s: polled(s) == expected, timeout=60, what="the late account")

    # A closed account goes, and its series with it.
    moto.organizations().close_account(AccountId=accounts[7])
    expected -= {(accounts[7], r) for r in REGIONS}
    samples = exporter.wait_metric(lambda s: polled(s) == expected, timeout=30,
                                   what="the closed account's series to go")
    assert not [k for k in samples if dict(k[1]).get("account_id") == accounts[7]]

    # Discovery failing keeps the last targets; it recovers on its own.
    moto.stop()
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_discovery_success") == 0, timeout=60,
        what="discovery to fail")
    assert polled(samples) == expected
    assert "discovery failed; the last discovered targets are kept" in exporter.logs()
    moto.start()
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_discovery_success") == 1, timeout=60,
        what="discovery to recover")
    assert polled(samples) == expected


def test_static_targets_beside_discovery_are_not_polled_twice(
        sim: Simulator, start: Start, moto: Moto, tmp_path: Path) -> None:
    management, accounts = organisation(moto, 2)
    config = tmp_path / "both.yaml"
    config.write_text(
        f"aws:\n  regions: [eu-west-1]\n"
        "targets:\n"
        f"  - {{role_arn: 'arn:aws:iam::{accounts[0]}:role/other', regions: [eu-west-1]}}\n"
        f"  - {{role_arn: 'arn:aws:iam::999999999999:role/static', regions: [us-west-2]}}\n"
        "discovery:\n  interval: 1h\n  organizations:\n    member_role_name: macie-exporter\n",
        encoding="utf-8")
    exporter = launch(start, sim, moto, config)
    expected = {(management, "eu-west-1"), (accounts[0], "eu-west-1"),
                (accounts[1], "eu-west-1"), ("999999999999", "us-west-2")}
    samples = exporter.wait_metric(lambda s: polled(s) == expected, timeout=60,
                                   what="static and discovered targets, once each")
    assert value(samples, "macie_exporter_targets") == 4


def test_two_shards_split_the_targets_without_overlap_or_gap(
        sim: Simulator, start: Start, moto: Moto, tmp_path: Path) -> None:
    management, accounts = organisation(moto, 19)
    config = config_file(tmp_path, [], interval="1h")
    shards = [launch(start, sim, moto, config, f"--shard.index={i}", "--shard.total=2")
              for i in range(2)]
    everything = {(a, r) for a in [management, *accounts] for r in REGIONS}
    seen: list[set[tuple[str, str]]] = []
    for shard in shards:
        def settled(s: Samples) -> bool:
            return (value(s, "macie_exporter_discovery_success") == 1
                    and len(polled(s)) == value(s, "macie_exporter_targets"))
        seen.append(polled(shard.wait_metric(settled, timeout=60, what="a shard's targets")))
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == everything


def test_shard_hash_is_stable() -> None:
    # The same key lands in the same shard in every process, release and Python version.
    assert shard_of(TargetKey("123456789012", "eu-west-1"), 7) == shard_of(
        TargetKey("123456789012", "eu-west-1"), 7)
    assert [shard_of(TargetKey("123456789012", r), 4) for r in REGIONS] == [
        int.from_bytes(hashlib.sha256(f"123456789012/{r}".encode()).digest()[:8],
                       "big") % 4 for r in REGIONS]
    keys = [TargetKey(f"{100000000000 + i}", r) for i in range(200) for r in REGIONS]
    counts = [sum(shard_of(k, 3) == s for k in keys) for s in range(3)]
    assert min(counts) > len(keys) / 3 * 0.7  # roughly even


def test_only_active_accounts_that_are_not_excluded_become_targets() -> None:
    from exporter.engine.discovery import OrganizationsDiscovery

    class NoFleet:
        status = FleetStatus()

    orgs = OrganizationsConfig(member_role_name="macie-exporter",
                               role_arn="arn:aws-us-gov:iam::111111111111:role/discovery",
                               member_external_id="ext", exclude_accounts=frozenset({"5" * 12}))
    discovery = OrganizationsDiscovery(None, DiscoveryConfig(3600, orgs),  # type: ignore[arg-type]
                                       ("us-gov-west-1",), NoFleet(),  # type: ignore[arg-type]
                                       SnapshotStore())
    targets = discovery.targets([("1" * 12, "ACTIVE"), ("2" * 12, "SUSPENDED"),
                                 ("3" * 12, "PENDING_CLOSURE"), ("5" * 12, "ACTIVE"),
                                 ("4" * 12, "ACTIVE"), ("1" * 12, "ACTIVE")])
    assert targets == [
        TargetConfig("us-gov-west-1", f"arn:aws-us-gov:iam::{a * 12}:role/macie-exporter", "ext")
        for a in "14"]
    assert [key_of(t) for t in targets] == [TargetKey("1" * 12, "us-gov-west-1"),
                                            TargetKey("4" * 12, "us-gov-west-1")]
