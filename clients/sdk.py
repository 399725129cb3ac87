"""befriend Python SDK: typed sync and asyncio clients.

::

    async with AsyncClient("127.0.0.1:50051") as client:
        answer = await client.account.register(display_name="Ann", phone_numbers=["+85291234567"])
        me = await client.account.get_me()          # token was taken from the register answer

    with Client("127.0.0.1:50051", token=token) as client:
        for device in client.account.iter_devices():
            print(device.device_id)

Behaviour shared by both clients (one code path builds every request, see ``_AccountCalls``):

* Every RPC except ``Register`` and health checks sends ``authorization: Bearer <token>``.
* Every attempt has a deadline of ``timeout`` seconds.
* Mutations carry a ``request_id``; when none is given a uuid4 is generated once per call, so
  every retry of that call carries the same id and the server answers it idempotently.
* Retries (at most ``retries`` after the first attempt, exponential backoff with full
  jitter) happen only on ``UNAVAILABLE``, and on ``RESOURCE_EXHAUSTED`` when the server
  sent a ``RetryInfo`` (its delay is honoured). Every other failure is raised at once.
* Every failure is raised as a :class:`befriend.clients.errors.BefriendError` subclass.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar, cast

import grpc
import grpc.aio
import tenacity
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from befriend.v1 import account_pb2, common_pb2

from .errors import BefriendError, ResourceExhausted, Unavailable, from_grpc_error

__all__ = [
    "DEFAULT_TARGET",
    "AccountClient",
    "AsyncAccountClient",
    "AsyncClient",
    "Client",
    "ImIdLike",
]

DEFAULT_TARGET = "127.0.0.1:50051"

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)

#: An IM id as a message or as a ``(kind, id)`` pair, e.g. ``("qq", "12345")``.
ImIdLike: TypeAlias = common_pb2.ImId | tuple[str, str]
ChannelOptions: TypeAlias = Sequence[tuple[str, Any]]

_ACCOUNT_SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _account_method(name: str) -> str:
    # KeyError at import time if the contract and the SDK ever disagree on a method name.
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].methods_by_name[name]
    return f"/{_ACCOUNT_SERVICE}/{name}"


# --------------------------------------------------------------------------------------
# Call descriptions and request building (shared by the sync and async clients)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[ReqT, RespT]):
    """One unary RPC to make: full method path, request, response type."""

    method: str
    request: ReqT
    response_type: type[RespT]
    authenticated: bool = True


def _request_id(request_id: str | None) -> str:
    return request_id if request_id else str(uuid.uuid4())


def _im_id(value: ImIdLike) -> common_pb2.ImId:
    if isinstance(value, common_pb2.ImId):
        return value
    kind, ident = value
    return common_pb2.ImId(kind=kind, id=ident)


class _AccountCalls:
    """Builds the ``_Call`` of each AccountService RPC; no I/O here."""

    REGISTER = _account_method("Register")
    GET_ME = _account_method("GetMe")
    GET_USER = _account_method("GetUser")
    UPDATE_PROFILE = _account_method("UpdateProfile")
    CHANGE_PHONE_NUMBER = _account_method("ChangePhoneNumber")
    REGISTER_DEVICE = _account_method("RegisterDevice")
    LIST_DEVICES = _account_method("ListDevices")
    DELETE_ACCOUNT = _account_method("DeleteAccount")

    @staticmethod
    def register(
        *,
        display_name: str,
        phone_numbers: Iterable[str],
        email_addresses: Iterable[str],
        im_ids: Iterable[ImIdLike],
        region_code: str,
        time_zone: str,
        device: account_pb2.Device | None,
        request_id: str | None,
    ) -> _Call[account_pb2.RegisterRequest, account_pb2.RegisterResponse]:
        request = account_pb2.RegisterRequest(
            display_name=display_name,
            phone_numbers=list(phone_numbers),
            email_addresses=list(email_addresses),
            im_ids=[_im_id(i) for i in im_ids],
            region_code=region_code,
            time_zone=time_zone,
            request_id=_request_id(request_id),
        )
        if device is not None:
            request.device.CopyFrom(device)
        return _Call(
            _AccountCalls.REGISTER, request, account_pb2.RegisterResponse, authenticated=False
        )

    @staticmethod
    def get_me() -> _Call[account_pb2.GetMeRequest, account_pb2.GetMeResponse]:
        return _Call(_AccountCalls.GET_ME, account_pb2.GetMeRequest(), account_pb2.GetMeResponse)

    @staticmethod
    def get_user(name: str) -> _Call[account_pb2.GetUserRequest, account_pb2.GetUserResponse]:
        return _Call(
            _AccountCalls.GET_USER,
            account_pb2.GetUserRequest(name=name),
            account_pb2.GetUserResponse,
        )

    @staticmethod
    def update_profile(
        user: common_pb2.User, update_mask: Sequence[str], request_id: str | None
    ) -> _Call[account_pb2.UpdateProfileRequest, account_pb2.UpdateProfileResponse]:
        if isinstance(update_mask, str):
            raise TypeError("update_mask must be a sequence of field paths, not a str")
        request = account_pb2.UpdateProfileRequest(
            user=user,
            update_mask=FieldMask(paths=list(update_mask)),
            request_id=_request_id(request_id),
        )
        return _Call(_AccountCalls.UPDATE_PROFILE, request, account_pb2.UpdateProfileResponse)

    @staticmethod
    def change_phone_number(
        old: str, new: str, etag: str, request_id: str | None
    ) -> _Call[account_pb2.ChangePhoneNumberRequest, account_pb2.ChangePhoneNumberResponse]:
        request = account_pb2.ChangePhoneNumberRequest(
            old_phone_number=old,
            new_phone_number=new,
            etag=etag,
            request_id=_request_id(request_id),
        )
        return _Call(
            _AccountCalls.CHANGE_PHONE_NUMBER, request, account_pb2.ChangePhoneNumberResponse
        )

    @staticmethod
    def register_device(
        device_id: str, sim_id: str, platform: str, request_id: str | None
    ) -> _Call[account_pb2.RegisterDeviceRequest, account_pb2.RegisterDeviceResponse]:
        request = account_pb2.RegisterDeviceRequest(
            device=account_pb2.Device(device_id=device_id, sim_id=sim_id, platform=platform),
            request_id=_request_id(request_id),
        )
        return _Call(_AccountCalls.REGISTER_DEVICE, request, account_pb2.RegisterDeviceResponse)

    @staticmethod
    def list_devices(
        page_size: int, page_token: str
    ) -> _Call[account_pb2.ListDevicesRequest, account_pb2.ListDevicesResponse]:
        request = account_pb2.ListDevicesRequest(page_size=page_size, page_token=page_token)
        return _Call(_AccountCalls.LIST_DEVICES, request, account_pb2.ListDevicesResponse)

    @staticmethod
    def delete_account(
        etag: str, request_id: str | None
    ) -> _Call[account_pb2.DeleteAccountRequest, account_pb2.DeleteAccountResponse]:
        request = account_pb2.DeleteAccountRequest(etag=etag, request_id=_request_id(request_id))
        return _Call(_AccountCalls.DELETE_ACCOUNT, request, account_pb2.DeleteAccountResponse)


def _health_call(service: str) -> _Call[Message, Message]:
    return _Call(
        _HEALTH_CHECK,
        health_pb2.HealthCheckRequest(service=service),
        health_pb2.HealthCheckResponse,
        authenticated=False,
    )


def _health_status_name(response: Message) -> str:
    status = cast(int, response.status)  # type: ignore[attr-defined]
    return cast(str, health_pb2.HealthCheckResponse.ServingStatus.Name(status))


# --------------------------------------------------------------------------------------
# Connection settings, retry policy and transports
# --------------------------------------------------------------------------------------


class _RetryWait(tenacity.wait.wait_base):
    """Honour the server's RetryInfo delay; otherwise exponential backoff, full jitter."""

    def __init__(self, initial: float, maximum: float, max_retry_delay: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=initial, max=maximum)
        self._max_retry_delay = max_retry_delay

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, BefriendError) and exc.retry_delay is not None:
            return max(0.0, min(exc.retry_delay, self._max_retry_delay))
        return float(self._jitter(retry_state))


@dataclass
class _Settings:
    """Everything a transport needs; the token is mutable (Register may set it)."""

    target: str
    token: str | None
    timeout: float
    retries: int
    initial_backoff: float
    max_backoff: float
    max_retry_delay: float
    channel_options: ChannelOptions
    credentials: grpc.ChannelCredentials | None

    def metadata(self, call: _Call[Any, Any]) -> tuple[tuple[str, str], ...]:
        if call.authenticated and self.token:
            return (("authorization", f"Bearer {self.token}"),)
        return ()

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, Unavailable):
            return True
        return (
            isinstance(exc, ResourceExhausted)
            and exc.retry_delay is not None
            and exc.retry_delay <= self.max_retry_delay
        )

    def retry_arguments(self) -> dict[str, Any]:
        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": _RetryWait(self.initial_backoff, self.max_backoff, self.max_retry_delay),
            "retry": tenacity.retry_if_exception(self.is_retryable),
            "reraise": True,
        }

    def after_register(self, response: account_pb2.RegisterResponse) -> None:
        if self.token is None and response.access_token:
            self.token = response.access_token


def _settings(
    target: str,
    token: str | None,
    timeout: float,
    retries: int,
    initial_backoff: float,
    max_backoff: float,
    max_retry_delay: float,
    channel_options: ChannelOptions,
    credentials: grpc.ChannelCredentials | None,
) -> _Settings:
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return _Settings(
        target=target,
        token=token,
        timeout=timeout,
        retries=retries,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_retry_delay=max_retry_delay,
        channel_options=tuple(channel_options),
        credentials=credentials,
    )


class _SyncTransport:
    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._channel: grpc.Channel | None = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            s = self.settings
            options = list(s.channel_options)
            self._channel = (
                grpc.secure_channel(s.target, s.credentials, options=options)
                if s.credentials is not None
                else grpc.insecure_channel(s.target, options=options)
            )
        return self._channel

    def _once(self, call: _Call[ReqT, RespT]) -> RespT:
        callable_ = cast(
            "grpc.UnaryUnaryMultiCallable[ReqT, RespT]",
            self.channel.unary_unary(
                call.method,
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            ),
        )
        try:
            response = callable_(
                call.request,
                timeout=self.settings.timeout,
                metadata=self.settings.metadata(call),
            )
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err
        return response

    def invoke(self, call: _Call[ReqT, RespT]) -> RespT:
        retrying = tenacity.Retrying(**self.settings.retry_arguments())
        response: RespT = retrying(self._once, call)
        return response

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class _AsyncTransport:
    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created lazily so that the channel binds to the event loop that uses it.
        if self._channel is None:
            s = self.settings
            options = list(s.channel_options)
            self._channel = (
                grpc.aio.secure_channel(s.target, s.credentials, options=options)
                if s.credentials is not None
                else grpc.aio.insecure_channel(s.target, options=options)
            )
        return self._channel

    async def _once(self, call: _Call[ReqT, RespT]) -> RespT:
        callable_ = cast(
            "grpc.aio.UnaryUnaryMultiCallable[ReqT, RespT]",
            self.channel.unary_unary(
                call.method,
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            ),
        )
        try:
            return await callable_(
                call.request,
                timeout=self.settings.timeout,
                metadata=self.settings.metadata(call),
            )
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err

    async def invoke(self, call: _Call[ReqT, RespT]) -> RespT:
        retrying = tenacity.AsyncRetrying(**self.settings.retry_arguments())
        return await retrying(self._once, call)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


# --------------------------------------------------------------------------------------
# Public clients
# --------------------------------------------------------------------------------------


class AsyncAccountClient:
    """AccountService methods of :class:`AsyncClient` (``client.account``)."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def register(
        self,
        *,
        display_name: str,
        phone_numbers: Iterable[str] = (),
        email_addresses: Iterable[str] = (),
        im_ids: Iterable[ImIdLike] = (),
        region_code: str = "",
        time_zone: str = "",
        device: account_pb2.Device | None = None,
        request_id: str | None = None,
    ) -> account_pb2.RegisterResponse:
        """Create a user. If the client has no token yet, it adopts ``access_token``."""
        response = await self._t.invoke(
            _AccountCalls.register(
                display_name=display_name,
                phone_numbers=phone_numbers,
                email_addresses=email_addresses,
                im_ids=im_ids,
                region_code=region_code,
                time_zone=time_zone,
                device=device,
                request_id=request_id,
            )
        )
        self._t.settings.after_register(response)
        return response

    async def get_me(self) -> account_pb2.GetMeResponse:
        """The caller's own user."""
        return await self._t.invoke(_AccountCalls.get_me())

    async def get_user(self, name: str) -> account_pb2.GetUserResponse:
        """A user by resource name (``"users/{id}"`` or ``"users/me"``)."""
        return await self._t.invoke(_AccountCalls.get_user(name))

    async def update_profile(
        self, user: common_pb2.User, update_mask: Sequence[str], request_id: str | None = None
    ) -> account_pb2.UpdateProfileResponse:
        """Update the fields named in ``update_mask``; ``user.etag`` must be current."""
        return await self._t.invoke(_AccountCalls.update_profile(user, update_mask, request_id))

    async def change_phone_number(
        self, old: str, new: str, etag: str, request_id: str | None = None
    ) -> account_pb2.ChangePhoneNumberResponse:
        """Replace the caller's number ``old`` by ``new``."""
        return await self._t.invoke(_AccountCalls.change_phone_number(old, new, etag, request_id))

    async def register_device(
        self, device_id: str, sim_id: str = "", platform: str = "", request_id: str | None = None
    ) -> account_pb2.RegisterDeviceResponse:
        """Record a device/SIM of the caller or refresh its last-seen time."""
        return await self._t.invoke(
            _AccountCalls.register_device(device_id, sim_id, platform, request_id)
        )

    async def list_devices(
        self, page_size: int = 0, page_token: str = ""
    ) -> account_pb2.ListDevicesResponse:
        """One page of the caller's devices."""
        return await self._t.invoke(_AccountCalls.list_devices(page_size, page_token))

    async def iter_devices(self, page_size: int = 0) -> AsyncIterator[account_pb2.Device]:
        """Every device of the caller, walking all pages."""
        page_token = ""
        while True:
            page = await self.list_devices(page_size=page_size, page_token=page_token)
            for device in page.devices:
                yield device
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def delete_account(
        self, etag: str = "", request_id: str | None = None
    ) -> account_pb2.DeleteAccountResponse:
        """Delete the caller's account and data; the token stops working."""
        return await self._t.invoke(_AccountCalls.delete_account(etag, request_id))


class AccountClient:
    """AccountService methods of :class:`Client` (``client.account``)."""

    def __init__(self, transport: _SyncTransport) -> None:
        self._t = transport

    def register(
        self,
        *,
        display_name: str,
        phone_numbers: Iterable[str] = (),
        email_addresses: Iterable[str] = (),
        im_ids: Iterable[ImIdLike] = (),
        region_code: str = "",
        time_zone: str = "",
        device: account_pb2.Device | None = None,
        request_id: str | None = None,
    ) -> account_pb2.RegisterResponse:
        """Create a user. If the client has no token yet, it adopts ``access_token``."""
        response = self._t.invoke(
            _AccountCalls.register(
                display_name=display_name,
                phone_numbers=phone_numbers,
                email_addresses=email_addresses,
                im_ids=im_ids,
                region_code=region_code,
                time_zone=time_zone,
                device=device,
                request_id=request_id,
            )
        )
        self._t.settings.after_register(response)
        return response

    def get_me(self) -> account_pb2.GetMeResponse:
        """The caller's own user."""
        return self._t.invoke(_AccountCalls.get_me())

    def get_user(self, name: str) -> account_pb2.GetUserResponse:
        """A user by resource name (``"users/{id}"`` or ``"users/me"``)."""
        return self._t.invoke(_AccountCalls.get_user(name))

    def update_profile(
        self, user: common_pb2.User, update_mask: Sequence[str], request_id: str | None = None
    ) -> account_pb2.UpdateProfileResponse:
        """Update the fields named in ``update_mask``; ``user.etag`` must be current."""
        return self._t.invoke(_AccountCalls.update_profile(user, update_mask, request_id))

    def change_phone_number(
        self, old: str, new: str, etag: str, request_id: str | None = None
    ) -> account_pb2.ChangePhoneNumberResponse:
        """Replace the caller's number ``old`` by ``new``."""
        return self._t.invoke(_AccountCalls.change_phone_number(old, new, etag, request_id))

    def register_device(
        self, device_id: str, sim_id: str = "", platform: str = "", request_id: str | None = None
    ) -> account_pb2.RegisterDeviceResponse:
        """Record a device/SIM of the caller or refresh its last-seen time."""
        return self._t.invoke(
            _AccountCalls.register_device(device_id, sim_id, platform, request_id)
        )

    def list_devices(
        self, page_size: int = 0, page_token: str = ""
    ) -> account_pb2.ListDevicesResponse:
        """One page of the caller's devices."""
        return self._t.invoke(_AccountCalls.list_devices(page_size, page_token))

    def iter_devices(self, page_size: int = 0) -> Iterator[account_pb2.Device]:
        """Every device of the caller, walking all pages."""
        page_token = ""
        while True:
            page = self.list_devices(page_size=page_size, page_token=page_token)
            yield from page.devices
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def delete_account(
        self, etag: str = "", request_id: str | None = None
    ) -> account_pb2.DeleteAccountResponse:
        """Delete the caller's account and data; the token stops working."""
        return self._t.invoke(_AccountCalls.delete_account(etag, request_id))


class AsyncClient:
    """asyncio client; use as ``async with AsyncClient(...) as client``.

    Args:
        target: ``host:port`` of a befriend server.
        token: bearer token. When ``None``, a successful ``account.register`` sets it to the
            returned ``access_token`` (a client that already has a token keeps it).
        timeout: deadline of each attempt, in seconds.
        retries: retries after the first attempt (UNAVAILABLE, or RESOURCE_EXHAUSTED with
            RetryInfo); 0 disables retrying.
        channel_options: gRPC channel arguments, e.g. ``[("grpc.keepalive_time_ms", 30000)]``.
        credentials: TLS credentials; ``None`` uses a plaintext channel.
        initial_backoff, max_backoff: exponential backoff bounds in seconds (full jitter).
        max_retry_delay: a server ``RetryInfo`` delay above this is not waited for.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        channel_options: ChannelOptions = (),
        credentials: grpc.ChannelCredentials | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        self._transport = _AsyncTransport(
            _settings(
                target,
                token,
                timeout,
                retries,
                initial_backoff,
                max_backoff,
                max_retry_delay,
                channel_options,
                credentials,
            )
        )
        self.account = AsyncAccountClient(self._transport)

    @property
    def target(self) -> str:
        return self._transport.settings.target

    @property
    def token(self) -> str | None:
        """The bearer token sent with authenticated RPCs."""
        return self._transport.settings.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._transport.settings.token = value

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (created on first use)."""
        return self._transport.channel

    async def health(self, service: str = "") -> str:
        """``grpc.health.v1.Health/Check``: the status name, e.g. ``"SERVING"``.

        ``service`` is ``""`` for the whole server or a full service name such as
        ``"befriend.v1.AccountService"``; an unknown service raises :class:`NotFound`.
        """
        return _health_status_name(await self._transport.invoke(_health_call(service)))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Client:
    """Blocking client with the surface of :class:`AsyncClient`; use as ``with Client(...)``.

    It uses the synchronous gRPC API (no event loop), so it is safe in threads and scripts.
    See :class:`AsyncClient` for the arguments.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        channel_options: ChannelOptions = (),
        credentials: grpc.ChannelCredentials | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        self._transport = _SyncTransport(
            _settings(
                target,
                token,
                timeout,
                retries,
                initial_backoff,
                max_backoff,
                max_retry_delay,
                channel_options,
                credentials,
            )
        )
        self.account = AccountClient(self._transport)

    @property
    def target(self) -> str:
        return self._transport.settings.target

    @property
    def token(self) -> str | None:
        """The bearer token sent with authenticated RPCs."""
        return self._transport.settings.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._transport.settings.token = value

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (created on first use)."""
        return self._transport.channel

    def health(self, service: str = "") -> str:
        """``grpc.health.v1.Health/Check``: the status name, e.g. ``"SERVING"``."""
        return _health_status_name(self._transport.invoke(_health_call(service)))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
