"""Macie's status in an account and region, what every Macie call passes first (`macie`), and
GetMacieSession (`GET /macie`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.demo.simulator.wire import (
    UNAUTHORIZED,
    Answer,
    Call,
    Handler,
    Invalid,
    Service,
    iso,
    json_answer,
    json_error,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

MACIE = Service("macie2", "rest-json", json_error, invalid="ValidationException")
MACIE_STATUSES = ("ENABLED", "PAUSED", "DISABLED")
# Every Macie call in an account and region where Macie is not enabled gets this answer.
NOT_ENABLED = (401, "AccessDeniedException", "Macie is not enabled.")


@dataclass(frozen=True)
class Session:
    status: str  # one of MACIE_STATUSES
    created_at: float
    updated_at: float


# A Macie operation's handler: it is also given Macie's session in the caller's account and
# region (never DISABLED).
MacieHandler = Callable[["Simulator", Call, Session], Answer]


def session_of(sim: Simulator, account: str, region: str) -> Session:
    """Macie's session in `account` and `region` (called under the lock); none set: ENABLED
    since the simulator started."""
    return sim._sessions.get((account, region)) or Session("ENABLED", sim._born, sim._born)


def macie(handler: MacieHandler) -> Handler:
    """The handler of a Macie operation, behind what every Macie call passes first: valid
    credentials, then Macie enabled in the account and region ("Macie is not enabled"
    otherwise); a request the handler finds invalid is answered ValidationException."""

    @functools.wraps(handler)
    def serve(sim: Simulator, call: Call) -> Answer:
        if call.auth_problem:
            return MACIE.error(403, call.auth_problem, UNAUTHORIZED)
        with sim.lock:
            session = session_of(sim, call.account_id, call.region)
        if session.status == "DISABLED":
            return json_error(*NOT_ENABLED)
        try:
            return handler(sim, call, session)
        except Invalid as err:
            return MACIE.error(400, MACIE.invalid, str(err))

    return serve


@macie
def get_macie_session(sim: Simulator, call: Call, session: Session) -> Answer:
    """GetMacieSession."""
    return json_answer(200, {
        "createdAt": iso(session.created_at),
        "findingPublishingFrequency": "FIFTEEN_MINUTES",
        "serviceRole": f"arn:aws:iam::{call.account_id}:role/aws-service-role/"
                       "macie.amazonaws.com/AWSServiceRoleForAmazonMacie",
        "status": session.status,
        "updatedAt": iso(session.updated_at),
    })
