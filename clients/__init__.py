"""befriend clients: the typed Python SDK, its errors and the ``befriend`` CLI.

The package never imports the server; ``befriend serve``/``migrate`` load it lazily.
"""

from .errors import (
    Aborted,
    AlreadyExists,
    BefriendError,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    exception_class_for_code,
    from_grpc_error,
)
from .sdk import DEFAULT_TARGET, AccountClient, AsyncAccountClient, AsyncClient, Client

__all__ = [
    "DEFAULT_TARGET",
    "Aborted",
    "AccountClient",
    "AlreadyExists",
    "AsyncAccountClient",
    "AsyncClient",
    "BefriendError",
    "Cancelled",
    "Client",
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
]
