"""STS (query protocol, XML): GetCallerIdentity, and AssumeRole, whose credentials name the
role's account and expire after `Simulator.credential_ttl` seconds."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from exporter.demo.simulator.wire import (
    Answer,
    Call,
    Handler,
    Service,
    iso,
    xml_answer,
    xml_error,
)

if TYPE_CHECKING:
    from exporter.demo.simulator.core import Simulator

STS = Service("sts", "query", xml_error)


def _sts(handler: Handler) -> Handler:
    """The handler of an STS operation, behind the caller's credentials being valid."""

    @functools.wraps(handler)
    def serve(sim: Simulator, call: Call) -> Answer:
        if call.auth_problem:
            return xml_error(403, "ExpiredToken", "the security token is expired")
        return handler(sim, call)

    return serve


@_sts
def get_caller_identity(sim: Simulator, call: Call) -> Answer:
    """GetCallerIdentity: the account the access key belongs to."""
    account = call.account_id
    return xml_answer(
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/demo</Arn>"
        f"<UserId>AIDADEMO</UserId><Account>{account}</Account>"
        "</GetCallerIdentityResult><ResponseMetadata><RequestId>sim</RequestId>"
        "</ResponseMetadata></GetCallerIdentityResponse>"
    )


@_sts
def assume_role(sim: Simulator, call: Call) -> Answer:
    """AssumeRole: a new access key of the role's account, expiring."""
    parts = call.params.get("RoleArn", "").split(":")
    if len(parts) < 6 or not parts[4].isdigit():
        return xml_error(400, "ValidationError", "invalid RoleArn")
    role_account = parts[4]
    session = escape(call.params.get("RoleSessionName", "session"))
    with sim.lock:
        key = f"ASIASIM{next(sim._key_ids):013d}"
        expiry = sim._clock() + sim.credential_ttl
        sim._keys[key] = (role_account, expiry)
    return xml_answer(
        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>"
        "<SecretAccessKey>sim-secret</SecretAccessKey><SessionToken>sim-token</SessionToken>"
        f"<Expiration>{iso(expiry)}</Expiration></Credentials>"
        f"<AssumedRoleUser><AssumedRoleId>AROASIM:{session}</AssumedRoleId>"
        f"<Arn>arn:aws:sts::{role_account}:assumed-role/{escape(parts[5])}/{session}</Arn>"
        "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>sim</RequestId>"
        "</ResponseMetadata></AssumeRoleResponse>"
    )
