"""SyncService upload/restore on a real server, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import func, select

from befriend.clients import AsyncClient, from_grpc_error
from befriend.clients.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from befriend.server.records import UploadState
from befriend.server.services.addressbooks import UPLOAD_TTL, upload_status
from befriend.server.storage import models
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.db import Database
from befriend.v1 import common_pb2, sync_pb2, sync_pb2_grpc
from tests.conftest import RunningServer, serve

pytestmark = pytest.mark.asyncio
PHONE = sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK


def entry(i: int, **contact: object) -> sync_pb2.AddressBookEntry:
    raw = (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Friend {i}\r\nTEL;TYPE=CELL:139{i:08d}\r\nEND:VCARD\r\n"
    )
    c = common_pb2.Contact(display_name=f"Friend {i}", **contact)  # type: ignore[arg-type]
    c.mobile_numbers.add(raw=f"139{i:08d}")
    return sync_pb2.AddressBookEntry(
        entry_id=f"e{i}", raw=raw.encode(), raw_media_type="text/vcard", contact=c
    )


def chunks(
    entries: Sequence[sync_pb2.AddressBookEntry], upload_id: str, size: int = 500
) -> list[sync_pb2.UploadContactsRequest]:
    out = []
    for n, start in enumerate(range(0, len(entries), size), start=1):
        out.append(
            sync_pb2.UploadContactsRequest(
                address_book_id="phone",
                address_book_kind=PHONE,
                device_id="dev-1",
                upload_id=upload_id,
                sequence_number=n,
                entries=entries[start : start + size],
                final=start + size >= len(entries),
            )
        )
    return out


async def feed(
    reqs: Sequence[sync_pb2.UploadContactsRequest],
) -> AsyncIterator[sync_pb2.UploadContactsRequest]:
    for r in reqs:
        yield r


class Session:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.stub = sync_pb2_grpc.SyncServiceStub(client.channel)
        self.md = (("authorization", f"Bearer {client.token}"),)

    async def upload(
        self, reqs: Sequence[sync_pb2.UploadContactsRequest]
    ) -> list[sync_pb2.UploadContactsResponse]:
        call = self.stub.UploadContacts(feed(reqs), metadata=self.md)
        return [ack async for ack in call]

    async def restore(self, **kw: object) -> list[sync_pb2.AddressBookEntry]:
        call = self.stub.RestoreContacts(
            sync_pb2.RestoreContactsRequest(address_book="users/me/addressBooks/phone", **kw),  # type: ignore[arg-type]
            metadata=self.md,
        )
        return [e async for batch in call for e in batch.entries]


@pytest.fixture
async def session(running_server: RunningServer) -> AsyncIterator[Session]:
    client = AsyncClient(running_server.target, retries=0)
    await client.account.register(
        display_name="Uploader", phone_numbers=["13800000000"], region_code="CN"
    )
    yield Session(client)
    await client.close()


def count(db: Database, table: type[models.Base]) -> int:
    with db.transaction(readonly=True) as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


async def test_upload_drop_resume_restore(session: Session, db: Database) -> None:
    book = [entry(i) for i in range(5000)]
    reqs = chunks(book, "up-1", size=250)  # 20 chunks
    # First connection: 7 chunks acknowledged, then the client drops the stream.
    call = session.stub.UploadContacts(None, metadata=session.md)
    for r in reqs[:7]:
        await call.write(r)
        ack = await call.read()
        assert isinstance(ack, sync_pb2.UploadContactsResponse)
        assert ack.acknowledged_sequence_number == r.sequence_number
    await call.write(reqs[7])  # sent but the connection goes before its ack is read
    call.cancel()

    status = await session.stub.GetUploadStatus(
        sync_pb2.GetUploadStatusRequest(upload_id="up-1"), metadata=session.md
    )
    assert status.state == sync_pb2.UPLOAD_STATE_IN_PROGRESS
    resume_at = status.last_acknowledged_sequence_number
    assert resume_at in (7, 8)
    # Resume, deliberately resending one chunk already acknowledged: harmless.
    acks = await session.upload(reqs[resume_at - 1 :])
    # Re-acknowledged, not applied. (Chunk 8, sent before the drop, may land after the
    # status call: the ack then already says 8, the highest durable chunk.)
    assert acks[0].acknowledged_sequence_number in (resume_at, 8)
    assert acks[-1].committed
    assert acks[-1].acknowledged_entry_count == 5000
    assert count(db, models.ContactEntry) == 5000
    with db.transaction(readonly=True) as s:
        distinct = s.execute(
            select(func.count(func.distinct(models.ContactEntry.entry_id)))
        ).scalar_one()
    assert distinct == 5000

    held = [f"e{i}" for i in range(4000)]
    restored = await session.restore(held_entry_ids=held, batch_size=300)
    assert sorted(e.entry_id for e in restored) == sorted(f"e{i}" for i in range(4000, 5000))
    by_id = {e.entry_id: e for e in book}
    for e in restored:
        assert e.raw == by_id[e.entry_id].raw
        assert e.content_hash == hashlib.sha256(e.raw).hexdigest()
    # Held by content hash instead of id: nothing is sent twice.
    hashes = [hashlib.sha256(e.raw).hexdigest() for e in book[:4999]]
    assert [e.entry_id for e in await session.restore(held_content_hashes=hashes)] == ["e4999"]


async def test_duplicate_chunk_is_harmless(session: Session, db: Database) -> None:
    reqs = chunks([entry(i) for i in range(30)], "up-dup", size=10)
    acks = await session.upload([reqs[0], reqs[0], reqs[1], reqs[1], reqs[2]])
    assert [a.acknowledged_sequence_number for a in acks] == [1, 1, 2, 2, 3]
    assert acks[-1].committed and acks[-1].acknowledged_entry_count == 30
    assert count(db, models.ContactEntry) == 30
    # The whole upload replayed after commit: re-acknowledged, nothing changes.
    again = await session.upload(reqs)
    assert [a.acknowledged_sequence_number for a in again] == [3, 3, 3]
    assert count(db, models.ContactEntry) == 30


async def test_entry_keys_are_normalised_with_owner_region(session: Session, db: Database) -> None:
    e = entry(1)
    e.contact.mobile_numbers.add(raw="17951 139 1234 5678")
    e.contact.fixed_numbers.add(raw="17951 010 12345678")
    e.contact.mobile_numbers.add(raw="12345")  # cannot be normalised: kept, no exact key
    e.contact.email_addresses.add(raw="Friend@Example.COM")
    e.contact.im_ids.add(kind="QQ", id="10001")
    await session.upload(chunks([e], "keys"))
    with db.transaction(readonly=True) as s:
        values = set(s.execute(select(models.EntryKey.value)).scalars())
    assert {"+8613900000001", "+8613912345678", "+861012345678"} <= values
    assert any(v.endswith("@example.com") for v in values)
    assert "qq:10001" in values


async def test_full_snapshot_removes_missing_entries(session: Session, db: Database) -> None:
    await session.upload(chunks([entry(i) for i in range(10)], "snap-1"))
    second = chunks([entry(i) for i in range(5, 12)], "snap-2")
    for r in second:
        r.mode = sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT
    await session.upload(second)
    restored = await session.restore()
    assert sorted(e.entry_id for e in restored) == sorted(f"e{i}" for i in range(5, 12))
    assert count(db, models.ContactEntry) == 7


async def test_incremental_delete(session: Session) -> None:
    await session.upload(chunks([entry(i) for i in range(5)], "inc-1"))
    gone = sync_pb2.AddressBookEntry(entry_id="e2", deleted=True)
    await session.upload(chunks([gone, entry(9)], "inc-2"))
    names = sorted(e.entry_id for e in await session.restore())
    assert names == ["e0", "e1", "e3", "e4", "e9"]


async def test_chunks_without_new_entries_still_advance_the_upload(session: Session) -> None:
    """A chunk of deletions only, and an empty final chunk, move and commit the upload."""
    await session.upload(chunks([entry(i) for i in range(5)], "base"))
    gone = sync_pb2.AddressBookEntry(entry_id="e2", deleted=True)
    (ack,) = await session.upload(chunks([gone], "deletes-only"))
    assert ack.committed and ack.acknowledged_sequence_number == 1
    reqs = chunks([entry(i) for i in range(5, 8)], "empty-final", size=3)
    reqs[-1].final = False
    reqs.append(
        sync_pb2.UploadContactsRequest(upload_id="empty-final", sequence_number=2, final=True)
    )
    acks = await session.upload(reqs)
    assert [a.acknowledged_sequence_number for a in acks] == [1, 2]
    assert acks[-1].committed and acks[-1].acknowledged_entry_count == 3
    status = await session.stub.GetUploadStatus(
        sync_pb2.GetUploadStatusRequest(upload_id="empty-final"), metadata=session.md
    )
    assert status.state == sync_pb2.UPLOAD_STATE_COMMITTED
    assert status.last_acknowledged_sequence_number == 2
    names = sorted(e.entry_id for e in await session.restore())
    assert names == ["e0", "e1", "e3", "e4", "e5", "e6", "e7"]


async def expect_stream_error(session: Session, reqs: Sequence[object]) -> Exception:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await session.upload(reqs)  # type: ignore[arg-type]
    return from_grpc_error(err.value)


async def test_bad_uploads_are_refused_and_change_nothing(session: Session, db: Database) -> None:
    await session.upload(chunks([entry(i) for i in range(3)], "ok"))
    before = count(db, models.ContactEntry)

    too_big = chunks([entry(i) for i in range(501)], "big", size=501)
    err = await expect_stream_error(session, too_big)
    assert isinstance(err, InvalidArgument)
    assert err.field_violations[0].field == "entries"
    assert err.metadata["limit"] == "500"

    gap = chunks([entry(i) for i in range(30)], "gap", size=10)
    err = await expect_stream_error(session, [gap[0], gap[2]])
    assert isinstance(err, FailedPrecondition)
    assert err.reason == "SEQUENCE_GAP" and err.metadata["expected"] == "2"

    late = chunks([entry(i) for i in range(30)], "never-started", size=10)
    err = await expect_stream_error(session, [late[1]])
    assert isinstance(err, FailedPrecondition) and err.reason == "UPLOAD_NOT_FOUND"

    bad_book = chunks([entry(1)], "bad-book")
    bad_book[0].address_book_id = "Not A Book!"
    err = await expect_stream_error(session, bad_book)
    assert isinstance(err, InvalidArgument)
    assert err.field_violations[0].field == "address_book_id"
    # Only the gap upload's acknowledged first chunk (e0-e9, replacing e0-e2) was stored.
    assert before == 3
    assert count(db, models.ContactEntry) == 10

    with pytest.raises(grpc.aio.AioRpcError) as rpc_err:
        await session.stub.GetUploadStatus(
            sync_pb2.GetUploadStatusRequest(upload_id="nope"), metadata=session.md
        )
    assert isinstance(from_grpc_error(rpc_err.value), NotFound)


async def test_malformed_entries_are_rejected_one_by_one(session: Session, db: Database) -> None:
    good = entry(1)
    huge_name = entry(2)
    huge_name.contact.display_name = "x" * 100_000
    bad_birthday = entry(3)
    bad_birthday.contact.birthday.month = 13
    bad_hash = entry(4)
    bad_hash.content_hash = "0" * 64
    no_id = entry(5)
    no_id.entry_id = ""
    twice = entry(1)
    acks = await session.upload(
        chunks([good, huge_name, bad_birthday, bad_hash, no_id, twice], "mixed")
    )
    rejections = {(r.entry_index, r.field) for r in acks[-1].rejections}
    assert rejections == {
        (1, "contact.display_name"),
        (2, "contact.birthday.month"),
        (3, "content_hash"),
        (4, "entry_id"),
        (5, "entry_id"),
    }
    assert all(r.description for r in acks[-1].rejections)
    assert acks[-1].acknowledged_entry_count == 1
    assert [e.entry_id for e in await session.restore()] == ["e1"]
    assert count(db, models.ContactEntry) == 1


async def test_output_only_fields_are_not_stored(session: Session) -> None:
    """A contact's name and etag are the server's to give: an upload carrying them stores
    the contact without them (the rest byte for byte), and a valid birthday stays."""
    named = entry(1, name="users/someone/contacts/9", etag='W/"7"')
    named.contact.birthday.year, named.contact.birthday.month = 1990, 2
    named.contact.birthday.day = 14
    plain = entry(2)
    acks = await session.upload(chunks([named, plain], "named"))
    assert not acks[-1].rejections and acks[-1].acknowledged_entry_count == 2
    restored = {e.entry_id: e.contact for e in await session.restore()}
    expected = common_pb2.Contact()
    expected.CopyFrom(named.contact)
    expected.ClearField("name")
    expected.ClearField("etag")
    assert restored == {"e1": expected, "e2": plain.contact}


async def test_books_are_private(running_server: RunningServer, session: Session) -> None:
    await session.upload(chunks([entry(1)], "mine"))
    books = await session.stub.ListAddressBooks(
        sync_pb2.ListAddressBooksRequest(), metadata=session.md
    )
    assert [(b.address_book_id, b.entry_count) for b in books.address_books] == [("phone", 1)]
    other = AsyncClient(running_server.target, retries=0)
    await other.account.register(
        display_name="Other", phone_numbers=["13811111111"], region_code="CN"
    )
    owner = session.client.token
    stub = sync_pb2_grpc.SyncServiceStub(other.channel)
    me = (await session.client.account.get_me()).user.user_id
    call = stub.RestoreContacts(
        sync_pb2.RestoreContactsRequest(address_book=f"users/{me}/addressBooks/phone"),
        metadata=(("authorization", f"Bearer {other.token}"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _ = [b async for b in call]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert owner != other.token
    await other.close()


async def test_daily_key_quota(db: Database) -> None:
    async with serve(db, daily_key_quota=25) as server:
        client = AsyncClient(server.target, retries=0)
        await client.account.register(
            display_name="Crawler", phone_numbers=["13800000000"], region_code="CN"
        )
        session = Session(client)
        await session.upload(chunks([entry(i) for i in range(20)], "q-1"))
        # Re-sending known numbers costs nothing.
        await session.upload(chunks([entry(i) for i in range(20)], "q-2"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await session.upload(chunks([entry(i) for i in range(20, 40)], "q-3"))
        error = from_grpc_error(err.value)
        assert isinstance(error, ResourceExhausted)
        assert error.reason == "QUOTA_EXCEEDED"
        assert error.retry_delay is not None and 0 < error.retry_delay <= 86_400
        assert error.metadata["limit"] == "25"
        assert count(db, models.ContactEntry) == 20  # stored data untouched
        await client.close()


async def test_abandoned_upload_reports_expired(session: Session, db: Database) -> None:
    reqs = chunks([entry(i) for i in range(20)], "abandoned", size=10)
    await session.upload(reqs[:1])
    later = datetime.now(UTC) + UPLOAD_TTL + timedelta(minutes=1)
    with db.transaction(readonly=True) as s:
        me = (await session.client.account.get_me()).user.user_id
        assert upload_status(AddressBookRepository(s), me, "abandoned", later).state == (
            UploadState.EXPIRED
        )
    status = await session.stub.GetUploadStatus(
        sync_pb2.GetUploadStatusRequest(upload_id="abandoned"), metadata=session.md
    )
    assert status.state == sync_pb2.UPLOAD_STATE_IN_PROGRESS  # not expired yet
