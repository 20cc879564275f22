"""The simulator: its state per (account, region), the request counters, the routing of each
HTTP request to its operation's handler (`routes.ROUTES`), and the HTTP server on loopback."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from exporter.demo.simulator.buckets import DISCOVERY_STATUSES
from exporter.demo.simulator.findings import SEVERITIES
from exporter.demo.simulator.logs import MACIE_LOG_GROUP, LogEvent
from exporter.demo.simulator.members import RELATIONSHIP_STATUSES, Member
from exporter.demo.simulator.organizations import ACCOUNT_STATUSES, OrgAccount
from exporter.demo.simulator.routes import OPERATIONS, ROUTES, Unrouted, route
from exporter.demo.simulator.session import MACIE_STATUSES, Session
from exporter.demo.simulator.usage import USAGE_TYPES, Usage
from exporter.demo.simulator.wire import (
    DAY,
    DEFAULT_ACCOUNT,
    Answer,
    Call,
    json_answer,
    json_error,
)

_CREDENTIAL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/")

Evolve = Callable[[float, "Simulator"], None]


class Simulator:
    """The simulated API. All state changes happen under one lock."""

    # (botocore service name, operation name) of every operation served: `served_operations()`.
    OPERATIONS: ClassVar[frozenset[tuple[str, str]]] = OPERATIONS

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
        self._sessions: dict[tuple[str, str], Session] = {}  # absent: ENABLED since _born
        # (account, region) → (jobId, severity, archived) → number of findings
        self._findings: dict[tuple[str, str], Counter[tuple[str, str, bool]]] = {}
        # (account, region or None for every region) → usage type → usage
        self._usage: dict[tuple[str, str | None], dict[str, Usage]] = {}
        # (administrator, region) → member account → relationship
        self._members: dict[tuple[str, str], dict[str, Member]] = {}
        # (account, region) -> bucket name -> BucketMetadata; and automated discovery's
        # (status, when it last changed) per account and region (absent: DISABLED).
        self._buckets: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._discovery: dict[tuple[str, str], tuple[str, float]] = {}
        # (account, region) → log group → log stream → events, in the order written
        self._logs: dict[tuple[str, str], dict[str, dict[str, list[LogEvent]]]] = {}
        self._log_event_ids = itertools.count(1)
        self._org_management: str | None = None
        self._org_accounts: dict[str, OrgAccount] = {}
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
            session = self._sessions.get(key) or Session("ENABLED", self._born, self._born)
            if session.status == status:
                return
            created = now if session.status == "DISABLED" else session.created_at
            self._sessions[key] = Session(status, created, now)

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
            self._usage.setdefault((account_id, region), {})[usage_type] = Usage(
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
            members[member_account] = Member(relationship_status, invited, now)

    def put_bucket(self, region: str, bucket: dict[str, Any]) -> None:
        """A bucket DescribeBuckets lists (`make_bucket`), in its owner's account."""
        with self.lock:
            self._buckets.setdefault((bucket["accountId"], region), {})[
                bucket["bucketName"]] = dict(bucket)

    def remove_bucket(self, region: str, account_id: str, name: str) -> None:
        with self.lock:
            self._buckets.get((account_id, region), {}).pop(name, None)

    def set_automated_discovery(self, account_id: str, region: str, status: str) -> None:
        """Automated sensitive data discovery's status for an account in a region."""
        if status not in DISCOVERY_STATUSES:
            raise ValueError(f"status {status!r}: expected one of {DISCOVERY_STATUSES}")
        with self.lock:
            before = self._discovery.get((account_id, region))
            if before is None or before[0] != status:
                self._discovery[(account_id, region)] = (status, self._clock())

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
                account: OrgAccount(status, (names or {}).get(account, f"account-{account}"),
                                     joined[account])
                for account, status in statuses.items()
            }

    def put_log_events(self, region: str, stream: str, events: Iterable[tuple[float, str]],
                       account_id: str | None = None, group: str = MACIE_LOG_GROUP) -> None:
        """Write (timestamp in seconds, message) events to a log stream of `account_id` in
        `region` (CloudWatch Logs), creating the group and the stream if need be. Macie's job
        events go to MACIE_LOG_GROUP, in a stream named after the job (`macie_job_event`)."""
        key = (account_id or self.account_id, region)
        with self.lock:
            written = round(self._clock() * 1000)
            stored = self._logs.setdefault(key, {}).setdefault(group, {}).setdefault(stream, [])
            for timestamp, message in events:
                stored.append(LogEvent(round(timestamp * 1000), message, written,
                                       str(next(self._log_event_ids))))

    def delete_log_group(self, region: str, account_id: str | None = None,
                         group: str = MACIE_LOG_GROUP) -> None:
        """The log group is gone (FilterLogEvents answers ResourceNotFoundException)."""
        with self.lock:
            self._logs.get((account_id or self.account_id, region), {}).pop(group, None)

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
            return self._control(method, path, body)
        try:
            operation, params = route(method, path, query, headers, body)
        except Unrouted as err:
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
        """The simulator's own answer to `call`, from its operation's handler."""
        return ROUTES[call.operation].handler(self, call)

    def _control(self, method: str, path: str, body: bytes = b"") -> Answer:
        if method == "GET" and path == "/_simulator/requests":
            return json_answer(200, self.counts())
        if method == "POST" and path == "/_simulator/reset":
            self.reset_counts()
            return json_answer(200, {})
        if method == "POST" and path == "/_simulator/jobs":
            # {"region": ..., "account_id": ... (optional), "jobs": [make_job(...), ...]}:
            # jobs put (added, or replaced by ID) for a caller in another process.
            try:
                spec = json.loads(body)
                region, jobs = spec["region"], spec["jobs"]
                account = spec.get("account_id")
                if not (isinstance(region, str) and isinstance(jobs, list)
                        and all(isinstance(j, dict) and isinstance(j.get("jobId"), str)
                                for j in jobs)):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return json_error(400, "ValidationException",
                                  "expected {region, jobs: [job with jobId, ...], account_id?}")
            for job in jobs:
                self.put_job(region, job, account)
            return json_answer(200, {"put": len(jobs)})
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
