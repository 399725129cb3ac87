"""AccountService through the public SDK against a real server on 127.0.0.1:0,
on SQLite and on PostgreSQL (the ``db`` fixture is parametrised over both)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from sqlalchemy import func, select

from befriend.clients import (
    Aborted,
    AlreadyExists,
    AsyncClient,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
    from_grpc_error,
)
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.v1 import (
    account_pb2,
    common_pb2,
    friendship_pb2,
    friendship_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    sync_pb2,
)
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio


def rows(db: Database, table: type[models.Base], **where: str) -> int:
    with db.transaction(readonly=True) as s:
        stmt = select(func.count()).select_from(table)
        for column, value in where.items():
            stmt = stmt.where(getattr(table, column) == value)
        return int(s.execute(stmt).scalar_one())


async def register(
    server: RunningServer, phone: str = "139 1234 5678", device: account_pb2.Device | None = None
) -> AsyncClient:
    client = AsyncClient(server.target, retries=0)
    await client.account.register(
        display_name="Li Lei", phone_numbers=[phone], region_code="CN", device=device
    )
    return client


async def test_register_token_getme_round_trip(running_server: RunningServer) -> None:
    async with AsyncClient(running_server.target) as client:
        resp = await client.account.register(
            display_name="Li Lei",
            phone_numbers=["+86 139-1234-5678", "0086 13512345678"],
            email_addresses=["  Li.Lei@Example.COM "],
            im_ids=[("QQ", "10001")],
            region_code="CN",
            time_zone="Asia/Shanghai",
        )
        assert resp.access_token
        assert client.token == resp.access_token
        me = (await client.account.get_me()).user
    assert me.user_id == resp.user.user_id
    assert me.name == f"users/{me.user_id}"
    assert [p.e164 for p in me.phone_numbers] == ["+8613912345678", "+8613512345678"]
    assert [p.raw for p in me.phone_numbers] == ["+86 139-1234-5678", "0086 13512345678"]
    assert me.email_addresses[0].normalized.endswith("@example.com")
    assert me.im_ids[0].kind == "qq"
    assert me.time_zone == "Asia/Shanghai"
    assert me.etag


async def test_home_region_defaults_to_first_number(running_server: RunningServer) -> None:
    async with AsyncClient(running_server.target) as client:
        resp = await client.account.register(display_name="Chan", phone_numbers=["+852 9123 4567"])
    assert resp.user.region_code == "HK"


async def test_no_token_and_bad_token_are_unauthenticated(running_server: RunningServer) -> None:
    async with AsyncClient(running_server.target, retries=0) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.account.get_me()
    async with AsyncClient(running_server.target, token="bf_not-a-token", retries=0) as bad:
        with pytest.raises(Unauthenticated) as err:
            await bad.account.get_me()
    assert err.value.reason == "INVALID_TOKEN"


async def test_other_users_data_is_denied(running_server: RunningServer) -> None:
    alice = await register(running_server, "13900000001")
    bob = await register(running_server, "13900000002")
    bob_name = (await bob.account.get_me()).user.name
    with pytest.raises(PermissionDenied):
        await alice.account.get_user(bob_name)
    target = common_pb2.User(name=bob_name, display_name="hijacked")
    with pytest.raises(PermissionDenied):
        await alice.account.update_profile(target, ["display_name"])
    assert (await bob.account.get_me()).user.display_name == "Li Lei"
    # users/me and the caller's own name both work
    assert (await alice.account.get_user("users/me")).user.user_id != bob_name
    await alice.close()
    await bob.close()


async def test_unparseable_phone_names_the_field(
    running_server: RunningServer, db: Database
) -> None:
    async with AsyncClient(running_server.target, retries=0) as client:
        with pytest.raises(InvalidArgument) as err:
            await client.account.register(
                display_name="X", phone_numbers=["+8613912345678", "12ab!"], region_code="CN"
            )
    assert err.value.reason == "INVALID_PHONE_NUMBER"
    assert [v.field for v in err.value.field_violations] == ["phone_numbers[1]"]
    assert rows(db, models.User) == 0


async def test_retried_register_returns_same_user_one_row(
    running_server: RunningServer, db: Database
) -> None:
    request_id = str(uuid.uuid4())
    answers = []
    for _ in range(3):
        async with AsyncClient(running_server.target) as client:
            answers.append(
                await client.account.register(
                    display_name="Retry",
                    phone_numbers=["13700000000"],
                    region_code="CN",
                    request_id=request_id,
                )
            )
    assert {a.user.user_id for a in answers} == {answers[0].user.user_id}
    assert {a.access_token for a in answers} == {answers[0].access_token}
    assert rows(db, models.User) == 1
    assert rows(db, models.Identity) == 1


async def test_request_id_reuse_with_other_body_is_rejected(running_server: RunningServer) -> None:
    async with AsyncClient(running_server.target, retries=0) as client:
        await client.account.register(
            display_name="A", phone_numbers=["13700000001"], region_code="CN", request_id="r-1"
        )
        with pytest.raises(InvalidArgument) as err:
            await client.account.register(
                display_name="B", phone_numbers=["13700000002"], region_code="CN", request_id="r-1"
            )
    assert err.value.reason == "REQUEST_ID_REUSED"


async def test_identity_owned_by_another_user(running_server: RunningServer, db: Database) -> None:
    first = await register(running_server, "13912345678")
    with pytest.raises(AlreadyExists) as err:
        # Same number, written differently.
        await register(running_server, "+86 139 1234 5678")
    assert err.value.reason == "IDENTITY_TAKEN"
    assert rows(db, models.User) == 1
    await first.close()


async def test_update_profile_with_etag(running_server: RunningServer) -> None:
    client = await register(running_server)
    me = (await client.account.get_me()).user
    me.display_name = "Lei Li"
    me.profile.homepage_url = "https://example.com/~lei"
    me.profile.organizations.add(company="Tencent", job_title="Engineer", current=True)
    updated = (
        await client.account.update_profile(
            me, ["display_name", "profile.homepage_url", "profile.organizations"]
        )
    ).user
    assert updated.display_name == "Lei Li"
    assert updated.profile.homepage_url == "https://example.com/~lei"
    assert updated.profile.organizations[0].company == "Tencent"
    assert updated.etag != me.etag
    # The old etag is now stale.
    me.display_name = "Stale"
    with pytest.raises(Aborted) as err:
        await client.account.update_profile(me, ["display_name"])
    assert err.value.reason == "ETAG_MISMATCH"
    assert (await client.account.get_me()).user.display_name == "Lei Li"
    await client.close()


async def test_update_profile_rejects_unknown_path(running_server: RunningServer) -> None:
    client = await register(running_server)
    me = (await client.account.get_me()).user
    with pytest.raises(InvalidArgument) as err:
        await client.account.update_profile(me, ["phone_numbers"])
    assert [v.field for v in err.value.field_violations] == ["update_mask"]
    await client.close()


async def test_change_phone_number(running_server: RunningServer, db: Database) -> None:
    client = await register(running_server, "13911111111")
    other = await register(running_server, "13922222222")
    me = (await client.account.get_me()).user
    with pytest.raises(AlreadyExists):
        await client.account.change_phone_number("13911111111", "13922222222", me.etag)
    with pytest.raises(NotFound):
        await client.account.change_phone_number("13933333333", "13944444444", me.etag)
    with pytest.raises(Aborted):
        await client.account.change_phone_number("13911111111", "13944444444", 'W/"99"')
    changed = (
        await client.account.change_phone_number("139 1111 1111", "13944444444", me.etag)
    ).user
    assert [p.e164 for p in changed.phone_numbers] == ["+8613944444444"]
    # The old number is free again.
    newcomer = await register(running_server, "13911111111")
    assert (await newcomer.account.get_me()).user.phone_numbers[0].e164 == "+8613911111111"
    for c in (client, other, newcomer):
        await c.close()


async def test_devices_and_pagination(running_server: RunningServer) -> None:
    client = await register(
        running_server, device=account_pb2.Device(device_id="phone-0", sim_id="sim-0")
    )
    for i in range(1, 5):
        await client.account.register_device(f"phone-{i}", sim_id=f"sim-{i}", platform="Android")
    again = await client.account.register_device("phone-1")
    assert again.device.sim_id == "sim-1"
    assert again.device.last_seen_time.ToDatetime() >= again.device.first_seen_time.ToDatetime()
    first = await client.account.list_devices(page_size=2)
    assert len(first.devices) == 2 and first.next_page_token
    seen = [d.device_id async for d in client.account.iter_devices(page_size=2)]
    assert sorted(seen) == [f"phone-{i}" for i in range(5)]
    with pytest.raises(InvalidArgument) as err:
        await client.account.list_devices(page_token="garbage!")
    assert err.value.field_violations[0].field == "page_token"
    with pytest.raises(InvalidArgument):
        await client.account.register_device("")
    await client.close()


async def test_delete_account_removes_every_row(
    running_server: RunningServer, db: Database
) -> None:
    keep = await register(running_server, "13955555555")
    client = await register(
        running_server, "13966666666", device=account_pb2.Device(device_id="d1")
    )
    me = (await client.account.get_me()).user
    await client.account.update_profile(me, ["display_name"])
    book = [sync_pb2.AddressBookEntry(entry_id="k", raw=b"Keep", contact=common_pb2.Contact())]
    book[0].contact.mobile_numbers.add(raw="13955555555")
    book.append(sync_pb2.AddressBookEntry(entry_id="x", raw=b"X", contact=common_pb2.Contact()))
    book[1].contact.mobile_numbers.add(raw="13977777777")
    uploaded = await client.sync.upload_contacts(
        address_book_id="phone",
        kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
        device_id="d1",
        entries=book,
    )
    assert uploaded.committed
    assert rows(db, models.BuddyRow, owner_id=me.user_id) == 1  # one-way (phonebook: derived)
    assert rows(db, models.BuddyEvent, other_id=me.user_id) == 1  # keep was told
    await client.account.delete_account()
    with pytest.raises(Unauthenticated):
        await client.account.get_me()
    uid = me.user_id
    for table in (
        models.Identity,
        models.Device,
        models.Token,
        models.AddressBook,
        models.ContactEntry,
        models.EntryKey,
        models.Upload,
        models.KeyQuota,
        models.BuddyEvent,
    ):
        assert rows(db, table, user_id=uid) == 0, table
    assert rows(db, models.BuddyRow, owner_id=uid) == 0
    assert rows(db, models.BuddyRow, other_id=uid) == 0
    assert rows(db, models.BuddyEvent, other_id=uid) == 0
    assert rows(db, models.User, id=uid) == 0
    assert rows(db, models.IdempotencyRecord, user_id=uid) == 0
    assert rows(db, models.IdempotencyRecord, scope=uid) == 0
    assert rows(db, models.User) == 1
    await keep.close()
    await client.close()


async def test_other_services_answer_unimplemented(running_server: RunningServer) -> None:
    client = await register(running_server)
    stub = recommendation_pb2_grpc.RecommendationServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListRecommendations(
            recommendation_pb2.ListRecommendationsRequest(),
            metadata=(("authorization", f"Bearer {client.token}"),),
        )
    assert isinstance(from_grpc_error(err.value), Unimplemented)
    await client.close()


async def test_internal_rpcs_need_the_service_token(running_server: RunningServer) -> None:
    client = await register(running_server)
    stub = friendship_pb2_grpc.FriendshipServiceStub(client.channel)
    request = friendship_pb2.RefreshMatchesRequest()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RefreshMatches(request, metadata=(("authorization", f"Bearer {client.token}"),))
    denied = from_grpc_error(err.value)
    assert isinstance(denied, PermissionDenied)
    assert denied.reason == "SERVICE_TOKEN_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RefreshMatches(request)
    assert isinstance(from_grpc_error(err.value), Unauthenticated)
    # With the service token the call goes through.
    answer = await stub.RefreshMatches(
        friendship_pb2.RefreshMatchesRequest(users=[(await client.account.get_me()).user.name]),
        metadata=(("authorization", f"Bearer {running_server.service_token}"),),
    )
    assert answer.user_count == 1
    await client.close()
