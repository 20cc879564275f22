"""AWS Organizations (JSON 1.1, `POST /` with `X-Amz-Target`): ListAccounts, the accounts of
the organisation the caller manages; up to 20 a page (the model's maximum, and the default)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.demo.simulator.wire import (
    UNAUTHORIZED,
    Answer,
    Call,
    Handler,
    Invalid,
    Service,
    bounded,
    json11_answer,
    json11_error,
    offset_of,
    token,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

ORGANIZATIONS_TARGET_PREFIX = "AWSOrganizationsV20161128"
ORGANIZATIONS = Service("organizations", "json", json11_error, invalid="InvalidInputException",
                        target_prefix=ORGANIZATIONS_TARGET_PREFIX)
ACCOUNTS_PAGE_SIZE = 20  # ListAccounts: the model's maximum, also the default
ACCOUNT_STATUSES = ("ACTIVE", "SUSPENDED", "PENDING_CLOSURE")  # Organizations' AccountStatus


@dataclass(frozen=True)
class OrgAccount:
    status: str  # one of ACCOUNT_STATUSES
    name: str
    joined_at: float


def _organizations(handler: Handler) -> Handler:
    """The handler of an Organizations operation, behind the caller's credentials being valid;
    a request the handler finds invalid is answered InvalidInputException."""

    @functools.wraps(handler)
    def serve(sim: Simulator, call: Call) -> Answer:
        if call.auth_problem:
            return ORGANIZATIONS.error(403, call.auth_problem, UNAUTHORIZED)
        try:
            return handler(sim, call)
        except Invalid as err:
            return ORGANIZATIONS.error(400, ORGANIZATIONS.invalid, str(err))

    return serve


@_organizations
def list_accounts(sim: Simulator, call: Call) -> Answer:
    """ListAccounts: only the management account may list; in join order."""
    request = call.params
    size = bounded(request.get("MaxResults"), "MaxResults", ACCOUNTS_PAGE_SIZE)
    offset = offset_of(request.get("NextToken"))
    with sim.lock:
        management, accounts = sim._org_management, dict(sim._org_accounts)
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
        answer["NextToken"] = token(offset + len(page))
    return json11_answer(answer)
