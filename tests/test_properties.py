"""Property-based tests: any input ends in a value or a clean, named error, never a traceback."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.collectors.base import MappingError
from exporter.collectors.jobs import Job, job_from_api
from exporter.config import OPTIONS, Config, ConfigError, load

FLAGS = [f"--{o.flag}" for o in OPTIONS] + ["--config.file"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["30s", "0s", "1h30m", ":9729", "eu-west-1", "5",
                                           "adaptive", "json", "true", "[::1]:1", "-1"]),
)
yaml_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=12)
option_keys = st.sampled_from(sorted({o.yaml_path[0] for o in OPTIONS} | {"targets", "filters"}))
documents = st.one_of(
    yaml_values,
    st.dictionaries(option_keys, yaml_values, max_size=5),
    st.dictionaries(option_keys, st.dictionaries(
        st.sampled_from(sorted({o.yaml_path[-1] for o in OPTIONS} | {"includes", "excludes",
                                                                     "regions", "role_arn"})),
        yaml_values, max_size=4), max_size=4),
)


def settle(argv: list[str], environ: dict[str, str]) -> None:
    try:
        assert isinstance(load(argv, environ=environ), Config)
    except ConfigError as err:
        assert str(err)
        assert "Traceback" not in str(err)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FLAGS), st.text(max_size=20)), max_size=6),
       st.lists(st.text(max_size=20), max_size=6))
def test_any_flags(flags: list[str], values: list[str]) -> None:
    argv = [f"{flag}={value}" if flag.startswith("--") and i < len(values) else flag
            for i, (flag, value) in enumerate(zip(flags, values + [""] * len(flags),
                                                  strict=False))]
    argv = [a for a in argv if a not in ("--version", "-h", "--help")
            and not a.startswith(("--version", "-h", "--h"))]
    settle(argv, {})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([o.env for o in OPTIONS]),
                       st.text(max_size=25).filter(lambda t: "\x00" not in t), max_size=6))
def test_any_environment(environ: dict[str, str]) -> None:
    settle([], environ)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                 st.text(max_size=80)))
def test_any_config_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        settle([f"--config.file={path}"], {})


timestamps = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                          timezones=st.just(UTC))
api_values = st.one_of(scalars, timestamps, st.lists(scalars, max_size=3),
                       st.dictionaries(st.text(max_size=10), scalars, max_size=3))
api_keys = ["jobId", "jobArn", "name", "jobStatus", "jobType", "scheduleFrequency",
            "managedDataIdentifierSelector", "statistics", "lastRunErrorStatus", "createdAt",
            "lastRunTime", "userPausedDetails", "tags"]
nested = {
    "statistics": st.dictionaries(st.sampled_from(["numberOfRuns",
                                                   "approximateNumberOfObjectsToProcess"]),
                                  api_values, max_size=2),
    "userPausedDetails": st.dictionaries(st.sampled_from(["jobPausedAt", "jobExpiresAt"]),
                                         api_values, max_size=2),
    "scheduleFrequency": st.dictionaries(st.sampled_from(["dailySchedule", "weeklySchedule",
                                                          "monthlySchedule"]),
                                         api_values, max_size=2),
    "lastRunErrorStatus": st.dictionaries(st.just("code"), api_values, max_size=1),
}


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(api_keys), max_size=len(api_keys), unique=True)):
        answer[key] = draw(st.one_of(nested.get(key, api_values), api_values))
    return answer


@settings(max_examples=500, deadline=None)
@given(answers(), st.lists(st.text(max_size=8), max_size=3))
def test_any_api_answer(answer: dict[str, Any], tag_keys: list[str]) -> None:
    try:
        job = job_from_api(answer, "123456789012", tag_keys)
    except MappingError as err:
        assert str(err).split(":")[0] in {*api_keys, "numberOfRuns",
                                          "approximateNumberOfObjectsToProcess",
                                          "jobPausedAt", "jobExpiresAt"}
        return
    assert isinstance(job, Job)
    assert job.job_id
    for number in (job.runs, job.objects_to_process, job.created_at, job.pause_expires_at):
        assert number is None or isinstance(number, float)
