"""The collectors: one module each, and the registry, the one list of them.

Everything that must agree with the collectors comes from `REGISTRY`: the `--collector.<name>`
options (exporter.config), the families in exposition order (exporter.engine.selfmetrics), the
IAM actions (README and deploy/aws/member-role.yaml, checked by a test) and the operations the
simulator must serve (checked by a test). The order is the exposition's within each section
(per-job families, per-target ones, health); the engine runs Macie's status first, as the
gate of everything else, then the jobs, then the others.
"""

from __future__ import annotations

import re
from typing import Any

from exporter.aws.operations import Operation
from exporter.collectors import (
    automated_discovery,
    buckets,
    findings,
    job_errors,
    jobs,
    members,
    status,
    usage,
)
from exporter.collectors.base import AnyCollector

REGISTRY: tuple[AnyCollector, ...] = (
    jobs.COLLECTOR,
    status.COLLECTOR,
    findings.COLLECTOR,
    usage.COLLECTOR,
    members.COLLECTOR,
    buckets.COLLECTOR,
    automated_discovery.COLLECTOR,
    job_errors.COLLECTOR,
)


def by_name(name: str) -> AnyCollector:
    for collector in REGISTRY:
        if collector.name == name:
            return collector
    raise KeyError(name)


def operations() -> tuple[Operation, ...]:
    """Every AWS operation a registered collector calls, in registry order."""
    return tuple(op for collector in REGISTRY for op in collector.operations)


def iam_policy() -> dict[str, Any]:
    """The least-privilege IAM policy of the registered collectors: one statement for the
    actions on any resource, one per narrower resource (the README shows this document)."""
    by_resource: dict[str, list[str]] = {}
    for operation in operations():
        actions = by_resource.setdefault(operation.resource, [])
        if operation.action not in actions:
            actions.append(operation.action)
    statements = []
    for resource, actions in sorted(by_resource.items(), key=lambda item: item[0] != "*"):
        # Named after the ARN's resource type: classification-job, log-group.
        name = re.split("[:/]", resource.split(":", 5)[5])[0] if resource != "*" else ""
        sid = "MacieExporterRead" + "".join(part.title() for part in name.split("-"))
        statements.append({"Sid": sid, "Effect": "Allow",
                           "Action": actions[0] if len(actions) == 1 else actions,
                           "Resource": resource})
    return {"Version": "2012-10-17", "Statement": statements}
