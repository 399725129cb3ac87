"""Incremental buddy matching through the write paths (SQLite and PostgreSQL): an upload
(matched when its final chunk commits), CreateContact / UpdateContact / DeleteContact pass
only the keys they added or removed to ``matching.match_user`` (a new book: the whole book);
an edit that changes no identity (a rename) does no matching work and leaves every buddy row
as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from befriend.server.services import matching
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.v1 import common_pb2, sync_pb2
from tests.conftest import RunningServer
from tests.service.conftest import FULL, ONE_WAY, PHONEBOOK, Member, People, card, member

pytestmark = pytest.mark.asyncio

BOOK = 2_000  # contacts in alice's book: 1,998 non-members, bob and carol
CHUNK = 500
BOB, CAROL, ALICE = "13900000002", "13900000003", "13900000001"


def _key(national: str) -> int:
    return int("86" + national)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every match_user call: the ``keys`` it was given (None: the whole books)."""
    seen: list[Any] = []
    real = matching.match_user

    def spy(*args: Any, **kwargs: Any) -> Any:
        keys = kwargs.get("keys")
        seen.append(None if keys is None else set(keys))
        return real(*args, **kwargs)

    monkeypatch.setattr(matching, "match_user", spy)
    yield seen


def _entry(i: int, contact: common_pb2.Contact) -> sync_pb2.AddressBookEntry:
    return sync_pb2.AddressBookEntry(
        entry_id=f"c{i}", raw=contact.SerializeToString(), contact=contact
    )


def _book() -> list[sync_pb2.AddressBookEntry]:
    out = [_entry(i, card(f"N{i}", f"1380000{i:04d}")) for i in range(BOOK - 2)]
    out.append(_entry(BOOK - 2, card("Bob", BOB)))
    out.append(_entry(BOOK - 1, card("Carol", CAROL)))
    return out


async def _upload(
    m: Member, entries: list[sync_pb2.AddressBookEntry], mode: int
) -> list[sync_pb2.UploadContactsResponse]:
    m.uploads += 1
    chunks = [entries[i : i + CHUNK] for i in range(0, len(entries), CHUNK)] or [[]]

    async def requests() -> AsyncIterator[sync_pb2.UploadContactsRequest]:
        for n, part in enumerate(chunks, start=1):
            yield sync_pb2.UploadContactsRequest(
                address_book_id="phone",
                address_book_kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
                device_id="d",
                upload_id=f"{m.name}-{m.uploads}",
                sequence_number=n,
                entries=part,
                final=n == len(chunks),
                mode=mode,  # type: ignore[arg-type]
            )

    acks = [a async for a in m.sync.UploadContacts(requests(), metadata=m.md)]
    assert acks[-1].committed
    return acks


def _rows(db: Database) -> list[tuple[Any, ...]]:
    b = models.BuddyRow
    with db.transaction(readonly=True) as s:
        return sorted(
            tuple(r)
            for r in s.execute(
                select(b.id, b.owner_id, b.kind, b.key, b.entry_pk, b.origin, b.updated_at)
            )
        )


async def _contact_named(m: Member, name: str) -> sync_pb2.SyncedContact:
    token = ""
    while True:
        page = await m.sync.ListContacts(
            sync_pb2.ListContactsRequest(
                address_book="users/me/addressBooks/phone", page_size=1000, page_token=token
            ),
            metadata=m.md,
        )
        for c in page.contacts:
            if c.contact.display_name == name:
                return c
        token = page.next_page_token
        if not token:
            raise AssertionError(f"no contact {name}")


async def test_renaming_a_contact_in_a_big_book_does_no_matching_work(
    people: People, running_server: RunningServer, db: Database, calls: list[Any]
) -> None:
    alice = await member(people, running_server, "alice", ALICE)
    bob = await member(people, running_server, "bob", BOB)
    await member(people, running_server, "carol", CAROL)
    calls.clear()
    await _upload(alice, _book(), sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT)
    # One match, when the final chunk committed: every key of the book changed, so it is a
    # pass over the whole book (matching.WHOLE_BOOK_SHARE), not a restricted match per batch.
    assert calls == [None]
    before = _rows(db)
    mine = [r for r in before if r[1] == alice.id]
    assert sorted(r[2] for r in mine) == [ONE_WAY, ONE_WAY]  # phonebook buddies: not stored
    listed = [b.kind async for b in alice.client.friendship.iter_buddies(page_size=300)]
    assert listed == [ONE_WAY, ONE_WAY] + [PHONEBOOK] * (BOOK - 2)  # derived when listed

    calls.clear()
    renamed = card("Bobby", BOB)  # same number, new name: an in-place update
    await _upload(alice, [_entry(BOOK - 2, renamed)], sync_pb2.UPLOAD_MODE_INCREMENTAL)
    phonebook = _entry(7, card("Renamed seven", "13800000007"))
    await _upload(alice, [phonebook], sync_pb2.UPLOAD_MODE_INCREMENTAL)
    assert calls == []
    assert _rows(db) == before  # not a row rewritten (updated_at included)
    buddy = (await alice.buddies())[f"users/{bob.id}"]
    assert buddy.phonebook_entry.display_name == "Bobby"  # the row shows the stored entry

    # A rename through UpdateContact does no matching work either.
    target = await _contact_named(alice, "Carol")
    edit = common_pb2.Contact(
        name=target.contact.name, etag=target.contact.etag, remark="Carol from work"
    )
    await alice.client.sync.update_contact(edit, ["remark"])
    assert calls == []
    assert _rows(db) == before


async def test_changing_a_number_moves_the_match(
    people: People, running_server: RunningServer, calls: list[Any]
) -> None:
    alice = await member(people, running_server, "alice", ALICE)
    bob = await member(people, running_server, "bob", BOB)
    carol = await member(people, running_server, "carol", CAROL)
    await carol.upload(card("Alice", ALICE))
    await _upload(
        alice,
        [_entry(0, card("Friend", BOB)), _entry(1, card("Other", "13800000001"))],
        sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT,
    )
    other = f"users/{alice.id}/buddies/k8613800000001"
    assert await alice.kinds() == {f"users/{bob.id}": ONE_WAY, other: PHONEBOOK}
    assert await bob.requests() == [f"users/{alice.id}"]

    # The device changes the contact's number from bob's to carol's: only those two keys.
    calls.clear()
    await _upload(alice, [_entry(0, card("Friend", CAROL))], sync_pb2.UPLOAD_MODE_INCREMENTAL)
    assert calls == [{_key(BOB), _key(CAROL)}]
    kinds = await alice.kinds()
    assert f"users/{bob.id}" not in kinds
    assert kinds[f"users/{carol.id}"] == FULL  # carol holds alice: now mutual
    assert (await carol.kinds())[f"users/{alice.id}"] == FULL
    assert await bob.requests() == []

    # UpdateContact moves it back; only the old and new keys are matched.
    friend = await _contact_named(alice, "Friend")
    edit = common_pb2.Contact(name=friend.contact.name, etag=friend.contact.etag)
    edit.mobile_numbers.add(raw=BOB)
    calls.clear()
    await alice.client.sync.update_contact(edit, ["mobile_numbers"])
    assert calls == [{_key(BOB), _key(CAROL)}]
    assert (await alice.kinds())[f"users/{bob.id}"] == ONE_WAY
    assert f"users/{carol.id}" not in await alice.kinds()
    assert (await carol.kinds())[f"users/{alice.id}"] == ONE_WAY

    # CreateContact and DeleteContact pass the keys of the contact made or removed.
    calls.clear()
    made = await alice.client.sync.create_contact("phone", card("New", "13800000009"))
    assert calls == [{_key("13800000009")}]
    assert (await alice.kinds())[f"users/{alice.id}/buddies/k8613800000009"] == PHONEBOOK
    friend = await _contact_named(alice, "Friend")
    calls.clear()
    await alice.client.sync.delete_contact(friend.contact.name, friend.contact.etag)
    await alice.client.sync.delete_contact(made.contact.name)
    assert calls == [{_key(BOB)}, {_key("13800000009")}]
    assert set(await alice.kinds()) == {other}
    assert await bob.requests() == []


def _entry_pks(db: Database, user_id: str) -> tuple[set[int], set[int], dict[str, int | None]]:
    """(the user's entry pks, entry pks their key rows name, other -> entry pk of their
    buddy rows): the bulk tables have no foreign keys, so the code keeps them consistent."""
    e, k, b = models.ContactEntry, models.EntryKey, models.BuddyRow
    with db.transaction(readonly=True) as s:
        entries = set(s.scalars(select(e.id).where(e.user_id == user_id)))
        keyed = set(s.scalars(select(k.entry_pk).where(k.user_id == user_id)))
        rows = {
            o: pk
            for o, pk in s.execute(select(b.other_id, b.entry_pk).where(b.owner_id == user_id))
            if o
        }
    return entries, keyed, rows


async def test_deleting_contacts_removes_their_keys_and_repoints_matches(
    people: People, running_server: RunningServer, db: Database
) -> None:
    alice = await member(people, running_server, "alice", ALICE)
    bob = await member(people, running_server, "bob", BOB)
    await _upload(
        alice,
        [
            _entry(0, card("Bob", BOB)),
            _entry(1, card("Bob again", BOB)),
            _entry(2, card("X", "13800000001")),
        ],
        sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT,
    )
    entries, keyed, rows = _entry_pks(db, alice.id)
    assert keyed == entries and len(entries) == 3
    first = rows[bob.id]
    assert first in entries
    # The contact the match names goes: its key rows with it; the row names the other one.
    named = await _contact_named(alice, "Bob")
    await alice.client.sync.delete_contact(named.contact.name, named.contact.etag)
    entries, keyed, rows = _entry_pks(db, alice.id)
    assert keyed == entries and len(entries) == 2 and first not in entries
    assert rows[bob.id] in entries
    # A full snapshot without bob's contacts drops them, their keys and the match.
    await _upload(alice, [_entry(2, card("X", "13800000001"))], sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT)
    entries, keyed, rows = _entry_pks(db, alice.id)
    assert keyed == entries and len(entries) == 1 and rows == {}
