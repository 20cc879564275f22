"""A simulated Macie API on loopback, speaking the real wire formats botocore parses.

Macie (REST-JSON, as botocore's macie2 model has it): `POST /jobs/list`
(ListClassificationJobs, `nextToken` paging), `GET /jobs/{jobId}` (DescribeClassificationJob)
and `GET /macie` (GetMacieSession); ISO-8601 timestamps; errors as an HTTP status plus
`x-amzn-ErrorType`. STS (query protocol, XML): GetCallerIdentity and AssumeRole, with
credentials that expire. Jobs and Macie's status (ENABLED, PAUSED, or DISABLED: "Macie is not
enabled") are kept per (account, region); the region comes from the SigV4 credential scope and
the account from the access key (an AssumeRole key: the role's account; any other key:
`account_id`).

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

DEFAULT_ACCOUNT = "123456789012"
MAX_PAGE_SIZE = 200
DAY = 86400.0
STS_OPERATIONS = ("GetCallerIdentity", "AssumeRole")
MACIE_STATUSES = ("ENABLED", "PAUSED", "DISABLED")
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


@dataclass(frozen=True)
class Call:
    """One AWS request, as the simulator sees it before answering."""

    operation: str
    account_id: str
    region: str
    # The JSON body (ListClassificationJobs), {"jobId": …} (DescribeClassificationJob) or the
    # form fields (STS).
    params: dict[str, Any]
    auth_problem: str | None  # the error code, if the credentials are missing or expired


@dataclass(frozen=True)
class _Session:
    status: str  # one of MACIE_STATUSES
    created_at: float
    updated_at: float


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

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ request handling

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith("/_simulator/"):
            return self._control(method, path)
        try:
            operation, params = _route(method, path, body)
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
            return json_error(403, call.auth_problem,
                              "the security token included in the request is expired or invalid")
        with self.lock:
            session = self._sessions.get((call.account_id, call.region))
        if session is not None and session.status == "DISABLED":
            return json_error(*NOT_ENABLED)
        if call.operation == "ListClassificationJobs":
            return self._list(call)
        if call.operation == "DescribeClassificationJob":
            return self._describe(call)
        return self._session(call, session or _Session("ENABLED", self._born, self._born))

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
        try:
            offset = int(base64.b64decode(request.get("nextToken") or "MA==").decode())
        except ValueError:
            return json_error(400, "ValidationException", "invalid nextToken")
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
            answer["nextToken"] = base64.b64encode(str(offset + len(page)).encode()).decode()
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


def _route(method: str, path: str, body: bytes) -> tuple[str, dict[str, Any]]:
    """The operation a request names, and its parameters."""
    if method == "POST" and path == "/":
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action", "")
        if action not in STS_OPERATIONS:
            raise _Unrouted(xml_error(400, "InvalidAction", f"unknown action {action!r}"))
        return action, form
    if method == "POST" and path == "/jobs/list":
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise _Unrouted(json_error(400, "ValidationException",
                                       "request body is not a JSON object"))
        return "ListClassificationJobs", request
    if method == "GET" and path.startswith("/jobs/") and path.count("/") == 2:
        return "DescribeClassificationJob", {"jobId": unquote(path[len("/jobs/"):])}
    if method == "GET" and path == "/macie":
        return "GetMacieSession", {}
    raise _Unrouted(json_error(404, "UnknownOperationException",
                               f"no route for {method} {path}"))


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
                status, out_headers, payload = sim.handle(
                    self.command, self.path.split("?", 1)[0], headers, body
                )
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
