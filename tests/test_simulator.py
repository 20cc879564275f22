"""The simulator itself, through real boto3 clients: GetMacieSession, Macie's status, counters."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_macie2 import Macie2Client

from benchmarks.fleets import Fleet, request_counts
from exporter.config import load
from exporter.demo import DEMO_REGIONS, demo_simulator
from exporter.simulator import DEFAULT_ACCOUNT, Simulator, make_job
from tests.conftest import REPO

REGION, OTHER_REGION = "eu-west-1", "us-east-1"
MEMBER = "210987654321"
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def server() -> Iterator[Simulator]:
    """The plain simulator, without the tests' fault injection."""
    simulator = Simulator()
    simulator.start()
    yield simulator
    simulator.stop()


def macie(url: str, region: str = REGION, key: str = "AKIATESTEXAMPLE00001",
          secret: str = "test-secret",  # noqa: S107 - the simulator accepts any key
          token: str | None = None) -> Macie2Client:
    return boto3.client("macie2", region_name=region, endpoint_url=url, config=NO_RETRIES,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        aws_session_token=token)


def member_macie(url: str, region: str, account: str = MEMBER) -> Macie2Client:
    """A Macie client for `account`, with credentials from the simulator's STS AssumeRole."""
    sts = boto3.client("sts", region_name=region, endpoint_url=url,
                       aws_access_key_id="AKIATESTEXAMPLE00001",
                       aws_secret_access_key="test-secret")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/macie-read",
                            RoleSessionName="test")["Credentials"]
    return macie(url, region, creds["AccessKeyId"], creds["SecretAccessKey"],
                 creds["SessionToken"])


def test_get_macie_session_follows_the_macie2_model(server: Simulator) -> None:
    session = macie(server.url).get_macie_session()
    assert session["status"] == "ENABLED"
    assert session["findingPublishingFrequency"] == "FIFTEEN_MINUTES"
    assert session["serviceRole"] == (f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/aws-service-role/"
                                      "macie.amazonaws.com/AWSServiceRoleForAmazonMacie")
    assert isinstance(session["createdAt"], datetime)
    assert session["updatedAt"] == session["createdAt"]


def test_paused_macie_says_so_and_still_answers_for_its_jobs(server: Simulator) -> None:
    server.put_job(REGION, make_job("j1", status="COMPLETE"))
    server.set_macie_status(REGION, "PAUSED")
    client = macie(server.url)
    session = client.get_macie_session()
    assert session["status"] == "PAUSED"
    assert session["updatedAt"] >= session["createdAt"]
    assert [j["jobId"] for j in client.list_classification_jobs()["items"]] == ["j1"]
    assert client.describe_classification_job(jobId="j1")["jobStatus"] == "COMPLETE"
    server.set_macie_status(REGION, "ENABLED")
    assert client.get_macie_session()["status"] == "ENABLED"


CALLS: dict[str, Callable[[Macie2Client], Any]] = {
    "ListClassificationJobs": lambda c: c.list_classification_jobs(),
    "DescribeClassificationJob": lambda c: c.describe_classification_job(jobId="j1"),
    "GetMacieSession": lambda c: c.get_macie_session(),
}


@pytest.mark.parametrize("operation", CALLS)
def test_disabled_macie_answers_not_enabled_as_aws_does(server: Simulator,
                                                        operation: str) -> None:
    for region in (REGION, OTHER_REGION):
        server.put_job(region, make_job("j1"))
    server.set_macie_status(REGION, "DISABLED")
    with pytest.raises(ClientError) as raised:
        CALLS[operation](macie(server.url))
    error = raised.value.response
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert error["Error"]["Message"] == "Macie is not enabled."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert raised.value.operation_name == operation
    CALLS[operation](macie(server.url, OTHER_REGION))  # another region of the account is not off
    server.set_macie_status(REGION, "ENABLED")
    CALLS[operation](macie(server.url))


def test_macie_status_is_per_account_and_region(server: Simulator) -> None:
    server.set_macie_status(REGION, "DISABLED", account_id=MEMBER)
    with pytest.raises(ClientError, match="Macie is not enabled"):
        member_macie(server.url, REGION).get_macie_session()
    assert member_macie(server.url, OTHER_REGION).get_macie_session()["status"] == "ENABLED"
    assert macie(server.url).get_macie_session()["status"] == "ENABLED"
    with pytest.raises(ValueError, match="Macie status 'OFF'"):
        server.set_macie_status(REGION, "OFF")


def test_requests_are_counted_per_operation_account_and_region(server: Simulator) -> None:
    server.set_macie_status(REGION, "DISABLED", account_id=MEMBER)
    member = member_macie(server.url, REGION)
    with pytest.raises(ClientError):
        member.list_classification_jobs()
    macie(server.url).list_classification_jobs()
    macie(server.url).list_classification_jobs()
    macie(server.url, OTHER_REGION).get_macie_session()
    assert server.target_requests == {
        ("AssumeRole", DEFAULT_ACCOUNT, REGION): 1,
        ("ListClassificationJobs", MEMBER, REGION): 1,
        ("ListClassificationJobs", DEFAULT_ACCOUNT, REGION): 2,
        ("GetMacieSession", DEFAULT_ACCOUNT, OTHER_REGION): 1,
    }
    assert server.requests["ListClassificationJobs"] == 3
    assert server.region_requests[("ListClassificationJobs", REGION)] == 3
    assert server.target_requests[("DescribeClassificationJob", MEMBER, REGION)] == 0
    server.reset_counts()
    assert not server.requests and not server.target_requests


def fetch(url: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_counts_over_http(server: Simulator) -> None:
    macie(server.url).list_classification_jobs()
    macie(server.url, OTHER_REGION).get_macie_session()
    status, counts = fetch(f"{server.url}/_simulator/requests")
    assert status == 200
    assert counts["operations"] == {"ListClassificationJobs": 1, "GetMacieSession": 1}
    assert counts["targets"] == [
        {"operation": "GetMacieSession", "account_id": DEFAULT_ACCOUNT, "region": OTHER_REGION,
         "count": 1},
        {"operation": "ListClassificationJobs", "account_id": DEFAULT_ACCOUNT, "region": REGION,
         "count": 1},
    ]
    assert counts["max_in_flight"] == {"ListClassificationJobs": 1, "GetMacieSession": 1}
    assert fetch(f"{server.url}/_simulator/reset", "POST") == (200, {})
    status, counts = fetch(f"{server.url}/_simulator/requests")
    assert (counts["operations"], counts["targets"]) == ({}, [])
    assert fetch(f"{server.url}/_simulator/nothing")[0] == 404


def test_the_demo_has_a_region_with_macie_off() -> None:
    sim = demo_simulator()
    sim.start()
    try:
        assert DEMO_REGIONS[-1] == "ap-southeast-2"
        with pytest.raises(ClientError, match="Macie is not enabled"):
            macie(sim.url, "ap-southeast-2").list_classification_jobs()
        for region in DEMO_REGIONS[:-1]:
            assert macie(sim.url, region).list_classification_jobs()["items"]
    finally:
        sim.stop()


def test_fleet_scenario_over_http(tmp_path: Path) -> None:
    """`python -m benchmarks.fleets` in fleet mode, and the exporter config it writes."""
    config = tmp_path / "exporter.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fleets", "--accounts=4", "--regions=2",
         "--jobs-per-target=3", "--running-per-target=1", "--off-every=2",
         f"--config={config}"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        on, off = "100000000000", "100000000001"
        items = member_macie(url, "us-east-1", on).list_classification_jobs()["items"]
        assert sorted(j["jobStatus"] for j in items) == ["COMPLETE", "COMPLETE", "RUNNING"]
        with pytest.raises(ClientError, match="Macie is not enabled"):
            member_macie(url, "eu-west-1", off).get_macie_session()
        targets = {(t["account_id"], t["region"]): t["count"]
                   for t in request_counts(url)["targets"] if t["operation"] != "AssumeRole"}
        assert targets == {("100000000000", "us-east-1"): 1, ("100000000001", "eu-west-1"): 1}
    finally:
        proc.terminate()
        proc.wait(10)
    loaded = load([f"--config.file={config}"], environ={})
    assert {(t.role_arn, t.region) for t in loaded.targets} == {
        (f"arn:aws:iam::{10**11 + i}:role/macie-exporter", region)
        for i in range(4) for region in ("us-east-1", "eu-west-1")}


def test_fleet_layout() -> None:
    fleet = Fleet(accounts=20, regions=3, jobs_per_target=3, running_per_target=1, off_every=10)
    assert fleet.off_accounts == ["100000000009", "100000000019"]
    assert fleet.region_names == ("us-east-1", "eu-west-1", "us-west-2")
    sim = Simulator()
    fleet.populate(sim)
    assert sum(len(jobs) for jobs in sim._jobs.values()) == 18 * 3 * 3
    with pytest.raises(ValueError, match="running_per_target"):
        Fleet(accounts=1, regions=1, jobs_per_target=1, running_per_target=2)
