"""The AWS layer: opt-in regions, AssumeRole back-off, the timestamp parser its clients use."""

from __future__ import annotations

import datetime

import botocore.utils
import pytest

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.errors import ApiError
from exporter.aws.session import Aws, AwsSettings, _BackedOff, parse_timestamp
from exporter.aws.target import AwsTarget
from exporter.demo.simulator import Simulator, make_job
from exporter.model import TargetKey

ACCOUNT = "111122223333"
REJECTED = ApiError("ListClassificationJobs", "UnrecognizedClientException",
                    "The security token included in the request is invalid.", 403,
                    service="macie2")


def target(region: str, accepted: bool) -> AwsTarget:
    aws = Aws(AwsSettings(endpoint_url=None, retry_mode="standard", max_attempts=1,
                          connect_timeout=1, read_timeout=1), ApiRequestCounter())
    api = AwsTarget(aws, TargetKey(ACCOUNT, region))
    credentials = object()
    api._credentials = credentials  # type: ignore[assignment]
    if accepted:
        aws._working.add(id(credentials))
    return api


def test_rejected_credentials_mean_a_region_not_enabled_only_in_opt_in_regions() -> None:
    assert target("af-south-1", accepted=True).region_not_enabled(REJECTED)
    # Bad or revoked credentials: a failure wherever it is not an opt-in region ...
    assert not target("eu-west-1", accepted=True).region_not_enabled(REJECTED)
    # ... and everywhere when they never worked.
    assert not target("af-south-1", accepted=False).region_not_enabled(REJECTED)
    # Only Macie's own answer counts, not STS's, and not a clock-skew signature error.
    assert not target("af-south-1", accepted=True).region_not_enabled(
        ApiError("AssumeRole", "InvalidClientTokenId"))
    assert not target("af-south-1", accepted=True).region_not_enabled(
        ApiError("ListClassificationJobs", "InvalidSignatureException", service="macie2"))


def test_a_failed_assume_role_is_not_retried_on_every_call() -> None:
    now = [0.0]
    calls: list[float] = []

    def fetch() -> dict[str, str]:
        calls.append(now[0])
        raise RuntimeError("AccessDenied")

    backed_off = _BackedOff(fetch, clock=lambda: now[0])
    for _ in range(5):
        with pytest.raises(RuntimeError):
            backed_off()
    assert calls == [0.0]
    now[0] = 61.0
    with pytest.raises(RuntimeError):
        backed_off()
    assert calls == [0.0, 61.0]


@pytest.mark.parametrize("value", [
    "2026-11-30T10:58:09.259Z", "2026-11-30T10:58:09Z", "2026-11-30T10:58:09.123456789Z",
    "2026-11-30T12:58:09+02:00", "2026-11-30T10:58:09", "2026-11-30",
    1795000000, 1795000000.5, "1795000000", "Mon, 30 Nov 2026 10:58:09 GMT",
])
def test_timestamps_are_the_instant_botocore_reads(value: str | float) -> None:
    ours, botocores = parse_timestamp(value), botocore.utils.parse_timestamp(value)  # type: ignore[arg-type]  # botocore reads numbers too
    assert (ours.tzinfo is None) == (botocores.tzinfo is None)
    assert ours == botocores


@pytest.mark.parametrize("value", ["2026-13-45T99:00:00Z", "2026-not-a-time", "", "yesterday"])
def test_a_bad_timestamp_is_botocores_error(value: str) -> None:
    for parser in (botocore.utils.parse_timestamp, parse_timestamp):
        with pytest.raises(ValueError, match="Invalid timestamp"):
            parser(value)


def test_clients_read_iso_timestamps_without_dateutil(sim: Simulator) -> None:
    """A real round trip: the answer's timestamps come from `datetime.fromisoformat` (UTC as
    `datetime.timezone.utc`; botocore's own parser gives dateutil's `tzutc()`)."""
    sim.put_job("eu-west-1", make_job("j1", created_at=1_795_000_000.25))
    aws = Aws(AwsSettings(endpoint_url=sim.url, retry_mode="standard", max_attempts=1,
                          connect_timeout=2, read_timeout=5,
                          static_credentials=("AKIATESTEXAMPLE00001", "x")),
              ApiRequestCounter())
    answer = aws.client("macie2", "eu-west-1").describe_classification_job(jobId="j1")
    assert answer["createdAt"] == datetime.datetime.fromtimestamp(1_795_000_000.25,
                                                                  datetime.UTC)
    assert answer["createdAt"].tzinfo is datetime.UTC


def test_request_counts_by_target_follow_every_change_between_asks() -> None:
    counter = ApiRequestCounter()
    b, a, c = TargetKey("2" * 12, "eu-west-1"), TargetKey("1" * 12, "eu-west-1"), \
        TargetKey("3" * 12, "us-east-1")
    counter.inc(b, "ListClassificationJobs", "success")
    counter.inc(a, "GetMacieSession", "success")
    assert counter.by_target() == [(a, (("GetMacieSession", "success", 1),)),
                                   (b, (("ListClassificationJobs", "success", 1),))]
    first = counter.by_target()
    counter.inc(b, "DescribeClassificationJob", "AccessDeniedException")
    counter.inc(b, "ListClassificationJobs", "success")
    assert first[1] == (b, (("ListClassificationJobs", "success", 1),))  # answers are copies
    assert counter.by_target() == [
        (a, (("GetMacieSession", "success", 1),)),
        (b, (("DescribeClassificationJob", "AccessDeniedException", 1),
             ("ListClassificationJobs", "success", 2)))]
    counter.inc(c, "GetMacieSession", "success")  # a new target takes its sorted place
    counter.forget(a)
    assert [key for key, _ in counter.by_target()] == [b, c]
    counter.rekey(c, TargetKey("0" * 12, "us-east-1"))
    assert [key.account_id for key, _ in counter.by_target()] == ["0" * 12, "2" * 12]
    assert counter.items()[0] == (("0" * 12, "us-east-1", "GetMacieSession", "success"), 1)
