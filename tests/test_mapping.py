"""API answers (as botocore parses them) → Job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.collectors.base import MappingError
from exporter.collectors.jobs import account_from_arn, job_from_api, schedule_label

CREATED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PAUSED = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
EXPIRES = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)


def describe(**overrides: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "jobId": "abc123",
        "jobArn": "arn:aws:macie2:eu-west-1:111122223333:classification-job/abc123",
        "name": "nightly",
        "jobStatus": "USER_PAUSED",
        "jobType": "SCHEDULED",
        "scheduleFrequency": {"weeklySchedule": {"dayOfWeek": "MONDAY"}},
        "managedDataIdentifierSelector": "RECOMMENDED",
        "statistics": {"numberOfRuns": 7.0, "approximateNumberOfObjectsToProcess": 1234.0},
        "lastRunErrorStatus": {"code": "ERROR"},
        "createdAt": CREATED,
        "lastRunTime": CREATED,
        "userPausedDetails": {"jobPausedAt": PAUSED, "jobExpiresAt": EXPIRES},
        "tags": {"team": "privacy", "cost-center": "42", "other": "x"},
    }
    answer.update(overrides)
    return answer


def test_full_answer() -> None:
    job = job_from_api(describe(), "999999999999", ["team", "cost-center", "missing"])
    assert job.account_id == "111122223333"  # the owner account comes from the ARN
    assert (job.status, job.job_type, job.schedule) == ("USER_PAUSED", "SCHEDULED",
                                                         "weekly:MONDAY")
    assert job.managed_data_identifier_selector == "RECOMMENDED"
    assert (job.runs, job.objects_to_process, job.last_run_error) == (7.0, 1234.0, True)
    assert job.created_at == CREATED.timestamp() == job.last_run_at
    assert (job.paused_at, job.pause_expires_at) == (PAUSED.timestamp(), EXPIRES.timestamp())
    assert job.tags == (("team", "privacy"), ("cost-center", "42"))


def test_absent_fields_stay_absent() -> None:
    job = job_from_api({"jobId": "j1", "jobStatus": "COMPLETE", "jobType": "ONE_TIME"},
                       "999999999999")
    assert job.account_id == "999999999999"
    assert job.schedule == "none"
    for field in ("runs", "objects_to_process", "last_run_error", "created_at", "last_run_at",
                  "paused_at", "pause_expires_at", "tags"):
        assert getattr(job, field) is None, field


def test_summary_of_a_scheduled_job_has_unknown_schedule() -> None:
    job = job_from_api({"jobId": "j1", "jobType": "SCHEDULED", "jobStatus": "IDLE"}, "1" * 12)
    assert job.schedule == "unknown"


def test_error_code_none_is_zero_and_unknown_status_is_kept() -> None:
    job = job_from_api(describe(lastRunErrorStatus={"code": "NONE"}, jobStatus="ARCHIVED"), "")
    assert job.last_run_error is False
    assert job.status == "ARCHIVED"


def test_name_is_verbatim() -> None:
    name = 'Données "clients" \\ EU ✓\n'
    assert job_from_api(describe(name=name), "").name == name


@pytest.mark.parametrize(("frequency", "label"), [
    (None, "none"),
    ({}, "none"),
    ({"dailySchedule": {}}, "daily"),
    ({"weeklySchedule": {"dayOfWeek": "FRIDAY"}}, "weekly:FRIDAY"),
    ({"monthlySchedule": {"dayOfMonth": 15}}, "monthly:15"),
])
def test_schedule_label(frequency: object, label: str) -> None:
    assert schedule_label(frequency) == label


@pytest.mark.parametrize(("arn", "account"), [
    ("arn:aws:macie2:us-east-1:123456789012:classification-job/x", "123456789012"),
    ("arn:aws-us-gov:macie2:us-gov-west-1:123456789012:classification-job/x", "123456789012"),
    ("arn:aws:macie2:us-east-1:12345:classification-job/x", None),
    ("not an arn", None),
    (None, None),
])
def test_account_from_arn(arn: object, account: str | None) -> None:
    assert account_from_arn(arn) == account


@pytest.mark.parametrize(("overrides", "message"), [
    ({"jobId": None}, "jobId: missing"),
    ({"jobId": 12}, "jobId: expected a string"),
    ({"name": ["x"]}, "name: expected a string"),
    ({"statistics": {"numberOfRuns": "7"}}, "numberOfRuns: expected a number"),
    ({"statistics": {"numberOfRuns": float("nan")}}, "numberOfRuns: not a finite number"),
    ({"statistics": {"numberOfRuns": float("inf")}}, "numberOfRuns: not a finite number"),
    ({"statistics": {"numberOfRuns": 10**400}}, "numberOfRuns: number out of range"),
    ({"createdAt": "2026-11-01"}, "createdAt: expected a timestamp"),
    ({"tags": ["a"]}, "tags: expected a map"),
])
def test_malformed_answers_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        job_from_api(describe(**overrides), "")


def test_values_many_jobs_share_are_one_string_each() -> None:
    def answer(job_id: str) -> dict[str, Any]:
        # Strings made at run time, as a JSON parser makes them: equal, not the same object.
        return {"jobId": job_id, "jobStatus": "".join(["COMP", "LETE"]),
                "jobType": "".join(["ONE_", "TIME"]),
                "managedDataIdentifierSelector": "".join(["RECOMM", "ENDED"]),
                "jobArn": "".join(["arn:aws:macie2:eu-west-1:", "1" * 12,
                                   ":classification-job/", job_id])}
    first, second = job_from_api(answer("a"), "9" * 12), job_from_api(answer("b"), "9" * 12)
    for field in ("status", "job_type", "managed_data_identifier_selector", "account_id",
                  "schedule"):
        assert getattr(first, field) is getattr(second, field), field
