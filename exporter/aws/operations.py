"""An AWS operation as the exporter declares it: its service, its name, the IAM action (and
resource) it needs, and the page size it is asked with. Collectors declare theirs; the IAM
policy, the "Macie is not enabled" handling and the simulator's contract derive from them."""

from __future__ import annotations

from dataclasses import dataclass

from botocore import xform_name

MACIE = "macie2"


@dataclass(frozen=True, slots=True)
class Operation:
    service: str  # botocore's service name: "macie2", "sts", "organizations", "logs"
    name: str  # the API's operation name: "ListFindings"
    action: str  # the IAM action that allows it: "macie2:ListFindings"
    resource: str = "*"  # the IAM resource it needs
    page_size: int | None = None  # what each page asks for (paged operations only)
    # The key of the list in each page (paged operations only): "items", "members".
    items: str | None = None

    @property
    def method(self) -> str:
        """The botocore client's method: `list_findings`."""
        return str(xform_name(self.name))


# The AWS layer's own operations (credentials and identity).
GET_CALLER_IDENTITY = Operation("sts", "GetCallerIdentity", "sts:GetCallerIdentity")
ASSUME_ROLE = Operation("sts", "AssumeRole", "sts:AssumeRole")
OWN_OPERATIONS = (GET_CALLER_IDENTITY, ASSUME_ROLE)
