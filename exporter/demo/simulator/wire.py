"""What every simulated service shares: the request as the simulator sees it (`Call`), the
answer (`Answer`), the encoders of answers and errors in each wire format, page tokens and
sizes, and the ISO-8601 timestamps Macie and STS send."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

DEFAULT_ACCOUNT = "123456789012"
DAY = 86400.0
Answer = tuple[int, dict[str, str], bytes]  # HTTP status, headers, body
# What a call whose credentials are missing or expired is told (outside STS).
UNAUTHORIZED = "the security token included in the request is expired or invalid"


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


# What answers one operation: the simulator (its state, under `Simulator.lock`) and the call.
Handler = Callable[["Simulator", Call], Answer]


@dataclass(frozen=True)
class Service:
    """One simulated AWS service, as botocore's model describes it."""

    name: str  # botocore's service name: macie2, sts, organizations
    protocol: str  # botocore's: rest-json, query or json (1.1)
    error: Callable[[int, str, str], Answer]  # an error in this protocol: (status, code, text)
    invalid: str = ""  # the error code of a malformed request
    target_prefix: str = ""  # json: `X-Amz-Target` is `<target_prefix>.<operation>`


class Invalid(Exception):
    """A request the service would answer ValidationException (InvalidInputException)."""


def iso(ts: float) -> str:
    """Epoch seconds → the ISO-8601 form Macie sends (`2026-11-22T14:54:28.123Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def json_answer(status: int, payload: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def json_error(status: int, code: str, message: str) -> Answer:
    headers = {"Content-Type": "application/json",
               "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.macie2/"}
    return status, headers, json.dumps({"message": message}).encode()


def json11_answer(payload: Any) -> Answer:
    """A successful answer in the JSON 1.1 protocol (AWS Organizations)."""
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(payload).encode()


def json11_error(status: int, code: str, message: str) -> Answer:
    """An error in the JSON 1.1 protocol (AWS Organizations): the code is the body's `__type`."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.1"}, body


def xml_answer(body: str) -> Answer:
    """A successful answer in the query protocol (STS): an XML document."""
    return 200, {"Content-Type": "text/xml"}, body.encode()


def xml_error(status: int, code: str, message: str) -> Answer:
    body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>sim</RequestId>"
            "</ErrorResponse>")
    return status, {"Content-Type": "text/xml"}, body.encode()


def token(offset: int) -> str:
    """The nextToken of the page that starts at `offset`."""
    return base64.b64encode(str(offset).encode()).decode()


def offset_of(next_token: Any) -> int:
    """The position a nextToken (from `token`) names; no token: the start."""
    if next_token is None or next_token == "":
        return 0
    try:
        offset = int(base64.b64decode(str(next_token), validate=True).decode())
    except ValueError:
        raise Invalid("invalid nextToken") from None
    if offset < 0:
        raise Invalid("invalid nextToken")
    return offset


def bounded(value: Any, name: str, maximum: int) -> int:
    """A page size between 1 and `maximum`; absent: `maximum`."""
    if value is None:
        return maximum
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise Invalid(f"{name} must be an integer between 1 and {maximum}")
    return value
