"""apply_chunks' write path on SQLite and PostgreSQL: new entries in one conflict-skipping
insert, re-sent entries through the in-place upsert (ids kept, identical ones not stamped),
keys per entry deduplicated, the change number given back when nothing changed, and the
per-stream state (region, held keys for the quota)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from befriend.server.errors import ResourceExhausted
from befriend.server.records import EntryInput, IdentityKind, IdentityRecord, UploadMode
from befriend.server.services import addressbooks
from befriend.server.services.addressbooks import Chunk, StreamState
from befriend.server.storage import models
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.changes import current_seq
from befriend.server.storage.db import Database
from befriend.server.storage.repositories import AccountRepository
from tests.conftest import statements_run

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = "u" * 32


def _entry(entry_id: str, phones: tuple[str, ...], contact: bytes = b"c") -> EntryInput:
    return EntryInput(
        entry_id,
        f"raw {entry_id} {contact!r}".encode(),
        "text/plain",
        "",
        contact,
        phones,
        ("A@Example.com",),
        (("qq", "1"),),
    )


def _apply(db: Database, chunk: Chunk) -> None:
    with db.transaction() as s:
        addressbooks.apply_chunks(
            AddressBookRepository(s),
            AccountRepository(s),
            USER,
            [chunk],
            NOW,
            lambda old, prov, new, region: (new, prov, ["display_name"], None),
        )


def _chunk(
    upload: str,
    seq: int,
    entries: list[EntryInput],
    *,
    daily_key_quota: int = 0,
    stream: StreamState | None = None,
) -> Chunk:
    return Chunk(
        upload,
        seq,
        entries,
        book_id="phone",
        book_kind=1,
        device_id="d1",
        mode=UploadMode.INCREMENTAL,
        daily_key_quota=daily_key_quota,
        stream=stream,
    )


def _rows(db: Database) -> dict[str, tuple[int, int, int]]:
    e = models.ContactEntry
    with db.transaction(readonly=True) as s:
        return {
            eid: (pk, seq, version)
            for eid, pk, seq, version in s.execute(
                select(e.entry_id, e.id, e.change_seq, e.version)
            )
        }


def _keys(db: Database) -> list[tuple[int, int, str]]:
    k = models.EntryKey
    with db.transaction(readonly=True) as s:
        return sorted(
            (pk, kind, v) for pk, kind, v in s.execute(select(k.entry_pk, k.kind, k.value))
        )


@pytest.fixture
def user(db: Database) -> None:
    with db.transaction() as s:
        AccountRepository(s).add_user(
            USER,
            display_name="U",
            region_code="CN",
            time_zone="UTC",
            profile={},
            identities=[
                IdentityRecord(
                    IdentityKind.PHONE, "+8613900000000", 8613900000000, "+8613900000000"
                )
            ],
            now=NOW,
        )


def test_new_resent_and_changed_entries(db: Database, user: None) -> None:
    a = _entry("a", ("138 0013 8000", "+86 138 0013 8000", "0086 13800138000"))
    b = _entry("b", ("garbage 12345678",))
    _apply(db, _chunk("up1", 1, [a, b]))
    first = _rows(db)
    assert set(first) == {"a", "b"} and {v[1] for v in first.values()} == {1}
    keys = _keys(db)
    # a: one phone row (three spellings of one number), one e-mail, one IM
    assert [k for k in keys if k[0] == first["a"][0]] == sorted(
        [
            (first["a"][0], 1, "+8613800138000"),
            (first["a"][0], 2, "A@example.com"),
            (first["a"][0], 3, "qq:1"),
        ]
    )
    # b's number keeps its weak key row with the raw string
    assert (first["b"][0], 1, "garbage 12345678") in keys
    with db.transaction(readonly=True) as s:
        assert current_seq(s, USER)[0] == 1

    # the same entries again in a new upload: nothing changes, no change number is taken
    _apply(db, _chunk("up2", 1, [a, b]))
    assert _rows(db) == first
    assert _keys(db) == keys
    with db.transaction(readonly=True) as s:
        assert current_seq(s, USER)[0] == 1

    # a changed, c new, in one chunk: a keeps its id, both get the next change number
    a2 = _entry("a", ("+85291234567",), b"c2")
    c = _entry("c", ("13800138001",))
    _apply(db, _chunk("up3", 1, [a2, c]))
    after = _rows(db)
    assert after["a"][0] == first["a"][0] and after["a"][1:] == (2, 2)
    assert after["c"][1] == 2 and after["b"] == first["b"]
    assert (after["a"][0], 1, "+85291234567") in _keys(db)
    assert (after["a"][0], 1, "+8613800138000") not in _keys(db)


def test_stream_state_and_quota(db: Database, user: None) -> None:
    stream = StreamState()
    entries = [_entry(f"e{i}", (f"1380013{i:04d}",)) for i in range(3)]
    _apply(db, _chunk("up", 1, entries[:2], daily_key_quota=4, stream=stream))
    assert stream.region == "CN"
    assert stream.held_keys is not None and 8613800130000 in stream.held_keys
    # e-mail + IM + 2 phones = 4 new keys used; one more phone is over the quota
    with pytest.raises(ResourceExhausted):
        _apply(db, _chunk("up", 2, entries[2:], daily_key_quota=4, stream=stream))
    # keys already held cost nothing, with or without the stream's memory
    _apply(db, _chunk("up", 2, entries[:1], daily_key_quota=4, stream=stream))
    _apply(db, _chunk("up", 3, entries[1:2], daily_key_quota=4))
    assert set(_rows(db)) == {"e0", "e1"}


def test_stream_knows_the_book_it_filled_until_another_writer_comes(
    db: Database, user: None
) -> None:
    """A stream whose upload found its book empty knows the book's entries, so its next
    chunks insert without asking which entry ids the book holds. Once another writer of
    the user's contacts comes between two of its transactions, it asks again: an entry
    that writer added is updated in place, not inserted a second time."""
    stream = StreamState()
    _apply(db, _chunk("up", 1, [_entry("a", ("13800138000",))], stream=stream))
    assert stream.book.entries is not None and set(stream.book.entries) == {"a"}
    # the stream's own entry again, changed, and a new one: a keeps its id
    first = _rows(db)["a"]
    a2, b = _entry("a", ("13800138000",), b"c2"), _entry("b", ("13800138001",))
    _apply(db, _chunk("up", 2, [a2, b], stream=stream))
    assert _rows(db)["a"][0] == first[0] and set(_rows(db)) == {"a", "b"}
    assert stream.book.entries is not None and set(stream.book.entries) == {"a", "b"}
    # another upload of the same book adds x; then the stream sends x too
    _apply(db, _chunk("other", 1, [_entry("x", ("13800138002",))]))
    x_pk = _rows(db)["x"][0]
    assert x_pk > _rows(db)["b"][0]  # after the keys the stream chose itself
    _apply(db, _chunk("up", 3, [_entry("x", ("13800138002",), b"mine")], stream=stream))
    rows = _rows(db)
    assert set(rows) == {"a", "b", "x"} and rows["x"][0] == x_pk
    assert stream.book.entries is None


def test_known_entries_never_take_an_id_handed_out_before(db: Database, user: None) -> None:
    """Entries a stream inserts with keys it chose (its book known empty) get ids above
    every id ever handed out, a deleted entry's included: ids name contacts
    (users/u/contacts/N), so one is never given to another contact."""
    stream = StreamState()
    entries = [_entry(f"e{i}", (f"1380013810{i}",)) for i in range(3)]
    _apply(db, _chunk("up", 1, entries, stream=stream))
    assert stream.book.entries is not None  # the keys were the stream's own
    ids = _rows(db)
    assert sorted(ids[e][0] for e in ("e0", "e1", "e2")) == [ids[e][0] for e in ("e0", "e1", "e2")]
    gone = ids["e2"][0]
    _apply(db, _chunk("up", 2, [_entry("e2", ())._replace(deleted=True)], stream=stream))
    assert "e2" not in _rows(db)
    # a new stream, into another empty book: its first id comes after the deleted one
    other = StreamState()
    chunk = _chunk("up2", 1, [_entry("n0", ("13800138200",))], stream=other)
    _apply(db, replace(chunk, book_id="second"))
    assert other.book.entries is not None
    assert _rows(db)["n0"][0] > gone


def test_a_batch_draws_its_new_ids_at_once(db: Database, user: None) -> None:
    """PostgreSQL: the chunks applied in one transaction take their new entry ids from one
    draw of the sequence, sized by the batch's entries (not one statement per chunk); the
    ids still follow the entries' order, and what a batch leaves over serves the next."""
    stream = StreamState()
    chunks = [
        _chunk(
            "up", n, [_entry(f"e{n}{i}", (f"138001381{n}{i}",)) for i in range(3)], stream=stream
        )
        for n in (1, 2, 3)
    ]
    with statements_run(db.engine) as statements, db.transaction() as s:
        addressbooks.apply_chunks(
            AddressBookRepository(s),
            AccountRepository(s),
            USER,
            chunks,
            NOW,
            lambda old, prov, new, region: (new, prov, ["display_name"], None),
        )
    draws = [q for q in statements if "nextval" in q]
    assert len(draws) == (0 if db.is_sqlite else 1)
    ids = _rows(db)
    order = [f"e{n}{i}" for n in (1, 2, 3) for i in range(3)]
    assert [ids[e][0] for e in order] == sorted(ids[e][0] for e in order)
    if not db.is_sqlite:
        assert stream.book.spare == []  # every id drawn was used
        stream.book.spare = [10**12]  # left over from an earlier batch: used first
        _apply(db, _chunk("up", 4, [_entry("f", ("13800138299",))], stream=stream))
        assert _rows(db)["f"][0] == 10**12 and stream.book.spare == []
