"""The job errors collector driven by hand: which streams it reads and from when, how it counts
a run's error events, and what it does with a missing log group, a denial and malformed
events. (Against the simulator and moto over HTTP: tests/test_job_errors_live.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.errors import ApiError
from exporter.aws.target import Pages
from exporter.collectors import job_errors, jobs
from exporter.collectors.base import NextPage, Settings
from exporter.collectors.job_errors import (
    FILTER_LOG_EVENTS,
    INGESTION_LAG,
    LOG_GROUP,
    RUN_DATE_SLACK,
    JobErrors,
    RunErrors,
)
from exporter.collectors.jobs import Job, Jobs
from exporter.engine.selfmetrics import SnapshotCollector
from exporter.model import Snapshot, TargetKey, TargetResult
from tests.conftest import parse, series, value

ACCOUNT, REGION = "111122223333", "eu-west-1"
KEY = TargetKey(ACCOUNT, REGION)
NOW = 1_795_000_000.0
DAY = 86400.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def error(job_id: str, event_type: str, run: float, at: float, *, bucket: str | None = None,
          account: str | None = ACCOUNT) -> str:
    """A Macie job log event as the user guide shows it."""
    event: dict[str, Any] = {"jobId": job_id, "eventType": event_type, "occurredAt": iso(at),
                             "description": "...", "jobName": f"name-{job_id}",
                             "runDate": iso(run)}
    if account is not None:
        event["affectedAccount"] = account
    if bucket is not None:
        event["affectedResource"] = {"type": "S3_BUCKET_NAME", "value": bucket}
    return json.dumps(event)


class Logs:
    """FilterLogEvents over streams of (timestamp in s, message), `page` events a page; every
    page asked for is recorded as one call."""

    def __init__(self, page: int = 10_000) -> None:
        self.streams: dict[str, list[dict[str, Any]]] = {}
        self.page = page
        self.calls: list[dict[str, Any]] = []
        self.error: ApiError | None = None
        self._ids = 0

    def put(self, stream: str, *events: tuple[float, str]) -> None:
        for at, message in events:
            self._ids += 1
            self.streams.setdefault(stream, []).append(
                {"logStreamName": stream, "timestamp": round(at * 1000), "message": message,
                 "ingestionTime": round(at * 1000), "eventId": str(self._ids)})

    def pages(self, arguments: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        assert arguments["logGroupName"] == LOG_GROUP
        names = arguments["logStreamNames"]
        assert 1 <= len(names) <= 100
        start = arguments.get("startTime", 0)
        # (A hostile event's timestamp may be anything: it is sent as it is.)
        found = sorted((e for n in names for e in self.streams.get(n, [])
                        if not isinstance(e["timestamp"], int) or e["timestamp"] >= start),
                       key=lambda e: e["timestamp"] if isinstance(e["timestamp"], int) else 0)
        for first in range(0, max(1, len(found)), self.page):
            self.calls.append(arguments)
            if self.error is not None:
                raise self.error
            yield found[first:first + self.page]


@dataclass
class Ctx:
    """What job_errors.fetch sees of its target (exporter.collectors.base.Context)."""

    result: TargetResult
    previous: JobErrors | None = None
    now: float = NOW
    key: TargetKey = KEY
    settings: Settings = field(default_factory=Settings)

    def region_not_enabled(self, err: ApiError) -> bool:
        return False

    def adopt_account(self, account: str) -> None:
        raise AssertionError("job_errors.fetch adopts no account")

    def publish(self, value: JobErrors, ready: bool = False) -> None:
        raise AssertionError("job_errors.fetch publishes nothing before it ends")


def job(job_id: str, *, error: bool | None = True, run_at: float | None = NOW - DAY) -> Job:
    return Job(job_id, f"name-{job_id}", ACCOUNT, "IDLE", "SCHEDULED", "daily", "ALL",
               last_run_error=error, last_run_at=run_at)


def result_of(*exported: Job, errors: JobErrors | None = None) -> TargetResult:
    found = TargetResult(KEY).with_value(jobs.SLOT, Jobs(tuple(exported)))
    return found.with_value(job_errors.SLOT, errors)


def collect(api: Logs, *exported: Job, previous: JobErrors | None = None,
            now: float = NOW) -> JobErrors:
    """job_errors.fetch for a target exporting `exported`, its pages answered by `api`."""
    fetch = job_errors.fetch(Ctx(result_of(*exported), previous, now))
    cursors: dict[int, Iterator[list[dict[str, Any]]]] = {}
    answer: object = None
    failure: ApiError | None = None
    while True:
        try:
            request = fetch.throw(failure) if failure is not None else fetch.send(answer)
        except StopIteration as stop:
            found: JobErrors = stop.value
            return found
        failure = None
        assert isinstance(request, NextPage) and request.pages.operation is FILTER_LOG_EVENTS
        cursor: Pages = request.pages
        pages = cursors.setdefault(id(cursor), api.pages(cursor.arguments))
        try:
            answer = next(pages, None)
        except ApiError as err:
            failure = err


def counts(found: JobErrors, job_id: str) -> dict[tuple[str, str], int]:
    (run,) = [r for r in found.runs if r.job_id == job_id]
    return dict(run.counts)


RUN = NOW - DAY  # the latest run of job "a"
EARLIER = NOW - 8 * DAY


def test_a_target_without_an_erroring_job_makes_no_call() -> None:
    api = Logs()
    assert collect(api, job("clean", error=False), job("unknown", error=None)) == JobErrors()
    assert collect(api) == JobErrors()
    assert api.calls == []


def test_only_the_latest_run_of_an_erroring_job_is_counted() -> None:
    api = Logs()
    api.put("a", (EARLIER + 60, error("a", "BUCKET_ACCESS_DENIED", EARLIER, EARLIER + 60,
                                      bucket="fixed-since")),
            (RUN, json.dumps({"jobId": "a", "eventType": "SCHEDULED_RUN_STARTED",
                              "runDate": iso(RUN)})),
            (RUN + 60, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 60, bucket="ledgers")),
            (RUN + 61, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 61, bucket="ledgers")),
            (RUN + 62, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 62, bucket="payroll")),
            (RUN + 63, error("a", "BUCKET_DOES_NOT_EXIST", RUN, RUN + 63, bucket="scratch")),
            (RUN + 64, error("a", "ACCOUNT_SUSPENDED", RUN, RUN + 64, account="444455556666")))
    api.put("clean", (RUN, error("clean", "BUCKET_ACCESS_DENIED", RUN, RUN, bucket="x")))
    found = collect(api, job("a"), job("clean", error=False))
    assert counts(found, "a") == {("BUCKET_ACCESS_DENIED", "ledgers"): 2,
                                  ("BUCKET_ACCESS_DENIED", "payroll"): 1,
                                  ("BUCKET_DOES_NOT_EXIST", "scratch"): 1,
                                  ("ACCOUNT_SUSPENDED", "444455556666"): 1}
    # One call, for the erroring job's stream only, from its latest run's start.
    assert api.calls == [{"logGroupName": LOG_GROUP, "logStreamNames": ["a"],
                          "startTime": round((RUN - RUN_DATE_SLACK) * 1000)}]
    assert [r.job_id for r in found.runs] == ["a"]


def test_every_page_is_read() -> None:
    api = Logs(page=2)
    api.put("a", *[(RUN + i, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + i, bucket=f"b{i % 3}"))
                   for i in range(7)])
    found = collect(api, job("a"))
    assert counts(found, "a") == {("BUCKET_ACCESS_DENIED", "b0"): 3,
                                  ("BUCKET_ACCESS_DENIED", "b1"): 2,
                                  ("BUCKET_ACCESS_DENIED", "b2"): 2}
    assert len(api.calls) == 4


def test_later_reads_start_from_the_last_one_and_count_each_event_once() -> None:
    api = Logs()
    api.put("a", (RUN + 10, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 10, bucket="ledgers")))
    first = collect(api, job("a"), now=RUN + 100)
    # Events that reach CloudWatch Logs after the read, one of them dated before it.
    api.put("a", (RUN + 90, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 90, bucket="ledgers")),
            (RUN + 200, error("a", "BUCKET_DOES_NOT_EXIST", RUN, RUN + 200, bucket="scratch")))
    second = collect(api, job("a"), previous=first, now=RUN + 400)
    assert api.calls[1]["startTime"] == round((RUN + 100 - INGESTION_LAG) * 1000)
    assert counts(second, "a") == {("BUCKET_ACCESS_DENIED", "ledgers"): 2,
                                   ("BUCKET_DOES_NOT_EXIST", "scratch"): 1}
    # Nothing new: the same counts, from a read that starts later.
    third = collect(api, job("a"), previous=second, now=RUN + 3000)
    assert counts(third, "a") == counts(second, "a")
    assert api.calls[2]["startTime"] == round((RUN + 400 - INGESTION_LAG) * 1000)
    # What is remembered of the events read is bounded by INGESTION_LAG.
    (run,) = third.runs
    assert run.seen == frozenset()


def test_a_new_run_replaces_the_old_one() -> None:
    api = Logs()
    api.put("a", (RUN + 10, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 10, bucket="ledgers")))
    before = collect(api, job("a"), now=RUN + 100)
    # The next run starts: its own errors, in the same stream; Macie says so too.
    new = RUN + DAY
    api.put("a", (new + 5, error("a", "BUCKET_DOES_NOT_EXIST", new, new + 5, bucket="gone")))
    # Seen in the stream before the jobs refresh sees the new lastRunTime.
    early = collect(api, job("a"), previous=before, now=new + 100)
    assert counts(early, "a") == {("BUCKET_DOES_NOT_EXIST", "gone"): 1}
    # An event of the old run that reaches CloudWatch Logs late counts for nothing.
    api.put("a", (new + 150, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 20, bucket="late")))
    assert counts(collect(api, job("a"), previous=early, now=new + 200), "a") == {
        ("BUCKET_DOES_NOT_EXIST", "gone"): 1}
    # Seen by the jobs refresh first: the stream is read again from the new run.
    after = collect(api, job("a", run_at=new), previous=before, now=new + 100)
    assert counts(after, "a") == {("BUCKET_DOES_NOT_EXIST", "gone"): 1}
    assert api.calls[-1]["startTime"] == round((new - RUN_DATE_SLACK) * 1000)
    # A job whose lastRunTime is unknown (never described) is read whole: its latest run counts.
    whole = collect(api, job("a", run_at=None), now=new + 100)
    assert "startTime" not in api.calls[-1]
    assert counts(whole, "a") == {("BUCKET_DOES_NOT_EXIST", "gone"): 1}


def test_the_series_follow_the_job_s_current_run() -> None:
    read = JobErrors((RunErrors("a", RUN, RUN, ((("BUCKET_ACCESS_DENIED", "ledgers"), 2),)),))

    def rendered(*exported: Job) -> dict[Any, float]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: Snapshot((result_of(*exported,
                                                                        errors=read),))))
        return parse(generate_latest(registry).decode())

    samples = rendered(job("a"))
    assert value(samples, "macie_classification_job_run_errors", job_id="a",
                 event_type="BUCKET_ACCESS_DENIED", affected_resource="ledgers",
                 job_name="name-a", account_id=ACCOUNT, region=REGION) == 2
    # The next run has no errors, or has not been read yet: no series.
    assert not series(rendered(job("a", error=False)), "macie_classification_job_run_errors")
    assert not series(rendered(job("a", run_at=RUN + DAY)),
                      "macie_classification_job_run_errors")
    stale = job_errors.COLLECTOR.stale
    assert stale is not None
    assert not stale(result_of(job("a"), errors=read))
    assert stale(result_of(job("a", run_at=RUN + DAY), errors=read))  # read it now
    assert stale(result_of(job("a"), job("b"), errors=read))  # b's errors are new
    assert not stale(result_of(job("a"), job("b", error=False), errors=read))
    assert not stale(result_of(job("b")))  # never collected: on its interval


def test_a_missing_log_group_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    api = Logs()
    api.error = ApiError("FilterLogEvents", "ResourceNotFoundException",
                         "The specified log group does not exist.", 400, service="logs")
    caplog.set_level(logging.INFO)
    first = collect(api, job("a"))
    assert first == JobErrors((RunErrors("a", RUN),), log_group_missing=True)
    second = collect(api, job("a"), previous=first)
    assert second == first
    missing = [r for r in caplog.records if r.getMessage().startswith("no job log group")]
    assert len(missing) == 1 and missing[0].levelno == logging.INFO
    assert missing[0].kv == {"account_id": ACCOUNT, "region": REGION,  # type: ignore[attr-defined]
                             "log_group": LOG_GROUP}
    # Not stale: asked, and nothing to show.
    stale = job_errors.COLLECTOR.stale
    assert stale is not None and not stale(result_of(job("a"), errors=second))


def test_a_denied_read_fails_the_run_naming_the_action() -> None:
    api = Logs()
    api.error = ApiError.of(FILTER_LOG_EVENTS, "AccessDeniedException", "not authorized")
    with pytest.raises(ApiError) as raised:
        collect(api, job("a"))
    assert raised.value.missing_permission == "logs:FilterLogEvents"


def test_malformed_events_are_counted_as_unparsed_on_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    api = Logs()
    api.put("a", (RUN + 1, "not json"), (RUN + 2, "[1, 2]"), (RUN + 3, '{"eventType": 7}'),
            (RUN + 4, json.dumps({"eventType": "BUCKET_ACCESS_DENIED", "runDate": iso(RUN)})),
            (RUN + 5, json.dumps({"eventType": "BUCKET_ACCESS_DENIED", "runDate": "yesterday",
                                  "affectedResource": {"value": "ledgers"}})),
            (RUN + 6, "{" * 100_000),
            (RUN + 7, error("a", "BUCKET_SOMETHING_NEW", RUN, RUN + 7, bucket="new")),
            (RUN + 8, error("a", "ACCOUNT_ISOLATED", RUN, RUN + 8, account=None)))
    api.streams["a"].append({"logStreamName": "a", "timestamp": "soon", "message": "x",
                             "eventId": "x1"})
    api.streams["a"].append({"logStreamName": "elsewhere", "timestamp": round(RUN * 1000) + 9,
                             "message": "x", "eventId": "x2"})
    found = collect(api, job("a"))
    assert counts(found, "a") == {("unparsed", ""): 6, ("BUCKET_ACCESS_DENIED", "ledgers"): 1,
                                  ("BUCKET_SOMETHING_NEW", "new"): 1}
    lines = [r for r in caplog.records if r.name == "exporter.collectors.job_errors"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].kv["unparsed_events"] == 6  # type: ignore[attr-defined]
    assert lines[0].kv["left_out_events"] == 2  # type: ignore[attr-defined]


def test_up_to_100_streams_a_call_the_earliest_starts_together() -> None:
    api = Logs()
    erroring = [job(f"j{i:03d}", run_at=RUN + i) for i in range(150)]
    for one in erroring:
        api.put(one.job_id, (RUN + 500, error(one.job_id, "BUCKET_ACCESS_DENIED",
                                              one.last_run_at or 0, RUN + 500, bucket="b")))
    found = collect(api, *reversed(erroring))
    assert [len(c["logStreamNames"]) for c in api.calls] == [100, 50]
    assert api.calls[0]["logStreamNames"][0] == "j000"
    assert api.calls[0]["startTime"] == round((RUN - RUN_DATE_SLACK) * 1000)
    assert api.calls[1]["startTime"] == round((RUN + 100 - RUN_DATE_SLACK) * 1000)
    assert all(dict(r.counts) == {("BUCKET_ACCESS_DENIED", "b"): 1} for r in found.runs)
    assert len(found.runs) == 150


def test_a_job_without_run_time_and_an_older_value_is_read_again() -> None:
    """A value from a run that is not the job's (read_at None: never read) starts afresh."""
    api = Logs()
    api.put("a", (RUN + 10, error("a", "BUCKET_ACCESS_DENIED", RUN, RUN + 10, bucket="x")))
    missing = JobErrors((RunErrors("a", RUN),), log_group_missing=True)
    found = collect(api, job("a"), previous=missing)
    assert counts(found, "a") == {("BUCKET_ACCESS_DENIED", "x"): 1}
    assert api.calls[0]["startTime"] == round((RUN - RUN_DATE_SLACK) * 1000)
    assert replace(found, runs=()) == JobErrors()
