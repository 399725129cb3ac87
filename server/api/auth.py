"""Who is calling: bearer tokens for users, the service token for internal RPCs."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from google.protobuf import descriptor_pool

from befriend.server.errors import InvalidArgument, PermissionDenied, Unauthenticated
from befriend.v1 import options_pb2

PUBLIC_METHODS = frozenset({"/befriend.v1.AccountService/Register"})
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


@dataclass(frozen=True)
class Principal:
    user_id: str | None  # None for the service principal and anonymous calls
    service: bool = False

    @property
    def scope(self) -> str:
        return "service" if self.service else (self.user_id or "anonymous")


ANONYMOUS = Principal(None)
SERVICE = Principal(None, service=True)
_current: ContextVar[Principal] = ContextVar("befriend_principal", default=ANONYMOUS)


def current() -> Principal:
    return _current.get()


def set_current(principal: Principal) -> object:
    return _current.set(principal)


def internal_methods(service_names: list[str]) -> frozenset[str]:
    """Full method names marked ``option (befriend.v1.internal) = true`` in the protos."""
    pool = descriptor_pool.Default()
    found = set()
    for name in service_names:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            if method.GetOptions().Extensions[options_pb2.internal]:
                found.add(f"/{name}/{method.name}")
    return frozenset(found)


def bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    return None


def classify(method: str, internal: frozenset[str]) -> str:
    if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
        return "public"
    return "internal" if method in internal else "user"


def check_service_token(token: str | None, service_token: str) -> Principal:
    if token is None:
        raise Unauthenticated("internal RPC: missing service token")
    if not service_token or not hmac.compare_digest(token.encode(), service_token.encode()):
        raise PermissionDenied(
            "internal RPC: requires the service token", reason="SERVICE_TOKEN_REQUIRED"
        )
    return SERVICE


def require_user() -> str:
    """The calling user's id (the call layer has authenticated them)."""
    user_id = current().user_id
    if user_id is None:  # only on a misconfigured method table
        raise Unauthenticated("this RPC needs a user's bearer token")
    return user_id


def resolve_name(name: str, field: str, collection: str = "") -> str:
    """Check a resource name of the caller and return its last id.

    ``users/me`` and ``users/{own id}`` stand for the caller; with ``collection``, the name
    must be ``users/{user}/{collection}/{id}`` and ``id`` is returned. Another user's name
    is PERMISSION_DENIED; a malformed one INVALID_ARGUMENT naming ``field``.
    """
    me = require_user()
    parts = name.split("/")
    want = 4 if collection else 2
    if (
        len(parts) != want
        or parts[0] != "users"
        or not all(parts)
        or (collection and parts[2] != collection)
    ):
        shape = f"users/{{user}}/{collection}/{{id}}" if collection else "users/{user_id}"
        raise InvalidArgument.field(field, f"expected '{shape}' ('users/me' for yourself)")
    if parts[1] not in ("me", me):
        raise PermissionDenied(f"{name} is not yours", metadata={"resource": name})
    return parts[-1] if collection else me


def user_id_of(name: str, field: str) -> str:
    """The id in a user resource name "users/{id}" (for internal RPCs naming anyone)."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "users" or not parts[1] or parts[1] == "me":
        raise InvalidArgument.field(field, "expected 'users/{user_id}'")
    return parts[1]
