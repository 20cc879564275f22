"""The AWS boundary: the only module that imports botocore.

Shared for the whole process: one botocore session (so botocore's loader and service models
are loaded once), one client per service and region, and one credential provider per account
(an assumed role's credentials are renewed by botocore before they expire, once per account
whatever the number of its regions). A client is not tied to an account: every call is made
inside `MacieTarget._bound()`, which names the target the call is for, and a `before-sign`
handler signs it with that target's credentials. Every HTTP attempt is counted for the target
it was made for.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError

from exporter import __version__
from exporter.counters import ApiRequestCounter
from exporter.logs import fields
from exporter.model import TargetKey

log = logging.getLogger(__name__)

# The largest page the ListClassificationJobs API accepts.
LIST_PAGE_SIZE = 200
# A list that goes on longer than this (100,000 jobs at full pages) is taken as broken.
MAX_LIST_PAGES = 500
IAM_ACTIONS = {
    "ListClassificationJobs": "macie2:ListClassificationJobs",
    "DescribeClassificationJob": "macie2:DescribeClassificationJob",
    "GetMacieSession": "macie2:GetMacieSession",
    "GetFindingStatistics": "macie2:GetFindingStatistics",
    "GetUsageStatistics": "macie2:GetUsageStatistics",
    "ListMembers": "macie2:ListMembers",
    "GetCallerIdentity": "sts:GetCallerIdentity",
    "AssumeRole": "sts:AssumeRole",
    "ListAccounts": "organizations:ListAccounts",
}
# What AWS answers when the credentials are not accepted at all; in a region the account has
# not enabled (an opt-in region), credentials that work elsewhere get these too.
_AUTH_FAILURES = frozenset({"UnrecognizedClientException", "InvalidClientTokenId"})
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
# The largest page ListAccounts accepts.
ACCOUNTS_PAGE_SIZE = 20
_DENIED = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")


class ApiError(Exception):
    """A failed AWS call, after botocore's retries; `code` is the AWS error code."""

    def __init__(self, operation: str, code: str, message: str = "",
                 http_status: int | None = None) -> None:
        super().__init__(f"{operation}: {code}: {message}" if message else f"{operation}: {code}")
        self.operation = operation
        self.code = code
        self.message = message
        self.http_status = http_status

    @property
    def macie_disabled(self) -> bool:
        """Macie is not enabled in this account and region: AWS answers HTTP 401
        AccessDeniedException "Macie is not enabled."; GetMacieSession may also say there is
        no session (ResourceNotFoundException, as moto does)."""
        if self.operation == "GetMacieSession" and self.code == "ResourceNotFoundException":
            return True
        return (self.code == "AccessDeniedException" and self.operation in _MACIE_OPERATIONS
                and (self.http_status == 401 or "macie is not enabled" in self.message.lower()))

    @property
    def auth_failed(self) -> bool:
        """The credentials were not accepted (bad keys, or a region the account has not
        enabled)."""
        return self.code in _AUTH_FAILURES

    @property
    def missing_permission(self) -> str | None:
        """The IAM action to grant when IAM denied access, else None."""
        if self.code in _DENIED and not self.macie_disabled:
            return IAM_ACTIONS.get(self.operation, self.operation)
        return None


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
    # Static credentials (demo mode only); None: the SDK's default credential chain.
    static_credentials: tuple[str, str] | None = None
    # Where AssumeRole and GetCallerIdentity go; None: the partition's default region (never
    # an opt-in region, which an account may not have enabled).
    sts_region: str | None = None

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
_PARSE_ERRORS = (ValueError, TypeError, AttributeError, KeyError)
_MACIE_OPERATIONS = frozenset({"ListClassificationJobs", "DescribeClassificationJob",
                               "GetMacieSession", "GetFindingStatistics", "GetUsageStatistics",
                               "ListMembers"})
# The largest page ListMembers accepts (botocore's model), and the page asked of
# GetUsageStatistics (the model gives no maximum).
MEMBERS_PAGE_SIZE = 25
USAGE_PAGE_SIZE = 25


def _is_json(body: object) -> bool:
    if not isinstance(body, bytes | str) or not body:
        return True  # nothing to parse: botocore's empty answer is the real one
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _error(operation: str, err: Exception) -> ApiError:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # The failing call may be another one than the caller's: an AssumeRole made to renew
        # credentials during a Macie call reports as AssumeRole.
        return ApiError(err.operation_name or operation, error.get("Code") or "Unknown",
                        error.get("Message", ""), status)
    return ApiError(operation, type(err).__name__, str(err))


class _Binding(threading.local):
    """The target the calling thread is making a call for."""

    key: TargetKey | None = None
    credentials: Credentials | None = None
    malformed: bool = False
    calls: int = 0  # HTTP attempts this thread has signed since `Aws.calls_made()` last asked


_bound = _Binding()


class Aws:
    """The process's AWS plumbing: a botocore session, clients, credentials, request counts."""

    def __init__(self, settings: AwsSettings, requests: ApiRequestCounter) -> None:
        self.settings = settings
        self._requests = requests
        self._config = settings.botocore_config()
        self._session = botocore.session.Session()
        if settings.static_credentials:
            self._session.set_credentials(*settings.static_credentials)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._credentials: dict[tuple[str, str | None], Credentials] = {}
        self._caller_account: str | None = None
        # Credentials (by id) that AWS has accepted at least once.
        self._working: set[int] = set()
        self._caller_lock = threading.Lock()

    # ------------------------------------------------------------ event handlers

    def _count(self, event_name: str, response_dict: dict[str, Any] | None = None,
               parsed_response: dict[str, Any] | None = None,
               exception: Exception | None = None, **_: Any) -> None:
        key = _bound.key
        if key is None:
            return
        operation = event_name.rsplit(".", 1)[-1]
        if exception is not None:
            outcome = type(exception).__name__
        elif response_dict is not None and response_dict["status_code"] < 300:
            outcome = "success"
            if _bound.credentials is not None and operation in _MACIE_OPERATIONS:
                self._working.add(id(_bound.credentials))
            if operation in _MACIE_OPERATIONS and not _is_json(response_dict.get("body")):
                # botocore reads a body that is not JSON as an empty answer: flag it.
                outcome = "MalformedResponse"
                _bound.malformed = True
        else:
            error = (parsed_response or {}).get("Error", {})
            status = response_dict["status_code"] if response_dict else 0
            outcome = error.get("Code") or f"HTTP{status}"
        self._requests.inc(key, operation, outcome)

    @staticmethod
    def _sign_as_bound_target(request: Any, **_: Any) -> None:
        _bound.calls += 1
        if _bound.credentials is not None:
            request.context.setdefault("signing", {})["request_credentials"] = _bound.credentials

    # ------------------------------------------------------------ clients and credentials

    def _new_client(self, service: str, region: str, endpoint_url: str | None,
                    **kwargs: Any) -> Any:
        client = self._session.create_client(service, region_name=region, config=self._config,
                                             endpoint_url=endpoint_url, **kwargs)
        client.meta.events.register("response-received", self._count)
        return client

    def client(self, service: str, region: str) -> Any:
        """The shared client of `service` in `region`; its calls are signed per target."""
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                endpoint = {"macie2": self.settings.endpoint_url,
                            "sts": self.settings.sts_endpoint_url,
                            "organizations": self.settings.organizations_endpoint_url,
                            }.get(service)
                try:
                    client = self._new_client(service, region, endpoint)
                except BotoCoreError as err:
                    raise _error("CreateClient", err) from None
                client.meta.events.register("before-sign", self._sign_as_bound_target)
                self._clients[(service, region)] = client
            return client

    def default_credentials(self) -> Credentials | None:
        """The SDK's default credential chain (or the demo's keys); None when it finds none."""
        try:
            return self._session.get_credentials()
        except BotoCoreError as err:
            raise _error("LoadCredentials", err) from None

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
        return self.settings.sts_region or PARTITION_REGIONS.get(partition, fallback)

    @staticmethod
    def calls_made() -> int:
        """AWS calls (attempts) the calling thread signed since it last asked."""
        calls, _bound.calls = _bound.calls, 0
        return calls

    def accepted(self, credentials: Credentials | None) -> bool:
        """True once AWS has answered a call signed with these credentials."""
        return credentials is not None and id(credentials) in self._working

    def caller_account(self, target: MacieTarget) -> str | None:
        """The account of the default credentials (sts:GetCallerIdentity), asked until known;
        None while another target is asking."""
        if self._caller_account is not None:
            return self._caller_account
        if not self._caller_lock.acquire(blocking=False):
            return None
        try:
            if self._caller_account is None:
                answer = target.call("sts", "get_caller_identity", "GetCallerIdentity",
                                     region=self.sts_region("aws", target.key.region))
                self._caller_account = str(answer["Account"])
            return self._caller_account
        finally:
            self._caller_lock.release()


class MacieTarget:
    """The calls of one account x region, made through the shared plumbing."""

    def __init__(self, aws: Aws, key: TargetKey, role_arn: str | None = None,
                 external_id: str | None = None,
                 list_filter: dict[str, Any] | None = None) -> None:
        self.aws = aws
        self.key = key  # re-keyed by the refresher when the account is learned late
        self.role_arn = role_arn
        self.external_id = external_id
        self._list_filter = list_filter
        self._credentials: Credentials | None = None

    @contextmanager
    def _bound(self) -> Iterator[None]:
        if self._credentials is None:
            self._credentials = self.aws.credentials(self.role_arn, self.external_id,
                                                     self.key.region)
        _bound.key, _bound.credentials, _bound.malformed = self.key, self._credentials, False
        try:
            yield
        finally:
            _bound.key = _bound.credentials = None

    def call(self, service: str, method: str, operation: str, region: str | None = None,
             **arguments: Any) -> dict[str, Any]:
        """One API call for this target (in its region unless told), errors as ApiError."""
        try:
            with self._bound():
                client = self.aws.client(service, region or self.key.region)
                answer: dict[str, Any] = dict(getattr(client, method)(**arguments))
                malformed = _bound.malformed
        except (ClientError, BotoCoreError) as err:
            raise _error(operation, err) from None
        except _PARSE_ERRORS as err:
            raise ApiError(operation, "MalformedResponse", str(err)) from None
        if malformed:
            raise ApiError(operation, "MalformedResponse", "the answer is not valid JSON")
        answer.pop("ResponseMetadata", None)
        return answer

    def region_not_enabled(self, err: ApiError) -> bool:
        """True when Macie rejects in an opt-in region credentials it has accepted elsewhere:
        the account has not enabled that region."""
        return (err.auth_failed and err.operation in _MACIE_OPERATIONS
                and self.key.region in OPT_IN_REGIONS and self.aws.accepted(self._credentials))

    def resolve_account(self) -> str | None:
        """The account of a target without a role (GetCallerIdentity), or None if STS fails."""
        try:
            return self.aws.caller_account(self)
        except ApiError as err:
            log.warning("account lookup failed; the account will be taken from job ARNs",
                        extra=fields(region=self.key.region, operation=err.operation,
                                     error_code=err.code))
            return None

    def get_macie_session(self) -> dict[str, Any]:
        return self.call("macie2", "get_macie_session", "GetMacieSession")

    def finding_statistics(self, criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
        """GetFindingStatistics grouped by job: [{groupKey, count}], largest counts first."""
        answer = self.call("macie2", "get_finding_statistics", "GetFindingStatistics",
                           findingCriteria={"criterion": criteria},
                           groupBy="classificationDetails.jobId", size=size,
                           sortCriteria={"attributeName": "count", "orderBy": "DESC"})
        groups = answer.get("countsByGroup") or []
        if not isinstance(groups, list):
            raise ApiError("GetFindingStatistics", "MalformedResponse", "countsByGroup")
        return groups

    def _pages(self, operation: str, method: str, key: str,
               **arguments: Any) -> list[dict[str, Any]]:
        """Every item under `key` of every page, through botocore's paginator."""
        items: list[dict[str, Any]] = []
        try:
            with self._bound():
                pages: Iterator[Any] = iter(self.aws.client("macie2", self.key.region)
                                            .get_paginator(method).paginate(**arguments))
            while True:
                with self._bound():
                    page = next(pages, None)
                    malformed = _bound.malformed
                if page is None:
                    return items
                if malformed:
                    raise ApiError(operation, "MalformedResponse", "the answer is not valid JSON")
                found = page.get(key) or []
                if not isinstance(found, list):
                    raise ApiError(operation, "MalformedResponse", f"{key} is not a list")
                items.extend(item for item in found if isinstance(item, dict))
                if len(items) > MAX_LIST_PAGES * 200:
                    raise ApiError(operation, "TooManyPages", "more items than ever expected")
        except (ClientError, BotoCoreError) as err:
            raise _error(operation, err) from None
        except _PARSE_ERRORS as err:
            raise ApiError(operation, "MalformedResponse", str(err)) from None

    def usage_records(self) -> list[dict[str, Any]]:
        """GetUsageStatistics month to date, every page: one record per account."""
        return self._pages("GetUsageStatistics", "get_usage_statistics", "records",
                           timeRange="MONTH_TO_DATE",
                           PaginationConfig={"PageSize": USAGE_PAGE_SIZE})

    def members(self) -> list[dict[str, Any]]:
        """ListMembers, every page, including accounts no longer associated."""
        return self._pages("ListMembers", "list_members", "members", onlyAssociated="false",
                           PaginationConfig={"PageSize": MEMBERS_PAGE_SIZE})

    def describe_job(self, job_id: str) -> dict[str, Any]:
        return self.call("macie2", "describe_classification_job", "DescribeClassificationJob",
                         jobId=job_id)

    def list_pages(self) -> Iterator[list[Any]]:
        """Every page of JobSummaries, through botocore's paginator at the largest page size.

        A generator: each page is one call, made by whichever thread asks for the next page.
        """
        operation = "ListClassificationJobs"
        arguments: dict[str, Any] = {"PaginationConfig": {"PageSize": LIST_PAGE_SIZE}}
        if self._list_filter:
            arguments["filterCriteria"] = self._list_filter
        # botocore stops a token repeated twice in a row; a longer loop or an endless run of
        # pages (empty ones with a nextToken, say) is stopped here.
        tokens: set[str] = set()
        try:
            with self._bound():
                paginator = self.aws.client("macie2", self.key.region).get_paginator(
                    "list_classification_jobs")
                pages: Iterator[Any] = iter(paginator.paginate(**arguments))
            number = 0
            while True:
                with self._bound():
                    page = next(pages, None)
                    malformed = _bound.malformed
                if page is None:
                    return
                number += 1
                if malformed:
                    raise ApiError(operation, "MalformedResponse", "the answer is not valid JSON")
                found = page.get("items") or []
                if not isinstance(found, list):
                    raise ApiError(operation, "MalformedResponse",
                                   f"items is a {type(found).__name__}, not a list")
                token = page.get("nextToken")
                if token is not None and token in tokens:
                    raise ApiError(operation, "PaginationLoop",
                                   f"nextToken repeated after {number} pages")
                if number >= MAX_LIST_PAGES and token:
                    raise ApiError(operation, "TooManyPages", f"more than {MAX_LIST_PAGES} pages")
                if token is not None:
                    tokens.add(token)
                yield found
        except (ClientError, BotoCoreError) as err:
            raise _error(operation, err) from None
        except _PARSE_ERRORS as err:
            raise ApiError(operation, "MalformedResponse", str(err)) from None


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


def list_organization_accounts(aws: Aws, key: TargetKey, role_arn: str | None,
                               external_id: str | None) -> list[tuple[str, str]]:
    """(account id, status) of every account of the organisation (ListAccounts, every page),
    asked with the discovery role or the exporter's own credentials; calls counted under
    `key`."""
    caller = MacieTarget(aws, key, role_arn, external_id)
    operation = "ListAccounts"
    accounts: list[tuple[str, str]] = []
    try:
        with caller._bound():
            paginator = aws.client("organizations", key.region).get_paginator("list_accounts")
            pages: Iterator[Any] = iter(paginator.paginate(
                PaginationConfig={"PageSize": ACCOUNTS_PAGE_SIZE}))
        while True:
            with caller._bound():
                page = next(pages, None)
            if page is None:
                return accounts
            for account in page.get("Accounts") or []:
                account_id, status = account.get("Id"), account.get("Status")
                if isinstance(account_id, str):
                    accounts.append((account_id, str(status or "")))
    except (ClientError, BotoCoreError) as err:
        raise _error(operation, err) from None
    except _PARSE_ERRORS as err:
        raise ApiError(operation, "MalformedResponse", str(err)) from None
