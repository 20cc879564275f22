"""S3 bucket inventory and automated sensitive data discovery: DescribeBuckets
(`POST /datasources/s3`, the caller's buckets and those of its members with Macie on,
filtered by `criteria`, paged; up to 50 a page, the documented default: the model gives no
maximum, so the bound is the simulator's own), GetAutomatedDiscoveryConfiguration
(`GET /automated-discovery/configuration`) and ListAutomatedDiscoveryAccounts
(`GET /automated-discovery/accounts`, pages of up to 25, the model's maximum): an
administrator's members, or a member's own account."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.session import Session, macie, session_of
from exporter.demo.simulator.wire import (
    Answer,
    Call,
    Invalid,
    bounded,
    iso,
    json_answer,
    offset_of,
    token,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

BUCKETS_PAGE_SIZE = 50  # DescribeBuckets: the documented default, and the simulator's maximum
DISCOVERY_PAGE_SIZE = 25  # ListAutomatedDiscoveryAccounts: the model's maximum
DISCOVERY_STATUSES = ("ENABLED", "DISABLED")
# Members whose buckets their administrator sees (associated, Macie on for them).
BUCKETS_SHARED = frozenset({"Enabled", "Paused"})
# Members an administrator manages automated discovery for (associated).
ASSOCIATED = frozenset({"Enabled", "Paused", "Invited", "Created",
                        "EmailVerificationInProgress", "EmailVerificationFailed",
                        "RegionDisabled", "AccountSuspended"})
_CRITERIA = ("accountId", "bucketName")


def make_bucket(name: str, account_id: str, region: str, *, public: bool = False,
                shared: str = "NOT_SHARED", encryption: str = "AES256",
                unencrypted_uploads: str = "FALSE", score: int | None = 50,
                objects: int = 1000, size: int | None = None, classifiable: int | None = None,
                unclassifiable: int | None = None, error: str | None = None,
                discovery: str = "MONITORED", by_job: str = "FALSE",
                last_discovery: float | None = None, last_job_run: float | None = None,
                created: float = 1_700_000_000.0) -> dict[str, Any]:
    """A BucketMetadata, as DescribeBuckets answers it: by default 40 kB an object, nine in
    ten of them classifiable."""
    size = objects * 40_000 if size is None else size
    classifiable = objects * 9 // 10 if classifiable is None else classifiable
    unclassifiable = objects - classifiable if unclassifiable is None else unclassifiable
    bucket: dict[str, Any] = {
        "accountId": account_id, "bucketName": name, "region": region,
        "bucketArn": f"arn:aws:s3:::{name}", "bucketCreatedAt": iso(created),
        "allowsUnencryptedObjectUploads": unencrypted_uploads,
        "automatedDiscoveryMonitoringStatus": discovery,
        "classifiableObjectCount": classifiable,
        "classifiableSizeInBytes": size * classifiable // max(objects, 1),
        "jobDetails": {"isDefinedInJob": by_job, "isMonitoredByJob": by_job},
        "lastUpdated": iso(created), "objectCount": objects,
        "objectCountByEncryptionType": {"customerManaged": 0, "kmsManaged": 0,
                                        "s3Managed": objects, "unencrypted": 0, "unknown": 0},
        "publicAccess": {"effectivePermission": "PUBLIC" if public else "NOT_PUBLIC"},
        "serverSideEncryption": {"type": encryption},
        "sharedAccess": shared, "sizeInBytes": size, "sizeInBytesCompressed": 0,
        "tags": [], "versioning": True,
        "unclassifiableObjectCount": {"fileType": unclassifiable, "storageClass": 0,
                                      "total": unclassifiable},
        "unclassifiableObjectSizeInBytes": {"fileType": 0, "storageClass": 0, "total": 0},
    }
    if score is not None:
        bucket["sensitivityScore"] = score
    if error is not None:
        bucket["errorCode"] = error
        bucket["errorMessage"] = f"Macie can't analyse the bucket: {error}"
    if last_discovery is not None:
        bucket["lastAutomatedDiscoveryTime"] = iso(last_discovery)
    if last_job_run is not None:
        bucket["jobDetails"]["lastJobRunTime"] = iso(last_job_run)
    return bucket


def _in(values: frozenset[str], wanted: bool, value: str) -> bool:
    return (value in values) == wanted


def _prefixed(prefix: str, value: str) -> bool:
    return value.startswith(prefix)


def _criterion(name: str, condition: Any) -> Callable[[dict[str, Any]], bool]:
    if name not in _CRITERIA:
        raise Invalid(f"criteria: {name!r} is not supported here (use {', '.join(_CRITERIA)})")
    if not isinstance(condition, dict) or not condition:
        raise Invalid(f"criteria.{name} must be a non-empty map")
    tests: list[Callable[[str], bool]] = []
    for operator, operand in condition.items():
        if operator in ("eq", "neq"):
            if not isinstance(operand, list) or not all(isinstance(v, str) for v in operand):
                raise Invalid(f"criteria.{name}.{operator} must be a list of strings")
            tests.append(functools.partial(_in, frozenset(operand), operator == "eq"))
        elif operator == "prefix" and isinstance(operand, str):
            tests.append(functools.partial(_prefixed, operand))
        else:
            raise Invalid(f"criteria.{name}: {operator!r} is not supported here")
    key = "accountId" if name == "accountId" else "bucketName"
    return lambda bucket: all(test(str(bucket.get(key, ""))) for test in tests)


def _members_of(sim: Simulator, admin: str, region: str, statuses: frozenset[str]) -> list[str]:
    return sorted(m for m, r in sim._members.get((admin, region), {}).items()
                  if r.status in statuses)


@macie
def describe_buckets(sim: Simulator, call: Call, session: Session) -> Answer:
    """DescribeBuckets."""
    request = call.params
    size = bounded(request.get("maxResults"), "maxResults", BUCKETS_PAGE_SIZE)
    offset = offset_of(request.get("nextToken"))
    criteria = request.get("criteria") or {}
    if not isinstance(criteria, dict):
        raise Invalid("criteria must be a map")
    tests = [_criterion(name, condition) for name, condition in criteria.items()]
    account, region = call.account_id, call.region
    with sim.lock:
        accounts = [account, *(m for m in _members_of(sim, account, region, BUCKETS_SHARED)
                               if session_of(sim, m, region).status != "DISABLED")]
        buckets = [bucket for a in accounts
                   for _, bucket in sorted(sim._buckets.get((a, region), {}).items())]
    buckets = sorted((b for b in buckets if all(test(b) for test in tests)),
                     key=lambda b: str(b["bucketName"]))
    answer: dict[str, Any] = {"buckets": buckets[offset:offset + size]}
    if offset + size < len(buckets):
        answer["nextToken"] = token(offset + size)
    return json_answer(200, answer)


@macie
def get_automated_discovery_configuration(sim: Simulator, call: Call,
                                          session: Session) -> Answer:
    """GetAutomatedDiscoveryConfiguration: the account's own status."""
    with sim.lock:
        status, changed = sim._discovery.get((call.account_id, call.region),
                                             ("DISABLED", sim._born))
    answer: dict[str, Any] = {"status": status, "autoEnableOrganizationMembers": "NONE",
                              "lastUpdatedAt": iso(changed)}
    if status == "ENABLED":
        answer["firstEnabledAt"] = iso(changed)
    else:
        answer["disabledAt"] = iso(changed)
    return json_answer(200, answer)


@macie
def list_automated_discovery_accounts(sim: Simulator, call: Call, session: Session) -> Answer:
    """ListAutomatedDiscoveryAccounts: an administrator's members; a member's own account."""
    query = call.params
    raw_size = query.get("maxResults", str(DISCOVERY_PAGE_SIZE))
    try:
        size = int(raw_size)
    except ValueError:
        raise Invalid("maxResults must be an integer") from None
    size = bounded(size, "maxResults", DISCOVERY_PAGE_SIZE)
    offset = offset_of(query.get("nextToken"))
    account, region = call.account_id, call.region
    with sim.lock:
        accounts = _members_of(sim, account, region, ASSOCIATED)
        if not accounts and any(account in members and members[account].status in ASSOCIATED
                                for (_, r), members in sim._members.items() if r == region):
            accounts = [account]  # a member sees its own account
        items = [{"accountId": a,
                  "status": sim._discovery.get((a, region), ("DISABLED", 0.0))[0]}
                 for a in accounts]
    answer: dict[str, Any] = {"items": items[offset:offset + size]}
    if offset + size < len(items):
        answer["nextToken"] = token(offset + size)
    return json_answer(200, answer)
