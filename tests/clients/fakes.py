"""A scripted in-process AccountService + health service for the client tests.

The servicer is a plain subclass of the generated ``AccountServiceServicer`` served by a
real ``grpc.aio`` server on 127.0.0.1:0; it answers with the rich error model the befriend
server uses (``google.rpc.Status`` with ErrorInfo / BadRequest / RetryInfo details).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import _async as health_aio  # the asyncio HealthServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from befriend.v1 import account_pb2, account_pb2_grpc, common_pb2

DOMAIN = "befriend.dev"
UNKNOWN_SERVICE = "befriend.v1.NotHere"


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
    retry_delay: float | None = None,
) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason is not None:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
        status.details.add().Pack(info)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
        status.details.add().Pack(bad)
    if retry_delay is not None:
        delay = Duration()
        delay.FromNanoseconds(int(retry_delay * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


@dataclass
class Recorder:
    """What the fake saw: every call's method, request and metadata."""

    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)

    def requests(self, method: str) -> list[Any]:
        return [req for m, req, _ in self.calls if m == method]

    def metadata(self, method: str) -> list[dict[str, str]]:
        return [md for m, _, md in self.calls if m == method]


def _e164(raw: str) -> str:
    digits = "".join(ch for ch in raw if ch.isdigit())
    return "+" + digits if raw.startswith("+") else "+86" + digits


class FakeAccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Scripted behaviour, keyed by request contents (see each method)."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self.users: dict[str, common_pb2.User] = {}
        self.devices = [account_pb2.Device(device_id=f"dev-{i}") for i in range(5)]

    def _record(self, method: str, request, context) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.rec.calls.append((method, request, md))

    async def _require_token(self, context) -> common_pb2.User:
        md = dict(context.invocation_metadata() or ())
        auth = md.get("authorization", "")
        user = self.users.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or user is None:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or unknown token",
                    reason="UNAUTHENTICATED",
                )
            )
        assert user is not None
        return user

    async def Register(self, request, context):
        self._record("Register", request, context)
        self.rec.attempts[request.request_id] += 1
        attempt = self.rec.attempts[request.request_id]
        if request.display_name == "flaky" and attempt <= 2:
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAVAILABLE, "try again", reason="SHUTTING_DOWN")
            )
        if request.display_name == "quota" and attempt == 1:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "slow down",
                    reason="QUOTA_EXCEEDED",
                    retry_delay=0.05,
                )
            )
        if request.display_name == "hard-quota":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more", reason="QUOTA_EXCEEDED")
            )
        bad = [
            (f"phone_numbers[{i}]", f"{p!r} is not a phone number")
            for i, p in enumerate(request.phone_numbers)
            if not any(ch.isdigit() for ch in p)
        ]
        if bad:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid phone number",
                    reason="INVALID_PHONE_NUMBER",
                    violations=bad,
                )
            )
        for phone in request.phone_numbers:
            if "999" in phone:
                await context.abort_with_status(
                    rich_status(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "identity taken",
                        reason="IDENTITY_TAKEN",
                        metadata={"identity": _e164(phone)},
                    )
                )
        user_id = f"u{len(self.users) + 1}"
        user = common_pb2.User(
            name=f"users/{user_id}",
            user_id=user_id,
            display_name=request.display_name,
            phone_numbers=[
                common_pb2.PhoneNumber(raw=p, e164=_e164(p)) for p in request.phone_numbers
            ],
            email_addresses=[
                common_pb2.EmailAddress(raw=e, normalized=e.lower())
                for e in request.email_addresses
            ],
            im_ids=request.im_ids,
            region_code=request.region_code,
            time_zone=request.time_zone or "UTC",
            etag="e1",
        )
        token = f"tok-{user_id}"
        self.users[token] = user
        return account_pb2.RegisterResponse(user=user, access_token=token)

    async def GetMe(self, request, context):
        self._record("GetMe", request, context)
        return account_pb2.GetMeResponse(user=await self._require_token(context))

    async def GetUser(self, request, context):
        self._record("GetUser", request, context)
        if request.name == "users/down":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAVAILABLE, "down for good")
            )
        if request.name == "users/slow":
            await asyncio.sleep(2)
        if request.name == "users/plain":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        if request.name == "users/other":
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.PERMISSION_DENIED, "not yours", reason="PERMISSION_DENIED"
                )
            )
        return account_pb2.GetUserResponse(user=common_pb2.User(name=request.name))

    async def UpdateProfile(self, request, context):
        self._record("UpdateProfile", request, context)
        return account_pb2.UpdateProfileResponse(user=request.user)

    async def ChangePhoneNumber(self, request, context):
        self._record("ChangePhoneNumber", request, context)
        if request.etag != "e1":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.ABORTED, "stale etag", reason="ETAG_MISMATCH")
            )
        return account_pb2.ChangePhoneNumberResponse(user=common_pb2.User(etag="e2"))

    async def RegisterDevice(self, request, context):
        self._record("RegisterDevice", request, context)
        self.rec.attempts[request.request_id] += 1
        if self.rec.attempts[request.request_id] <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return account_pb2.RegisterDeviceResponse(device=request.device)

    async def ListDevices(self, request, context):
        self._record("ListDevices", request, context)
        size = request.page_size or 2
        start = int(request.page_token or "0")
        page = self.devices[start : start + size]
        nxt = str(start + size) if start + size < len(self.devices) else ""
        return account_pb2.ListDevicesResponse(devices=page, next_page_token=nxt)

    async def DeleteAccount(self, request, context):
        self._record("DeleteAccount", request, context)
        return account_pb2.DeleteAccountResponse()


async def start_server(
    recorder: Recorder, health_status: int = health_pb2.HealthCheckResponse.SERVING
) -> tuple[grpc.aio.Server, int]:
    """Start the fake AccountService and a health service on 127.0.0.1:0."""
    server = grpc.aio.server()
    account_pb2_grpc.add_AccountServiceServicer_to_server(FakeAccountServicer(recorder), server)
    health = health_aio.HealthServicer()
    await health.set("", health_status)
    await health.set("befriend.v1.AccountService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class ThreadedServer:
    """The fake server on its own event loop thread, for the blocking client and the CLI."""

    def __init__(self, health_status: int = health_pb2.HealthCheckResponse.SERVING) -> None:
        self.recorder = Recorder()
        self._health_status = health_status
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            start_server(self.recorder, self._health_status), self._loop
        )
        self._server, self.port = fut.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


__all__ = [
    "DOMAIN",
    "UNKNOWN_SERVICE",
    "FakeAccountServicer",
    "Recorder",
    "ThreadedServer",
    "rich_status",
    "start_server",
]
