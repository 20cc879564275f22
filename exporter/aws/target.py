"""The calls of one account x region, made through the process's shared plumbing
(exporter.aws.session): one call, or the next page of a paged operation (the one paginate
helper, on botocore's paginators), signed with the target's credentials and counted for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from exporter.aws.errors import ApiError
from exporter.aws.operations import MACIE, Operation
from exporter.aws.session import OPT_IN_REGIONS, PARSE_ERRORS, Aws, binding, error_of
from exporter.logs import fields
from exporter.model import TargetKey

log = logging.getLogger(__name__)

# A paged answer that goes on longer than this is taken as broken (100,000 jobs at full pages).
MAX_PAGES = 500


class Pages:
    """A cursor over the pages of one paged call: each `AwsTarget.next_page` is one call."""

    def __init__(self, operation: Operation, arguments: Mapping[str, Any]) -> None:
        if operation.items is None:
            raise ValueError(f"{operation.name} is not declared as a paged operation")
        self.operation = operation
        self.arguments = dict(arguments)
        self.number = 0  # pages read so far
        self._pages: Iterator[Any] | None = None
        self._tokens: set[str] = set()


class AwsTarget:
    """One account x region: its credentials, and its calls through the shared clients."""

    def __init__(self, aws: Aws, key: TargetKey, role_arn: str | None = None,
                 external_id: str | None = None) -> None:
        self.aws = aws
        self.key = key  # re-keyed by the engine when the account is learned late
        self.role_arn = role_arn
        self.external_id = external_id
        self._credentials: Credentials | None = None

    @contextmanager
    def _bound(self) -> Iterator[None]:
        if self._credentials is None:
            self._credentials = self.aws.credentials(self.role_arn, self.external_id,
                                                     self.key.region)
        binding.key, binding.credentials, binding.malformed = self.key, self._credentials, False
        try:
            yield
        finally:
            binding.key = binding.credentials = None

    def call(self, operation: Operation, region: str | None = None,
             **arguments: Any) -> dict[str, Any]:
        """One API call for this target (in its region unless told), errors as ApiError."""
        try:
            with self._bound():
                client = self.aws.client(operation.service, region or self.key.region)
                answer: dict[str, Any] = dict(getattr(client, operation.method)(**arguments))
                malformed = binding.malformed
        except (ClientError, BotoCoreError) as err:
            raise error_of(operation, err) from None
        except PARSE_ERRORS as err:
            raise ApiError.of(operation, "MalformedResponse", str(err)) from None
        if malformed:
            raise ApiError.of(operation, "MalformedResponse", "the answer is not valid JSON")
        answer.pop("ResponseMetadata", None)
        return answer

    def next_page(self, pages: Pages, region: str | None = None) -> list[dict[str, Any]] | None:
        """The items of the next page (botocore's paginator at the declared page size), or
        None after the last one. A repeated token, an endless run of pages or an answer of
        the wrong shape fails the call."""
        operation = pages.operation
        key = str(operation.items)
        try:
            if pages._pages is None:
                arguments = dict(pages.arguments)
                if operation.page_size is not None:
                    arguments["PaginationConfig"] = {"PageSize": operation.page_size}
                with self._bound():
                    client = self.aws.client(operation.service, region or self.key.region)
                    pages._pages = iter(self.aws.paginator(client, operation.method)
                                        .paginate(**arguments))
            with self._bound():
                page = next(pages._pages, None)
                malformed = binding.malformed
        except (ClientError, BotoCoreError) as err:
            raise error_of(operation, err) from None
        except PARSE_ERRORS as err:
            raise ApiError.of(operation, "MalformedResponse", str(err)) from None
        if page is None:
            return None
        pages.number += 1
        if malformed:
            raise ApiError.of(operation, "MalformedResponse", "the answer is not valid JSON")
        found = page.get(key) or []
        if not isinstance(found, list):
            raise ApiError.of(operation, "MalformedResponse",
                              f"{key} is a {type(found).__name__}, not a list")
        # botocore stops a token repeated twice in a row; a longer loop or an endless run of
        # pages (empty ones with a nextToken, say) is stopped here.
        token = page.get("nextToken") or page.get("NextToken")
        if token is not None and token in pages._tokens:
            raise ApiError.of(operation, "PaginationLoop",
                              f"nextToken repeated after {pages.number} pages")
        if pages.number >= MAX_PAGES and token:
            raise ApiError.of(operation, "TooManyPages", f"more than {MAX_PAGES} pages")
        if token is not None:
            pages._tokens.add(token)
        return [item for item in found if isinstance(item, dict)]

    def region_not_enabled(self, err: ApiError) -> bool:
        """True when Macie rejects in an opt-in region credentials it has accepted elsewhere:
        the account has not enabled that region."""
        return (err.auth_failed and err.service == MACIE
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
