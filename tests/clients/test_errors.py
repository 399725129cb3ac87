"""Error unpacking against a real grpc.aio server sending google.rpc.Status details."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2

from befriend.clients import errors
from befriend.clients.errors import (
    AlreadyExists,
    BefriendError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    from_grpc_error,
)
from befriend.clients.sdk import AsyncClient
from befriend.v1 import account_pb2, account_pb2_grpc

from .conftest import AioServer
from .fakes import DOMAIN

ALL_SUBCLASSES = {
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.UNKNOWN: errors.Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
    grpc.StatusCode.INTERNAL: errors.Internal,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DATA_LOSS: errors.DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
}


def test_one_subclass_per_status_code() -> None:
    for code, cls in ALL_SUBCLASSES.items():
        assert errors.exception_class_for_code(code) is cls
        assert issubclass(cls, BefriendError)
        assert cls("x").code is code
    assert errors.exception_class_for_code(grpc.StatusCode.OK) is BefriendError


async def test_bad_request_is_unpacked_from_the_trailer(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.account.register(
                display_name="Ann", phone_numbers=["+85291234567", "abc", "--"]
            )
    err = caught.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_PHONE_NUMBER"
    assert err.domain == DOMAIN
    assert err.message == "invalid phone number"
    assert err.field_violations == [
        FieldViolation("phone_numbers[1]", "'abc' is not a phone number"),
        FieldViolation("phone_numbers[2]", "'--' is not a phone number"),
    ]
    assert err.retry_delay is None
    assert [type(d) for d in err.details] == [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
    ]
    assert isinstance(err.__cause__, grpc.aio.AioRpcError)
    assert str(err) == "INVALID_ARGUMENT INVALID_PHONE_NUMBER: invalid phone number"
    # Not retried: a caller's mistake is final.
    assert len(aio_server.recorder.requests("Register")) == 1


async def test_error_info_metadata(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target) as client:
        with pytest.raises(AlreadyExists) as caught:
            await client.account.register(display_name="Ann", phone_numbers=["13999999999"])
    assert caught.value.reason == "IDENTITY_TAKEN"
    assert caught.value.metadata == {"identity": "+8613999999999"}
    assert caught.value.field_violations == []


async def test_unauthenticated_without_token(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target) as client:
        with pytest.raises(Unauthenticated) as caught:
            await client.account.get_me()
    assert caught.value.reason == "UNAUTHENTICATED"


async def test_plain_status_without_details(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t") as client:
        with pytest.raises(NotFound) as caught:
            await client.account.get_user("users/plain")
        with pytest.raises(PermissionDenied):
            await client.account.get_user("users/other")
    err = caught.value
    assert (err.reason, err.domain, err.message) == (None, None, "no such user")
    assert err.details == [] and err.metadata == {}


async def test_from_grpc_error_on_a_raw_aio_error(aio_server: AioServer) -> None:
    async with grpc.aio.insecure_channel(aio_server.target) as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Register(account_pb2.RegisterRequest(display_name="x", phone_numbers=["?"]))
    err = from_grpc_error(caught.value)
    assert isinstance(err, InvalidArgument)
    assert [v.field for v in err.field_violations] == ["phone_numbers[0]"]


def test_from_grpc_error_on_a_bare_rpc_error() -> None:
    err = from_grpc_error(grpc.RpcError("boom"))
    assert type(err) is errors.Unknown
    assert err.message == "boom"
