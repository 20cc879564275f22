"""The process's AWS plumbing: one botocore session (so botocore's loader and service models
are loaded once), one client per service and region, and one credential provider per account
(an assumed role's credentials are renewed by botocore before they expire, once per account
whatever the number of its regions). A client is not tied to an account: every call is made
inside `AwsTarget._bound()` (exporter.aws.target), which names the target the call is for, and
a `before-sign` handler signs it with that target's credentials. Every HTTP attempt is counted
for the target it was made for.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import botocore.session
import botocore.utils
from botocore.config import Config as BotoConfig
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError

from exporter import __version__
from exporter.aws.counting import ApiRequestCounter
from exporter.aws.errors import ApiError
from exporter.aws.operations import GET_CALLER_IDENTITY, MACIE, Operation
from exporter.model import TargetKey

if TYPE_CHECKING:
    from exporter.aws.target import AwsTarget

log = logging.getLogger(__name__)

# Regions an account must opt in to (disabled by default): the only regions where rejected
# credentials can mean "not enabled for this account" rather than bad credentials.
OPT_IN_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-west-1", "eu-central-2",
    "eu-south-1", "eu-south-2", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
})
# STS and Organizations per partition when the exporter has no region of its own: a region
# every account has.
PARTITION_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}
# How long a failed AssumeRole is not tried again (calls in between fail with its error).
ASSUME_ROLE_BACKOFF = 60.0
# Protocols whose answers are JSON: a body that does not parse is flagged (botocore reads it
# as an empty answer).
_JSON_PROTOCOLS = frozenset({"json", "rest-json"})


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """How every client is built (one botocore Config for the process)."""

    endpoint_url: str | None
    retry_mode: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    # HTTP connections each client may keep: the calls in flight at once, plus a margin.
    max_pool_connections: int = 10
    sts_endpoint_url: str | None = None
    organizations_endpoint_url: str | None = None
    logs_endpoint_url: str | None = None  # CloudWatch Logs (the job errors collector)
    # Static credentials (demo mode only); None: the SDK's default credential chain.
    static_credentials: tuple[str, str] | None = None
    # Where AssumeRole and GetCallerIdentity go; None: the partition's default region (never
    # an opt-in region, which an account may not have enabled).
    sts_region: str | None = None

    def endpoint(self, service: str) -> str | None:
        """The endpoint set for `service`; None: botocore's own resolution (which reads
        AWS_ENDPOINT_URL_<SERVICE> and AWS_ENDPOINT_URL)."""
        return {"macie2": self.endpoint_url, "sts": self.sts_endpoint_url,
                "organizations": self.organizations_endpoint_url,
                "logs": self.logs_endpoint_url}.get(service)

    def botocore_config(self) -> BotoConfig:
        return BotoConfig(
            # total_max_attempts counts the first attempt; botocore's max_attempts does not.
            retries={"mode": self.retry_mode,  # type: ignore[arg-type]
                     "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            user_agent_extra=f"macie-exporter/{__version__}",
        )


def available_regions(partition: str = "aws") -> tuple[str, ...]:
    """Every region where botocore lists macie2 in `partition`."""
    regions = botocore.session.Session().get_available_regions("macie2", partition)
    return tuple(sorted(regions))


def partition_of(arn: str | None) -> str:
    """`aws`, `aws-cn`, `aws-us-gov`, ... from an ARN; `aws` when there is none."""
    return arn.split(":")[1] if arn and arn.count(":") >= 5 else "aws"


def default_region() -> str | None:
    """The region the SDK would use with no region given (env, config file).

    Raises ValueError when the SDK's own configuration (profile, config file) is broken.
    """
    try:
        session = botocore.session.Session()
        session.get_scoped_config()  # raises when the profile or the config file is broken
        region = session.get_config_variable("region")
    except BotoCoreError as err:
        raise ValueError(str(err)) from None
    return str(region) if region else None


# What botocore's parsers raise, besides its own errors, on answers of the wrong shape
# (an unparseable timestamp, a map where a list belongs).
PARSE_ERRORS = (ValueError, TypeError, AttributeError, KeyError)


def _unread(parsed: dict[str, Any] | None, body: object) -> bool:
    """True when a JSON answer's body is not JSON (botocore reads it as an empty answer). The
    body is parsed again only when botocore's answer holds nothing besides its metadata."""
    if parsed and any(key != "ResponseMetadata" for key in parsed):
        return False
    if not isinstance(body, bytes | str) or not body:
        return False  # nothing to parse: botocore's empty answer is the real one
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def parse_timestamp(value: Any) -> datetime.datetime:
    """botocore's timestamp parser, with ISO 8601 strings (what Macie, STS and Organizations
    send: `2026-11-30T10:58:09.259Z`) read by `datetime.fromisoformat`. The datetime is the same
    instant; botocore's own parser (dateutil) costs a fifth of a Macie call's CPU. Anything else
    (epoch seconds, other formats, bad values) goes to botocore's parser, errors included."""
    if isinstance(value, str) and value[4:5] == "-" and value[:4].isdigit():
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
    return botocore.utils.parse_timestamp(value)


def error_of(operation: Operation, err: Exception) -> ApiError:
    """`err`, raised by botocore for a call of `operation`, as an ApiError."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # The failing call may be another one than the caller's: an AssumeRole made to renew
        # credentials during a Macie call reports as AssumeRole.
        name = err.operation_name or operation.name
        return ApiError(name, error.get("Code") or "Unknown", error.get("Message", ""),
                        status, service=operation.service, action=operation.action)
    return ApiError(operation.name, type(err).__name__, str(err), service=operation.service,
                    action=operation.action)


class _Binding(threading.local):
    """The target the calling thread is making a call for."""

    key: TargetKey | None = None
    credentials: Credentials | None = None
    malformed: bool = False
    calls: int = 0  # HTTP attempts this thread has signed since `Aws.calls_made()` last asked


binding = _Binding()


class Aws:
    """The process's AWS plumbing: a botocore session, clients, credentials, request counts."""

    def __init__(self, settings: AwsSettings, requests: ApiRequestCounter) -> None:
        self.settings = settings
        self._requests = requests
        self._config = settings.botocore_config()
        self._session = botocore.session.Session()
        self._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp)
        if settings.static_credentials:
            self._session.set_credentials(*settings.static_credentials)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        # One paginator per (client, operation): botocore's get_paginator builds a new class
        # each time (~40 us, every list page's first call).
        self._paginators: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._credentials: dict[tuple[str, str | None], Credentials] = {}
        self._caller_account: str | None = None
        # Credentials (by id) that AWS has accepted at least once.
        self._working: set[int] = set()
        self._caller_lock = threading.Lock()

    def reconfigure(self, settings: AwsSettings) -> None:
        """Build clients with `settings` from now on (a reload: endpoint, retries, timeouts,
        connection pool size); calls under way finish on the clients they have. Credentials
        are kept."""
        with self._lock:
            if settings == self.settings:
                return
            self.settings = settings
            self._config = settings.botocore_config()
            self._clients.clear()
            self._paginators.clear()

    # ------------------------------------------------------------ event handlers

    def _count(self, event_name: str, response_dict: dict[str, Any] | None = None,
               parsed_response: dict[str, Any] | None = None,
               exception: Exception | None = None, *, service: str = "",
               json_protocol: bool = False, **_: Any) -> None:
        key = binding.key
        if key is None:
            return
        operation = event_name.rsplit(".", 1)[-1]
        if exception is not None:
            outcome = type(exception).__name__
        elif response_dict is not None and response_dict["status_code"] < 300:
            outcome = "success"
            if binding.credentials is not None and service == MACIE:
                self._working.add(id(binding.credentials))
            if json_protocol and _unread(parsed_response, response_dict.get("body")):
                # botocore reads a body that is not JSON as an empty answer: flag it.
                outcome = "MalformedResponse"
                binding.malformed = True
        else:
            error = (parsed_response or {}).get("Error", {})
            status = response_dict["status_code"] if response_dict else 0
            outcome = error.get("Code") or f"HTTP{status}"
        self._requests.inc(key, operation, outcome)

    @staticmethod
    def _sign_as_bound_target(request: Any, **_: Any) -> None:
        binding.calls += 1
        if binding.credentials is not None:
            request.context.setdefault("signing", {})["request_credentials"] = binding.credentials

    # ------------------------------------------------------------ clients and credentials

    def _new_client(self, service: str, region: str, endpoint_url: str | None,
                    **kwargs: Any) -> Any:
        client = self._session.create_client(service, region_name=region, config=self._config,
                                             endpoint_url=endpoint_url, **kwargs)
        client.meta.events.register("response-received", functools.partial(
            self._count, service=service,
            json_protocol=client.meta.service_model.protocol in _JSON_PROTOCOLS))
        return client

    def client(self, service: str, region: str) -> Any:
        """The shared client of `service` in `region`; its calls are signed per target."""
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                try:
                    client = self._new_client(service, region, self.settings.endpoint(service))
                except BotoCoreError as err:
                    raise error_of(Operation(service, "CreateClient", ""), err) from None
                client.meta.events.register("before-sign", self._sign_as_bound_target)
                self._clients[(service, region)] = client
            return client

    def paginator(self, client: Any, method: str) -> Any:
        """The client's paginator of `method`, made once (paginate() keeps no state in it)."""
        found = self._paginators.get((id(client), method))
        if found is None or found[0] is not client:
            found = (client, client.get_paginator(method))
            with self._lock:  # a client a reload replaced meanwhile is not kept alive
                if client in self._clients.values():
                    self._paginators[(id(client), method)] = found
        return found[1]

    def default_credentials(self) -> Credentials | None:
        """The SDK's default credential chain (or the demo's keys); None when it finds none."""
        try:
            return self._session.get_credentials()
        except BotoCoreError as err:
            raise error_of(Operation("sts", "LoadCredentials", ""), err) from None

    def credentials(self, role_arn: str | None, external_id: str | None,
                    region: str) -> Credentials | None:
        """The credentials of one account: the default chain, or one assumed role shared by
        every region of that account (AssumeRole goes to STS in the first region asked for)."""
        if not role_arn:
            return self.default_credentials()
        with self._lock:
            found = self._credentials.get((role_arn, external_id))
        if found is not None:
            return found
        source = self.default_credentials()
        if source is None:
            raise ApiError("AssumeRole", "NoCredentials", "no source credentials found")
        extra: dict[str, Any] = {"RoleSessionName": f"macie-exporter-{__version__}"}
        if external_id:
            extra["ExternalId"] = external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=functools.partial(
                self._sts_client, self.sts_region(partition_of(role_arn), region)),
            source_credentials=source, role_arn=role_arn, extra_args=extra,
        )
        created = DeferredRefreshableCredentials(
            refresh_using=_BackedOff(fetcher.fetch_credentials), method="assume-role")
        with self._lock:
            return self._credentials.setdefault((role_arn, external_id), created)

    def _sts_client(self, region: str, service: str, **kwargs: Any) -> Any:
        """The AssumeRole fetcher's client (with the source credentials it passes)."""
        with self._lock:  # botocore's session is not documented as safe across threads
            return self._new_client(service, region, self.settings.sts_endpoint_url, **kwargs)

    def sts_region(self, partition: str, fallback: str) -> str:
        """Where AssumeRole and GetCallerIdentity go."""
        return self.settings.sts_region or PARTITION_REGIONS.get(partition, fallback)

    @staticmethod
    def calls_made() -> int:
        """AWS calls (attempts) the calling thread signed since it last asked."""
        calls, binding.calls = binding.calls, 0
        return calls

    def accepted(self, credentials: Credentials | None) -> bool:
        """True once AWS has answered a call signed with these credentials."""
        return credentials is not None and id(credentials) in self._working

    def caller_account(self, target: AwsTarget) -> str | None:
        """The account of the default credentials (sts:GetCallerIdentity), asked until known;
        None while another target is asking."""
        if self._caller_account is not None:
            return self._caller_account
        if not self._caller_lock.acquire(blocking=False):
            return None
        try:
            if self._caller_account is None:
                answer = target.call(GET_CALLER_IDENTITY,
                                     region=self.sts_region("aws", target.key.region))
                self._caller_account = str(answer["Account"])
            return self._caller_account
        finally:
            self._caller_lock.release()


class _BackedOff:
    """An AssumeRole fetch that, once failed, fails again with the same error for a while
    instead of asking STS on every call of every region of the account."""

    def __init__(self, fetch: Any, clock: Any = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: tuple[float, Exception] | None = None

    def __call__(self) -> Any:
        with self._lock:
            if self._failed is not None and self._clock() < self._failed[0]:
                raise self._failed[1]
        try:
            return self._fetch()
        except Exception as err:
            with self._lock:
                self._failed = (self._clock() + ASSUME_ROLE_BACKOFF, err)
            raise
