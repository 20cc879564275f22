"""The simulator itself, through real boto3 clients: GetMacieSession, Macie's status, counters."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_macie2 import Macie2Client

from exporter.simulator import DEFAULT_ACCOUNT, Simulator, make_job

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


def macie(sim: Simulator, region: str = REGION, key: str = "AKIATESTEXAMPLE00001",
          secret: str = "test-secret",  # noqa: S107 - the simulator accepts any key
          token: str | None = None) -> Macie2Client:
    return boto3.client("macie2", region_name=region, endpoint_url=sim.url, config=NO_RETRIES,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        aws_session_token=token)


def member_macie(sim: Simulator, region: str) -> Macie2Client:
    """A Macie client with credentials for MEMBER, from AssumeRole through the simulator's STS."""
    sts = boto3.client("sts", region_name=region, endpoint_url=sim.url,
                       aws_access_key_id="AKIATESTEXAMPLE00001",
                       aws_secret_access_key="test-secret")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{MEMBER}:role/macie-read",
                            RoleSessionName="test")["Credentials"]
    return macie(sim, region, creds["AccessKeyId"], creds["SecretAccessKey"],
                 creds["SessionToken"])


def test_get_macie_session_follows_the_macie2_model(server: Simulator) -> None:
    session = macie(server).get_macie_session()
    assert session["status"] == "ENABLED"
    assert session["findingPublishingFrequency"] == "FIFTEEN_MINUTES"
    assert session["serviceRole"] == (f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/aws-service-role/"
                                      "macie.amazonaws.com/AWSServiceRoleForAmazonMacie")
    assert isinstance(session["createdAt"], datetime)
    assert session["updatedAt"] == session["createdAt"]


def test_paused_macie_says_so_and_still_answers_for_its_jobs(server: Simulator) -> None:
    server.put_job(REGION, make_job("j1", status="COMPLETE"))
    server.set_macie_status(REGION, "PAUSED")
    client = macie(server)
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
        CALLS[operation](macie(server))
    error = raised.value.response
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert error["Error"]["Message"] == "Macie is not enabled."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert raised.value.operation_name == operation
    CALLS[operation](macie(server, OTHER_REGION))  # another region of the account is not off
    server.set_macie_status(REGION, "ENABLED")
    CALLS[operation](macie(server))


def test_macie_status_is_per_account_and_region(server: Simulator) -> None:
    server.set_macie_status(REGION, "DISABLED", account_id=MEMBER)
    with pytest.raises(ClientError, match="Macie is not enabled"):
        member_macie(server, REGION).get_macie_session()
    assert member_macie(server, OTHER_REGION).get_macie_session()["status"] == "ENABLED"
    assert macie(server).get_macie_session()["status"] == "ENABLED"
    with pytest.raises(ValueError, match="Macie status 'OFF'"):
        server.set_macie_status(REGION, "OFF")


def test_requests_are_counted_per_operation_account_and_region(server: Simulator) -> None:
    server.set_macie_status(REGION, "DISABLED", account_id=MEMBER)
    member = member_macie(server, REGION)
    with pytest.raises(ClientError):
        member.list_classification_jobs()
    macie(server).list_classification_jobs()
    macie(server).list_classification_jobs()
    macie(server, OTHER_REGION).get_macie_session()
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
    macie(server).list_classification_jobs()
    macie(server, OTHER_REGION).get_macie_session()
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
