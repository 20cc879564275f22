"""The job errors collector in the real exporter process, through botocore to CloudWatch Logs
over HTTP: the simulator's, and moto's in server mode (an independent implementation of the
API; tools tests). Macie and STS are the simulator's in both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from exporter.demo.simulator import macie_job_event, make_job
from tests.conftest import ExporterProcess, Samples, exporter_env, series, value, wait_for
from tests.motoserver import Moto
from tests.simfaults import FaultySimulator

Start = Callable[..., ExporterProcess]
REGION, QUIET_REGION = "eu-west-1", "us-east-1"
GROUP = "/aws/macie/classificationjobs"
ONLY_JOB_ERRORS = ("--no-collector.findings", "--no-collector.usage", "--no-collector.members",
                   "--collector.job-errors.interval=1s",
                   f"--aws.regions={REGION},{QUIET_REGION}")


class Logs(Protocol):
    """Where the test writes Macie's job log events: the simulator's or moto's CloudWatch Logs."""

    url: str

    def put(self, stream: str, events: list[tuple[float, str]]) -> None: ...


class SimulatorLogs:
    def __init__(self, sim: FaultySimulator) -> None:
        self.sim = sim
        self.url = sim.url

    def put(self, stream: str, events: list[tuple[float, str]]) -> None:
        self.sim.put_log_events(REGION, stream, events)


class MotoLogs:
    def __init__(self, moto: Moto) -> None:
        self.moto = moto
        self.url = moto.url
        self.client = moto.client("logs", REGION)

    def put(self, stream: str, events: list[tuple[float, str]]) -> None:
        if not self.client.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]:
            self.client.create_log_group(logGroupName=GROUP)
        if not self.client.describe_log_streams(logGroupName=GROUP,
                                                logStreamNamePrefix=stream)["logStreams"]:
            self.client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        ordered = sorted(events)
        for first in range(0, len(ordered), 2000):  # PutLogEvents: 10,000 events, 1 MB
            batch = [{"timestamp": round(at * 1000), "message": message}
                     for at, message in ordered[first:first + 2000]]
            answer = self.client.put_log_events(logGroupName=GROUP, logStreamName=stream,
                                                logEvents=batch)
            assert not answer.get("rejectedLogEventsInfo"), answer


@pytest.fixture(params=["simulator", pytest.param("moto", marks=pytest.mark.tools)])
def logs(request: pytest.FixtureRequest, sim: FaultySimulator) -> Iterator[Logs]:
    if request.param == "simulator":
        yield SimulatorLogs(sim)
        return
    moto: Moto = request.getfixturevalue("moto")
    yield MotoLogs(moto)


def launch(start: Start, sim: FaultySimulator, logs: Logs, *args: str,
           **env: str) -> ExporterProcess:
    return start(*ONLY_JOB_ERRORS, *args, "--log.level=info",
                 env=exporter_env(sim, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=logs.url, **env))


RUN = time.time() - 86400  # the weekly job's latest run, a day ago
EARLIER = RUN - 7 * 86400


def event(event_type: str, at: float, run: float, *, bucket: str | None = None,
          account: str | None = None) -> tuple[float, str]:
    return at, macie_job_event("weekly", "weekly-finance", event_type, at, run_date=run,
                               account=account or "123456789012", bucket=bucket,
                               operation="ListObjectsV2" if bucket else None)


def seed(sim: FaultySimulator, logs: Logs) -> None:
    """A weekly job whose latest run could not read two buckets and found one gone, beside a
    clean job; a region with only a clean job."""
    sim.put_job(REGION, make_job("weekly", "weekly-finance", "IDLE", job_type="SCHEDULED",
                                 schedule="weekly:MONDAY", runs=9, last_run_time=RUN,
                                 last_run_error=True))
    sim.put_job(REGION, make_job("clean", "clean-scan", "COMPLETE", last_run_error=False))
    sim.put_job(QUIET_REGION, make_job("quiet", "quiet-scan", "COMPLETE", last_run_error=False))
    logs.put("weekly", [
        event("BUCKET_ACCESS_DENIED", EARLIER + 30, EARLIER, bucket="fixed-last-week"),
        (RUN, macie_job_event("weekly", "weekly-finance", "SCHEDULED_RUN_STARTED", RUN,
                              run_date=RUN)),
        event("BUCKET_ACCESS_DENIED", RUN + 40, RUN, bucket="finance-ledgers-eu"),
        event("BUCKET_ACCESS_DENIED", RUN + 41, RUN, bucket="finance-payroll-archive"),
        event("BUCKET_DOES_NOT_EXIST", RUN + 42, RUN, bucket="finance-scratch-2023"),
    ])
    logs.put("clean", [event("BUCKET_ACCESS_DENIED", RUN + 40, RUN, bucket="not-read")])


def errors(samples: Samples) -> dict[tuple[str, str, str], float]:
    found = {}
    for labels in series(samples, "macie_classification_job_run_errors"):
        key = (labels["job_id"], labels["event_type"], labels["affected_resource"])
        found[key] = value(samples, "macie_classification_job_run_errors", **labels) or 0.0
    return found


def reads(samples: Samples, region: str = REGION) -> float:
    return value(samples, "macie_exporter_api_requests_total", operation="FilterLogEvents",
                 outcome="success", region=region) or 0.0


def collected(samples: Samples) -> bool:
    return value(samples, "macie_exporter_collector_success", collector="job_errors",
                 region=REGION) == 1


LATEST = {("weekly", "BUCKET_ACCESS_DENIED", "finance-ledgers-eu"): 1,
          ("weekly", "BUCKET_ACCESS_DENIED", "finance-payroll-archive"): 1,
          ("weekly", "BUCKET_DOES_NOT_EXIST", "finance-scratch-2023"): 1}


def test_the_latest_run_s_errors_are_read_incrementally(
        sim: FaultySimulator, logs: Logs, start: Start) -> None:
    seed(sim, logs)
    exporter = launch(start, sim, logs)
    samples = exporter.wait_metric(lambda s: collected(s) and errors(s), timeout=30,
                                   what="the weekly job's errors")
    assert errors(samples) == LATEST
    assert value(samples, "macie_classification_job_run_errors", job_id="weekly",
                 affected_resource="finance-ledgers-eu", job_name="weekly-finance",
                 account_id="123456789012", region=REGION) == 1
    # Later reads add only what is new, and count nothing twice.
    logs.put("weekly", [event("BUCKET_ACCESS_DENIED", time.time() - 5, RUN,
                              bucket="finance-ledgers-eu")])
    before = reads(exporter.scrape())
    samples = exporter.wait_metric(
        lambda s: reads(s) >= before + 3 and errors(s).get(
            ("weekly", "BUCKET_ACCESS_DENIED", "finance-ledgers-eu")) == 2,
        timeout=30, what="the new event, then more reads")
    assert errors(samples) == {**LATEST, ("weekly", "BUCKET_ACCESS_DENIED",
                                          "finance-ledgers-eu"): 2}
    # The target without an erroring job made no CloudWatch Logs call at all; the other one
    # a call per read (one page each).
    assert value(samples, "macie_exporter_collector_success", collector="job_errors",
                 region=QUIET_REGION) == 1
    assert not [labels for labels in series(samples, "macie_exporter_api_requests_total",
                                            operation="FilterLogEvents")
                if labels["region"] != REGION]
    if isinstance(logs, SimulatorLogs):
        assert {region for (op, _, region) in sim.target_requests
                if op == "FilterLogEvents"} == {REGION}


def test_every_page_is_read(sim: FaultySimulator, logs: Logs, start: Start) -> None:
    seed(sim, logs)
    many = 10_500  # over one page of 10,000 (moto), or of 1 MB (the simulator, AWS)
    logs.put("weekly", [event("BUCKET_ACCESS_DENIED", RUN + 60 + i / 100, RUN,
                              bucket=f"tenant-{i % 7}") for i in range(many)])
    exporter = launch(start, sim, logs)
    samples = exporter.wait_metric(
        lambda s: sum(errors(s).values()) == many + 3, timeout=60,
        what="every page's events")
    assert errors(samples)[("weekly", "BUCKET_ACCESS_DENIED", "tenant-0")] == 1500
    assert reads(samples) >= 2


def test_a_new_run_replaces_the_old_one(sim: FaultySimulator, logs: Logs,
                                        start: Start) -> None:
    seed(sim, logs)
    exporter = launch(start, sim, logs)
    exporter.wait_metric(lambda s: errors(s) == LATEST, timeout=30, what="the first run")
    new = time.time() - 30
    logs.put("weekly", [event("ACCOUNT_SUSPENDED", new + 10, new, account="444455556666")])
    sim.put_job(REGION, make_job("weekly", "weekly-finance", "IDLE", job_type="SCHEDULED",
                                 schedule="weekly:MONDAY", runs=10, last_run_time=new,
                                 last_run_error=True))
    exporter.wait_metric(
        lambda s: errors(s) == {("weekly", "ACCOUNT_SUSPENDED", "444455556666"): 1},
        timeout=30, what="only the new run's errors")
    # The run after that is clean: no series.
    sim.put_job(REGION, make_job("weekly", "weekly-finance", "IDLE", job_type="SCHEDULED",
                                 schedule="weekly:MONDAY", runs=11,
                                 last_run_time=time.time(), last_run_error=False))
    exporter.wait_metric(lambda s: not errors(s), timeout=30, what="no errors")


def test_a_missing_log_group_is_no_error(sim: FaultySimulator, logs: Logs,
                                         start: Start) -> None:
    sim.put_job(REGION, make_job("weekly", "weekly-finance", "IDLE", last_run_time=RUN,
                                 last_run_error=True))
    exporter = launch(start, sim, logs)
    wait_for(lambda: (value(exporter.scrape(), "macie_exporter_api_requests_total",
                            operation="FilterLogEvents", outcome="ResourceNotFoundException",
                            region=REGION) or 0) >= 3, what="several reads")
    # The request counts are live; the collector's health follows with the next render.
    samples = exporter.wait_metric(collected, timeout=30, what="the collector's success")
    assert not series(samples, "macie_classification_job_run_errors")
    missing = [line for line in exporter.lines if "no job log group" in line]
    assert len(missing) == 1 and "level=info" in missing[0], exporter.logs()
    assert "log_group=/aws/macie/classificationjobs" in missing[0]
    # The log group appears (the job logs at last): its errors are read.
    logs.put("weekly", [event("BUCKET_DOES_NOT_EXIST", RUN + 5, RUN, bucket="gone")])
    exporter.wait_metric(lambda s: errors(s) == {("weekly", "BUCKET_DOES_NOT_EXIST", "gone"): 1},
                         timeout=30, what="the errors once logged")


def test_denied_by_the_simulator_names_the_action_once(sim: FaultySimulator,
                                                       start: Start) -> None:
    logs = SimulatorLogs(sim)
    seed(sim, logs)
    sim.faults.denied = {"FilterLogEvents"}
    exporter = launch(start, sim, logs)
    wait_for(lambda: sim.requests["FilterLogEvents"] >= 3, what="several denied reads")
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_collector_success", collector="job_errors",
                        region=REGION) == 0, timeout=30, what="the collector's failure")
    assert value(samples, "macie_exporter_refresh_success", region=REGION) == 1
    assert value(samples, "macie_classification_job_last_run_error", job_id="weekly") == 1
    assert not series(samples, "macie_classification_job_run_errors")
    denied = [line for line in exporter.lines if "missing_permission=logs:FilterLogEvents" in line]
    assert len(denied) == 1, exporter.logs()
    assert "collector=job_errors" in denied[0] and "operation=FilterLogEvents" in denied[0]


@pytest.mark.tools
def test_denied_by_moto_s_iam_fails_the_collector_alone(sim: FaultySimulator, moto: Moto,
                                                        start: Start) -> None:
    """moto with IAM checks on, and a user allowed everything but logs:FilterLogEvents. moto
    answers the denial with its generic XML AccessDenied, which no JSON-protocol AWS service
    sends (CloudWatch Logs answers AccessDeniedException in JSON), so botocore reads the code
    as "403" and the exporter cannot name the missing action; the collector still fails alone,
    and the jobs refresh is untouched."""
    logs = MotoLogs(moto)
    seed(sim, logs)
    iam = moto.client("iam")
    iam.create_user(UserName="exporter")
    iam.put_user_policy(UserName="exporter", PolicyName="no-log-events", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "logs:FilterLogEvents", "Resource": "*"}]}))
    key: dict[str, Any] = iam.create_access_key(UserName="exporter")["AccessKey"]
    moto.post("/moto-api/reset-auth", b"0")
    exporter = launch(start, sim, logs, AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    # The request counts are live; the collector's health follows with the next render.
    samples = exporter.wait_metric(
        lambda s: (value(s, "macie_exporter_api_requests_total", operation="FilterLogEvents",
                         outcome="403", region=REGION) or 0) >= 2
        and value(s, "macie_exporter_collector_success", collector="job_errors",
                  region=REGION) == 0, timeout=30, what="denied reads, the collector failed")
    assert value(samples, "macie_exporter_refresh_success", region=REGION) == 1
    assert not series(samples, "macie_classification_job_run_errors")
    assert any("collector failed" in line and "collector=job_errors" in line
               and "logs:FilterLogEvents" in line for line in exporter.lines), exporter.logs()


def test_the_demo_shows_why_its_jobs_runs_failed(demo_exporter: ExporterProcess) -> None:
    weekly = {("weeklyfinance000000000000000001", "BUCKET_ACCESS_DENIED", "finance-ledgers-eu"): 1,
              ("weeklyfinance000000000000000001", "BUCKET_ACCESS_DENIED",
               "finance-payroll-archive"): 1,
              ("weeklyfinance000000000000000001", "BUCKET_DOES_NOT_EXIST",
               "finance-scratch-2023"): 1}
    # The daily job's first run is denied a bucket (its next run, 4.5 minutes in, clears it).
    daily = {("dailyuploads0000000000000000001", "BUCKET_ACCESS_DENIED",
              "customer-uploads-legacy"): 1}
    samples = demo_exporter.wait_metric(lambda s: errors(s) == {**weekly, **daily}, timeout=30,
                                        what="the demo's job errors")
    assert value(samples, "macie_classification_job_run_errors",
                 job_name="weekly-finance-archive", affected_resource="finance-ledgers-eu",
                 account_id="123456789012", region="eu-west-1") == 1
    # Only the targets with erroring jobs read their logs.
    assert {labels["region"] for labels in series(samples, "macie_exporter_api_requests_total",
                                                  operation="FilterLogEvents")} == {"eu-west-1"}
    assert {labels["account_id"] for labels in series(
        samples, "macie_exporter_api_requests_total", operation="FilterLogEvents")} == {
        "123456789012"}
