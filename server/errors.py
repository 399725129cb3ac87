"""Domain errors. Domain services raise these; the call layer maps them to google.rpc.Status.

They carry a status-code *name* (not a grpc type) so domain code stays free of grpc.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a caller is meant to see."""

    code: str = "INTERNAL"
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations)
        self.retry_after = retry_after


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls(
            f"{field}: {description}",
            reason=reason,
            violations=[FieldViolation(field, description)],
            metadata={"field": field},
        )


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class NotFound(ServiceError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class Aborted(ServiceError):
    code = "ABORTED"
    default_reason = "ETAG_MISMATCH"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "QUOTA_EXCEEDED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"
    default_reason = "SHUTTING_DOWN"
