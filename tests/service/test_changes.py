"""The contact change feed through the SDK: paging across 10,000 changes with writes in
between loses nothing, a replica following ListChanges converges to ListContacts (property
test, both sides writing), WatchChanges, and cursor expiry after pruning."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from befriend.clients import errors
from befriend.server.api.backend import utcnow
from befriend.server.services import retention
from befriend.server.storage.db import Database
from befriend.v1 import common_pb2, sync_pb2
from tests.conftest import RunningServer
from tests.service.conftest import Member, People, card, member

DELETED = sync_pb2.CONTACT_CHANGE_TYPE_DELETED
Replica = dict[str, common_pb2.Contact]


def _entry(entry_id: str, name: str) -> sync_pb2.AddressBookEntry:
    c = card(name, f"1390{abs(hash(entry_id)) % 10_000_000:07d}")
    return sync_pb2.AddressBookEntry(entry_id=entry_id, raw=c.SerializeToString(), contact=c)


async def _upload(m: Member, entries: list[sync_pb2.AddressBookEntry], full: bool = False) -> None:
    await m.client.sync.upload_contacts(
        address_book_id="phone",
        kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
        device_id="d",
        entries=entries,
        mode=sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT if full else sync_pb2.UPLOAD_MODE_INCREMENTAL,
    )


async def _server_state(m: Member) -> Replica:
    return {c.contact.name: c.contact async for c in m.client.sync.iter_contacts(page_size=1000)}


def _apply(replica: Replica, changes: list[sync_pb2.ContactChange]) -> None:
    for change in changes:
        if change.type == DELETED:
            replica.pop(change.contact_name, None)
        else:
            replica[change.contact_name] = change.contact.contact


async def _pull(m: Member, replica: Replica, cursor: str, page_size: int) -> tuple[str, bool]:
    """One ListChanges page into the replica: (new cursor, more to come)."""
    page = await m.client.sync.list_changes(cursor, page_size=page_size)
    _apply(replica, list(page.changes))
    return page.cursor, bool(page.next_page_token)


async def _drain(m: Member, replica: Replica, cursor: str, page_size: int) -> str:
    more = True
    while more:
        cursor, more = await _pull(m, replica, cursor, page_size)
    return cursor


async def test_paging_across_10000_changes_loses_none(
    people: People, running_server: RunningServer
) -> None:
    ann = await member(people, running_server, "ann", "+8613900000001")
    start = (await ann.client.sync.list_contacts()).change_cursor
    await _upload(ann, [_entry(f"e{i}", f"n{i}") for i in range(10_000)], full=True)
    replica: Replica = {}
    cursor, seen = start, 0
    for round_ in range(12):  # pages of 333 (across the 500-contact change numbers) ...
        page = await ann.client.sync.list_changes(cursor, page_size=333)
        _apply(replica, list(page.changes))
        seen += len(page.changes)
        cursor = page.cursor
        # ... with device edits, deletions and user edits in between
        await _upload(
            ann,
            [_entry(f"e{round_ * 700 + j}", f"v{round_}") for j in range(0, 300, 3)]
            + [
                sync_pb2.AddressBookEntry(entry_id=f"e{round_ * 700 + j}", deleted=True)
                for j in range(1, 300, 30)
            ],
        )
    await ann.client.sync.create_contact("phone", card("Zoe", "13912345678"))
    cursor = await _drain(ann, replica, cursor, 1000)
    assert seen == 12 * 333
    state = await _server_state(ann)
    assert len(state) == 10_000 - 12 * 10 + 1
    assert replica == state
    # caught up: nothing more, and the end cursor stays put
    page = await ann.client.sync.list_changes(cursor)
    assert not page.changes and page.cursor == cursor and not page.next_page_token


_IDS = st.sampled_from([f"e{i}" for i in range(8)])
_NAMES = st.sampled_from(["Al", "Bo", "Cy", "Di"])
_OP = st.one_of(
    st.tuples(
        st.just("upload"),
        st.lists(st.tuples(_IDS, st.one_of(_NAMES, st.none())), min_size=1, max_size=4),
        st.none(),
    ),
    st.tuples(st.just("full"), st.lists(st.tuples(_IDS, _NAMES), max_size=5), st.none()),
    st.tuples(st.just("update"), st.integers(0, 9), _NAMES),
    st.tuples(st.just("delete"), st.integers(0, 9), st.none()),
    st.tuples(st.just("create"), _NAMES, st.none()),
    st.tuples(st.just("pull"), st.none(), st.none()),
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_OP, min_size=1, max_size=14))
async def test_replica_following_the_feed_converges(
    people: People,
    running_server: RunningServer,
    ops: list[tuple[str, object, object]],
) -> None:
    m = await Member(running_server, f"p{len(people)}").register(f"+86139{len(people):08d}")
    people[m.name] = m
    await _upload(m, [_entry("e0", "Al")])
    replica: Replica = {}
    listing = await m.client.sync.list_contacts()
    replica.update({c.contact.name: c.contact for c in listing.contacts})
    cursor = listing.change_cursor
    for op, a, b in ops:
        names = sorted(await _server_state(m))
        if op == "upload":
            await _upload(
                m,
                [
                    _entry(i, n)
                    if n is not None
                    else sync_pb2.AddressBookEntry(entry_id=i, deleted=True)
                    for i, n in dict(a).items()  # type: ignore[call-overload]
                ],
            )
        elif op == "full":
            await _upload(m, [_entry(i, n) for i, n in dict(a).items()], full=True)  # type: ignore[call-overload]
        elif op in ("update", "delete") and names:
            target = await m.client.sync.get_contact(names[int(a) % len(names)])  # type: ignore[call-overload]
            if op == "update":
                edit = common_pb2.Contact(
                    name=target.contact.name, etag=target.contact.etag, remark=str(b)
                )
                await m.client.sync.update_contact(edit, ["remark", "given_name"])
            else:
                await m.client.sync.delete_contact(target.contact.name, target.contact.etag)
        elif op == "create":
            await m.client.sync.create_contact("phone", card(str(a)))
        elif op == "pull":
            cursor, _ = await _pull(m, replica, cursor, 2)
    await _drain(m, replica, cursor, 2)
    assert replica == await _server_state(m)


async def test_watch_changes_streams_new_changes(
    people: People, running_server: RunningServer
) -> None:
    ann = await member(people, running_server, "ann", "+8613900000001")
    await _upload(ann, [_entry("e0", "Al")])
    got: list[sync_pb2.ContactChange] = []

    async def watch() -> None:
        async for change in ann.client.sync.watch_changes():
            got.append(change)
            if len(got) == 2:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    made = await ann.client.sync.create_contact("phone", card("Bo"))
    for _ in range(100):  # a contact created and deleted within one poll shows only deleted
        if got:
            break
        await asyncio.sleep(0.05)
    await ann.client.sync.delete_contact(made.contact.name)
    await asyncio.wait_for(task, 10)
    assert [(c.type, c.contact_name) for c in got] == [
        (sync_pb2.CONTACT_CHANGE_TYPE_CREATED, made.contact.name),
        (DELETED, made.contact.name),
    ]
    # resuming from a change's cursor replays only what came after it
    rest = await ann.client.sync.list_changes(got[0].cursor)
    assert [c.type for c in rest.changes] == [DELETED]


async def test_expired_cursor_after_pruning(
    people: People, running_server: RunningServer, db: Database
) -> None:
    ann = await member(people, running_server, "ann", "+8613900000001")
    await _upload(ann, [_entry(f"e{i}", "Al") for i in range(3)])
    old = (await ann.client.sync.list_contacts()).change_cursor
    await _upload(ann, [sync_pb2.AddressBookEntry(entry_id="e1", deleted=True)])
    caught_up = await _drain(ann, {}, old, 100)
    before = await ann.client.sync.list_changes(old)
    assert [c.type for c in before.changes] == [DELETED]

    retention.prune_buddy_events(db, 1, utcnow() + timedelta(days=2))

    for cursor in (old, before.changes[0].cursor):
        with pytest.raises(errors.FailedPrecondition) as caught:
            await ann.client.sync.list_changes(cursor)
        assert caught.value.reason == "SYNC_CURSOR_EXPIRED"
    with pytest.raises(errors.FailedPrecondition):
        async for _ in ann.client.sync.watch_changes(old):
            pass
    # a cursor past the pruned changes still works, and a full resync starts afresh
    assert not (await ann.client.sync.list_changes(caught_up)).changes
    fresh = await ann.client.sync.list_contacts()
    assert fresh.total_size == 2
    await ann.client.sync.create_contact("phone", card("Bo"))
    assert len((await ann.client.sync.list_changes(fresh.change_cursor)).changes) == 1
