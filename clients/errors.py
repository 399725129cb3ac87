"""Typed exceptions for befriend RPC failures.

Every gRPC failure the SDK sees is raised as a :class:`BefriendError` subclass, one class
per status code (modelled on googleapis python-api-core ``exceptions.py``). The server's
rich error model (``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer) is
unpacked into plain attributes:

* ``reason`` / ``domain`` / ``metadata`` from the ``google.rpc.ErrorInfo`` detail,
* ``field_violations`` from ``google.rpc.BadRequest``,
* ``retry_delay`` (seconds) from ``google.rpc.RetryInfo``,
* ``details``: every detail message, unpacked when its type is known.

Example::

    try:
        client.account.register(display_name="Ann", phone_numbers=["12"])
    except InvalidArgument as err:
        print(err.reason, [v.field for v in err.field_violations])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "GRPC_DETAILS_METADATA_KEY",
    "Aborted",
    "AlreadyExists",
    "BefriendError",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "exception_class_for_code",
    "from_grpc_error",
    "from_status",
]

#: Trailer that carries the serialized ``google.rpc.Status``.
GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"

# Detail types the server (or a proxy) may attach; anything else stays a packed Any.
_KNOWN_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)

_CODE_TO_CLASS: dict[grpc.StatusCode, type[BefriendError]] = {}
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending request field from ``google.rpc.BadRequest``.

    ``field`` is a path into the request message, e.g. ``"phone_numbers[0]"``.
    """

    field: str
    description: str


class BefriendError(Exception):
    """A failed befriend RPC.

    Attributes:
        code: the gRPC status code.
        message: the human-readable status message.
        reason: ``ErrorInfo.reason`` (UPPER_SNAKE, e.g. ``"IDENTITY_TAKEN"``) or ``None``.
        domain: ``ErrorInfo.domain`` (``"befriend.dev"`` for befriend's own errors) or ``None``.
        metadata: ``ErrorInfo.metadata``.
        field_violations: from ``BadRequest``; empty when the request was not malformed.
        retry_delay: seconds from ``RetryInfo.retry_delay``, or ``None``.
        details: every status detail, unpacked where the type is known.
        rpc_error: the original ``grpc.RpcError``, if any (also the ``__cause__``).
    """

    #: Status code of this class; the base class uses UNKNOWN for unmapped codes.
    grpc_status_code: ClassVar[grpc.StatusCode | None] = None

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    metadata: dict[str, str]
    field_violations: list[FieldViolation]
    retry_delay: float | None
    details: list[Message]
    rpc_error: grpc.RpcError | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("grpc_status_code")
        if code is not None:
            _CODE_TO_CLASS.setdefault(code, cls)

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
        details: Iterable[Message] = (),
        rpc_error: grpc.RpcError | None = None,
    ) -> None:
        super().__init__(message)
        resolved = code or type(self).grpc_status_code or grpc.StatusCode.UNKNOWN
        self.code = resolved
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_delay = retry_delay
        self.details = list(details)
        self.rpc_error = rpc_error

    def __str__(self) -> str:
        head = self.code.name if self.reason is None else f"{self.code.name} {self.reason}"
        return f"{head}: {self.message}" if self.message else head

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, field_violations={self.field_violations!r})"
        )


class Cancelled(BefriendError):
    """CANCELLED: the call was cancelled (usually by the caller)."""

    grpc_status_code = grpc.StatusCode.CANCELLED


class Unknown(BefriendError):
    """UNKNOWN: an unclassified server error."""

    grpc_status_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(BefriendError):
    """INVALID_ARGUMENT: the request is malformed; see ``field_violations``."""

    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(BefriendError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout."""

    grpc_status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(BefriendError):
    """NOT_FOUND: the resource does not exist or is not visible to the caller."""

    grpc_status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BefriendError):
    """ALREADY_EXISTS: e.g. an identity owned by another user (reason IDENTITY_TAKEN)."""

    grpc_status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(BefriendError):
    """PERMISSION_DENIED: the caller may not touch that resource."""

    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(BefriendError):
    """RESOURCE_EXHAUSTED: a quota ran out; ``retry_delay`` says when to come back."""

    grpc_status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(BefriendError):
    """FAILED_PRECONDITION: the system is not in a state required for the call."""

    grpc_status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(BefriendError):
    """ABORTED: a concurrency conflict, e.g. a stale etag (reason ETAG_MISMATCH)."""

    grpc_status_code = grpc.StatusCode.ABORTED


class OutOfRange(BefriendError):
    """OUT_OF_RANGE: e.g. a page token or cursor past the end."""

    grpc_status_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(BefriendError):
    """UNIMPLEMENTED: the server does not offer that method."""

    grpc_status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(BefriendError):
    """INTERNAL: a server bug."""

    grpc_status_code = grpc.StatusCode.INTERNAL


class Unavailable(BefriendError):
    """UNAVAILABLE: the server cannot be reached or is shutting down; safe to retry."""

    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(BefriendError):
    """DATA_LOSS: unrecoverable data loss or corruption."""

    grpc_status_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(BefriendError):
    """UNAUTHENTICATED: no bearer token, or an unknown/revoked one."""

    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


def exception_class_for_code(code: grpc.StatusCode) -> type[BefriendError]:
    """The :class:`BefriendError` subclass for ``code`` (the base class for OK)."""
    return _CODE_TO_CLASS.get(code, BefriendError)


def _unpack_any(packed: AnyPb) -> Message:
    type_name = packed.TypeName()
    for detail_type in _KNOWN_DETAIL_TYPES:
        if detail_type.DESCRIPTOR.full_name == type_name:
            message = detail_type()
            if packed.Unpack(message):
                return message
    return packed


def _status_from_trailer(trailing: Iterable[Any] | None) -> status_pb2.Status | None:
    for item in trailing or ():
        key, value = item[0], item[1]
        if key == GRPC_DETAILS_METADATA_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.MergeFromString(value)
            except DecodeError:
                return None
            return status
    return None


def _call_attr(err: grpc.RpcError, name: str) -> Any:
    """Call ``err.<name>()`` if the error is also a ``grpc.Call`` (bare RpcErrors are not)."""
    method = getattr(err, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # pragma: no cover - defensive: a half-built call object
        return None


def from_status(
    code: grpc.StatusCode,
    message: str,
    details: Iterable[AnyPb] = (),
    *,
    rpc_error: grpc.RpcError | None = None,
) -> BefriendError:
    """Build the :class:`BefriendError` subclass for ``code`` with ``details`` unpacked."""
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    unpacked: list[Message] = []
    for packed in details:
        detail = _unpack_any(packed)
        unpacked.append(detail)
        if isinstance(detail, error_details_pb2.ErrorInfo) and reason is None:
            reason = detail.reason or None
            domain = detail.domain or None
            metadata = dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations.extend(
                FieldViolation(field=v.field, description=v.description)
                for v in detail.field_violations
            )
        elif isinstance(detail, error_details_pb2.RetryInfo) and retry_delay is None:
            retry_delay = detail.retry_delay.ToTimedelta().total_seconds()
    cls = exception_class_for_code(code)
    return cls(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
        details=unpacked,
        rpc_error=rpc_error,
    )


def from_grpc_error(err: grpc.RpcError | grpc.aio.AioRpcError) -> BefriendError:
    """Convert a sync or asyncio gRPC error into the matching :class:`BefriendError`.

    The status code and message come from the call itself; the ``google.rpc.Status`` in the
    ``grpc-status-details-bin`` trailer (if any) supplies the details. If the trailer's code
    disagrees with the call's (a proxy rewrote it), the call's code wins.
    """
    raw_code = _call_attr(err, "code")
    code = raw_code if isinstance(raw_code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    raw_message = _call_attr(err, "details")
    message = raw_message if isinstance(raw_message, str) else ""
    status = _status_from_trailer(_call_attr(err, "trailing_metadata"))
    details: list[AnyPb] = []
    if status is not None:
        details = list(status.details)
        if not message:
            message = status.message
        if raw_code is None:
            code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    if not message and raw_code is None:
        message = str(err)
    return from_status(code, message, details, rpc_error=err)
