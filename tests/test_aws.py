"""The AWS layer's decisions that need no network: opt-in regions, AssumeRole back-off."""

from __future__ import annotations

import pytest

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.errors import ApiError
from exporter.aws.session import Aws, AwsSettings, _BackedOff
from exporter.aws.target import AwsTarget
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
