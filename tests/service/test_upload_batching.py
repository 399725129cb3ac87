"""UploadContacts applies the chunks already received in one transaction: acks in order and
only after the commit, errors still per chunk, matching over the batch's keys. On a real
server, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest

from befriend.clients import AsyncClient, from_grpc_error
from befriend.clients.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from befriend.server.api import sync
from befriend.server.services import addressbooks
from befriend.server.storage.db import Database
from befriend.v1 import common_pb2, sync_pb2
from tests.conftest import RunningServer, serve
from tests.service.conftest import FULL, ONE_WAY, People, card, member
from tests.service.test_upload_restore import Session, chunks, feed

pytestmark = pytest.mark.asyncio
PHONE = sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK


def entry(i: int, phone: str = "") -> sync_pb2.AddressBookEntry:
    c = common_pb2.Contact(display_name=f"Friend {i}")
    c.mobile_numbers.add(raw=phone or f"137{i:08d}")
    return sync_pb2.AddressBookEntry(entry_id=f"e{i}", raw=c.SerializeToString(), contact=c)


class Uploader(Session):
    async def send_all(
        self, reqs: Sequence[sync_pb2.UploadContactsRequest]
    ) -> tuple[list[sync_pb2.UploadContactsResponse], Exception | None]:
        """Every request sent at once, without waiting for acks: (acks, error)."""
        acks: list[sync_pb2.UploadContactsResponse] = []
        try:
            async for ack in self.stub.UploadContacts(feed(reqs), metadata=self.md):
                acks.append(ack)
        except grpc.aio.AioRpcError as err:
            return acks, from_grpc_error(err)
        return acks, None

    async def stored(self) -> list[str]:
        """The entry ids the server holds in the book, through the SDK's restore."""
        entries = await self.client.sync.restore_contacts("phone")
        return sorted(e.entry_id for e in entries)


async def _uploader(target: str, phone: str = "13800000000") -> Uploader:
    client = AsyncClient(target, retries=0)
    await client.account.register(display_name="Uploader", phone_numbers=[phone], region_code="CN")
    return Uploader(client)


@pytest.fixture
async def uploader(running_server: RunningServer) -> AsyncIterator[Uploader]:
    up = await _uploader(running_server.target)
    yield up
    await up.client.close()


class Batches:
    """Spies on the server: the sequence numbers of the chunks of each transaction tried
    (``apply_chunks`` calls), and optionally holds the first batch back until ``hold``
    items (chunks, or the stream's end) have arrived, so that it is a batch of them all."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: int = 0) -> None:
        self.tried: list[list[int]] = []
        real_apply = addressbooks.apply_chunks
        real_next = sync._Batches.next
        held = [hold]

        def apply_chunks(*args: Any, **kw: Any) -> addressbooks.BatchResult:
            self.tried.append([c.sequence for c in args[3]])
            return real_apply(*args, **kw)

        async def next_batch(
            batches: sync._Batches,
        ) -> tuple[list[addressbooks.Chunk], sync._End | None]:
            if held[0]:
                for _ in range(1000):  # 5 s at most
                    if batches.queue.qsize() >= held[0]:
                        break
                    await asyncio.sleep(0.005)
                held[0] = 0
            return await real_next(batches)

        monkeypatch.setattr(addressbooks, "apply_chunks", apply_chunks)
        monkeypatch.setattr(sync._Batches, "next", next_batch)


def _readers() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == sync._read_chunks.__qualname__
    ]


async def no_reader_left() -> bool:
    """Whether every upload stream's reader task has ended (within 2 s)."""
    for _ in range(200):
        if not _readers():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_many_chunks_sent_ahead_are_batched_and_acked_in_order(
    uploader: Uploader, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Batches(monkeypatch, hold=addressbooks.MAX_BATCH_CHUNKS)
    reqs = chunks([entry(i) for i in range(2000)], "many", size=50)  # 40 chunks
    acks, error = await uploader.send_all(reqs)
    assert error is None
    assert [a.acknowledged_sequence_number for a in acks] == list(range(1, 41))
    assert [a.acknowledged_entry_count for a in acks] == [50 * n for n in range(1, 41)]
    assert [a.last_acknowledged_entry_id for a in acks] == [f"e{50 * n - 1}" for n in range(1, 41)]
    assert [a.committed for a in acks] == [False] * 39 + [True]
    # Several chunks per transaction (the first batch is all 8 that were waiting), each
    # chunk applied once: no batch failed, none is over the cap.
    assert spy.tried[0] == list(range(1, 9))
    assert [s for batch in spy.tried for s in batch] == list(range(1, 41))
    assert max(len(b) for b in spy.tried) == addressbooks.MAX_BATCH_CHUNKS
    stored = await uploader.stored()
    assert len(stored) == 2000 and stored == sorted(f"e{i}" for i in range(2000))
    assert await no_reader_left()


async def test_sdk_upload_with_its_window(uploader: Uploader) -> None:
    progress: list[int] = []
    result = await uploader.client.sync.upload_contacts(
        address_book_id="phone",
        kind=PHONE,
        device_id="dev-1",
        entries=[entry(i) for i in range(3000)],
        chunk_size=60,
        progress=lambda acked, _total: progress.append(acked),
    )
    assert result.committed and result.acknowledged_entry_count == 3000
    assert progress == sorted(progress) and progress[-1] == 3000
    assert len(await uploader.stored()) == 3000


async def test_batch_entry_cap(uploader: Uploader, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Batches(monkeypatch, hold=6)
    monkeypatch.setattr(sync, "MAX_BATCH_ENTRIES", 25)
    acks, error = await uploader.send_all(chunks([entry(i) for i in range(50)], "cap", size=10))
    assert error is None and acks[-1].committed
    assert [a.acknowledged_sequence_number for a in acks] == [1, 2, 3, 4, 5]
    assert spy.tried[:2] == [[1, 2], [3, 4]]  # a third chunk of 10 would pass 25 entries
    assert len(await uploader.stored()) == 50


@pytest.mark.parametrize("bad", ["gap", "too_big"])
async def test_bad_chunk_in_a_batch_fails_alone(
    uploader: Uploader, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    reqs = chunks([entry(i) for i in range(200)], "bad", size=10)  # 20 chunks
    if bad == "gap":
        sent = reqs[:3] + reqs[4:]  # no chunk 4
    else:
        big = sync_pb2.UploadContactsRequest()
        big.CopyFrom(reqs[3])
        del big.entries[:]
        big.entries.extend(entry(i) for i in range(1000, 1501))  # 501 entries
        sent = [*reqs[:3], big, *reqs[4:]]
    # The first batch: the first 8 chunks; more wait behind them in the stream.
    spy = Batches(monkeypatch, hold=addressbooks.MAX_BATCH_CHUNKS)
    acks, error = await uploader.send_all(sent)
    # The chunks before the bad one are stored and acknowledged, the bad one fails with its
    # own error, nothing of it or after it is stored.
    assert [a.acknowledged_sequence_number for a in acks] == [1, 2, 3]
    assert acks[-1].acknowledged_entry_count == 30
    if bad == "gap":
        assert isinstance(error, FailedPrecondition)
        assert error.reason == "SEQUENCE_GAP" and error.metadata["expected"] == "4"
    else:
        assert isinstance(error, InvalidArgument)
        assert error.reason == "CHUNK_TOO_LARGE"
        assert error.field_violations[0].field == "entries"
        assert error.metadata["limit"] == "500"
    # Tried together, rolled back, then one chunk per transaction up to the bad one.
    first = [r.sequence_number for r in sent[:8]]
    assert spy.tried == [first, [1], [2], [3], [sent[3].sequence_number]]
    assert await uploader.stored() == sorted(f"e{i}" for i in range(30))
    status = await uploader.client.sync.get_upload_status("bad")
    assert status.last_acknowledged_sequence_number == 3
    assert status.acknowledged_entry_count == 30
    assert await no_reader_left()  # not even one blocked on the full queue
    # The upload resumes from the chunk after the last ack.
    acks, error = await uploader.send_all(reqs[3:])
    assert error is None and acks[-1].committed and acks[-1].acknowledged_entry_count == 200
    assert len(await uploader.stored()) == 200


async def test_quota_is_charged_once_after_a_failed_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks 1 and 2 fit the quota of 25 new numbers, chunk 3 does not. The batch of all
    # three is rolled back; its keys must not count as held when the chunks are redone.
    async with serve(db, daily_key_quota=25) as server:
        up = await _uploader(server.target)
        try:
            spy = Batches(monkeypatch, hold=4)
            acks, error = await up.send_all(chunks([entry(i) for i in range(30)], "q", size=10))
            assert [a.acknowledged_sequence_number for a in acks] == [1, 2]
            assert isinstance(error, ResourceExhausted)
            assert error.reason == "QUOTA_EXCEEDED"
            assert error.metadata["used"] == "20" and error.metadata["requested"] == "10"
            assert spy.tried == [[1, 2, 3], [1], [2], [3]]
            assert await up.stored() == sorted(f"e{i}" for i in range(20))
        finally:
            await up.client.close()


async def test_duplicate_chunks_in_a_batch_are_harmless(
    uploader: Uploader, monkeypatch: pytest.MonkeyPatch
) -> None:
    reqs = chunks([entry(i) for i in range(30)], "dup", size=10)
    other = sync_pb2.UploadContactsRequest()
    other.CopyFrom(reqs[0])  # chunk 1 again, with other entries: only re-acknowledged
    del other.entries[:]
    other.entries.extend(entry(i) for i in range(100, 110))
    sent = [reqs[0], reqs[0], reqs[1], other, reqs[1], reqs[2], reqs[2]]
    spy = Batches(monkeypatch, hold=len(sent))
    acks, error = await uploader.send_all(sent)
    assert error is None
    assert spy.tried == [[1, 1, 2, 1, 2, 3, 3]]  # one transaction
    assert [a.acknowledged_sequence_number for a in acks] == [1, 1, 2, 2, 2, 3, 3]
    assert [a.acknowledged_entry_count for a in acks] == [10, 10, 20, 20, 20, 30, 30]
    assert [a.committed for a in acks] == [False] * 5 + [True] * 2
    assert await uploader.stored() == sorted(f"e{i}" for i in range(30))


async def test_cancelled_stream_leaves_no_reader(uploader: Uploader) -> None:
    reqs = chunks([entry(i) for i in range(100)], "cancel", size=10)
    call = uploader.stub.UploadContacts(None, metadata=uploader.md)
    await call.write(reqs[0])
    first = await call.read()
    assert isinstance(first, sync_pb2.UploadContactsResponse)
    for r in reqs[1:4]:
        await call.write(r)
    assert _readers()  # the stream's reader is waiting for the next chunk
    call.cancel()
    assert await no_reader_left()
    # A transaction under way when the client went still commits: wait for the two reads
    # to agree, then whole chunks only are stored.
    for _ in range(100):
        status = await uploader.client.sync.get_upload_status("cancel")
        stored = await uploader.stored()
        if len(stored) == status.acknowledged_entry_count:
            break
        await asyncio.sleep(0.02)
    acked = status.last_acknowledged_sequence_number
    assert 1 <= acked <= 4
    assert stored == sorted(f"e{i}" for i in range(10 * acked))


async def test_matching_over_a_batch(
    people: People, running_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await member(people, running_server, "alice", "13900000001")
    bob = await member(people, running_server, "bob", "13900000002")
    carol = await member(people, running_server, "carol", "13900000003")
    dave = await member(people, running_server, "dave", "13900000004")
    await bob.upload(card("Alice", "+86 139 0000 0001"))
    # Alice's book in three chunks applied in one transaction: dave in chunk 1 (deleted
    # again by chunk 3), bob in chunk 2, carol in chunk 3, among non-members.
    first = [entry(i) for i in range(10)] + [entry(10, "139-0000-0004")]
    second = [entry(i) for i in range(20, 30)] + [entry(30, "139 0000 0002")]
    third = [entry(i) for i in range(40, 50)] + [
        entry(50, "13900000003"),
        sync_pb2.AddressBookEntry(entry_id="e10", deleted=True),
    ]
    reqs = [
        sync_pb2.UploadContactsRequest(
            address_book_id="phone",
            address_book_kind=PHONE,
            device_id="dev-a",
            upload_id="alice-book",
            sequence_number=n,
            entries=chunk,
            final=n == 3,
        )
        for n, chunk in enumerate([first, second, third], start=1)
    ]
    spy = Batches(monkeypatch, hold=4)
    acks = [a async for a in alice.sync.UploadContacts(feed(reqs), metadata=alice.md)]
    assert [a.acknowledged_sequence_number for a in acks] == [1, 2, 3]
    assert acks[-1].committed
    assert spy.tried == [[1, 2, 3]]
    kinds = await alice.kinds()
    assert kinds[f"users/{bob.id}"] == FULL
    assert kinds[f"users/{carol.id}"] == ONE_WAY
    assert f"users/{dave.id}" not in kinds
    assert (await bob.kinds())[f"users/{alice.id}"] == FULL
    assert await carol.requests() == [f"users/{alice.id}"]
    assert await dave.requests() == []
    assert f"users/{alice.id}" not in await dave.kinds()


def _alice_chunk(n: int, phone: str, *, final: bool) -> sync_pb2.UploadContactsRequest:
    return sync_pb2.UploadContactsRequest(
        address_book_id="phone",
        address_book_kind=PHONE,
        device_id="dev-a",
        upload_id="alice-slow",
        sequence_number=n,
        entries=[entry(10 * n + i) for i in range(5)] + [entry(10 * n + 9, phone)],
        final=final,
    )


async def _send(call: Any, req: sync_pb2.UploadContactsRequest) -> sync_pb2.UploadContactsResponse:
    """Write one chunk on an open UploadContacts call and read its ack."""
    await call.write(req)
    ack = await call.read()
    assert isinstance(ack, sync_pb2.UploadContactsResponse)
    return ack


async def test_an_upload_is_matched_when_its_final_chunk_commits(
    people: People, running_server: RunningServer
) -> None:
    alice = await member(people, running_server, "alice", "13900000001")
    bob = await member(people, running_server, "bob", "13900000002")
    carol = await member(people, running_server, "carol", "13900000003")
    await bob.upload(card("Alice", "+86 139 0000 0001"))
    call = alice.sync.UploadContacts(None, metadata=alice.md)
    # chunk 1 names bob, chunk 2 carol: each acked (stored) in its own transaction...
    for n, phone in ((1, "13900000002"), (2, "13900000003")):
        ack = await _send(call, _alice_chunk(n, phone, final=False))
        assert ack.acknowledged_sequence_number == n and not ack.committed
    before = await alice.kinds()  # ...and matched only when the upload commits
    assert f"users/{bob.id}" not in before and f"users/{carol.id}" not in before
    assert (await _send(call, _alice_chunk(3, "13700000000", final=True))).committed
    await call.done_writing()
    kinds = await alice.kinds()
    assert kinds[f"users/{bob.id}"] == FULL and kinds[f"users/{carol.id}"] == ONE_WAY
    assert (await bob.kinds())[f"users/{alice.id}"] == FULL


async def test_an_upload_that_never_commits_is_matched_by_the_job(
    people: People, db: Database
) -> None:
    async with serve(db, pending_match_seconds=0.4) as server:
        alice = await member(people, server, "alice", "13900000001")
        bob = await member(people, server, "bob", "13900000002")
        await bob.upload(card("Alice", "+86 139 0000 0001"))
        call = alice.sync.UploadContacts(None, metadata=alice.md)
        ack = await _send(call, _alice_chunk(1, "13900000002", final=False))
        assert ack.acknowledged_sequence_number == 1
        call.cancel()  # the stream drops before its final chunk
        for _ in range(200):  # the job runs every 0.1 s; 10 s at most
            if (await alice.kinds()).get(f"users/{bob.id}") == FULL:
                break
            await asyncio.sleep(0.05)
        assert (await alice.kinds())[f"users/{bob.id}"] == FULL
        assert (await bob.kinds())[f"users/{alice.id}"] == FULL


async def test_an_empty_final_chunk_matches_the_chunks_before_it(
    people: People, running_server: RunningServer
) -> None:
    alice = await member(people, running_server, "alice", "13900000001")
    bob = await member(people, running_server, "bob", "13900000002")
    await bob.upload(card("Alice", "+86 139 0000 0001"))
    call = alice.sync.UploadContacts(None, metadata=alice.md)
    await _send(call, _alice_chunk(1, "13900000002", final=False))
    final = _alice_chunk(2, "", final=True)
    del final.entries[:]  # nothing new: the commit alone matches chunk 1's keys
    assert (await _send(call, final)).committed
    await call.done_writing()
    assert (await alice.kinds())[f"users/{bob.id}"] == FULL
