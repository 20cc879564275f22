"""The simulator itself, through real boto3 clients: GetMacieSession, Macie's status, counters,
finding statistics, usage, members, Organizations' ListAccounts and the demo's story."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_macie2 import Macie2Client
from mypy_boto3_macie2.type_defs import UsageRecordTypeDef

from benchmarks.fleets import Fleet, request_counts
from exporter.config import load
from exporter.demo.simulator import (
    DEFAULT_ACCOUNT,
    LOG_EVENTS_PAGE_BYTES,
    MACIE_LOG_GROUP,
    Simulator,
    macie_job_event,
    make_job,
)
from exporter.demo.story import (
    ANALYTICS_ACCOUNT,
    DEMO_ACCOUNT,
    DEMO_MEMBERS,
    DEMO_ORGANIZATION,
    DEMO_ORGANIZATION_ROLE,
    DEMO_REGIONS,
    PAYMENTS_ACCOUNT,
    DemoAccount,
    demo_simulator,
)
from tests.conftest import REPO
from tests.simfaults import FaultySimulator

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


def member_macie(url: str, region: str, account: str = MEMBER,
                 role: str = "macie-read") -> Macie2Client:
    """A Macie client for `account`, with credentials from the simulator's STS AssumeRole."""
    creds = assumed(url, region, account, role)
    return macie(url, region, creds["AccessKeyId"], creds["SecretAccessKey"],
                 creds["SessionToken"])


def assumed(url: str, region: str, account: str, role: str = "macie-read") -> Any:
    sts = boto3.client("sts", region_name=region, endpoint_url=url,
                       aws_access_key_id="AKIATESTEXAMPLE00001",
                       aws_secret_access_key="test-secret")
    return sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}",
                           RoleSessionName="test")["Credentials"]


def organizations(url: str, account: str | None = None) -> Any:
    """An AWS Organizations client: the default account's, or `account`'s through AssumeRole."""
    if account is None:
        return boto3.client("organizations", region_name="us-east-1", endpoint_url=url,
                            config=NO_RETRIES, aws_access_key_id="AKIATESTEXAMPLE00001",
                            aws_secret_access_key="test-secret")
    creds = assumed(url, "us-east-1", account)
    return boto3.client("organizations", region_name="us-east-1", endpoint_url=url,
                        config=NO_RETRIES, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


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
    "GetFindingStatistics": lambda c: c.get_finding_statistics(
        groupBy="classificationDetails.jobId"),
    "GetUsageStatistics": lambda c: c.get_usage_statistics(),
    "ListMembers": lambda c: c.list_members(),
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
    # 5% of the jobs erroring: one in twenty, each logging its run's three errors.
    erroring = Fleet(accounts=20, regions=3, off_every=10, erroring_every=20)
    sim = Simulator()
    erroring.populate(sim)
    failed = [j for jobs in sim._jobs.values() for j in jobs.values()
              if j["lastRunErrorStatus"]["code"] == "ERROR"]
    assert len(failed) == 18 * 3 * 3 // 20 + 1 == len(erroring.erroring_targets)
    streams = {(key, stream) for key, groups in sim._logs.items()
               for stream in groups[MACIE_LOG_GROUP]}
    assert {stream for _, stream in streams} == {j["jobId"] for j in failed}
    assert all(len(events) == 3 for groups in sim._logs.values()
               for events in groups[MACIE_LOG_GROUP].values())


# ------------------------------------------------------------ GetFindingStatistics

def by_job(client: Macie2Client, **criterion: Any) -> dict[str, int]:
    answer = client.get_finding_statistics(groupBy="classificationDetails.jobId",
                                           findingCriteria={"criterion": criterion})
    return {group["groupKey"]: group["count"] for group in answer["countsByGroup"]}


def test_finding_statistics_filter_by_severity_job_and_archived(server: Simulator) -> None:
    server.add_findings(REGION, "j1", "High", 3)
    server.add_findings(REGION, "j1", "High", 2)  # added to the 3
    server.add_findings(REGION, "j1", "Low", 7)
    server.add_findings(REGION, "j1", "High", 4, archived=True)
    server.add_findings(REGION, "j2", "Medium", 1)
    server.add_findings(REGION, "j3", "High", 6)
    server.add_findings(OTHER_REGION, "j1", "High", 100)
    server.add_findings(REGION, "j1", "High", 50, account_id=MEMBER)
    client = macie(server.url)
    assert by_job(client) == {"j1": 16, "j2": 1, "j3": 6}
    assert by_job(client, archived={"eq": ["false"]}) == {"j1": 12, "j2": 1, "j3": 6}
    assert by_job(client, archived={"eq": ["true"]}) == {"j1": 4}
    assert by_job(client, **{"severity.description": {"eq": ["High"]},
                             "archived": {"eq": ["false"]}}) == {"j1": 5, "j3": 6}
    assert by_job(client, **{"severity.description": {"eq": ["Low", "Medium"]}}) == {
        "j1": 7, "j2": 1}
    assert by_job(client, **{"severity.description": {"neq": ["High"]}}) == {"j1": 7, "j2": 1}
    assert by_job(client, **{"severity.score": {"gte": 2}}) == {"j1": 9, "j2": 1, "j3": 6}
    assert by_job(client, **{"classificationDetails.jobId": {"eq": ["j1", "j2"]},
                             "archived": {"eq": ["false"]}}) == {"j1": 12, "j2": 1}
    assert by_job(client, **{"classificationDetails.jobId": {"eq": ["nothing"]}}) == {}
    severities = client.get_finding_statistics(
        groupBy="severity.description",
        findingCriteria={"criterion": {"classificationDetails.jobId": {"eq": ["j1"]},
                                       "archived": {"eq": ["false"]}}})["countsByGroup"]
    assert severities == [{"groupKey": "Low", "count": 7}, {"groupKey": "High", "count": 5}]
    assert by_job(member_macie(server.url, REGION)) == {"j1": 50}
    server.set_findings(REGION, "j1", "High", 0)
    assert by_job(client, archived={"eq": ["false"]}) == {"j1": 7, "j2": 1, "j3": 6}
    with pytest.raises(ValueError, match="severity 'Critical'"):
        server.add_findings(REGION, "j1", "Critical", 1)


def test_finding_statistics_group_by_bucket_and_type(server: Simulator) -> None:
    server.put_job(REGION, make_job("j1"))
    server.add_findings(REGION, "j1", "Low", 2)
    server.add_findings(REGION, "gone", "Low", 3)  # its job no longer exists
    client = macie(server.url)
    buckets = client.get_finding_statistics(groupBy="resourcesAffected.s3Bucket.name")
    assert buckets["countsByGroup"] == [{"groupKey": "bucket-gone", "count": 3},
                                        {"groupKey": "bucket-j1", "count": 2}]
    types = client.get_finding_statistics(groupBy="type")["countsByGroup"]
    assert types == [{"groupKey": "SensitiveData:S3Object/Personal", "count": 5}]


def test_finding_statistics_size_caps_the_sorted_groups(server: Simulator) -> None:
    for i, count in enumerate([5, 9, 1, 9, 3]):
        server.add_findings(REGION, f"job{i}", "High", count)
    client = macie(server.url)

    def groups(size: int | None = None, **sort: str) -> list[tuple[str, int]]:
        arguments: dict[str, Any] = {"groupBy": "classificationDetails.jobId"}
        if size is not None:
            arguments["size"] = size
        if sort:
            arguments["sortCriteria"] = sort
        answer = client.get_finding_statistics(**arguments)
        return [(g["groupKey"], g["count"]) for g in answer["countsByGroup"]]

    # By default the largest counts first, ties by group key.
    assert groups() == [("job1", 9), ("job3", 9), ("job0", 5), ("job4", 3), ("job2", 1)]
    assert groups(2, attributeName="count", orderBy="DESC") == [("job1", 9), ("job3", 9)]
    assert groups(2, attributeName="count", orderBy="ASC") == [("job2", 1), ("job4", 3)]
    assert groups(3, attributeName="groupKey", orderBy="ASC") == [
        ("job0", 5), ("job1", 9), ("job2", 1)]
    assert groups(1, attributeName="groupKey", orderBy="DESC") == [("job4", 3)]
    assert len(groups(1000)) == 5
    for size in (0, 1001):
        with pytest.raises(ClientError, match="size must be an integer between 1 and 1000"):
            groups(size)


def test_finding_statistics_reject_what_they_cannot_answer(server: Simulator) -> None:
    client = macie(server.url)
    with pytest.raises(ClientError, match="does not support the finding property 'count'"):
        by_job(client, count={"gt": 1})
    with pytest.raises(ClientError, match="gt applies to numeric properties"):
        by_job(client, **{"classificationDetails.jobId": {"gt": 1}})
    with pytest.raises(ClientError) as raised:
        by_job(client, archived={})
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# ------------------------------------------------------------ GetUsageStatistics

def usage_of(record: UsageRecordTypeDef) -> dict[str, Any]:
    return {u["type"]: (u["estimatedCost"], u.get("serviceLimit")) for u in record["usage"]}


def test_usage_statistics_default_records_follow_the_model(server: Simulator) -> None:
    answer = macie(server.url).get_usage_statistics(timeRange="MONTH_TO_DATE")
    assert answer["timeRange"] == "MONTH_TO_DATE"
    assert "nextToken" not in answer
    [record] = answer["records"]
    assert record["accountId"] == DEFAULT_ACCOUNT
    assert isinstance(record["freeTrialStartDate"], datetime)
    assert {u["currency"] for u in record["usage"]} == {"USD"}
    assert usage_of(record) == {
        "DATA_INVENTORY_EVALUATION": ("0.12", None),  # no serviceLimit at all
        "SENSITIVE_DATA_DISCOVERY": ("1.35", {"isServiceLimited": False, "unit": "TERABYTES",
                                              "value": 5}),
    }
    assert macie(server.url).get_usage_statistics()["timeRange"] == "PAST_30_DAYS"


def test_usage_is_per_account_and_region(server: Simulator) -> None:
    server.set_usage(DEFAULT_ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "4999.99", limit_value=5,
                     limited=True, region=REGION)
    server.set_usage(DEFAULT_ACCOUNT, "AUTOMATED_OBJECT_MONITORING", "3.10")  # every region
    server.set_usage(DEFAULT_ACCOUNT, "DATA_INVENTORY_EVALUATION", None, region=OTHER_REGION)
    [here] = macie(server.url).get_usage_statistics()["records"]
    assert usage_of(here) == {
        "AUTOMATED_OBJECT_MONITORING": ("3.10", None),
        "DATA_INVENTORY_EVALUATION": ("0.12", None),
        "SENSITIVE_DATA_DISCOVERY": ("4999.99", {"isServiceLimited": True,
                                                 "unit": "TERABYTES", "value": 5}),
    }
    [there] = macie(server.url, OTHER_REGION).get_usage_statistics()["records"]
    assert set(usage_of(there)) == {"AUTOMATED_OBJECT_MONITORING", "SENSITIVE_DATA_DISCOVERY"}
    assert usage_of(there)["SENSITIVE_DATA_DISCOVERY"][0] == "1.35"
    with pytest.raises(ValueError, match="not a decimal"):
        server.set_usage(DEFAULT_ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "lots")
    with pytest.raises(ValueError, match="needs its limit_value"):
        server.set_usage(DEFAULT_ACCOUNT, "SENSITIVE_DATA_DISCOVERY", "1", limited=True)


def test_an_administrator_sees_its_members_usage_in_pages(server: Simulator) -> None:
    members = {"100000000001": "Enabled", "100000000002": "Paused",
               "100000000003": "Removed", "100000000004": "Invited"}
    for member, status in members.items():
        server.set_member(DEFAULT_ACCOUNT, REGION, member, status)
    server.set_usage("100000000002", "SENSITIVE_DATA_DISCOVERY", "77.00", limit_value=5,
                     limited=True)
    client = macie(server.url)
    pages = list(client.get_paginator("get_usage_statistics").paginate(
        timeRange="MONTH_TO_DATE", PaginationConfig={"PageSize": 1}))
    assert [len(page["records"]) for page in pages] == [1, 1, 1]
    assert {page["timeRange"] for page in pages} == {"MONTH_TO_DATE"}
    records = [r for page in pages for r in page["records"]]
    # Itself and the members with Macie on for them; removed and invited ones report nothing.
    assert [r["accountId"] for r in records] == ["100000000001", "100000000002", DEFAULT_ACCOUNT]
    assert usage_of(records[1])["SENSITIVE_DATA_DISCOVERY"][1]["isServiceLimited"] is True
    limited = client.get_usage_statistics(
        filterBy=[{"key": "serviceLimit", "comparator": "EQ", "values": ["true"]}])
    assert [r["accountId"] for r in limited["records"]] == ["100000000002"]
    chosen = client.get_usage_statistics(
        filterBy=[{"key": "accountId", "comparator": "CONTAINS",
                   "values": [DEFAULT_ACCOUNT, "100000000001"]}])
    assert [r["accountId"] for r in chosen["records"]] == ["100000000001", DEFAULT_ACCOUNT]
    costly = client.get_usage_statistics(sortBy={"key": "total", "orderBy": "DESC"},
                                         maxResults=1)
    assert [r["accountId"] for r in costly["records"]] == ["100000000002"]
    assert costly["nextToken"]
    # Only an administrator sees other accounts.
    assert [r["accountId"] for r in member_macie(
        server.url, REGION, "100000000001").get_usage_statistics()["records"]] == [
        "100000000001"]
    for size in (0, 51):
        with pytest.raises(ClientError, match="maxResults must be an integer between 1 and 50"):
            client.get_usage_statistics(maxResults=size)
    with pytest.raises(ClientError, match="invalid nextToken"):
        client.get_usage_statistics(nextToken="not a token")


# ------------------------------------------------------------ ListMembers

def test_list_members_pages_of_at_most_25(server: Simulator) -> None:
    for i in range(30):
        server.set_member(DEFAULT_ACCOUNT, REGION, f"2000000000{i:02d}",
                          "Removed" if i % 10 == 9 else "Enabled")
    client = macie(server.url)
    pages = list(client.get_paginator("list_members").paginate(onlyAssociated="false"))
    assert [len(page["members"]) for page in pages] == [25, 5]
    members = [m for page in pages for m in page["members"]]
    assert [m["accountId"] for m in members] == [f"2000000000{i:02d}" for i in range(30)]
    first = members[0]
    assert first["administratorAccountId"] == first["masterAccountId"] == DEFAULT_ACCOUNT
    assert first["arn"] == f"arn:aws:macie2:{REGION}:{DEFAULT_ACCOUNT}:member/200000000000"
    assert first["email"] == "aws+200000000000@example.com"
    assert first["relationshipStatus"] == "Enabled"
    assert first["tags"] == {}
    assert isinstance(first["invitedAt"], datetime) and isinstance(first["updatedAt"], datetime)
    assert server.requests["ListMembers"] == 2

    # Associated only, by default and with "true": the removed ones are left out.
    current = [m["accountId"] for m in client.list_members()["members"]]
    assert len(current) == 25 and "200000000009" not in current
    associated = list(client.get_paginator("list_members").paginate(onlyAssociated="true"))
    assert sum(len(page["members"]) for page in associated) == 27
    assert [len(p["members"]) for p in client.get_paginator("list_members").paginate(
        PaginationConfig={"PageSize": 10})] == [10, 10, 7]
    with pytest.raises(ClientError, match="maxResults must be an integer between 1 and 25"):
        client.list_members(maxResults=26)


def test_only_an_administrator_has_members(server: Simulator) -> None:
    server.set_member(DEFAULT_ACCOUNT, REGION, MEMBER, "Paused")
    assert member_macie(server.url, REGION).list_members()["members"] == []
    assert macie(server.url, OTHER_REGION).list_members()["members"] == []
    [member] = macie(server.url).list_members()["members"]
    assert member["relationshipStatus"] == "Paused"
    updated = member["updatedAt"]
    server.set_member(DEFAULT_ACCOUNT, REGION, MEMBER, "Resigned")
    assert macie(server.url).list_members()["members"] == []
    [member] = macie(server.url).list_members(onlyAssociated="false")["members"]
    assert member["relationshipStatus"] == "Resigned"
    assert member["updatedAt"] >= updated and member["invitedAt"] <= updated
    with pytest.raises(ValueError, match="relationship status 'Gone'"):
        server.set_member(DEFAULT_ACCOUNT, REGION, MEMBER, "Gone")


# ------------------------------------------------------------ Organizations ListAccounts

def test_list_accounts_through_the_organizations_paginator(server: Simulator) -> None:
    accounts = {f"3000000000{i:02d}": "SUSPENDED" if i == 7 else "ACTIVE" for i in range(44)}
    server.set_organization(DEFAULT_ACCOUNT, accounts, names={"300000000000": "analytics"})
    client = organizations(server.url)
    pages = list(client.get_paginator("list_accounts").paginate())
    assert [len(page["Accounts"]) for page in pages] == [20, 20, 5]
    listed = [a for page in pages for a in page["Accounts"]]
    assert listed[0]["Id"] == DEFAULT_ACCOUNT  # the management account, first to join
    assert listed[0]["JoinedMethod"] == "INVITED"
    assert {a["Id"]: a["Status"] for a in listed[1:]} == accounts
    analytics = listed[1]
    assert analytics["Name"] == "analytics"
    assert analytics["Arn"] == (f"arn:aws:organizations::{DEFAULT_ACCOUNT}:account/"
                                f"o-{DEFAULT_ACCOUNT}/300000000000")
    assert analytics["Email"] == "aws+300000000000@example.com"
    assert analytics["State"] == "ACTIVE" and analytics["JoinedMethod"] == "CREATED"
    assert isinstance(analytics["JoinedTimestamp"], datetime)
    assert listed[8]["Status"] == listed[8]["State"] == "SUSPENDED"
    assert server.requests["ListAccounts"] == 3
    assert server.target_requests[("ListAccounts", DEFAULT_ACCOUNT, "us-east-1")] == 3
    assert len(client.list_accounts(MaxResults=7)["Accounts"]) == 7
    with pytest.raises(ClientError) as raised:
        client.list_accounts(MaxResults=21)
    assert raised.value.response["Error"]["Code"] == "InvalidInputException"


def test_list_accounts_outside_the_management_account(server: Simulator) -> None:
    with pytest.raises(ClientError) as raised:
        organizations(server.url).list_accounts()
    assert raised.value.response["Error"]["Code"] == "AWSOrganizationsNotInUseException"
    server.set_organization(DEFAULT_ACCOUNT, {MEMBER: "ACTIVE"})
    with pytest.raises(ClientError) as raised:
        organizations(server.url, MEMBER).list_accounts()
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert server.target_requests[("ListAccounts", MEMBER, "us-east-1")] == 1
    with pytest.raises(ValueError, match="status 'CLOSED'"):
        server.set_organization(DEFAULT_ACCOUNT, {MEMBER: "CLOSED"})


def test_faults_answer_in_each_services_protocol() -> None:
    sim = FaultySimulator()
    sim.start()
    try:
        sim.set_organization(DEFAULT_ACCOUNT, {})
        sim.faults.fail_all = True
        sim.faults.fail_code = "ServiceException"
        sim.faults.operations = {"ListAccounts", "GetUsageStatistics"}
        with pytest.raises(ClientError) as raised:
            organizations(sim.url).list_accounts()
        assert raised.value.response["Error"]["Code"] == "ServiceException"
        with pytest.raises(ClientError) as raised:
            macie(sim.url).get_usage_statistics()
        assert raised.value.response["Error"]["Code"] == "ServiceException"
        assert macie(sim.url).list_members()["members"] == []
    finally:
        sim.stop()


def test_new_operations_are_counted_and_delayed_like_the_others(server: Simulator) -> None:
    server.set_organization(DEFAULT_ACCOUNT, {})
    server.latency = 0.2
    client = macie(server.url)
    started = time.monotonic()
    client.get_finding_statistics(groupBy="severity.description")
    client.get_usage_statistics()
    client.list_members()
    organizations(server.url).list_accounts()
    assert time.monotonic() - started >= 0.8
    assert server.target_requests == {
        ("GetFindingStatistics", DEFAULT_ACCOUNT, REGION): 1,
        ("GetUsageStatistics", DEFAULT_ACCOUNT, REGION): 1,
        ("ListMembers", DEFAULT_ACCOUNT, REGION): 1,
        ("ListAccounts", DEFAULT_ACCOUNT, "us-east-1"): 1,
    }


# ------------------------------------------------------------ the demo

def test_the_demo_has_findings_that_grow_and_archived_ones_that_do_not_count() -> None:
    start = time.time()
    demo = DemoAccount(start)
    sim = Simulator()  # evolved by hand below
    demo.populate(sim)
    sim.start()
    try:
        client = macie(sim.url)
        lake, legal = "datalake000000000000000000000001", "legalhold0000000000000000000001"
        high = {"severity.description": {"eq": ["High"]}, "archived": {"eq": ["false"]}}
        first = by_job(client, **high)
        assert first[legal] == 4
        assert first[lake] >= 2
        everything = by_job(client)
        current = by_job(client, archived={"eq": ["false"]})
        assert everything[lake] - current[lake] == 9  # archived: 6 Low, 2 Medium, 1 High
        assert by_job(client, archived={"eq": ["true"]})[legal] == 5
        listed = {j["jobId"] for j in client.list_classification_jobs()["items"]}
        assert set(everything) <= listed
        demo(start + 1800, sim)  # half an hour into the data-lake scan
        later = by_job(client, **high)
        assert later[lake] > first[lake]
        assert later[legal] == 4
        assert by_job(client, archived={"eq": ["true"]})[lake] == 9
        demo(start + 7200, sim)  # the scan is done: its findings stop growing
        done = by_job(client, archived={"eq": ["false"]})[lake]
        demo(start + 9000, sim)
        assert by_job(client, archived={"eq": ["false"]})[lake] == done
    finally:
        sim.stop()


def test_the_demo_has_usage_near_and_at_its_quota() -> None:
    start = time.time()
    demo = DemoAccount(start)
    sim = Simulator()
    demo.populate(sim)
    sim.start()
    try:
        records = {r["accountId"]: usage_of(r)
                   for r in macie(sim.url).get_usage_statistics()["records"]}
        # The administrator sees itself and its Enabled and Paused members.
        assert set(records) == {DEMO_ACCOUNT} | {
            m for m, status in DEMO_MEMBERS.items() if status in ("Enabled", "Paused")}
        limit = records[DEMO_ACCOUNT]["SENSITIVE_DATA_DISCOVERY"][1]
        assert limit == {"isServiceLimited": True, "unit": "TERABYTES", "value": 5}
        assert records[DEMO_ACCOUNT]["DATA_INVENTORY_EVALUATION"][1] is None

        def us_cost() -> float:
            [record] = macie(sim.url, "us-east-1").get_usage_statistics()["records"]
            cost, limit = usage_of(record)["SENSITIVE_DATA_DISCOVERY"]
            assert limit == {"isServiceLimited": False, "unit": "TERABYTES", "value": 5}
            return float(cost)

        before = us_cost()
        demo(start + 3600, sim)
        assert us_cost() > before
    finally:
        sim.stop()


def test_the_demo_account_administers_members_and_an_organisation() -> None:
    sim = demo_simulator()
    sim.start()
    try:
        client = macie(sim.url, "eu-west-1")
        members = {m["accountId"]: m["relationshipStatus"]
                   for m in client.list_members(onlyAssociated="false")["members"]}
        assert members == DEMO_MEMBERS
        assert sorted(members.values()) == ["Enabled", "Enabled", "Enabled", "Paused",
                                            "Removed"]
        assert macie(sim.url, "us-east-1").list_members()["members"] == []
        listed = organizations(sim.url).list_accounts()["Accounts"]
        assert {a["Id"]: a["Status"] for a in listed} == DEMO_ORGANIZATION
        assert sorted(DEMO_ORGANIZATION.values()) == ["ACTIVE", "ACTIVE", "ACTIVE", "SUSPENDED"]
        # Discovery assumes the member role in each ACTIVE account and finds jobs there.
        for account in (ANALYTICS_ACCOUNT, PAYMENTS_ACCOUNT):
            member = member_macie(sim.url, "eu-west-1", account, DEMO_ORGANIZATION_ROLE)
            jobs = member.list_classification_jobs()["items"]
            assert jobs and all(j["bucketDefinitions"][0]["accountId"] == account for j in jobs)
            assert by_job(member, archived={"eq": ["false"]})
            [record] = member.get_usage_statistics()["records"]
            assert record["accountId"] == account
            with pytest.raises(ClientError, match="Macie is not enabled"):
                member_macie(sim.url, "ap-southeast-2", account).get_macie_session()
    finally:
        sim.stop()


def raw_answers(client: Macie2Client) -> list[dict[str, Any]]:
    """The JSON bodies the client receives (botocore drops what its model does not know)."""
    bodies: list[dict[str, Any]] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(json.loads(response_dict["body"] or b"{}"))
    client.meta.events.register("response-received", keep)
    return bodies


def assert_follows_model(operation: str, body: Any) -> None:
    """Every key of `body` is a member of the operation's output shape, recursively, with a
    value of the member's type (enums included)."""
    import botocore.session
    model = botocore.session.Session().get_service_model("macie2")

    def walk(shape: Any, value: Any, where: str) -> None:
        kind = shape.type_name
        if kind == "structure":
            assert isinstance(value, dict), where
            for key, item in value.items():
                assert key in shape.members, f"{where}.{key} is not in the model"
                walk(shape.members[key], item, f"{where}.{key}")
        elif kind == "list":
            assert isinstance(value, list), where
            for i, item in enumerate(value):
                walk(shape.member, item, f"{where}[{i}]")
        elif kind == "string":
            assert isinstance(value, str), where
            assert not shape.enum or value in shape.enum, f"{where}: {value!r}"
        elif kind in ("integer", "long"):
            assert isinstance(value, int) and not isinstance(value, bool), where
        elif kind == "boolean":
            assert isinstance(value, bool), where
        elif kind == "timestamp":
            assert isinstance(value, str) and value.endswith("Z"), where
    walk(model.operation_model(operation).output_shape, body, operation)


def test_describe_buckets_follows_the_model_pages_and_filters(server: Simulator) -> None:
    from exporter.demo.simulator import make_bucket
    server.set_member(DEFAULT_ACCOUNT, REGION, MEMBER, "Enabled")
    server.set_member(DEFAULT_ACCOUNT, REGION, "310987654321", "Removed")
    for i in range(60):
        server.put_bucket(REGION, make_bucket(f"own-{i:02d}", DEFAULT_ACCOUNT, REGION,
                                              public=i == 0, error="ACCESS_DENIED" if i == 1
                                              else None, last_discovery=1.7e9))
    server.put_bucket(REGION, make_bucket("member-bucket", MEMBER, REGION, score=None))
    server.put_bucket(REGION, make_bucket("removed-bucket", "310987654321", REGION))
    server.put_bucket(OTHER_REGION, make_bucket("elsewhere", DEFAULT_ACCOUNT, OTHER_REGION))
    client = macie(server.url)
    bodies = raw_answers(client)
    pages = list(client.get_paginator("describe_buckets").paginate(
        PaginationConfig={"PageSize": 50}))
    assert [len(p["buckets"]) for p in pages] == [50, 11]
    names = [b["bucketName"] for p in pages for b in p["buckets"]]
    # The administrator sees its own and its associated member's buckets, not a removed one's.
    assert "member-bucket" in names and "removed-bucket" not in names
    assert "elsewhere" not in names
    for body in bodies:
        assert_follows_model("DescribeBuckets", body)
    (first,) = [b for p in pages for b in p["buckets"] if b["bucketName"] == "own-00"]
    assert isinstance(first["lastAutomatedDiscoveryTime"], datetime)
    assert first["publicAccess"]["effectivePermission"] == "PUBLIC"
    mine = client.describe_buckets(criteria={"accountId": {"eq": [MEMBER]}})["buckets"]
    assert [b["bucketName"] for b in mine] == ["member-bucket"]
    assert "sensitivityScore" not in mine[0]
    # A member sees only its own buckets.
    own = member_macie(server.url, REGION).describe_buckets()["buckets"]
    assert [b["bucketName"] for b in own] == ["member-bucket"]
    with pytest.raises(ClientError, match="ValidationException"):
        client.describe_buckets(maxResults=51)
    with pytest.raises(ClientError, match="ValidationException"):
        client.describe_buckets(criteria={"sensitivityScore": {"gt": 50}})


def test_automated_discovery_follows_the_model(server: Simulator) -> None:
    members = [f"4{i:011d}" for i in range(30)]
    for member in members:
        server.set_member(DEFAULT_ACCOUNT, REGION, member, "Enabled")
        server.set_automated_discovery(member, REGION, "ENABLED" if int(member) % 2 else
                                       "DISABLED")
    server.set_automated_discovery(DEFAULT_ACCOUNT, REGION, "ENABLED")
    client = macie(server.url)
    bodies = raw_answers(client)
    configuration = client.get_automated_discovery_configuration()
    assert configuration["status"] == "ENABLED"
    pages = list(client.get_paginator("list_automated_discovery_accounts").paginate(
        PaginationConfig={"PageSize": 25}))
    assert [len(p["items"]) for p in pages] == [25, 5]
    statuses = {i["accountId"]: i["status"] for p in pages for i in p["items"]}
    assert statuses == {m: "ENABLED" if int(m) % 2 else "DISABLED" for m in members}
    assert_follows_model("GetAutomatedDiscoveryConfiguration", bodies[0])
    for body in bodies[1:]:
        assert_follows_model("ListAutomatedDiscoveryAccounts", body)
    # A member sees its own account; an account outside any organisation, none.
    (item,) = member_macie(server.url, REGION, members[1]).list_automated_discovery_accounts(
        )["items"]
    assert item == {"accountId": members[1], "status": "ENABLED"}
    assert macie(server.url, OTHER_REGION).list_automated_discovery_accounts()["items"] == []
    assert macie(server.url, OTHER_REGION).get_automated_discovery_configuration()[
        "status"] == "DISABLED"


def test_the_demo_has_buckets_to_worry_about() -> None:
    sim = demo_simulator()
    sim.start()
    try:
        client = macie(sim.url)
        buckets = {b["bucketName"]: b for b in client.describe_buckets()["buckets"]}
        public = [b for b in buckets.values()
                  if b["publicAccess"]["effectivePermission"] == "PUBLIC"]
        assert public and all(b["sensitivityScore"] >= 51 for b in public)
        assert any(b.get("errorCode") == "ACCESS_DENIED" for b in buckets.values())
        assert any(b["automatedDiscoveryMonitoringStatus"] == "NOT_MONITORED"
                   and b["jobDetails"]["isMonitoredByJob"] == "FALSE"
                   for b in buckets.values())
        high = client.get_finding_statistics(
            groupBy="resourcesAffected.s3Bucket.name",
            findingCriteria={"criterion": {"severity.description": {"eq": ["High"]},
                                           "archived": {"eq": ["false"]}}})["countsByGroup"]
        assert {g["groupKey"] for g in high} & {b["bucketName"] for b in public}
        statuses = {i["accountId"]: i["status"]
                    for i in client.list_automated_discovery_accounts()["items"]}
        assert statuses[PAYMENTS_ACCOUNT] == "DISABLED"
    finally:
        sim.stop()


# ------------------------------------------------------------ CloudWatch Logs

def logs(url: str, region: str = REGION) -> Any:
    return boto3.client("logs", region_name=region, endpoint_url=url, config=NO_RETRIES,
                        aws_access_key_id="AKIATESTEXAMPLE00001",
                        aws_secret_access_key="test-secret")


def test_filter_log_events_follows_the_logs_model(server: Simulator) -> None:
    at = time.time()
    event = macie_job_event("job1", "weekly", "BUCKET_ACCESS_DENIED", at + 5, run_date=at,
                            account=DEFAULT_ACCOUNT, bucket="ledgers", operation="ListObjectsV2")
    server.put_log_events(REGION, "job1", [(at, "started"), (at + 5, event)])
    server.put_log_events(REGION, "job2", [(at + 1, "other job")])
    client = logs(server.url)
    answer = client.filter_log_events(logGroupName=MACIE_LOG_GROUP, logStreamNames=["job1"])
    assert [e["message"] for e in answer["events"]] == ["started", event]
    first = answer["events"][0]
    assert first["logStreamName"] == "job1" and first["timestamp"] == round(at * 1000)
    assert isinstance(first["ingestionTime"], int) and isinstance(first["eventId"], str)
    assert "nextToken" not in answer
    assert json.loads(event) == {
        "jobId": "job1", "eventType": "BUCKET_ACCESS_DENIED", "jobName": "weekly",
        "occurredAt": datetime.fromtimestamp(at + 5, UTC).isoformat(
            timespec="microseconds").replace("+00:00", "Z"),
        "description": "bucket access denied", "operation": "ListObjectsV2",
        "runDate": datetime.fromtimestamp(at, UTC).isoformat(
            timespec="microseconds").replace("+00:00", "Z"),
        "affectedAccount": DEFAULT_ACCOUNT,
        "affectedResource": {"type": "S3_BUCKET_NAME", "value": "ledgers"}}
    # Every stream, oldest first; from a start time on (inclusive); a stream that does not
    # exist selects nothing.
    every = client.filter_log_events(logGroupName=MACIE_LOG_GROUP)["events"]
    assert [e["logStreamName"] for e in every] == ["job1", "job2", "job1"]
    later = client.filter_log_events(logGroupName=MACIE_LOG_GROUP,
                                     logStreamNames=["job1", "nothing"],
                                     startTime=round((at + 5) * 1000))["events"]
    assert [e["message"] for e in later] == [event]
    # Another account or region has no such log group.
    with pytest.raises(ClientError) as raised:
        logs(server.url, OTHER_REGION).filter_log_events(logGroupName=MACIE_LOG_GROUP)
    assert raised.value.response["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "The specified log group does not exist."}
    server.delete_log_group(REGION)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        client.filter_log_events(logGroupName=MACIE_LOG_GROUP)


def test_filter_log_events_pages_by_count_and_by_size(server: Simulator) -> None:
    at = time.time()
    server.put_log_events(REGION, "small", [(at + i, f"event {i}") for i in range(25)])
    client = logs(server.url)
    pages = list(client.get_paginator("filter_log_events").paginate(
        logGroupName=MACIE_LOG_GROUP, PaginationConfig={"PageSize": 10}))
    assert [len(p["events"]) for p in pages] == [10, 10, 5]
    assert [e["message"] for p in pages for e in p["events"]] == [
        f"event {i}" for i in range(25)]
    # A page holds at most 1 MB of messages, whatever the limit.
    big = "x" * 300_000
    server.put_log_events(REGION, "big", [(at + 100 + i, big) for i in range(5)])
    sizes = [len(p["events"]) for p in client.get_paginator("filter_log_events").paginate(
        logGroupName=MACIE_LOG_GROUP, logStreamNames=["big"])]
    assert sizes == [3, 2] and LOG_EVENTS_PAGE_BYTES == 2**20


def test_filter_log_events_rejects_what_it_cannot_answer(server: Simulator) -> None:
    server.put_log_events(REGION, "job1", [(time.time(), "x")])
    client = logs(server.url)
    for arguments, message in (
            ({"logStreamNames": [f"s{i}" for i in range(101)]}, "1 to 100"),
            ({"logStreamNames": ["a"], "logStreamNamePrefix": "a"}, "cannot both"),
            ({"filterPattern": "ERROR"}, "filter patterns")):
        with pytest.raises(ClientError) as raised:
            client.filter_log_events(logGroupName=MACIE_LOG_GROUP, **arguments)
        assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
        assert message in raised.value.response["Error"]["Message"]
    unsigned = boto3.client("logs", region_name=REGION, endpoint_url=server.url,
                            config=NO_RETRIES.merge(Config(signature_version=UNSIGNED)))
    with pytest.raises(ClientError) as raised:
        unsigned.filter_log_events(logGroupName=MACIE_LOG_GROUP)
    assert raised.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert server.requests["FilterLogEvents"] == 4


def test_denied_filter_log_events_answers_in_the_logs_protocol() -> None:
    sim = FaultySimulator()
    sim.start()
    try:
        sim.put_log_events(REGION, "job1", [(time.time(), "x")])
        sim.faults.denied = {"FilterLogEvents"}
        with pytest.raises(ClientError) as raised:
            logs(sim.url).filter_log_events(logGroupName=MACIE_LOG_GROUP)
        assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    finally:
        sim.stop()


def test_the_demo_logs_why_its_jobs_runs_failed() -> None:
    start = time.time()
    demo = DemoAccount(start)
    sim = Simulator()  # evolved by hand below
    demo.populate(sim)
    sim.start()
    try:
        client, jobs = logs(sim.url), macie(sim.url)
        weekly, daily = "weeklyfinance000000000000000001", "dailyuploads0000000000000000001"

        def events(job_id: str) -> list[dict[str, Any]]:
            return [json.loads(e["message"]) for e in client.filter_log_events(
                logGroupName=MACIE_LOG_GROUP, logStreamNames=[job_id])["events"]]

        def errors(job_id: str) -> list[tuple[str, str]]:
            latest = max(e["runDate"] for e in events(job_id))
            return [(e["eventType"], e["affectedResource"]["value"]) for e in events(job_id)
                    if e["runDate"] == latest and e["eventType"].startswith("BUCKET_")]

        # The weekly job: two buckets denied and one deleted in its latest run, one denied
        # (fixed since) in the run before; Macie says the last run had errors.
        assert errors(weekly) == [("BUCKET_ACCESS_DENIED", "finance-ledgers-eu"),
                                  ("BUCKET_ACCESS_DENIED", "finance-payroll-archive"),
                                  ("BUCKET_DOES_NOT_EXIST", "finance-scratch-2023")]
        assert len({e["runDate"] for e in events(weekly)}) == 2
        described = jobs.describe_classification_job(jobId=weekly)
        assert described["lastRunErrorStatus"]["code"] == "ERROR"
        assert all(e["jobName"] == "weekly-finance-archive" for e in events(weekly))
        # The daily job: its first run is denied a bucket, the next one clears it, the one
        # after is denied again.
        for offset, error in ((0, True), (280, False), (580, False), (600, True), (880, False)):
            demo(start + offset, sim)
            status = jobs.describe_classification_job(jobId=daily)["lastRunErrorStatus"]
            assert status["code"] == ("ERROR" if error else "NONE"), offset
            assert errors(daily) == ([("BUCKET_ACCESS_DENIED", "customer-uploads-legacy")]
                                     if error else []), offset
    finally:
        sim.stop()
