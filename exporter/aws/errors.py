"""A failed AWS call, with what the exporter needs to know about it."""

from __future__ import annotations

from exporter.aws.operations import MACIE, OWN_OPERATIONS, Operation

# What AWS answers when the credentials are not accepted at all; in a region the account has
# not enabled (an opt-in region), credentials that work elsewhere get these too.
_AUTH_FAILURES = frozenset({"UnrecognizedClientException", "InvalidClientTokenId"})
_DENIED = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")
_OWN = {operation.name: operation for operation in OWN_OPERATIONS}


class ApiError(Exception):
    """A failed AWS call, after botocore's retries; `code` is the AWS error code.

    `service` and `action` come from the declared operation the call was made for (an
    AssumeRole made to renew credentials during a Macie call reports as AssumeRole).
    """

    def __init__(self, operation: str, code: str, message: str = "",
                 http_status: int | None = None, *, service: str = "",
                 action: str | None = None) -> None:
        super().__init__(f"{operation}: {code}: {message}" if message else f"{operation}: {code}")
        self.operation = operation
        self.code = code
        self.message = message
        self.http_status = http_status
        own = _OWN.get(operation)
        self.service = own.service if own else service
        self.action = own.action if own else action

    @classmethod
    def of(cls, operation: Operation, code: str, message: str = "") -> ApiError:
        return cls(operation.name, code, message, service=operation.service,
                   action=operation.action)

    @property
    def macie_disabled(self) -> bool:
        """Macie is not enabled in this account and region: AWS answers HTTP 401
        AccessDeniedException "Macie is not enabled." (the status collector also takes a
        missing session, ResourceNotFoundException, as moto answers)."""
        if self.service != MACIE:
            return False
        return (self.code == "AccessDeniedException"
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
            return self.action or self.operation
        return None
