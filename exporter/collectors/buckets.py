"""S3 bucket posture: where the sensitive data is, which buckets are public or shared, and which
Macie cannot analyse (DescribeBuckets, every page, and findings per bucket).

A Macie administrator sees every member's buckets, a member its own; each bucket is exported
once across the fleet (exporter.collectors.owners). Macie refreshes its bucket inventory about
daily, so the default interval is an hour. Findings come from the findings statistics grouped
by bucket name (exporter.collectors.findings), one call per severity, archived findings left
out. `--buckets.only` keeps the
per-bucket series of the buckets that meet a condition, to bound them in accounts with many
buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from exporter.aws.operations import MACIE, Operation
from exporter.collectors import findings
from exporter.collectors.base import (
    Collector,
    Context,
    Fetch,
    MappingError,
    Settings,
    Switch,
    pages,
)
from exporter.collectors.fields import number, text, timestamp
from exporter.collectors.owners import ShownOnce
from exporter.model import Slot, TargetKey, TargetResult
from exporter.render.families import (
    TARGET_LABELS,
    AnySpec,
    Family,
    FamilySpec,
    Section,
    gauge,
)

# 50 buckets a page: the documented default (the model sets no maximum).
DESCRIBE_BUCKETS = Operation(MACIE, "DescribeBuckets", "macie2:DescribeBuckets", page_size=50,
                             items="buckets")
# Macie's sensitivity score bands: -1 classification error, 1-49 not sensitive, 50 not yet
# analysed, 51-100 sensitive.
SENSITIVE_SCORE = 51
BUCKET_LABELS = (*TARGET_LABELS, "bucket")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket as Macie describes it. `None`: the API did not give the field."""

    account_id: str  # the owner
    name: str
    effective_permission: str  # PUBLIC, NOT_PUBLIC, UNKNOWN ("" when absent)
    shared_access: str  # EXTERNAL, INTERNAL, NOT_SHARED, UNKNOWN
    encryption_type: str  # NONE, AES256, aws:kms, aws:kms:dsse
    allows_unencrypted_uploads: bool | None = None
    sensitivity_score: float | None = None
    objects: float | None = None
    size_bytes: float | None = None
    classifiable_objects: float | None = None
    classifiable_size_bytes: float | None = None
    unclassifiable_objects: float | None = None
    error_code: str | None = None
    monitored_by_discovery: bool | None = None
    monitored_by_job: bool | None = None
    last_automated_discovery_at: float | None = None
    findings: tuple[int, int, int] | None = None  # Low, Medium, High; archived left out


Buckets = tuple[Bucket, ...]
SLOT: Slot[Buckets] = Slot("buckets")


def _flag(value: object, true: str, false: str) -> bool | None:
    return True if value == true else False if value == false else None


def _nested(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MappingError(f"{key}: expected an object, got {type(value).__name__}")
    return value


def bucket_from_api(data: Mapping[str, Any]) -> Bucket:
    """One BucketMetadata as a `Bucket`."""
    name = text(data, "bucketName")
    account = text(data, "accountId")
    if not name or not account:
        raise MappingError("bucketName and accountId: missing")
    jobs = _nested(data, "jobDetails")
    return Bucket(
        account_id=account, name=name,
        effective_permission=text(_nested(data, "publicAccess"), "effectivePermission"),
        shared_access=text(data, "sharedAccess"),
        encryption_type=text(_nested(data, "serverSideEncryption"), "type"),
        allows_unencrypted_uploads=_flag(data.get("allowsUnencryptedObjectUploads"),
                                         "TRUE", "FALSE"),
        sensitivity_score=number(data, "sensitivityScore"),
        objects=number(data, "objectCount"),
        size_bytes=number(data, "sizeInBytes"),
        classifiable_objects=number(data, "classifiableObjectCount"),
        classifiable_size_bytes=number(data, "classifiableSizeInBytes"),
        unclassifiable_objects=number(_nested(data, "unclassifiableObjectCount"), "total"),
        error_code=text(data, "errorCode") or None,
        monitored_by_discovery=_flag(data.get("automatedDiscoveryMonitoringStatus"),
                                     "MONITORED", "NOT_MONITORED"),
        monitored_by_job=_flag(jobs.get("isMonitoredByJob"), "TRUE", "FALSE"),
        last_automated_discovery_at=timestamp(data, "lastAutomatedDiscoveryTime"),
    )


# What `--buckets.only` can keep: a bucket is kept when it meets any of the conditions given.
CONDITIONS: dict[str, Callable[[Bucket], bool]] = {
    "public": lambda b: b.effective_permission == "PUBLIC",
    "shared": lambda b: b.shared_access == "EXTERNAL",
    "unencrypted": lambda b: b.encryption_type == "NONE" or bool(b.allows_unencrypted_uploads),
    "error": lambda b: b.error_code is not None,
    "sensitive": lambda b: (b.sensitivity_score or 0) >= SENSITIVE_SCORE,
    "findings": lambda b: any(b.findings or ()),
    "unmonitored": lambda b: not (b.monitored_by_discovery or b.monitored_by_job),
}


def kept(bucket: Bucket, only: frozenset[str]) -> bool:
    """Whether `--buckets.only` keeps the bucket's series (empty: every bucket)."""
    return not only or any(CONDITIONS[condition](bucket) for condition in only)


def fetch(ctx: Context[Buckets]) -> Fetch[Buckets]:
    described = yield from pages(DESCRIBE_BUCKETS)
    buckets = {(b.account_id, b.name): b for b in map(bucket_from_api, described)}
    names = sorted({name for _, name in buckets})
    counts: dict[str, tuple[int, int, int]] = {}
    if names:  # no bucket: no finding to count
        counts = yield from findings.counts_by("resourcesAffected.s3Bucket.name", names)
    found = (replace(bucket, findings=counts.get(bucket.name, (0, 0, 0)))
             for bucket in buckets.values())
    return tuple(sorted((b for b in found if kept(b, ctx.settings.buckets_only)),
                        key=lambda b: (b.account_id, b.name)))


# ------------------------------------------------------------------ families


def _buckets(target: TargetResult) -> Buckets | None:
    return target.get(SLOT)


def _count(part: Buckets) -> int:
    return len(part)


def _family(shown: ShownOnce[Bucket], name: str, documentation: str, labels: tuple[str, ...],
            add_bucket: Callable[[Family, list[str], Bucket], None]) -> AnySpec:
    def add(family: Family, key: TargetKey, part: Buckets, lo: int, hi: int) -> None:
        for bucket in part[lo:hi]:
            add_bucket(family, [bucket.account_id, key.region, bucket.name], bucket)
    return FamilySpec(name, lambda: gauge(name, documentation, (*BUCKET_LABELS, *labels)), add,
                      all_parts=shown, size=_count, section=Section.TARGET, keep_large=True)


def _value(get: Callable[[Bucket], float | bool | None]
           ) -> Callable[[Family, list[str], Bucket], None]:
    def add(family: Family, labels: list[str], bucket: Bucket) -> None:
        value = get(bucket)
        if value is not None:
            family.add_metric(labels, float(value))
    return add


def _add_info(family: Family, labels: list[str], bucket: Bucket) -> None:
    family.add_metric([*labels, bucket.effective_permission, bucket.shared_access,
                       bucket.encryption_type], 1)


def _add_error(family: Family, labels: list[str], bucket: Bucket) -> None:
    if bucket.error_code is not None:
        family.add_metric([*labels, bucket.error_code], 1)


def _add_monitored(family: Family, labels: list[str], bucket: Bucket) -> None:
    for by, monitored in (("automated_discovery", bucket.monitored_by_discovery),
                          ("job", bucket.monitored_by_job)):
        if monitored is not None:
            family.add_metric([*labels, by], 1 if monitored else 0)


def _add_findings(family: Family, labels: list[str], bucket: Bucket) -> None:
    for severity, count in zip(findings.SEVERITIES, bucket.findings or (), strict=False):
        family.add_metric([*labels, severity], count)


def families(_settings: Settings) -> list[AnySpec]:
    # The buckets each target shows, worked out once per snapshot for all the families.
    shown = ShownOnce(_buckets, lambda b: b.account_id, lambda b: b.name)
    return [
        _family(shown, "macie_s3_bucket_info",
                "Information about an S3 bucket Macie monitors: its effective public access "
                "(publicAccess.effectivePermission), whether it is shared with other accounts "
                "(sharedAccess) and its default encryption (serverSideEncryption.type); the "
                "value is always 1.",
                ("effective_permission", "shared_access", "encryption_type"), _add_info),
        _family(shown, "macie_s3_bucket_sensitivity_score",
                "The bucket's sensitivity score (sensitivityScore): -1 classification error, "
                "1-49 not sensitive, 50 not yet analysed, 51-100 sensitive.", (),
                _value(lambda b: b.sensitivity_score)),
        _family(shown, "macie_s3_bucket_objects", "Objects in the bucket (objectCount).", (),
                _value(lambda b: b.objects)),
        _family(shown, "macie_s3_bucket_size_bytes",
                "Storage size of the bucket's objects (sizeInBytes).", (),
                _value(lambda b: b.size_bytes)),
        _family(shown, "macie_s3_bucket_classifiable_objects",
                "Objects Macie can analyse in the bucket (classifiableObjectCount).", (),
                _value(lambda b: b.classifiable_objects)),
        _family(shown, "macie_s3_bucket_classifiable_size_bytes",
                "Storage size of the objects Macie can analyse (classifiableSizeInBytes).", (),
                _value(lambda b: b.classifiable_size_bytes)),
        _family(shown, "macie_s3_bucket_unclassifiable_objects",
                "Objects Macie cannot analyse, for their storage class or file type "
                "(unclassifiableObjectCount.total).", (),
                _value(lambda b: b.unclassifiable_objects)),
        _family(shown, "macie_s3_bucket_allows_unencrypted_uploads",
                "1 if the bucket policy allows uploads of objects that are not encrypted "
                "(allowsUnencryptedObjectUploads TRUE), 0 if it does not; absent when unknown.",
                (), _value(lambda b: b.allows_unencrypted_uploads)),
        _family(shown, "macie_s3_bucket_analysis_error",
                "1 while Macie cannot analyse the bucket, by the reason it gives (errorCode: "
                "ACCESS_DENIED, BUCKET_COUNT_EXCEEDS_QUOTA); no series otherwise.",
                ("error_code",), _add_error),
        _family(shown, "macie_s3_bucket_monitored",
                "1 if the bucket is monitored by automated sensitive data discovery "
                "(automatedDiscoveryMonitoringStatus MONITORED) or by a job "
                "(jobDetails.isMonitoredByJob TRUE), by what monitors it; 0 if not.",
                ("by",), _add_monitored),
        _family(shown, "macie_s3_bucket_last_automated_discovery_timestamp_seconds",
                "When automated sensitive data discovery last analysed an object in the "
                "bucket (lastAutomatedDiscoveryTime), in seconds since the Unix epoch.", (),
                _value(lambda b: b.last_automated_discovery_at)),
        _family(shown, "macie_s3_bucket_findings",
                "Findings on the bucket by severity, archived (suppressed) findings not "
                "counted (finding statistics grouped by bucket name).", ("severity",),
                _add_findings),
    ]


def _reconfigured(value: Buckets, old: Settings, new: Settings) -> Buckets | None:
    """After a reload: a new --buckets.only runs the collector again at the next refresh
    (its kept buckets are the old conditions' until then)."""
    return value if new.buckets_only != old.buckets_only else None


COLLECTOR = Collector(
    name="buckets", slot=SLOT, operations=(DESCRIBE_BUCKETS, findings.GET_FINDING_STATISTICS),
    fetch=fetch, families=families, reconfigured=_reconfigured,
    switch=Switch("1h", "Collect S3 bucket posture, sensitivity and findings per bucket "
                        "(DescribeBuckets)."),
)
