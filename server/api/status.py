"""The one error-mapping layer: ServiceError -> google.rpc.Status with ErrorInfo/BadRequest."""

from __future__ import annotations

from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from befriend.server.errors import ServiceError

# grpc-stubs types the aio context generically and lacks abort_with_status.
Context: TypeAlias = "aio.ServicerContext[Any, Any]"


async def abort(context: Context, status: grpc.Status) -> NoReturn:
    """Abort the call with a rich status (raises grpc.aio.AbortError)."""
    await context.abort_with_status(status)  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")  # pragma: no cover


DOMAIN = "befriend.dev"


def to_status(code: grpc.StatusCode, message: str, reason: str, **extra: object) -> grpc.Status:
    """A grpc.Status carrying google.rpc.Status with one ErrorInfo (plus extra details)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    metadata = extra.get("metadata")
    if isinstance(metadata, dict):
        info.metadata.update({str(k): str(v) for k, v in metadata.items()})
    status.details.add().Pack(info)
    violations = extra.get("violations")
    if violations:
        bad = error_details_pb2.BadRequest()
        for field, description in violations:  # type: ignore[attr-defined]
            bad.field_violations.add(field=field, description=description)
        status.details.add().Pack(bad)
    retry_after = extra.get("retry_after")
    if isinstance(retry_after, int | float):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


def from_service_error(err: ServiceError) -> grpc.Status:
    return to_status(
        getattr(grpc.StatusCode, err.code),
        err.message,
        err.reason,
        metadata=err.metadata,
        violations=[(v.field, v.description) for v in err.violations],
        retry_after=err.retry_after,
    )


def internal_error() -> grpc.Status:
    return to_status(grpc.StatusCode.INTERNAL, "internal error; it has been logged", "INTERNAL")
