"""The routing table: every operation the simulator serves, with its service, its handler and,
for a REST-JSON service (Macie), where it is; and how a request finds its operation.

A new operation is a handler (in its service's module) and one entry in `ROUTES`; a new
service is a module with its `Service` and handlers, and their entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from exporter.demo.simulator import (
    buckets,
    findings,
    jobs,
    logs,
    members,
    organizations,
    session,
    sts,
    usage,
)
from exporter.demo.simulator.logs import LOGS
from exporter.demo.simulator.organizations import ORGANIZATIONS
from exporter.demo.simulator.session import MACIE
from exporter.demo.simulator.sts import STS
from exporter.demo.simulator.wire import (
    Answer,
    Handler,
    Service,
    json11_error,
    json_error,
    xml_error,
)


@dataclass(frozen=True)
class Rest:
    """Where a REST-JSON operation is (botocore's `http`): its parameters come from the JSON
    body (POST), the path's `{name}` segments and, with `query`, the query string."""

    method: str
    path: str  # the request URI: `/jobs/{jobId}`
    query: bool = False


@dataclass(frozen=True)
class Operation:
    """One operation the simulator serves."""

    service: Service
    handler: Handler
    rest: Rest | None = None  # REST-JSON only: query and JSON 1.1 operations are `POST /`


# Operation name → what serves it.
ROUTES: dict[str, Operation] = {
    "ListClassificationJobs": Operation(MACIE, jobs.list_classification_jobs,
                                        Rest("POST", "/jobs/list")),
    "DescribeClassificationJob": Operation(MACIE, jobs.describe_classification_job,
                                           Rest("GET", "/jobs/{jobId}")),
    "GetMacieSession": Operation(MACIE, session.get_macie_session, Rest("GET", "/macie")),
    "GetFindingStatistics": Operation(MACIE, findings.get_finding_statistics,
                                      Rest("POST", "/findings/statistics")),
    "GetUsageStatistics": Operation(MACIE, usage.get_usage_statistics,
                                    Rest("POST", "/usage/statistics")),
    "ListMembers": Operation(MACIE, members.list_members, Rest("GET", "/members", query=True)),
    "DescribeBuckets": Operation(MACIE, buckets.describe_buckets,
                                 Rest("POST", "/datasources/s3")),
    "GetAutomatedDiscoveryConfiguration": Operation(
        MACIE, buckets.get_automated_discovery_configuration,
        Rest("GET", "/automated-discovery/configuration")),
    "ListAutomatedDiscoveryAccounts": Operation(
        MACIE, buckets.list_automated_discovery_accounts,
        Rest("GET", "/automated-discovery/accounts", query=True)),
    "GetCallerIdentity": Operation(STS, sts.get_caller_identity),
    "AssumeRole": Operation(STS, sts.assume_role),
    "ListAccounts": Operation(ORGANIZATIONS, organizations.list_accounts),
    "FilterLogEvents": Operation(LOGS, logs.filter_log_events),
}

# (botocore service name, operation name) of every operation served.
OPERATIONS = frozenset((operation.service.name, name) for name, operation in ROUTES.items())
STS_OPERATIONS = tuple(name for name, operation in ROUTES.items() if operation.service is STS)
ORGANIZATIONS_OPERATIONS = tuple(
    name for name, operation in ROUTES.items() if operation.service is ORGANIZATIONS)
# Query protocol: the form's `Action`; JSON 1.1: the `X-Amz-Target` header.
_ACTIONS = frozenset(name for name, operation in ROUTES.items()
                     if operation.service.protocol == "query")
_TARGETS = {f"{operation.service.target_prefix}.{name}": name
            for name, operation in ROUTES.items() if operation.service.protocol == "json"}
# REST-JSON: fixed paths before paths with parameters.
_REST = sorted(((name, operation.rest) for name, operation in ROUTES.items()
                if operation.rest is not None), key=lambda route: "{" in route[1].path)


def served_operations() -> frozenset[tuple[str, str]]:
    """(botocore service name, operation name) of every operation the simulator serves, such
    as ("macie2", "ListClassificationJobs"), ("sts", "AssumeRole") or ("logs",
    "FilterLogEvents")."""
    return OPERATIONS


class Unrouted(Exception):
    """A request that names no operation; `answer` says why."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[0])
        self.answer = answer


def route(method: str, path: str, query: str, headers: dict[str, str],
          body: bytes) -> tuple[str, dict[str, Any]]:
    """The operation a request names, and its parameters."""
    if method == "POST" and path == "/" and "x-amz-target" in headers:
        name = _TARGETS.get(headers["x-amz-target"])
        if name is None:
            raise Unrouted(json11_error(400, "UnknownOperationException",
                                        f"unknown operation {headers['x-amz-target']!r}"))
        service = ROUTES[name].service
        return name, _json_object(body, service.error(400, service.invalid,
                                                      "request body is not a JSON object"))
    if method == "POST" and path == "/":
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action", "")
        if action not in _ACTIONS:
            raise Unrouted(xml_error(400, "InvalidAction", f"unknown action {action!r}"))
        return action, form
    for name, rest in _REST:
        if rest.method != method:
            continue
        path_params = _path_params(rest.path, path)
        if path_params is None:
            continue
        params: dict[str, Any] = {}
        if method == "POST":
            service = ROUTES[name].service
            params = _json_object(body, service.error(400, service.invalid,
                                                      "request body is not a JSON object"))
        params.update(path_params)
        if rest.query:
            params.update({k: v[0] for k, v in parse_qs(query).items()})
        return name, params
    raise Unrouted(json_error(404, "UnknownOperationException",
                              f"no route for {method} {path}"))


def error_answer(operation: str, status: int, code: str, message: str) -> Answer:
    """An error in the protocol of `operation`'s service (STS, Organizations, CloudWatch Logs
    or Macie)."""
    served = ROUTES.get(operation)
    return (served.service.error if served else json_error)(status, code, message)


def _path_params(template: str, path: str) -> dict[str, str] | None:
    """The `{name}` segments of `path` (unquoted) if it has the shape of `template`."""
    want, got = template.split("/"), path.split("/")
    if len(want) != len(got):
        return None
    params = {}
    for pattern, segment in zip(want, got, strict=True):
        if pattern.startswith("{") and pattern.endswith("}"):
            params[pattern[1:-1]] = unquote(segment)
        elif pattern != segment:
            return None
    return params


def _json_object(body: bytes, invalid: Answer) -> dict[str, Any]:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise Unrouted(invalid)
    return request
