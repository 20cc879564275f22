"""A simulated Macie API on loopback, speaking the real wire formats botocore parses.

Macie (REST-JSON, as botocore's macie2 model has it): `POST /jobs/list`
(ListClassificationJobs, `nextToken` paging), `GET /jobs/{jobId}` (DescribeClassificationJob),
`GET /macie` (GetMacieSession), `POST /findings/statistics` (GetFindingStatistics),
`POST /usage/statistics` (GetUsageStatistics, paged) and `GET /members` (ListMembers, paged);
ISO-8601 timestamps; errors as an HTTP status plus `x-amzn-ErrorType`. STS (query protocol,
XML): GetCallerIdentity and AssumeRole, with credentials that expire. AWS Organizations (JSON
1.1, `POST /` with `X-Amz-Target`): ListAccounts, paged. Jobs, findings, usage, members and
Macie's status (ENABLED, PAUSED, or DISABLED: "Macie is not enabled") are kept per (account,
region); the region comes from the SigV4 credential scope and the account from the access key
(an AssumeRole key: the role's account; any other key: `account_id`).

Page sizes: ListClassificationJobs up to 200 (default 100); ListMembers up to 25 (the model's
maximum, and the default); ListAccounts up to 20 (the model's maximum, and the default);
GetUsageStatistics up to 50 (default 50) and GetFindingStatistics `size` up to 1000 (default
1000): the model gives these two no maximum, so the bounds are the simulator's own, and larger
values are answered ValidationException.

Requests are counted per operation and per (operation, account, region); for a caller in
another process, `GET /_simulator/requests` answers the counts as JSON and
`POST /_simulator/reset` zeroes them.

Used by `--demo` (the story is in `exporter.demo`) and by the tests, which add fault injection
through `_intercept` (`tests/simfaults.py`); benchmarks fill it with synthetic fleets
(`benchmarks/fleets.py`).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

DEFAULT_ACCOUNT = "123456789012"
MAX_PAGE_SIZE = 200  # ListClassificationJobs
MEMBERS_PAGE_SIZE = 25  # ListMembers: the model's maximum, also the default
ACCOUNTS_PAGE_SIZE = 20  # ListAccounts: the model's maximum, also the default
USAGE_PAGE_SIZE = 50  # GetUsageStatistics: default and maximum (the model gives none)
MAX_STATISTICS_SIZE = 1000  # GetFindingStatistics `size`: default and maximum (the model: none)
DAY = 86400.0
STS_OPERATIONS = ("GetCallerIdentity", "AssumeRole")
ORGANIZATIONS_OPERATIONS = ("ListAccounts",)
ORGANIZATIONS_TARGET_PREFIX = "AWSOrganizationsV20161128"
MACIE_STATUSES = ("ENABLED", "PAUSED", "DISABLED")
SEVERITIES = ("Low", "Medium", "High")  # SeverityDescription
SEVERITY_SCORES = {"Low": 1, "Medium": 2, "High": 3}
FINDING_TYPE = "SensitiveData:S3Object/Personal"  # every simulated finding's type
GROUP_BY = ("resourcesAffected.s3Bucket.name", "type", "classificationDetails.jobId",
            "severity.description")
USAGE_TYPES = ("DATA_INVENTORY_EVALUATION", "SENSITIVE_DATA_DISCOVERY",
               "AUTOMATED_SENSITIVE_DATA_DISCOVERY", "AUTOMATED_OBJECT_MONITORING")
TIME_RANGES = ("MONTH_TO_DATE", "PAST_30_DAYS")
RELATIONSHIP_STATUSES = ("Enabled", "Paused", "Invited", "Created", "Removed", "Resigned",
                         "EmailVerificationInProgress", "EmailVerificationFailed",
                         "RegionDisabled", "AccountSuspended")
# Members no longer associated with their administrator: listed only with onlyAssociated=false.
NOT_ASSOCIATED = frozenset({"Removed", "Resigned"})
# Members whose usage their administrator's GetUsageStatistics reports (Macie on for them).
USAGE_REPORTED = frozenset({"Enabled", "Paused"})
ACCOUNT_STATUSES = ("ACTIVE", "SUSPENDED", "PENDING_CLOSURE")  # Organizations' AccountStatus
# Every Macie call in an account and region where Macie is not enabled gets this answer.
NOT_ENABLED = (401, "AccessDeniedException", "Macie is not enabled.")
Answer = tuple[int, dict[str, str], bytes]  # HTTP status, headers, body
_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/")


def iso(ts: float) -> str:
    """Epoch seconds → the ISO-8601 form Macie sends (`2026-11-22T14:54:28.123Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def make_job(
    job_id: str, name: str | None = None, status: str = "COMPLETE", *,
    job_type: str = "ONE_TIME", created_at: float | None = None, schedule: str = "none",
    runs: float | None = 1, objects_to_process: float | None = 0,
    last_run_error: bool | None = False, last_run_time: float | None = None,
    paused_at: float | None = None, expires_at: float | None = None,
    tags: dict[str, str] | None = None, selector: str = "RECOMMENDED",
    account_id: str = DEFAULT_ACCOUNT,
) -> dict[str, Any]:
    """A DescribeClassificationJob answer (without `jobArn`: the simulator adds it); its one
    bucket, `bucket-<jobId>`, belongs to `account_id`."""
    created = time.time() - DAY if created_at is None else created_at
    job: dict[str, Any] = {
        "jobId": job_id, "name": name or job_id, "jobStatus": status, "jobType": job_type,
        "createdAt": iso(created), "managedDataIdentifierSelector": selector,
        "initialRun": True, "samplingPercentage": 100,
        "s3JobDefinition": {"bucketDefinitions": [
            {"accountId": account_id, "buckets": [f"bucket-{job_id}"]}]},
    }
    if job_type == "SCHEDULED":
        if schedule == "daily":
            job["scheduleFrequency"] = {"dailySchedule": {}}
        elif schedule.startswith("weekly:"):
            job["scheduleFrequency"] = {"weeklySchedule": {"dayOfWeek": schedule[7:]}}
        elif schedule.startswith("monthly:"):
            job["scheduleFrequency"] = {"monthlySchedule": {"dayOfMonth": int(schedule[8:])}}
    stats = {}
    if runs is not None:
        stats["numberOfRuns"] = float(runs)
    if objects_to_process is not None:
        stats["approximateNumberOfObjectsToProcess"] = float(objects_to_process)
    if stats:
        job["statistics"] = stats
    if last_run_error is not None:
        job["lastRunErrorStatus"] = {"code": "ERROR" if last_run_error else "NONE"}
    if last_run_time is not None:
        job["lastRunTime"] = iso(last_run_time)
    if paused_at is not None or expires_at is not None:
        details: dict[str, Any] = {}
        if paused_at is not None:
            details["jobPausedAt"] = iso(paused_at)
        if expires_at is not None:
            details["jobExpiresAt"] = iso(expires_at)
        job["userPausedDetails"] = details
    if tags is not None:
        job["tags"] = dict(tags)
    return job


_SUMMARY_KEYS = ("bucketDefinitions", "createdAt", "jobId", "jobStatus", "jobType",
                 "lastRunErrorStatus", "name", "userPausedDetails")


def summary_of(job: dict[str, Any]) -> dict[str, Any]:
    """The JobSummary that ListClassificationJobs returns for a described job."""
    summary = {k: job[k] for k in _SUMMARY_KEYS if k in job}
    definition = job.get("s3JobDefinition", {})
    if "bucketDefinitions" in definition:
        summary["bucketDefinitions"] = definition["bucketDefinitions"]
    return summary


@dataclass(frozen=True)
class Call:
    """One AWS request, as the simulator sees it before answering."""

    operation: str
    account_id: str
    region: str
    # The JSON body (POST operations), {"jobId": …} (DescribeClassificationJob), the query
    # string's fields (ListMembers) or the form fields (STS).
    params: dict[str, Any]
    auth_problem: str | None  # the error code, if the credentials are missing or expired


@dataclass(frozen=True)
class _Session:
    status: str  # one of MACIE_STATUSES
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class _Usage:
    estimated_cost: str | None  # None: the account has no record of this usage type
    limit_value: int | None  # the serviceLimit in terabytes; None: no serviceLimit
    limited: bool


# What every account with Macie on reports unless set otherwise: a small cost for sensitive data
# discovery under its 5 TB monthly quota, and an inventory evaluation without a serviceLimit.
DEFAULT_USAGE = {
    "DATA_INVENTORY_EVALUATION": _Usage("0.12", None, False),
    "SENSITIVE_DATA_DISCOVERY": _Usage("1.35", 5, False),
}


@dataclass(frozen=True)
class _Member:
    status: str  # one of RELATIONSHIP_STATUSES
    invited_at: float
    updated_at: float


@dataclass(frozen=True)
class _OrgAccount:
    status: str  # one of ACCOUNT_STATUSES
    name: str
    joined_at: float


class _Invalid(Exception):
    """A request the service would answer ValidationException (InvalidInputException)."""


Evolve = Callable[[float, "Simulator"], None]


class Simulator:
    """The simulated API. All state changes happen under one lock."""

    def __init__(self, account_id: str = DEFAULT_ACCOUNT, evolve: Evolve | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.account_id = account_id
        self.latency = 0.0  # seconds added to every AWS call
        self.credential_ttl = 3600.0  # lifetime of AssumeRole credentials
        self.requests: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        # (operation, account, region): what each target was asked
        self.target_requests: Counter[tuple[str, str, str]] = Counter()
        self.page_sizes: Counter[int] = Counter()  # maxResults values asked for
        self.max_in_flight: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._jobs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # Jobs in list order per (account, region), rebuilt after a change.
        self._ordered: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._sessions: dict[tuple[str, str], _Session] = {}  # absent: ENABLED since _born
        # (account, region) → (jobId, severity, archived) → number of findings
        self._findings: dict[tuple[str, str], Counter[tuple[str, str, bool]]] = {}
        # (account, region or None for every region) → usage type → usage
        self._usage: dict[tuple[str, str | None], dict[str, _Usage]] = {}
        # (administrator, region) → member account → relationship
        self._members: dict[tuple[str, str], dict[str, _Member]] = {}
        self._org_management: str | None = None
        self._org_accounts: dict[str, _OrgAccount] = {}
        self._evolve = evolve
        self._clock = clock
        self._born = clock()
        self._keys: dict[str, tuple[str, float]] = {}  # AssumeRole key → (account, expiry)
        self._key_ids = itertools.count(1)
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ state

    def put_job(self, region: str, job: dict[str, Any], account_id: str | None = None) -> None:
        account = account_id or self.account_id
        with self.lock:
            stored = dict(job)
            stored["jobArn"] = (
                f"arn:aws:macie2:{region}:{account}:classification-job/{job['jobId']}"
            )
            self._jobs.setdefault((account, region), {})[job["jobId"]] = stored
            self._ordered.pop((account, region), None)

    def remove_job(self, region: str, job_id: str, account_id: str | None = None) -> None:
        key = (account_id or self.account_id, region)
        with self.lock:
            self._jobs.get(key, {}).pop(job_id, None)
            self._ordered.pop(key, None)

    def set_macie_status(self, region: str, status: str, account_id: str | None = None) -> None:
        """Macie's status in one account and region: ENABLED (the default), PAUSED or DISABLED.

        PAUSED changes only what GetMacieSession says. DISABLED answers every Macie call with
        "Macie is not enabled"; the jobs stay stored and come back when it is enabled again
        (AWS would have deleted them).
        """
        if status not in MACIE_STATUSES:
            raise ValueError(f"Macie status {status!r}: expected one of {MACIE_STATUSES}")
        key = (account_id or self.account_id, region)
        with self.lock:
            now = self._clock()
            session = self._sessions.get(key) or _Session("ENABLED", self._born, self._born)
            if session.status == status:
                return
            created = now if session.status == "DISABLED" else session.created_at
            self._sessions[key] = _Session(status, created, now)

    def add_findings(self, region: str, job_id: str, severity: str, count: int,
                     archived: bool = False, account_id: str | None = None) -> None:
        """`count` more findings of job `job_id` at `severity` (Low, Medium or High)."""
        self._count_findings(region, job_id, severity, count, archived, account_id, add=True)

    def set_findings(self, region: str, job_id: str, severity: str, count: int,
                     archived: bool = False, account_id: str | None = None) -> None:
        """Job `job_id` has `count` findings at `severity` (archived or not), no more."""
        self._count_findings(region, job_id, severity, count, archived, account_id, add=False)

    def _count_findings(self, region: str, job_id: str, severity: str, count: int,
                        archived: bool, account_id: str | None, *, add: bool) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r}: expected one of {SEVERITIES}")
        if count < 0:
            raise ValueError(f"a number of findings cannot be negative: {count}")
        key = (account_id or self.account_id, region)
        with self.lock:
            findings = self._findings.setdefault(key, Counter())
            record = (job_id, severity, bool(archived))
            findings[record] = findings[record] + count if add else count

    def set_usage(self, account_id: str, usage_type: str, estimated_cost: str | None, *,
                  limit_value: int | None = None, limited: bool = False,
                  region: str | None = None) -> None:
        """One usage type of an account (GetUsageStatistics), month to date.

        `estimated_cost` is the decimal string Macie sends (None: no record of this type);
        `limit_value` the serviceLimit in terabytes (None: the record has no serviceLimit);
        `limited` whether that quota is reached. Usage is per region, as in Macie: `region`
        None sets it for every region of the account that has no value of its own.
        """
        if usage_type not in USAGE_TYPES:
            raise ValueError(f"usage type {usage_type!r}: expected one of {USAGE_TYPES}")
        if estimated_cost is not None:
            try:
                Decimal(estimated_cost)
            except InvalidOperation:
                raise ValueError(f"estimated cost {estimated_cost!r} is not a decimal") from None
        if limited and limit_value is None:
            raise ValueError("a reached quota needs its limit_value")
        with self.lock:
            self._usage.setdefault((account_id, region), {})[usage_type] = _Usage(
                estimated_cost, limit_value, limited)

    def set_member(self, admin_account: str, region: str, member_account: str,
                   relationship_status: str) -> None:
        """`member_account` is a Macie member of `admin_account` in `region` (ListMembers)."""
        if relationship_status not in RELATIONSHIP_STATUSES:
            raise ValueError(f"relationship status {relationship_status!r}: expected one of "
                             f"{RELATIONSHIP_STATUSES}")
        if admin_account == member_account:
            raise ValueError("an account cannot be its own member")
        with self.lock:
            now = self._clock()
            members = self._members.setdefault((admin_account, region), {})
            before = members.get(member_account)
            if before is not None and before.status == relationship_status:
                return
            invited = now if before is None else before.invited_at
            members[member_account] = _Member(relationship_status, invited, now)

    def set_organization(self, management_account: str, accounts: Mapping[str, str],
                         names: Mapping[str, str] | None = None) -> None:
        """The organisation ListAccounts answers for: `accounts` maps account → ACTIVE,
        SUSPENDED or PENDING_CLOSURE; the management account is ACTIVE unless it is listed."""
        statuses = {management_account: "ACTIVE", **accounts}
        for account, status in statuses.items():
            if status not in ACCOUNT_STATUSES:
                raise ValueError(f"account {account} status {status!r}: expected one of "
                                 f"{ACCOUNT_STATUSES}")
            if not (len(account) == 12 and account.isdigit()):
                raise ValueError(f"account id {account!r} is not 12 digits")
        members = sorted(a for a in statuses if a != management_account)
        with self.lock:
            joined = {management_account: self._born - 730 * DAY} | {
                account: self._born - (365 - i) * DAY for i, account in enumerate(members)}
            self._org_management = management_account
            self._org_accounts = {
                account: _OrgAccount(status, (names or {}).get(account, f"account-{account}"),
                                     joined[account])
                for account, status in statuses.items()
            }

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.target_requests.clear()
            self.max_in_flight.clear()
            self.page_sizes.clear()

    @property
    def region_requests(self) -> Counter[tuple[str, str]]:
        """Requests per (operation, region), all accounts together."""
        out: Counter[tuple[str, str]] = Counter()
        with self.lock:
            for (operation, _, region), count in self.target_requests.items():
                out[(operation, region)] += count
        return out

    def counts(self) -> dict[str, Any]:
        """The request counters as JSON values: what `GET /_simulator/requests` answers."""
        with self.lock:
            return {
                "operations": dict(self.requests),
                "targets": [
                    {"operation": operation, "account_id": account, "region": region,
                     "count": count}
                    for (operation, account, region), count in sorted(
                        self.target_requests.items())
                ],
                "max_in_flight": dict(self.max_in_flight),
            }

    # ------------------------------------------------------------ server

    @property
    def url(self) -> str:
        assert self._server is not None, "simulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        server = _QuietServer((host, port), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="macie-simulator",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self.url

    def run(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve in the foreground (`python -m ...`): print the URL, then wait for Ctrl-C."""
        print(self.start(host, port), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ request handling

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """One HTTP request (`target`: the path and query string; header names lowercase)."""
        path, _, query = target.partition("?")
        if path.startswith("/_simulator/"):
            return self._control(method, path)
        try:
            operation, params = _route(method, path, query, headers, body)
        except _Unrouted as err:
            return err.answer
        account, region, problem = self._caller(headers)
        call = Call(operation, account, region, params, problem)
        with self.lock:
            self.requests[operation] += 1
            self.target_requests[(operation, account, region)] += 1
            if operation == "ListClassificationJobs":
                self.page_sizes[params.get("maxResults", 100)] += 1
            self.in_flight[operation] += 1
            self.max_in_flight[operation] = max(self.max_in_flight[operation],
                                                self.in_flight[operation])
            if self._evolve is not None:
                self._evolve(self._clock(), self)
            latency = self.latency
        try:
            if latency:
                time.sleep(latency)
            answer = self._intercept(call)
            return answer if answer is not None else self._answer(call)
        finally:
            with self.lock:
                self.in_flight[operation] -= 1

    def _intercept(self, call: Call) -> Answer | None:
        """An answer in place of the simulator's own, or None; tests inject faults here.

        Called without the lock, once the call is counted and `latency` has passed.
        """
        return None

    def _answer(self, call: Call) -> Answer:
        if call.operation in STS_OPERATIONS:
            return self._sts(call)
        if call.auth_problem:
            return error_answer(call.operation, 403, call.auth_problem,
                                "the security token included in the request is expired or "
                                "invalid")
        if call.operation in ORGANIZATIONS_OPERATIONS:
            return self._list_accounts(call)
        with self.lock:
            session = self._session_of(call.account_id, call.region)
        if session.status == "DISABLED":
            return json_error(*NOT_ENABLED)
        if call.operation == "GetMacieSession":
            return self._session(call, session)
        try:
            return {
                "ListClassificationJobs": self._list,
                "DescribeClassificationJob": self._describe,
                "GetFindingStatistics": self._finding_statistics,
                "GetUsageStatistics": self._usage_statistics,
                "ListMembers": self._list_members,
            }[call.operation](call)
        except _Invalid as err:
            return json_error(400, "ValidationException", str(err))

    def _session_of(self, account: str, region: str) -> _Session:
        return self._sessions.get((account, region)) or _Session("ENABLED", self._born,
                                                                 self._born)

    def _control(self, method: str, path: str) -> Answer:
        if method == "GET" and path == "/_simulator/requests":
            return json_answer(200, self.counts())
        if method == "POST" and path == "/_simulator/reset":
            self.reset_counts()
            return json_answer(200, {})
        return json_error(404, "UnknownOperationException", f"no route for {method} {path}")

    def _caller(self, headers: dict[str, str]) -> tuple[str, str, str | None]:
        match = _CREDENTIAL_SCOPE.search(headers.get("authorization", ""))
        if not match:
            return self.account_id, "us-east-1", "MissingAuthenticationTokenException"
        key, region = match.groups()
        with self.lock:
            account, expiry = self._keys.get(key, (self.account_id, None))
        if expiry is not None and self._clock() >= expiry:
            return account, region, "ExpiredTokenException"
        return account, region, None

    def _list(self, call: Call) -> Answer:
        request, key = call.params, (call.account_id, call.region)
        size = request.get("maxResults", 100)
        if not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
            return json_error(400, "ValidationException",
                              f"maxResults must be between 1 and {MAX_PAGE_SIZE}")
        offset = _offset(request.get("nextToken"))
        with self.lock:
            criteria = request.get("filterCriteria") or {}
            if key not in self._ordered:
                self._ordered[key] = sorted(self._jobs.get(key, {}).values(),
                                            key=lambda j: (j["createdAt"], j["jobId"]))
            ordered = self._ordered[key]
            if criteria:
                ordered = [j for j in ordered if _matches(j, criteria)]
            page = [summary_of(j) for j in ordered[offset:offset + size]]
            more = offset + len(page) < len(ordered)
        answer: dict[str, Any] = {"items": page}
        if more:
            answer["nextToken"] = _token(offset + len(page))
        return json_answer(200, answer)

    def _describe(self, call: Call) -> Answer:
        job_id = call.params["jobId"]
        with self.lock:
            job = self._jobs.get((call.account_id, call.region), {}).get(job_id)
        if job is None:
            return json_error(404, "ResourceNotFoundException", f"job {job_id} not found")
        return json_answer(200, job)

    def _session(self, call: Call, session: _Session) -> Answer:
        return json_answer(200, {
            "createdAt": iso(session.created_at),
            "findingPublishingFrequency": "FIFTEEN_MINUTES",
            "serviceRole": f"arn:aws:iam::{call.account_id}:role/aws-service-role/"
                           "macie.amazonaws.com/AWSServiceRoleForAmazonMacie",
            "status": session.status,
            "updatedAt": iso(session.updated_at),
        })

    def _finding_statistics(self, call: Call) -> Answer:
        request = call.params
        group_by = request.get("groupBy")
        if group_by not in GROUP_BY:
            raise _Invalid(f"groupBy must be one of {', '.join(GROUP_BY)}")
        size = _bounded(request.get("size"), "size", MAX_STATISTICS_SIZE)
        sort = request.get("sortCriteria") or {}
        attribute, order = sort.get("attributeName", "count"), sort.get("orderBy", "DESC")
        if attribute not in ("count", "groupKey") or order not in ("ASC", "DESC"):
            raise _Invalid("sortCriteria: attributeName count or groupKey, orderBy ASC or DESC")
        criteria = request.get("findingCriteria") or {}
        if not isinstance(criteria, dict):
            raise _Invalid("findingCriteria must be an object")
        wanted = _finding_filter(criteria.get("criterion") or {})
        key = (call.account_id, call.region)
        with self.lock:
            records = list(self._findings.get(key, Counter()).items())
            jobs = self._jobs.get(key, {})
            buckets = {job_id: _first_bucket(jobs.get(job_id), job_id)
                       for job_id in {job_id for (job_id, _, _), _ in records}}
        counts: Counter[str] = Counter()
        for (job_id, severity, archived), count in records:
            finding = {
                "classificationDetails.jobId": job_id, "severity.description": severity,
                "severity.score": SEVERITY_SCORES[severity],
                "archived": "true" if archived else "false", "type": FINDING_TYPE,
                "resourcesAffected.s3Bucket.name": buckets[job_id],
            }
            if count and wanted(finding):
                counts[str(finding[group_by])] += count
        ascending = order == "ASC"
        if attribute == "count":
            groups = sorted(counts.items(), key=lambda g: (g[1] if ascending else -g[1], g[0]))
        else:
            groups = sorted(counts.items(), reverse=not ascending)
        return json_answer(200, {"countsByGroup": [
            {"groupKey": group, "count": count} for group, count in groups[:size]]})

    def _usage_statistics(self, call: Call) -> Answer:
        request = call.params
        size = _bounded(request.get("maxResults"), "maxResults", USAGE_PAGE_SIZE)
        offset = _offset(request.get("nextToken"))
        time_range = request.get("timeRange", "PAST_30_DAYS")
        if time_range not in TIME_RANGES:
            raise _Invalid(f"timeRange must be one of {', '.join(TIME_RANGES)}")
        filters = [_usage_filter(f) for f in request.get("filterBy") or []]
        sort = request.get("sortBy") or {}
        sort_key, order = sort.get("key", "accountId"), sort.get("orderBy", "ASC")
        if sort_key not in _USAGE_SORT_KEYS or order not in ("ASC", "DESC"):
            raise _Invalid(f"sortBy: key one of {', '.join(_USAGE_SORT_KEYS)}, "
                           "orderBy ASC or DESC")
        account, region = call.account_id, call.region
        with self.lock:
            members = self._members.get((account, region), {})
            accounts = [account, *sorted(
                member for member, relation in members.items()
                if relation.status in USAGE_REPORTED
                and self._session_of(member, region).status != "DISABLED")]
            records = [self._usage_record(a, region) for a in accounts]
        records = [r for r in records if all(keep(r) for keep in filters)]
        records.sort(key=lambda r: r["accountId"])
        records.sort(key=_USAGE_SORT_KEYS[sort_key], reverse=order == "DESC")
        page = records[offset:offset + size]
        answer: dict[str, Any] = {"records": page, "timeRange": time_range}
        if offset + len(page) < len(records):
            answer["nextToken"] = _token(offset + len(page))
        return json_answer(200, answer)

    def _usage_record(self, account: str, region: str) -> dict[str, Any]:
        """One account's UsageRecord in `region` (called under the lock)."""
        usage = {**DEFAULT_USAGE, **self._usage.get((account, None), {}),
                 **self._usage.get((account, region), {})}
        items = []
        for usage_type, entry in sorted(usage.items()):
            if entry.estimated_cost is None:
                continue
            item: dict[str, Any] = {"type": usage_type, "currency": "USD",
                                    "estimatedCost": entry.estimated_cost}
            if entry.limit_value is not None:
                item["serviceLimit"] = {"isServiceLimited": entry.limited, "unit": "TERABYTES",
                                        "value": entry.limit_value}
            items.append(item)
        return {"accountId": account,
                "freeTrialStartDate": iso(self._session_of(account, region).created_at),
                "usage": items}

    def _list_members(self, call: Call) -> Answer:
        query = call.params
        raw_size = query.get("maxResults", str(MEMBERS_PAGE_SIZE))
        try:
            size = int(raw_size)
        except ValueError:
            raise _Invalid("maxResults must be an integer") from None
        size = _bounded(size, "maxResults", MEMBERS_PAGE_SIZE)
        offset = _offset(query.get("nextToken"))
        only_associated = query.get("onlyAssociated", "true")
        if only_associated not in ("true", "false"):
            raise _Invalid("onlyAssociated must be true or false")
        admin, region = call.account_id, call.region
        with self.lock:
            members = sorted(self._members.get((admin, region), {}).items())
        if only_associated == "true":
            members = [(m, r) for m, r in members if r.status not in NOT_ASSOCIATED]
        page = [{
            "accountId": member, "administratorAccountId": admin, "masterAccountId": admin,
            "arn": f"arn:aws:macie2:{region}:{admin}:member/{member}",
            "email": f"aws+{member}@example.com", "invitedAt": iso(relation.invited_at),
            "relationshipStatus": relation.status, "tags": {},
            "updatedAt": iso(relation.updated_at),
        } for member, relation in members[offset:offset + size]]
        answer: dict[str, Any] = {"members": page}
        if offset + len(page) < len(members):
            answer["nextToken"] = _token(offset + len(page))
        return json_answer(200, answer)

    def _list_accounts(self, call: Call) -> Answer:
        request = call.params
        try:
            size = _bounded(request.get("MaxResults"), "MaxResults", ACCOUNTS_PAGE_SIZE)
            offset = _offset(request.get("NextToken"))
        except _Invalid as err:
            return json11_error(400, "InvalidInputException", str(err))
        with self.lock:
            management, accounts = self._org_management, dict(self._org_accounts)
        if management is None or call.account_id not in accounts:
            return json11_error(400, "AWSOrganizationsNotInUseException",
                                "Your account is not a member of an organization.")
        if call.account_id != management:
            return json11_error(400, "AccessDeniedException",
                                "You don't have permissions to access this resource.")
        ordered = sorted(accounts.items(), key=lambda a: (a[1].joined_at, a[0]))
        page = [{
            "Id": account, "Arn": f"arn:aws:organizations::{management}:account/"
                                  f"o-{management}/{account}",
            "Email": f"aws+{account}@example.com", "Name": entry.name, "Status": entry.status,
            "State": entry.status,
            "JoinedMethod": "INVITED" if account == management else "CREATED",
            "JoinedTimestamp": entry.joined_at,
        } for account, entry in ordered[offset:offset + size]]
        answer: dict[str, Any] = {"Accounts": page}
        if offset + len(page) < len(ordered):
            answer["NextToken"] = _token(offset + len(page))
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(answer).encode()

    def _sts(self, call: Call) -> Answer:
        if call.auth_problem:
            return xml_error(403, "ExpiredToken", "the security token is expired")
        account = call.account_id
        if call.operation == "GetCallerIdentity":
            return 200, {"Content-Type": "text/xml"}, (
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                f"<GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/demo</Arn>"
                f"<UserId>AIDADEMO</UserId><Account>{account}</Account>"
                "</GetCallerIdentityResult><ResponseMetadata><RequestId>sim</RequestId>"
                "</ResponseMetadata></GetCallerIdentityResponse>"
            ).encode()
        parts = call.params.get("RoleArn", "").split(":")
        if len(parts) < 6 or not parts[4].isdigit():
            return xml_error(400, "ValidationError", "invalid RoleArn")
        role_account = parts[4]
        session = escape(call.params.get("RoleSessionName", "session"))
        with self.lock:
            key = f"ASIASIM{next(self._key_ids):013d}"
            expiry = self._clock() + self.credential_ttl
            self._keys[key] = (role_account, expiry)
        return 200, {"Content-Type": "text/xml"}, (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>"
            "<SecretAccessKey>sim-secret</SecretAccessKey><SessionToken>sim-token</SessionToken>"
            f"<Expiration>{iso(expiry)}</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>AROASIM:{session}</AssumedRoleId>"
            f"<Arn>arn:aws:sts::{role_account}:assumed-role/{escape(parts[5])}/{session}</Arn>"
            "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>sim</RequestId>"
            "</ResponseMetadata></AssumeRoleResponse>"
        ).encode()


class _Unrouted(Exception):
    """A request that names no operation; `answer` says why."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[0])
        self.answer = answer


def _route(method: str, path: str, query: str, headers: dict[str, str],
           body: bytes) -> tuple[str, dict[str, Any]]:
    """The operation a request names, and its parameters."""
    if method == "POST" and path == "/" and "x-amz-target" in headers:
        service, _, action = headers["x-amz-target"].partition(".")
        if service != ORGANIZATIONS_TARGET_PREFIX or action not in ORGANIZATIONS_OPERATIONS:
            raise _Unrouted(json11_error(400, "UnknownOperationException",
                                         f"unknown operation {headers['x-amz-target']!r}"))
        return action, _json_object(body, json11_error(400, "InvalidInputException",
                                                       "request body is not a JSON object"))
    if method == "POST" and path == "/":
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action", "")
        if action not in STS_OPERATIONS:
            raise _Unrouted(xml_error(400, "InvalidAction", f"unknown action {action!r}"))
        return action, form
    if method == "POST" and path in _JSON_ROUTES:
        return _JSON_ROUTES[path], _json_object(body, json_error(
            400, "ValidationException", "request body is not a JSON object"))
    if method == "GET" and path.startswith("/jobs/") and path.count("/") == 2:
        return "DescribeClassificationJob", {"jobId": unquote(path[len("/jobs/"):])}
    if method == "GET" and path == "/macie":
        return "GetMacieSession", {}
    if method == "GET" and path == "/members":
        return "ListMembers", {k: v[0] for k, v in parse_qs(query).items()}
    raise _Unrouted(json_error(404, "UnknownOperationException",
                               f"no route for {method} {path}"))


_JSON_ROUTES = {"/jobs/list": "ListClassificationJobs",
                "/findings/statistics": "GetFindingStatistics",
                "/usage/statistics": "GetUsageStatistics"}


def _json_object(body: bytes, invalid: Answer) -> dict[str, Any]:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise _Unrouted(invalid)
    return request


def _token(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _offset(token: Any) -> int:
    """The position a nextToken (from `_token`) names; no token: the start."""
    if token is None or token == "":
        return 0
    try:
        offset = int(base64.b64decode(str(token), validate=True).decode())
    except ValueError:
        raise _Invalid("invalid nextToken") from None
    if offset < 0:
        raise _Invalid("invalid nextToken")
    return offset


def _bounded(value: Any, name: str, maximum: int) -> int:
    """A page size between 1 and `maximum`; absent: `maximum`."""
    if value is None:
        return maximum
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise _Invalid(f"{name} must be an integer between 1 and {maximum}")
    return value


def _first_bucket(job: dict[str, Any] | None, job_id: str) -> str:
    """The name of a job's first bucket (its findings' bucket); `bucket-<jobId>` if unknown."""
    definitions = ((job or {}).get("s3JobDefinition") or {}).get("bucketDefinitions") or []
    for definition in definitions:
        for bucket in definition.get("buckets") or []:
            return str(bucket)
    return f"bucket-{job_id}"


_FINDING_PROPERTIES = ("classificationDetails.jobId", "severity.description", "severity.score",
                       "archived", "type", "resourcesAffected.s3Bucket.name")
_LIST_OPERATORS = ("eq", "eqExactMatch", "neq")
_NUMBER_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b}


def _finding_filter(criterion: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for FindingCriteria.criterion: every condition holds (eq: any value)."""
    if not isinstance(criterion, dict):
        raise _Invalid("findingCriteria.criterion must be a map")
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for name, condition in criterion.items():
        if name not in _FINDING_PROPERTIES:
            raise _Invalid(f"the simulator does not support the finding property {name!r}; "
                           f"it knows {', '.join(_FINDING_PROPERTIES)}")
        if not isinstance(condition, dict) or not condition:
            raise _Invalid(f"the condition for {name} must name an operator")
        for operator, operand in condition.items():
            tests.append(_condition(name, operator, operand))
    return lambda finding: all(test(finding) for test in tests)


def _condition(name: str, operator: str, operand: Any) -> Callable[[dict[str, Any]], bool]:
    if operator in _LIST_OPERATORS:
        if not isinstance(operand, list) or not all(isinstance(v, str) for v in operand):
            raise _Invalid(f"{name}.{operator} must be a list of strings")
        values = frozenset(operand)
        if operator == "neq":
            return lambda finding: str(finding[name]) not in values
        return lambda finding: str(finding[name]) in values
    if operator in _NUMBER_OPERATORS:
        if name != "severity.score":
            raise _Invalid(f"{operator} applies to numeric properties, not {name}")
        if isinstance(operand, bool) or not isinstance(operand, int):
            raise _Invalid(f"{name}.{operator} must be an integer")
        compare = _NUMBER_OPERATORS[operator]
        return lambda finding: compare(finding[name], operand)
    raise _Invalid(f"unknown operator {operator!r} for {name}")


def _usage_total(record: dict[str, Any]) -> Decimal:
    return sum((Decimal(u["estimatedCost"]) for u in record["usage"]), Decimal(0))


def _usage_limited(record: dict[str, Any]) -> bool:
    return any(u.get("serviceLimit", {}).get("isServiceLimited") for u in record["usage"])


def _usage_limit(record: dict[str, Any]) -> int:
    return max((u["serviceLimit"]["value"] for u in record["usage"] if "serviceLimit" in u),
               default=0)


_USAGE_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "accountId": lambda r: r["accountId"], "total": _usage_total,
    "serviceLimitValue": _usage_limit, "freeTrialStartDate": lambda r: r["freeTrialStartDate"],
}
_ORDERED_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "GT": lambda a, b: a > b, "GTE": lambda a, b: a >= b, "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b, "EQ": lambda a, b: a == b, "NE": lambda a, b: a != b,
}


def _usage_filter(condition: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for one UsageStatisticsFilter."""
    if not isinstance(condition, dict):
        raise _Invalid("filterBy items must be objects")
    key, comparator = condition.get("key"), condition.get("comparator", "EQ")
    values = condition.get("values") or []
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _Invalid("filterBy values must be a non-empty list of strings")
    if key == "accountId":
        if comparator not in ("CONTAINS", "EQ", "NE"):
            raise _Invalid("accountId filters take CONTAINS")
        accounts = frozenset(values)
        if comparator == "NE":
            return lambda record: record["accountId"] not in accounts
        return lambda record: record["accountId"] in accounts
    if comparator not in _ORDERED_COMPARATORS or len(values) != 1:
        raise _Invalid(f"a {key} filter takes one value and EQ, NE, GT, GTE, LT or LTE")
    compare, value = _ORDERED_COMPARATORS[comparator], values[0]
    if key == "serviceLimit":
        if value not in ("true", "false") or comparator not in ("EQ", "NE"):
            raise _Invalid("a serviceLimit filter takes EQ or NE and true or false")
        return lambda record: compare(_usage_limited(record), value == "true")
    if key == "total":
        try:
            total = Decimal(value)
        except InvalidOperation:
            raise _Invalid(f"total {value!r} is not a number") from None
        return lambda record: compare(_usage_total(record), total)
    if key == "freeTrialStartDate":
        return lambda record: compare(record["freeTrialStartDate"], value)
    raise _Invalid(f"filterBy key {key!r}: expected accountId, serviceLimit, "
                   "freeTrialStartDate or total")


def _term_matches(job: dict[str, Any], term: dict[str, Any]) -> bool:
    field, values = str(job.get(term.get("key", ""), "")), term.get("values") or []
    comparator = term.get("comparator", "EQ")
    if comparator == "EQ":
        return field in values
    if comparator == "NE":
        return field not in values
    if comparator == "CONTAINS":
        return any(v in field for v in values)
    if comparator == "STARTS_WITH":
        return any(field.startswith(v) for v in values)
    first = values[0] if values else ""
    return {"GT": field > first, "GTE": field >= first, "LT": field < first,
            "LTE": field <= first}.get(comparator, False)


def _matches(job: dict[str, Any], criteria: dict[str, Any]) -> bool:
    """ListJobsFilterCriteria: every include term holds, and no exclude term does."""
    includes = criteria.get("includes") or []
    excludes = criteria.get("excludes") or []
    return (all(_term_matches(job, t) for t in includes)
            and not any(_term_matches(job, t) for t in excludes))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on kept-alive clients too, as a real outage would."""
        with self._connections_lock:
            for connection in list(self.open_connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (timeouts under test) is not the simulator's problem


def json_answer(status: int, payload: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def json_error(status: int, code: str, message: str) -> Answer:
    headers = {"Content-Type": "application/json",
               "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.macie2/"}
    return status, headers, json.dumps({"message": message}).encode()


def json11_error(status: int, code: str, message: str) -> Answer:
    """An error in the JSON 1.1 protocol (AWS Organizations): the code is the body's `__type`."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.1"}, body


def error_answer(operation: str, status: int, code: str, message: str) -> Answer:
    """An error in the protocol of `operation`'s service (STS, Organizations or Macie)."""
    if operation in STS_OPERATIONS:
        return xml_error(status, code, message)
    if operation in ORGANIZATIONS_OPERATIONS:
        return json11_error(status, code, message)
    return json_error(status, code, message)


def xml_error(status: int, code: str, message: str) -> Answer:
    body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>sim</RequestId>"
            "</ErrorResponse>")
    return status, {"Content-Type": "text/xml"}, body.encode()


def _handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without TCP_NODELAY each answer waits
        # for the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, out_headers, payload = sim.handle(self.command, self.path, headers,
                                                          body)
            except Exception as err:  # a simulator bug must still answer, as AWS would
                status, out_headers, payload = json_error(500, "InternalServerException",
                                                          repr(err))
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", "simulated")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
