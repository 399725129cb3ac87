"""client.sync against the fake SyncService: chunking, acks, resume, restore, listing."""

from __future__ import annotations

import hashlib
from typing import TypedDict

import pytest

from befriend.clients.errors import NotFound, Unauthenticated, Unavailable
from befriend.clients.sdk import AsyncClient, Client, UploadResult
from befriend.v1 import common_pb2, sync_pb2

from .conftest import AioServer
from .fakes import USER, Recorder, StreamFault, ThreadedServer

PHONE = sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK


class _Backoff(TypedDict):
    initial_backoff: float
    max_backoff: float


FAST: _Backoff = {"initial_backoff": 0.001, "max_backoff": 0.01}


def make_entries(n: int, prefix: str = "c") -> list[sync_pb2.AddressBookEntry]:
    return [
        sync_pb2.AddressBookEntry(
            entry_id=f"{prefix}{i}",
            raw=f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{prefix} {i}\r\nEND:VCARD\r\n".encode(),
            raw_media_type="text/vcard",
            contact=common_pb2.Contact(display_name=f"{prefix} {i}"),
        )
        for i in range(n)
    ]


def chunks_sent(recorder: Recorder) -> list[int]:
    return [r.sequence_number for r in recorder.requests("UploadContacts")]


def assert_exactly_once(recorder: Recorder, entries: list[sync_pb2.AddressBookEntry]) -> None:
    applied = recorder.sync.applied
    assert set(applied) == {e.entry_id for e in entries}
    assert set(applied.values()) == {1}
    book = recorder.sync.books["phone"]
    assert list(book.entries) == [e.entry_id for e in entries]
    for entry in entries:
        assert book.entries[entry.entry_id].raw == entry.raw


async def test_upload_chunks_hashes_and_progress(aio_server: AioServer) -> None:
    entries = make_entries(1234)
    seen: list[tuple[int, int]] = []
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone",
            kind=PHONE,
            device_id="dev-1",
            entries=entries,
            chunk_size=100,
            upload_id="up-1",
            progress=lambda done, total: seen.append((done, total)),
        )
    assert result == UploadResult(
        upload_id="up-1",
        address_book=f"{USER}/addressBooks/phone",
        acknowledged_entry_count=1234,
        rejections=[],
        committed=True,
        resumed_streams=0,
    )
    rec = aio_server.recorder
    requests = rec.requests("UploadContacts")
    assert [r.sequence_number for r in requests] == list(range(1, 14))
    assert [r.final for r in requests] == [False] * 12 + [True]
    assert [len(r.entries) for r in requests] == [100] * 12 + [34]
    first = requests[0]
    assert (first.address_book_id, first.address_book_kind, first.device_id) == (
        "phone",
        PHONE,
        "dev-1",
    )
    assert first.mode == sync_pb2.UPLOAD_MODE_INCREMENTAL
    assert first.expected_entry_count == 1234
    assert {r.upload_id for r in requests} == {"up-1"}
    sent = [e for r in requests for e in r.entries]
    assert all(e.content_hash == hashlib.sha256(e.raw).hexdigest() for e in sent)
    assert not entries[0].content_hash  # the caller's messages are left alone
    assert {md["authorization"] for md in rec.metadata("UploadContacts")} == {"Bearer t"}
    assert seen[-1] == (1234, 1234)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly increasing
    assert_exactly_once(rec, entries)
    assert rec.requests("GetUploadStatus") == []


async def test_upload_resumes_after_broken_streams(aio_server: AioServer) -> None:
    rec = aio_server.recorder
    # Stream 1 breaks after 3 acked chunks; stream 2 stores its 2nd chunk (6) but breaks
    # before acking it, so the client only learns of it from GetUploadStatus.
    rec.sync.upload_faults.extend([StreamFault(3), StreamFault(2, ack_last=False)])
    entries = make_entries(95)
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries, chunk_size=10
        )
    assert result.committed and result.resumed_streams == 2
    assert result.acknowledged_entry_count == 95
    assert chunks_sent(rec) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert rec.sync.upload_streams == 3
    statuses = rec.requests("GetUploadStatus")
    assert [s.upload_id for s in statuses] == [result.upload_id] * 2
    assert {md["authorization"] for md in rec.metadata("GetUploadStatus")} == {"Bearer t"}
    assert_exactly_once(rec, entries)


async def test_resent_chunks_are_reacknowledged_not_reapplied(aio_server: AioServer) -> None:
    # The fake applies chunk 2 and breaks; the status call fails once too. A client that
    # resumed from its own last ack would resend chunk 2: the server must not re-apply it.
    rec = aio_server.recorder
    rec.sync.upload_faults.append(StreamFault(2, ack_last=False))
    rec.sync.status_failures = 1
    entries = make_entries(30)
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries, chunk_size=10
        )
    assert result.resumed_streams == 2  # the failed status call counts as one attempt
    assert chunks_sent(rec) == [1, 2, 3]
    assert_exactly_once(rec, entries)


def test_sync_client_resumes_too(threaded_server: ThreadedServer) -> None:
    rec = threaded_server.recorder
    rec.sync.upload_faults.extend([StreamFault(1), StreamFault(4, code=None)])
    entries = make_entries(2000)
    seen: list[int] = []
    with Client(threaded_server.target, token="t", **FAST) as client:
        result = client.sync.upload_contacts(
            address_book_id="phone",
            kind=PHONE,
            device_id="d",
            entries=iter(entries),  # any iterable; materialised once
            chunk_size=50,
            progress=lambda done, total: seen.append(done),
        )
    assert result.committed and result.resumed_streams == 2
    assert result.acknowledged_entry_count == 2000
    assert chunks_sent(rec) == list(range(1, 41))
    assert seen[-1] == 2000
    assert_exactly_once(rec, entries)


async def test_upload_restarts_when_the_server_never_saw_it(aio_server: AioServer) -> None:
    rec = aio_server.recorder
    rec.sync.upload_faults.append(StreamFault(0))  # dropped before any chunk was read
    entries = make_entries(3)
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries
        )
    assert result.committed and result.resumed_streams == 1
    assert chunks_sent(rec) == [1]
    assert_exactly_once(rec, entries)


async def test_final_chunk_stored_but_unacked_is_not_resent(aio_server: AioServer) -> None:
    rec = aio_server.recorder
    rec.sync.upload_faults.append(StreamFault(3, ack_last=False))
    entries = make_entries(25)
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries, chunk_size=10
        )
    assert result.committed and result.acknowledged_entry_count == 25
    assert result.address_book == f"{USER}/addressBooks/phone"
    assert chunks_sent(rec) == [1, 2, 3]  # GetUploadStatus said COMMITTED
    assert rec.sync.upload_streams == 1
    assert_exactly_once(rec, entries)


async def test_resumes_are_bounded_by_retries(aio_server: AioServer) -> None:
    rec = aio_server.recorder
    rec.sync.upload_faults.extend([StreamFault(1)] * 5)
    async with AsyncClient(aio_server.target, token="t", retries=2, **FAST) as client:
        with pytest.raises(Unavailable):
            await client.sync.upload_contacts(
                address_book_id="phone",
                kind=PHONE,
                device_id="d",
                entries=make_entries(100),
                chunk_size=10,
            )
    assert rec.sync.upload_streams == 3
    assert chunks_sent(rec) == [1, 2, 3]
    assert "phone" not in rec.sync.books  # never committed


def test_no_retry_disables_resume_and_other_errors_raise_at_once(
    threaded_server: ThreadedServer,
) -> None:
    rec = threaded_server.recorder
    rec.sync.upload_faults.append(StreamFault(1))
    client = Client(threaded_server.target, token="t", retries=0)
    with client, pytest.raises(Unavailable):
        client.sync.upload_contacts(
            address_book_id="phone",
            kind=PHONE,
            device_id="d",
            entries=make_entries(3),
            chunk_size=1,
        )
    assert chunks_sent(rec) == [1]
    with Client(threaded_server.target, **FAST) as anonymous, pytest.raises(Unauthenticated):
        anonymous.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=make_entries(3)
        )
    assert rec.requests("GetUploadStatus") == []


async def test_rejections_are_collected_once(aio_server: AioServer) -> None:
    entries = make_entries(12)
    entries[1].raw = b"REJECT me"
    entries[5].entry_id = ""
    entries[7].content_hash = "00" * 32
    aio_server.recorder.sync.upload_faults.append(StreamFault(2))
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries, chunk_size=4
        )
    assert result.acknowledged_entry_count == 9
    assert [(r.sequence_number, r.entry_index, r.field) for r in result.rejections] == [
        (1, 1, "contact.mobile_numbers[0].raw"),
        (2, 1, "entry_id"),
        (2, 3, "content_hash"),
    ]


async def test_empty_full_snapshot_commits_one_empty_chunk(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t") as client:
        result = await client.sync.upload_contacts(
            address_book_id="phone",
            kind=PHONE,
            device_id="d",
            entries=[],
            mode=sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT,
        )
        with pytest.raises(ValueError, match="chunk_size"):
            await client.sync.upload_contacts(
                address_book_id="phone", kind=PHONE, device_id="d", entries=[], chunk_size=501
            )
    assert result.committed and result.acknowledged_entry_count == 0
    (only,) = aio_server.recorder.requests("UploadContacts")
    assert only.final and not only.entries and only.mode == sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT


async def test_status_list_and_restore(aio_server: AioServer) -> None:
    rec = aio_server.recorder
    entries = make_entries(450)
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        up = await client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries
        )
        await client.sync.upload_contacts(
            address_book_id="mail",
            kind=sync_pb2.ADDRESS_BOOK_KIND_EMAIL_BOOK,
            device_id="d",
            entries=make_entries(2, "m"),
        )
        status = await client.sync.get_upload_status(up.upload_id)
        assert status.state == sync_pb2.UPLOAD_STATE_COMMITTED
        assert status.last_acknowledged_sequence_number == 1
        with pytest.raises(NotFound):
            await client.sync.get_upload_status("nope")

        page = await client.sync.list_address_books(page_size=1)
        assert [b.address_book_id for b in page.address_books] == ["mail"]
        books = [b async for b in client.sync.iter_address_books(page_size=1)]
        assert [(b.address_book_id, b.entry_count) for b in books] == [("mail", 2), ("phone", 450)]
        assert rec.requests("ListAddressBooks")[0].parent == "users/me"

        held = [e.entry_id for e in entries[:10]]
        hashes = [hashlib.sha256(entries[20].raw).hexdigest()]
        restored = await client.sync.restore_contacts(
            "phone", device_id="d", held_entry_ids=held, held_content_hashes=hashes, batch_size=100
        )
        assert [e.entry_id for e in restored] == [
            e.entry_id for i, e in enumerate(entries) if i >= 10 and i != 20
        ]
        assert all(r.raw == entries[int(r.entry_id[1:])].raw for r in restored)
        request = rec.sync.restore_requests[0]
        assert request.address_book == "users/me/addressBooks/phone"
        assert (request.device_id, request.batch_size) == ("d", 100)

        first_three = []
        async for entry in client.sync.iter_restore_contacts(f"{USER}/addressBooks/phone"):
            first_three.append(entry.entry_id)
            if len(first_three) == 3:
                break
        assert first_three == ["c0", "c1", "c2"]
        with pytest.raises(NotFound):
            await client.sync.restore_contacts("nope")
    assert {md["authorization"] for md in rec.metadata("RestoreContacts")} == {"Bearer t"}


def test_restore_resumes_holding_what_it_received(threaded_server: ThreadedServer) -> None:
    rec = threaded_server.recorder
    entries = make_entries(50)
    with Client(threaded_server.target, token="t", **FAST) as client:
        client.sync.upload_contacts(
            address_book_id="phone", kind=PHONE, device_id="d", entries=entries
        )
        rec.sync.restore_faults.extend([StreamFault(2), StreamFault(0), StreamFault(1)])
        restored = client.sync.restore_contacts("phone", held_entry_ids=["c49"], batch_size=10)
    assert [e.entry_id for e in restored] == [e.entry_id for e in entries[:49]]
    requests = rec.sync.restore_requests
    assert len(requests) == 4
    assert list(requests[1].held_entry_ids) == ["c49"] + [f"c{i}" for i in range(20)]
    assert len(requests[3].held_entry_ids) == 1 + 30
