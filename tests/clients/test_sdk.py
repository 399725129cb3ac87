"""AsyncClient and Client against the fake server: retries, request ids, tokens, paging."""

from __future__ import annotations

import time
import uuid
from typing import TypedDict

import grpc
import pytest

from befriend.clients.errors import (
    Aborted,
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from befriend.clients.sdk import AsyncClient, Client
from befriend.v1 import account_pb2, common_pb2

from .conftest import AioServer
from .fakes import UNKNOWN_SERVICE, ThreadedServer


class _Backoff(TypedDict):
    initial_backoff: float
    max_backoff: float


FAST: _Backoff = {"initial_backoff": 0.01, "max_backoff": 0.05}


async def test_unavailable_is_retried_with_the_same_request_id(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        answer = await client.account.register_device("phone-1", platform="android")
    assert isinstance(answer, account_pb2.RegisterDeviceResponse)
    assert answer.device.device_id == "phone-1"
    ids = [r.request_id for r in aio_server.recorder.requests("RegisterDevice")]
    assert len(ids) == 3
    assert len(set(ids)) == 1
    uuid.UUID(ids[0])  # auto-generated uuid4


async def test_rich_unavailable_on_register_then_success(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, **FAST) as client:
        answer = await client.account.register(display_name="flaky", phone_numbers=["1"])
    assert answer.user.display_name == "flaky"
    ids = {r.request_id for r in aio_server.recorder.requests("Register")}
    assert len(aio_server.recorder.requests("Register")) == 3 and len(ids) == 1


async def test_explicit_request_id_is_sent_unchanged(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        await client.account.register_device("d", request_id="rid-1")
        await client.account.delete_account(etag="e1", request_id="rid-2")
        await client.account.delete_account()
    assert {r.request_id for r in aio_server.recorder.requests("RegisterDevice")} == {"rid-1"}
    deletes = aio_server.recorder.requests("DeleteAccount")
    assert deletes[0].request_id == "rid-2"
    uuid.UUID(deletes[1].request_id)


async def test_unavailable_gives_up_after_retries(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", retries=2, **FAST) as client:
        with pytest.raises(Unavailable, match="down for good"):
            await client.account.get_user("users/down")
    assert len(aio_server.recorder.requests("GetUser")) == 3


async def test_resource_exhausted_with_retry_info_is_retried(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, **FAST) as client:
        start = time.monotonic()
        answer = await client.account.register(display_name="quota", email_addresses=["a@b.c"])
        elapsed = time.monotonic() - start
    assert answer.user.display_name == "quota"
    assert len(aio_server.recorder.requests("Register")) == 2
    assert elapsed >= 0.05  # the server's RetryInfo delay was honoured


async def test_resource_exhausted_without_retry_info_is_not_retried(
    aio_server: AioServer,
) -> None:
    async with AsyncClient(aio_server.target, **FAST) as client:
        with pytest.raises(ResourceExhausted) as caught:
            await client.account.register(display_name="hard-quota", phone_numbers=["1"])
    assert caught.value.reason == "QUOTA_EXCEEDED" and caught.value.retry_delay is None
    assert len(aio_server.recorder.requests("Register")) == 1


async def test_aborted_is_not_retried(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        with pytest.raises(Aborted) as caught:
            await client.account.change_phone_number("1", "2", etag="stale")
        ok = await client.account.change_phone_number("1", "2", "e1")
    assert caught.value.reason == "ETAG_MISMATCH"
    assert ok.user.etag == "e2"
    assert len(aio_server.recorder.requests("ChangePhoneNumber")) == 2


async def test_deadline_exceeded_is_not_retried(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", timeout=0.2, **FAST) as client:
        with pytest.raises(DeadlineExceeded):
            await client.account.get_user("users/slow")
    assert len(aio_server.recorder.requests("GetUser")) == 1


async def test_unreachable_server_raises_unavailable(unused_target: str) -> None:
    async with AsyncClient(unused_target, retries=1, **FAST) as client:
        with pytest.raises(Unavailable):
            await client.health()


async def test_register_adopts_the_token_and_sends_it(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target) as client:
        assert client.token in (None, "")
        answer = await client.account.register(
            display_name="Ann",
            phone_numbers=["13912345678"],
            im_ids=[("qq", "12345"), common_pb2.ImId(kind="msn", id="ann")],
            region_code="CN",
            time_zone="Asia/Shanghai",
            device=account_pb2.Device(device_id="d1"),
        )
        assert client.token == answer.access_token
        me = await client.account.get_me()
        assert me.user.name == answer.user.name
        assert me.user.phone_numbers[0].e164 == "+8613912345678"
    register = aio_server.recorder.requests("Register")[0]
    assert [(i.kind, i.id) for i in register.im_ids] == [("qq", "12345"), ("msn", "ann")]
    assert register.device.device_id == "d1"
    assert "authorization" not in aio_server.recorder.metadata("Register")[0]
    assert aio_server.recorder.metadata("GetMe")[0]["authorization"] == (
        f"Bearer {answer.access_token}"
    )


async def test_register_keeps_an_existing_token(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="mine") as client:
        await client.account.register(display_name="Bob", email_addresses=["b@x.org"])
        assert client.token == "mine"


async def test_iter_devices_walks_every_page(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t") as client:
        ids = [d.device_id async for d in client.account.iter_devices(page_size=2)]
        first = await client.account.list_devices(page_size=3)
    assert ids == [f"dev-{i}" for i in range(5)]
    assert len(first.devices) == 3 and first.next_page_token == "3"
    tokens = [r.page_token for r in aio_server.recorder.requests("ListDevices")]
    assert tokens == ["", "2", "4", ""]


async def test_update_profile_builds_a_field_mask(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t") as client:
        user = common_pb2.User(name="users/me", display_name="New", etag="e1")
        answer = await client.account.update_profile(user, ["display_name", "time_zone"])
        with pytest.raises(TypeError):
            await client.account.update_profile(user, "display_name")
    assert answer.user.display_name == "New"
    request = aio_server.recorder.requests("UpdateProfile")[0]
    assert list(request.update_mask.paths) == ["display_name", "time_zone"]
    uuid.UUID(request.request_id)


async def test_health(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target) as client:
        assert await client.health() == "SERVING"
        assert await client.health("befriend.v1.AccountService") == "SERVING"
        with pytest.raises(NotFound):
            await client.health(UNKNOWN_SERVICE)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Client(timeout=0)
    with pytest.raises(ValueError):
        AsyncClient(retries=-1)


# ---- the blocking client: same surface, same behaviour -------------------------------


def test_sync_client_retries_and_reuses_request_id(threaded_server: ThreadedServer) -> None:
    with Client(threaded_server.target, **FAST) as client:
        answer = client.account.register(display_name="Ann", phone_numbers=["+85291234567"])
        assert client.token == answer.access_token
        device = client.account.register_device("phone-9", sim_id="sim")
        assert device.device.sim_id == "sim"
        assert client.account.get_me().user.name == answer.user.name
        assert client.account.get_user("users/me").user.name == "users/me"
        assert [d.device_id for d in client.account.iter_devices()] == [
            f"dev-{i}" for i in range(5)
        ]
        assert client.health() == "SERVING"
        client.account.delete_account(etag="e1")
    rec = threaded_server.recorder
    ids = {r.request_id for r in rec.requests("RegisterDevice")}
    assert len(rec.requests("RegisterDevice")) == 3 and len(ids) == 1


def test_sync_client_raises_typed_errors(threaded_server: ThreadedServer) -> None:
    with Client(threaded_server.target, token="t", retries=1, **FAST) as client:
        with pytest.raises(Aborted) as caught:
            client.account.change_phone_number("1", "2", "old")
        with pytest.raises(Unavailable):
            client.account.get_user("users/down")
    with Client(threaded_server.target, timeout=0.2) as slow, pytest.raises(DeadlineExceeded):
        slow.account.get_user("users/slow")
    assert caught.value.code is grpc.StatusCode.ABORTED
    assert caught.value.reason == "ETAG_MISMATCH"
    assert caught.value.domain == "befriend.dev"
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert len(threaded_server.recorder.requests("GetUser")) == 3


def test_sync_client_unreachable(unused_target: str) -> None:
    with Client(unused_target, retries=0) as client, pytest.raises(Unavailable):
        client.health()


def test_package_exports() -> None:
    import befriend.clients as package

    for name in package.__all__:
        assert getattr(package, name) is not None
    assert package.Client is Client and package.Unavailable is Unavailable
