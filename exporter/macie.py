"""The AWS boundary: the only module that talks to boto3/botocore."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from exporter import __version__
from exporter.collect import ApiRequestCounter
from exporter.config import TargetConfig
from exporter.logs import fields

if TYPE_CHECKING:
    from mypy_boto3_macie2 import Macie2Client
    from mypy_boto3_sts import STSClient

log = logging.getLogger(__name__)

# The largest page the ListClassificationJobs API accepts.
LIST_PAGE_SIZE = 200
# A list that goes on longer than this (100,000 jobs at full pages) is taken as broken.
MAX_LIST_PAGES = 500
IAM_ACTIONS = {
    "ListClassificationJobs": "macie2:ListClassificationJobs",
    "DescribeClassificationJob": "macie2:DescribeClassificationJob",
    "GetCallerIdentity": "sts:GetCallerIdentity",
    "AssumeRole": "sts:AssumeRole",
}
UNKNOWN_ACCOUNT = "unknown"


class ApiError(Exception):
    """A failed AWS call, after botocore's retries; `code` is the AWS error code."""

    def __init__(self, operation: str, code: str, message: str = "") -> None:
        super().__init__(f"{operation}: {code}: {message}" if message else f"{operation}: {code}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def missing_permission(self) -> str | None:
        """The IAM action to grant when AWS denied access, else None."""
        if self.code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return IAM_ACTIONS.get(self.operation, self.operation)
        return None


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How every client is built (one botocore Config for all targets)."""

    endpoint_url: str | None
    retry_mode: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    concurrency: int
    sts_endpoint_url: str | None = None
    # Static credentials (demo mode only); None: the SDK's default credential chain.
    static_credentials: tuple[str, str] | None = None

    def botocore_config(self) -> BotoConfig:
        return BotoConfig(
            # total_max_attempts counts the first attempt; botocore's max_attempts does not.
            retries={"mode": self.retry_mode,  # type: ignore[arg-type]
                     "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max(10, self.concurrency + 2),
            user_agent_extra=f"macie-exporter/{__version__}",
        )


def default_region() -> str | None:
    """The region the SDK would use with no region given (env, config file).

    Raises ValueError when the SDK's own configuration (profile, config file) is broken.
    """
    try:
        return boto3.Session().region_name
    except BotoCoreError as err:
        raise ValueError(str(err)) from None


# What botocore's parsers raise, besides its own errors, on answers of the wrong shape
# (an unparseable timestamp, a map where a list belongs).
_PARSE_ERRORS = (ValueError, TypeError, AttributeError, KeyError)
_JSON_OPERATIONS = frozenset({"ListClassificationJobs", "DescribeClassificationJob"})


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
        # The failing call may be another one than the caller's: an AssumeRole made to renew
        # credentials during a Macie call reports as AssumeRole.
        return ApiError(err.operation_name or operation, error.get("Code") or "Unknown",
                        error.get("Message", ""))
    return ApiError(operation, type(err).__name__, str(err))


class TargetIdentity:
    """Labels of one target; the account is learned once (role ARN or GetCallerIdentity)."""

    def __init__(self, region: str, account_id: str | None) -> None:
        self.region = region
        self.account_id = account_id or UNKNOWN_ACCOUNT


class MacieTarget:
    """One account x region: a Macie client with counted requests and renewing credentials."""

    def __init__(
        self, target: TargetConfig, region: str, settings: ClientSettings,
        requests: ApiRequestCounter, list_filter: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self._list_filter = list_filter
        self.settings = settings
        # arn:aws:iam::<account>:role/<name>
        role_account = target.role_arn.split(":")[4] if target.role_arn else None
        self.identity = TargetIdentity(region, role_account)
        self._requests = requests
        self._config = settings.botocore_config()
        self._lock = threading.Lock()
        self._client: Macie2Client | None = None
        self._asked_sts = False
        self._malformed = threading.local()  # set by _count for the calling thread
        self._session: boto3.Session | None = None

    # ------------------------------------------------------------ clients

    def _count(self, event_name: str, response_dict: dict[str, Any] | None = None,
               parsed_response: dict[str, Any] | None = None,
               exception: Exception | None = None, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if exception is not None:
            outcome = type(exception).__name__
        elif response_dict is not None and response_dict["status_code"] < 300:
            outcome = "success"
            if operation in _JSON_OPERATIONS and not _is_json(response_dict.get("body")):
                # botocore reads a body that is not JSON as an empty answer: flag it.
                outcome = "MalformedResponse"
                self._malformed.seen = True
        else:
            error = (parsed_response or {}).get("Error", {})
            status = response_dict["status_code"] if response_dict else 0
            outcome = error.get("Code") or f"HTTP{status}"
        self._requests.inc(self.identity, operation, outcome)

    def _instrument(self, client: Any) -> Any:
        client.meta.events.register("response-received", self._count)
        return client

    def _sts_client(self, session: botocore.session.Session, service: str,
                    **kwargs: Any) -> Any:
        return self._instrument(session.create_client(
            service, region_name=self.identity.region, config=self._config,
            endpoint_url=self.settings.sts_endpoint_url, **kwargs,
        ))

    def _make_session(self) -> boto3.Session:
        static = self.settings.static_credentials
        base = botocore.session.Session()
        if static:
            base.set_credentials(*static)
        if not self.target.role_arn:
            return boto3.Session(botocore_session=base, region_name=self.identity.region)
        source = base.get_credentials()
        if source is None:
            raise ApiError("AssumeRole", "NoCredentials", "no source credentials found")
        extra: dict[str, Any] = {"RoleSessionName": f"macie-exporter-{__version__}"}
        if self.target.external_id:
            extra["ExternalId"] = self.target.external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=functools.partial(self._sts_client, base),
            source_credentials=source, role_arn=self.target.role_arn, extra_args=extra,
        )
        assumed = botocore.session.Session()
        # botocore renews DeferredRefreshableCredentials before they expire, on any call.
        assumed._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        return boto3.Session(botocore_session=assumed, region_name=self.identity.region)

    def _get_client(self) -> Macie2Client:
        with self._lock:
            if self._client is None:
                try:
                    self._session = self._make_session()
                except BotoCoreError as err:
                    raise _error("LoadCredentials", err) from None
                self._client = self._instrument(self._session.client(
                    "macie2", config=self._config, endpoint_url=self.settings.endpoint_url,
                ))
            return self._client

    def resolve_account(self) -> str:
        """The target's account: from the role ARN, else sts:GetCallerIdentity.

        GetCallerIdentity is tried once per target; if it fails (no route to STS, say) the
        account stays `unknown` until a described job's ARN tells it (`learn_account`).
        """
        if self.identity.account_id != UNKNOWN_ACCOUNT or self._asked_sts:
            return self.identity.account_id
        self._asked_sts = True
        self._get_client()
        assert self._session is not None
        sts: STSClient = self._instrument(self._session.client(
            "sts", config=self._config, endpoint_url=self.settings.sts_endpoint_url,
        ))
        try:
            self.identity.account_id = sts.get_caller_identity()["Account"]
        except (ClientError, BotoCoreError) as err:
            failure = _error("GetCallerIdentity", err)
            log.warning("account lookup failed; the account will be taken from job ARNs",
                        extra=fields(region=self.identity.region, operation=failure.operation,
                                     error_code=failure.code))
        return self.identity.account_id

    def learn_account(self, account_id: str) -> None:
        """Adopt the account seen in a job ARN when STS could not tell it."""
        if self.identity.account_id == UNKNOWN_ACCOUNT:
            self.identity.account_id = account_id

    # ------------------------------------------------------------ Macie calls

    def _check_body(self, operation: str) -> None:
        """Raise if the answer this thread just got was not JSON (see _count)."""
        if getattr(self._malformed, "seen", False):
            self._malformed.seen = False
            raise ApiError(operation, "MalformedResponse", "the answer is not valid JSON")

    def list_pages(self) -> Iterator[list[Any]]:
        """Every page of JobSummaries, through botocore's paginator at the largest page size.

        A generator, so that a refresh holds one page at a time, not every summary.
        """
        client = self._get_client()
        paginator = client.get_paginator("list_classification_jobs")
        arguments: dict[str, Any] = {"PaginationConfig": {"PageSize": LIST_PAGE_SIZE}}
        if self._list_filter:
            arguments["filterCriteria"] = self._list_filter
        # botocore stops a token repeated twice in a row; a longer loop or an endless run of
        # pages (empty ones with a nextToken, say) is stopped here.
        tokens: set[str] = set()
        self._malformed.seen = False
        try:
            pages: Iterator[Any] = iter(paginator.paginate(**arguments))
            for number, page in enumerate(pages, start=1):
                self._check_body("ListClassificationJobs")
                found = page.get("items") or []
                if not isinstance(found, list):
                    raise ApiError("ListClassificationJobs", "MalformedResponse",
                                   f"items is a {type(found).__name__}, not a list")
                token = page.get("nextToken")
                if token is not None and token in tokens:
                    raise ApiError("ListClassificationJobs", "PaginationLoop",
                                   f"nextToken repeated after {number} pages")
                if number >= MAX_LIST_PAGES and token:
                    raise ApiError("ListClassificationJobs", "TooManyPages",
                                   f"more than {MAX_LIST_PAGES} pages")
                if token is not None:
                    tokens.add(token)
                yield found
        except (ClientError, BotoCoreError) as err:
            raise _error("ListClassificationJobs", err) from None
        except _PARSE_ERRORS as err:
            raise ApiError("ListClassificationJobs", "MalformedResponse", str(err)) from None

    def describe_job(self, job_id: str) -> dict[str, Any]:
        client = self._get_client()
        self._malformed.seen = False
        try:
            answer: dict[str, Any] = dict(client.describe_classification_job(jobId=job_id))
        except (ClientError, BotoCoreError) as err:
            raise _error("DescribeClassificationJob", err) from None
        except _PARSE_ERRORS as err:
            raise ApiError("DescribeClassificationJob", "MalformedResponse", str(err)) from None
        self._check_body("DescribeClassificationJob")
        answer.pop("ResponseMetadata", None)
        return answer
