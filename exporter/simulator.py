"""A simulated Macie API on loopback, speaking the real wire formats botocore parses.

Macie (REST-JSON): `POST /jobs/list` (ListClassificationJobs, `nextToken` paging) and
`GET /jobs/{jobId}` (DescribeClassificationJob), ISO-8601 timestamps, errors as an HTTP status
plus `x-amzn-ErrorType`. STS (query protocol, XML): GetCallerIdentity and AssumeRole, with
credentials that expire. Jobs are kept per (account, region); the region comes from the SigV4
credential scope and the account from the access key. `--demo` runs it with `DemoAccount`;
tests drive it with `put_job`, `remove_job` and `faults`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

DEFAULT_ACCOUNT = "123456789012"
DEMO_ACCESS_KEY = "AKIADEMOMACIEEXPORTER"
DEMO_SECRET_KEY = "demo-secret-key-not-a-real-one"  # noqa: S105 - the simulator's fixed key
MAX_PAGE_SIZE = 200
DAY = 86400.0
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
) -> dict[str, Any]:
    """A DescribeClassificationJob answer (without `jobArn`: the simulator adds it)."""
    created = time.time() - DAY if created_at is None else created_at
    job: dict[str, Any] = {
        "jobId": job_id, "name": name or job_id, "jobStatus": status, "jobType": job_type,
        "createdAt": iso(created), "managedDataIdentifierSelector": selector,
        "initialRun": True, "samplingPercentage": 100,
        "s3JobDefinition": {"bucketDefinitions": [
            {"accountId": DEFAULT_ACCOUNT, "buckets": [f"bucket-{job_id}"]}]},
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


@dataclass
class Faults:
    """Fault injection; tests change these fields directly (reads happen under the lock)."""

    latency: float = 0.0  # seconds added to every request
    page_size_cap: int | None = None  # serve at most this many items per page
    throttle_next: int = 0  # the next N matching requests get ThrottlingException
    throttle_every: int = 0  # every Nth matching request is throttled (2 → half)
    fail_next: int = 0  # the next N matching requests fail with fail_status/fail_code
    fail_status: int = 500
    fail_code: str = "InternalServerException"
    fail_all: bool = False  # every matching request fails with fail_status/fail_code
    operations: set[str] | None = None  # which operations the above apply to (None: all)
    denied: set[str] = field(default_factory=set)  # operations answered AccessDeniedException
    vanished: set[str] = field(default_factory=set)  # job ids listed, but describe → 404
    describe_errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # per job id
    credential_ttl: float = 3600.0  # lifetime of AssumeRole credentials
    regions: set[str] | None = None  # the regions every fault applies to (None: all)
    # Malformed answers, sent with HTTP 200 as they are: the whole list answer, or per job id.
    raw_list: bytes | None = None
    raw_describe: dict[str, bytes] = field(default_factory=dict)
    # Scripted list pages: called with the request's nextToken, returns the answer to send.
    list_script: Callable[[str | None], dict[str, Any]] | None = None
    _seen: int = 0

    def applies(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def pick(self, operation: str) -> tuple[int, str] | None:
        """The (status, code) this request should fail with, if any."""
        if operation in self.denied:
            return 403, "AccessDeniedException" if operation != "AssumeRole" else "AccessDenied"
        if self.operations is not None and operation not in self.operations:
            return None
        self._seen += 1
        if self.fail_all:
            return self.fail_status, self.fail_code
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status, self.fail_code
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return 429, "ThrottlingException"
        if self.throttle_every and self._seen % self.throttle_every == 0:
            return 429, "ThrottlingException"
        return None


Evolve = Callable[[float, "Simulator"], None]


class Simulator:
    """The simulated API. All state changes happen under one lock."""

    def __init__(self, account_id: str = DEFAULT_ACCOUNT, evolve: Evolve | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.account_id = account_id
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.page_sizes: Counter[int] = Counter()  # maxResults values asked for
        self.region_requests: Counter[tuple[str, str]] = Counter()  # (operation, region)
        self.max_in_flight: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._jobs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # Jobs in list order per (account, region), rebuilt after a change.
        self._ordered: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._evolve = evolve
        self._clock = clock
        # access key → (account, expiry or None)
        self._keys: dict[str, tuple[str, float | None]] = {DEMO_ACCESS_KEY: (account_id, None)}
        self._key_ids = itertools.count(1)
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ state, for tests and demo

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

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight.clear()
            self.page_sizes.clear()

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

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ request handling

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and path == "/":
            return self._sts(headers, body)
        if method == "POST" and path == "/jobs/list":
            operation = "ListClassificationJobs"
        elif method == "GET" and path.startswith("/jobs/") and path.count("/") == 2:
            operation = "DescribeClassificationJob"
        else:
            return _json_error(404, "UnknownOperationException", f"no route for {method} {path}")
        with self.lock:
            self.requests[operation] += 1
            self.in_flight[operation] += 1
            self.max_in_flight[operation] = max(self.max_in_flight[operation],
                                                self.in_flight[operation])
            if self._evolve is not None:
                self._evolve(self._clock(), self)
            region = self._caller(headers)[1]
            self.region_requests[(operation, region)] += 1
            applies = self.faults.applies(region)
            fault = self.faults.pick(operation) if applies else None
            latency = self.faults.latency if applies else 0.0
        try:
            if latency:
                time.sleep(latency)
            return self._answer(operation, fault, path, headers, body)
        finally:
            with self.lock:
                self.in_flight[operation] -= 1

    def _answer(self, operation: str, fault: tuple[int, str] | None, path: str,
                headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if fault:
            return _json_error(fault[0], fault[1], f"simulated {fault[1]}")
        account, region, problem = self._caller(headers)
        if problem:
            return _json_error(403, problem, "the security token included in the request is "
                               "expired or invalid")
        if operation == "ListClassificationJobs":
            return self._list(account, region, body)
        return self._describe(account, region, unquote(path[len("/jobs/"):]))

    def _malformed(self, region: str, operation: str, key: str | None,
                   request: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        """A scripted or raw answer, if a fault asks for one in this region."""
        with self.lock:
            faults = self.faults
            if not faults.applies(region):
                return None
            if operation == "ListClassificationJobs":
                if faults.raw_list is not None:
                    return 200, {"Content-Type": "application/json"}, faults.raw_list
                script = faults.list_script
            else:
                raw = faults.raw_describe.get(key or "")
                return (200, {"Content-Type": "application/json"}, raw) if raw else None
        return _json(200, script(request.get("nextToken"))) if script else None

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

    def _list(self, account: str, region: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _json_error(400, "ValidationException", "request body is not valid JSON")
        size = request.get("maxResults", 100)
        with self.lock:
            self.page_sizes[size] += 1
        if not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
            return _json_error(400, "ValidationException",
                               f"maxResults must be between 1 and {MAX_PAGE_SIZE}")
        malformed = self._malformed(region, "ListClassificationJobs", None, request)
        if malformed:
            return malformed
        try:
            offset = int(base64.b64decode(request.get("nextToken") or "MA==").decode())
        except ValueError:
            return _json_error(400, "ValidationException", "invalid nextToken")
        with self.lock:
            cap = self.faults.page_size_cap
            criteria = request.get("filterCriteria") or {}
            if (account, region) not in self._ordered:
                self._ordered[(account, region)] = sorted(
                    self._jobs.get((account, region), {}).values(),
                    key=lambda j: (j["createdAt"], j["jobId"]))
            ordered = self._ordered[(account, region)]
            if criteria:
                ordered = [j for j in ordered if _matches(j, criteria)]
            page = [summary_of(j) for j in ordered[offset:offset + min(size, cap or size)]]
            more = offset + len(page) < len(ordered)
        answer: dict[str, Any] = {"items": page}
        if more:
            answer["nextToken"] = base64.b64encode(str(offset + len(page)).encode()).decode()
        return _json(200, answer)

    def _describe(self, account: str, region: str,
                  job_id: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            job = self._jobs.get((account, region), {}).get(job_id)
            forced = self.faults.describe_errors.get(job_id)
            vanished = job_id in self.faults.vanished
        if forced:
            return _json_error(forced[0], forced[1], f"simulated {forced[1]} for {job_id}")
        malformed = self._malformed(region, "DescribeClassificationJob", job_id, {})
        if malformed:
            return malformed
        if job is None or vanished:
            return _json_error(404, "ResourceNotFoundException", f"job {job_id} not found")
        return _json(200, job)

    def _sts(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action", "")
        if action not in ("GetCallerIdentity", "AssumeRole"):
            return _xml_error(400, "InvalidAction", f"unknown action {action!r}")
        with self.lock:
            self.requests[action] += 1
            fault = self.faults.pick(action)
        if fault:
            return _xml_error(fault[0], fault[1], f"simulated {fault[1]}")
        account, _, problem = self._caller(headers)
        if problem:
            return _xml_error(403, "ExpiredToken", "the security token is expired")
        if action == "GetCallerIdentity":
            return 200, {"Content-Type": "text/xml"}, (
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                f"<GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/demo</Arn>"
                f"<UserId>AIDADEMO</UserId><Account>{account}</Account>"
                "</GetCallerIdentityResult><ResponseMetadata><RequestId>sim</RequestId>"
                "</ResponseMetadata></GetCallerIdentityResponse>"
            ).encode()
        role_arn = form.get("RoleArn", "")
        parts = role_arn.split(":")
        if len(parts) < 6 or not parts[4].isdigit():
            return _xml_error(400, "ValidationError", "invalid RoleArn")
        role_account, session = parts[4], escape(form.get("RoleSessionName", "session"))
        with self.lock:
            key = f"ASIASIM{next(self._key_ids):013d}"
            expiry = self._clock() + self.faults.credential_ttl
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


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _json_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json",
               "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.macie2/"}
    return status, headers, json.dumps({"message": message}).encode()


def _xml_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
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
                status, out_headers, payload = sim.handle(
                    self.command, self.path.split("?", 1)[0], headers, body
                )
            except Exception as err:  # a simulator bug must still answer, as AWS would
                status, out_headers, payload = _json_error(500, "InternalServerException",
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


# ---------------------------------------------------------------- the demo account


class DemoAccount:
    """A realistic account that evolves with time (an `Evolve` hook for the simulator).

    eu-west-1: a fast and a slow one-time scan running (objects to process falling until they
    complete), a daily job cycling IDLE → RUNNING → IDLE with its runs rising, a weekly job whose
    last run had errors, a USER_PAUSED job four days from expiry, a quota-PAUSED job, and a
    history of COMPLETE and CANCELLED jobs. us-east-1: a smaller second region.
    """

    CYCLE = 300.0  # seconds per demo "day" of the scheduled job
    RUNNING_FOR = 120.0

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start

    def populate(self, sim: Simulator) -> None:
        t0 = self.start
        history = [
            ("Quarterly PII sweep 2026-Q1", "COMPLETE", 240), ("Onboarding bucket audit",
             "COMPLETE", 200), ("Données \"clients\" \\ EU", "COMPLETE", 150),
            ("Marketing exports check", "CANCELLED", 120), ("Legacy archive scan", "COMPLETE",
             90), ("Vendor share review", "CANCELLED", 75), ("Quarterly PII sweep 2026-Q2",
             "COMPLETE", 60), ("Log bucket spot check", "COMPLETE", 45),
            ("Test run (aborted)", "CANCELLED", 40), ("Quarterly PII sweep 2026-Q3",
             "COMPLETE", 30), ("Data lake baseline", "COMPLETE", 20),
            ("Support attachments scan", "COMPLETE", 12),
        ]
        for i, (name, status, age_days) in enumerate(history):
            created = t0 - age_days * DAY
            sim.put_job("eu-west-1", make_job(
                f"hist{i:02d}{'0' * 24}"[:32], name, status, created_at=created,
                last_run_time=created + 600, objects_to_process=0 if status == "COMPLETE"
                else 1200 + 37 * i, tags={"team": "privacy", "environment": "prod"},
            ))
        sim.put_job("eu-west-1", make_job(
            "weeklyfinance000000000000000001", "weekly-finance-archive", "IDLE",
            job_type="SCHEDULED", schedule="weekly:MONDAY", created_at=t0 - 180 * DAY,
            runs=25, last_run_time=t0 - 2 * DAY, last_run_error=True,
            tags={"team": "finance", "environment": "prod", "cost-center": "fin-042"},
        ))
        sim.put_job("eu-west-1", make_job(
            "monthlyhr0000000000000000000001", "monthly-hr-records", "IDLE",
            job_type="SCHEDULED", schedule="monthly:1", created_at=t0 - 400 * DAY, runs=13,
            last_run_time=t0 - 21 * DAY, tags={"team": "hr", "environment": "prod"},
        ))
        sim.put_job("eu-west-1", make_job(
            "legalhold0000000000000000000001", "legal-hold-scan", "USER_PAUSED",
            created_at=t0 - 27 * DAY, runs=1, objects_to_process=48211,
            last_run_time=t0 - 27 * DAY, paused_at=t0 - 26 * DAY, expires_at=t0 + 4 * DAY,
            tags={"team": "legal", "environment": "prod"},
        ))
        sim.put_job("eu-west-1", make_job(
            "backupquota00000000000000000001", "bulk-backup-scan", "PAUSED",
            created_at=t0 - 3 * DAY, runs=1, objects_to_process=912334,
            last_run_time=t0 - 3 * DAY, tags={"team": "platform", "environment": "prod"},
        ))
        sim.put_job("us-east-1", make_job(
            "useastbaseline00000000000000001", "us-baseline", "COMPLETE",
            created_at=t0 - 50 * DAY, last_run_time=t0 - 50 * DAY,
        ))
        self(t0, sim)

    def __call__(self, now: float, sim: Simulator) -> None:
        t0, elapsed = self.start, max(0.0, now - self.start)
        for region, job_id, name, total, rate in (
            ("eu-west-1", "datalake000000000000000000000001", "pii-scan-prod-data-lake",
             250000, 70.0),
            ("eu-west-1", "crmexport00000000000000000000001", "crm-exports-deep-scan",
             40000, 2.0),
            ("us-east-1", "useastrun000000000000000000001", "us-customer-uploads",
             90000, 40.0),
        ):
            left = max(0.0, total - rate * elapsed)
            sim.put_job(region, make_job(
                job_id, name, "RUNNING" if left else "COMPLETE", created_at=t0 - 3600,
                runs=1, objects_to_process=round(left), last_run_time=t0 - 3600,
                tags={"team": "privacy", "environment": "prod"},
            ))
        cycles, into = divmod(elapsed + 30.0, self.CYCLE)
        running = into < self.RUNNING_FOR
        sim.put_job("eu-west-1", make_job(
            "dailyuploads0000000000000000001", "daily-customer-uploads",
            "RUNNING" if running else "IDLE", job_type="SCHEDULED", schedule="daily",
            created_at=t0 - 90 * DAY, runs=88 + cycles,
            objects_to_process=round(5000 * (1 - into / self.RUNNING_FOR)) if running else 0,
            last_run_time=now - into, tags={"team": "privacy", "environment": "prod"},
        ))


def add_synthetic_jobs(sim: Simulator, region: str, total: int, active: int) -> None:
    """`total` jobs, `active` of them non-terminal, the rest a COMPLETE/CANCELLED history."""
    now = time.time()
    for i in range(total):
        if i < active:
            status = ("RUNNING", "IDLE", "USER_PAUSED", "PAUSED")[i % 4]
            job = make_job(f"active{i:026d}", f"active-job-{i}", status,
                           job_type="SCHEDULED" if status == "IDLE" else "ONE_TIME",
                           schedule="daily", created_at=now - 3600 - i, objects_to_process=i,
                           last_run_time=now - 600,
                           paused_at=now - DAY if status == "USER_PAUSED" else None,
                           expires_at=now + 29 * DAY if status == "USER_PAUSED" else None,
                           tags={"team": f"team-{i % 7}"})
        else:
            job = make_job(f"hist{i:028d}", f"history-job-{i}",
                           "COMPLETE" if i % 5 else "CANCELLED",
                           created_at=now - DAY * (1 + i % 700),
                           last_run_time=now - DAY * (i % 700),
                           tags={"team": f"team-{i % 7}"})
        sim.put_job(region, job)


def demo_simulator(start: float | None = None) -> Simulator:
    """A simulator holding the demo account."""
    demo = DemoAccount(start)
    sim = Simulator(evolve=demo)
    demo.populate(sim)
    return sim


def main() -> None:
    """`python -m exporter.simulator --port 9999`: run the simulator on its own.

    Without `--jobs` it holds the demo account; with `--jobs N` a synthetic account of N jobs in
    `--region` (benchmarks), `--active` of them non-terminal, every call delayed by `--latency`.
    """
    parser = argparse.ArgumentParser(description="Simulated Macie API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=0, help="synthetic jobs instead of the demo")
    parser.add_argument("--active", type=int, default=300, help="non-terminal synthetic jobs")
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per call")
    args = parser.parse_args()
    if args.jobs:
        sim = Simulator()
        add_synthetic_jobs(sim, args.region, args.jobs, min(args.active, args.jobs))
    else:
        sim = demo_simulator()
    sim.faults.latency = args.latency
    print(sim.start(args.host, args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
