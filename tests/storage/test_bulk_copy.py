"""The bulk write paths on SQLite and PostgreSQL (binary COPY, writes sent ahead in a
pipeline): every column type round-trips exactly as the ORM stores it; a write sent ahead is
settled before the next statement and its failure fails its transaction; an upload chunk's
entries (written on PostgreSQL by a lookup of the held entry ids and an insert of the
others) are never stored twice."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from befriend.core.keys import KeyRow
from befriend.server.records import EntryInput, EntryKeyRecord, IdentityKind
from befriend.server.storage import models, pipeline
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.bulk import (
    bulk_insert,
    bulk_update,
    db_value,
    insert_ahead,
    insert_tuples,
    insert_values,
)
from befriend.server.storage.changes import ORIGIN_DEVICE_UPLOAD
from befriend.server.storage.db import Database
from befriend.server.storage.matching import BuddyState, MatchRepository
from befriend.server.storage.pipeline import driver_connection
from befriend.server.storage.repositories import key_from_db, key_to_db
from tests.storage.test_changes_feed import _user

T0 = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
# The same instant in another zone: stored (and read back) as UTC.
T1 = datetime(2026, 3, 4, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=8)))
BIG = (1 << 64) - 12345  # an identity key past int64: stored as a negative int8
ODD = 'tab\there, newline\nthere, back\\slash, quote\' "dq", 中文, \N{SNOWMAN}'
RAW = bytes(range(256)) + b"\\N\t\n\x00"
PROVENANCE: Any = {"name": {"source": 2, "note": ODD}, "numbers": [1, None, True, 2.5]}


def _entry(book: int, entry_id: str, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "book_pk": book,
        "user_id": "u1",
        "entry_id": entry_id,
        "raw": RAW,
        "raw_media_type": ODD,
        "content_hash": "h" * 64,
        "contact": b"",
        "upload_pk": (1 << 62) + 7,
        "created_at": T0,
        "updated_at": T1,
        "provenance": PROVENANCE,
        "version": 2_000_000_000,
        "change_seq": -(1 << 63),
        "change_origin": 32767,
        "change_device": "",
        "changed_fields": "a,b",
    }
    row.update(over)
    return row


# entry_keys' columns in table order
_KEY_TABLE_COLUMNS = ("entry_pk", "ordinal", "user_id", "kind", "key", "weak_key", "value")


def _stored(db: Database, table: Any, where: Any) -> list[tuple[Any, ...]]:
    with db.transaction(readonly=True) as s:
        query = select(table).where(where).order_by(*table.primary_key.columns)
        return [tuple(r) for r in s.execute(query)]


def test_bulk_insert_stores_every_type_as_the_orm_does(db: Database) -> None:
    book = _user(db, "u1")
    t = models.table(models.ContactEntry)
    rows = [
        _entry(book, "bulk-1"),
        _entry(book, "bulk-2", provenance=None, upload_pk=None, contact=b"x" * 70_000),
        _entry(book, "bulk-3", provenance=[ODD, 0], raw=b"", changed_fields=ODD),
    ]
    with db.transaction() as s:
        bulk_insert(s, t, rows)
        for row in rows:  # the same values through the ORM, under other entry ids
            s.add(models.ContactEntry(**{**row, "entry_id": "orm" + row["entry_id"][4:]}))
    bulk = _stored(db, t, t.c.entry_id.like("bulk-%"))
    orm = _stored(db, t, t.c.entry_id.like("orm-%"))
    assert len(bulk) == len(orm) == 3
    entry_id = list(t.c.keys()).index("entry_id")
    for b, o, row in zip(bulk, orm, rows, strict=True):
        assert b[entry_id] == row["entry_id"]
        cut = [v for i, v in enumerate(b) if i not in (0, entry_id)]
        assert cut == [v for i, v in enumerate(o) if i not in (0, entry_id)]
        by_name = dict(zip(t.c.keys(), b, strict=True))
        for name, value in row.items():
            assert by_name[name] == value, name
        assert by_name["created_at"].tzinfo is not None
    with db.transaction(readonly=True) as s:
        # the JSON documents themselves, not only their parsed values: byte for byte the ORM's
        docs = s.execute(
            text("SELECT entry_id, CAST(provenance AS TEXT) FROM contact_entries ORDER BY entry_id")
        ).all()
    by_entry: dict[str, str | None] = {e: doc for e, doc in docs}
    for n in "13":
        assert by_entry[f"bulk-{n}"] == by_entry[f"orm-{n}"]
    # None is NULL (the ORM writes the JSON null; both read back as None), as it always was
    assert by_entry["bulk-2"] is None


def test_bulk_insert_booleans(db: Database) -> None:
    _user(db, "u1")
    with db.transaction() as s:
        merge = models.MergeRow(
            merge_id="m1", user_id="u1", plan_id="p1", applied_at=T0, undone_at=None
        )
        s.add(merge)
        s.flush()
        t = models.table(models.MergeContact)
        bulk_insert(s, t, [{"merge_pk": merge.id, "entry_pk": 7, "created": c} for c in (1, 0)])
        bulk_insert(s, t, [{"merge_pk": merge.id, "entry_pk": 8, "created": c} for c in (True,)])
    stored = _stored(db, t, t.c.merge_pk == merge.id)
    assert [(e, c) for _, _, e, c in stored] == [(7, True), (7, False), (8, True)]


def test_bulk_update_writes_every_type_and_bumps_only_the_rows_given(db: Database) -> None:
    """More rows than one statement takes on SQLite (2,500 rows of 5 values): each listed
    row gets its values, stored as the ORM would store them, and its version bumped; the
    rows not listed keep theirs."""
    book = _user(db, "u1")
    t = models.table(models.ContactEntry)
    with db.transaction() as s:
        bulk_insert(s, t, [_entry(book, f"e{n}", version=1) for n in range(3_000)])
    with db.transaction(readonly=True) as s:
        pks = list(s.scalars(select(t.c.id).order_by(t.c.id)))
    new = {
        pk: {
            "id": pk,
            "contact": bytes([n % 256]) * (n % 7),
            "provenance": None if n % 3 else [ODD, n],
            "updated_at": T0 + timedelta(seconds=n),
            "changed_fields": f"f{n}",
        }
        for n, pk in enumerate(pks[:2_500])
    }
    with db.transaction() as s:
        bulk_update(s, t, list(new.values()), bump="version")
    with db.transaction(readonly=True) as s:
        e = models.ContactEntry
        stored = {x.id: x for x in s.scalars(select(e))}
    for pk, row in stored.items():
        want = new.get(pk)
        if want is None:
            assert (row.version, row.changed_fields, row.provenance) == (1, "a,b", PROVENANCE)
            continue
        got = (row.contact, row.provenance, row.updated_at, row.changed_fields, row.version)
        assert got == (*[want[c] for c in list(want)[1:]], 2)


def test_insert_tuples_round_trips(db: Database) -> None:
    _user(db, "u1")
    t = models.table(models.EntryKey)
    rows = [
        (1, 0, "u1", 1, key_to_db(BIG), None, "+8613800000000"),
        (1, 1, "u1", 2, key_to_db(5), 1234567, ODD),
        (2, 0, "u1", 3, None, (1 << 63) - 1, ""),
    ]
    with db.transaction() as s:
        insert_tuples(s, t, _KEY_TABLE_COLUMNS, rows)
    stored = _stored(db, t, t.c.user_id == "u1")
    assert stored == rows
    assert key_from_db(stored[0][4]) == BIG
    # datetimes as db_value gives them (the buddy and event writers)
    e = models.table(models.BuddyEvent)
    with db.transaction() as s:
        at = db_value(s, e, "created_at", T1)
        insert_tuples(
            s, e, ("user_id", "type", "other_id", "created_at"), [("u1", 1, "u2", at)] * 2
        )
    events = _stored(db, e, e.c.user_id == "u1")
    assert [r[1:] for r in events] == [("u1", 1, "u2", T1)] * 2
    assert events[0][4].utcoffset() == timedelta(0)


def test_insert_ahead_stores_every_type_as_the_orm_does(db: Database) -> None:
    """The upload's contact rows, sent ahead (PostgreSQL: an INSERT of one array per column,
    the constants bound once): the same stored values as the ORM's, NULLs and JSON too."""
    book = _user(db, "u1")
    t = models.table(models.ContactEntry)
    columns = ("entry_id", "raw", "contact", "upload_pk")
    rows = [
        ("ahead-1", RAW, b"x" * 70_000, (1 << 62) + 7),
        ("ahead-2", b"", b"", None),
    ]
    for constants in (
        {k: v for k, v in _entry(book, "").items() if k not in columns},
        {k: v for k, v in _entry(book, "", provenance=None).items() if k not in columns},
    ):
        tag = "n" if constants["provenance"] is None else "j"
        with db.transaction() as s:
            insert_ahead(s, t, constants, columns, [(f"{tag}{r[0]}", *r[1:]) for r in rows])
            for row in rows:  # the same values through the ORM
                values = dict(zip(columns, row, strict=True))
                s.add(
                    models.ContactEntry(
                        **{**constants, **values, "entry_id": f"{tag}orm-{row[0][6:]}"}
                    )
                )
        ahead = _stored(db, t, t.c.entry_id.like(f"{tag}ahead-%"))
        orm = _stored(db, t, t.c.entry_id.like(f"{tag}orm-%"))
        assert len(ahead) == len(orm) == 2
        entry_id = list(t.c.keys()).index("entry_id")
        for a, o in zip(ahead, orm, strict=True):
            assert [v for i, v in enumerate(a) if i not in (0, entry_id)] == [
                v for i, v in enumerate(o) if i not in (0, entry_id)
            ]
        by_name = dict(zip(t.c.keys(), ahead[0], strict=True))
        assert (by_name["raw"], by_name["created_at"], by_name["updated_at"]) == (RAW, T0, T1)
        assert by_name["provenance"] == constants["provenance"]


def test_insert_ahead_integers_round_trip(db: Database) -> None:
    """Integer columns go as packed int8 arrays (a column holding None as a list): the
    extremes of int8, a key past int64 stored signed, and SMALLINT columns cast back."""
    _user(db, "u1")
    t = models.table(models.EntryKey)
    rows = [
        (1, 0, "u1", 1, key_to_db(BIG), (1 << 63) - 1, "a"),
        (1, 1, "u1", 32767, -(1 << 63), None, "b"),
        ((1 << 62) + 3, 2, "u1", -32768, 0, -1, "c"),
    ]
    no_none = [(*r[:5], 7, *r[6:]) for r in rows]
    with db.transaction() as s:
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, rows)
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [(9, *r[1:]) for r in no_none])
    assert _stored(db, t, t.c.entry_pk != 9) == sorted(rows)
    assert _stored(db, t, t.c.entry_pk == 9) == [(9, *r[1:]) for r in no_none]
    assert key_from_db(_stored(db, t, t.c.entry_pk == 1)[0][4]) == BIG


@pytest.fixture(params=["pipelined", "at once"])
def pipelined(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes sent ahead in a pipeline, and as with a libpq older than 14 (no pipeline
    mode: run at once)."""
    if request.param == "at once":
        monkeypatch.setattr(pipeline, "_SUPPORTED", False)


@pytest.mark.usefixtures("pipelined")
def test_writes_sent_ahead_settle_before_the_next_statement(db: Database) -> None:
    """Whatever runs next on the connection sees the rows sent ahead: an UPDATE through
    SQLAlchemy (and its row count), a read at the driver, the ORM's flush."""
    _user(db, "u1")
    t = models.table(models.EntryKey)
    rows = [(n, 0, "u1", 1, key_to_db(n + 1), None, f"+{n}") for n in range(1_200)]
    with db.transaction() as s:
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, rows[:600])
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, rows[600:])
        done: Any = s.execute(update(t).where(t.c.user_id == "u1").values(value="seen"))
        assert done.rowcount == 1_200
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [(5_000, 0, "u1", 2, None, 7, "x")])
        cur = driver_connection(s).cursor()
        cur.execute("SELECT count(*) FROM entry_keys WHERE user_id = 'u1'")
        assert cur.fetchone()[0] == 1_201
        cur.close()
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [(5_001, 0, "u1", 2, None, 7, "y")])
        s.add(models.EntryKey(entry_pk=5_002, ordinal=0, user_id="u1", kind=2, value="z"))
        s.flush()
        assert s.execute(select(t.c.value).where(t.c.entry_pk >= 5_000)).scalars().all() == [
            "x",
            "y",
            "z",
        ]
    assert len(_stored(db, t, t.c.user_id == "u1")) == 1_203


@pytest.mark.usefixtures("pipelined")
def test_a_failed_write_sent_ahead_fails_its_transaction(db: Database) -> None:
    """A write sent ahead that breaks a constraint fails its transaction as an
    IntegrityError (at the next statement or at the commit), which rolls back whole; the
    connection serves the next transaction."""
    _user(db, "u1")
    t = models.table(models.EntryKey)
    row = (1, 0, "u1", 1, key_to_db(9), None, "+9")
    expected: tuple[type[Exception], ...] = (IntegrityError,)
    if db.is_sqlite:  # SQLite writes at once, through the driver
        import sqlite3

        expected = (IntegrityError, sqlite3.IntegrityError)
    for then_read in (True, False):
        with pytest.raises(expected), db.transaction() as s:
            insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [(2, 0, "u1", 1, None, None, "kept?")])
            insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [row, row])  # the same primary key twice
            if then_read:
                s.execute(select(t.c.value)).all()
        assert _stored(db, t, t.c.user_id == "u1") == []
    # the caller's own error after writes sent ahead: rolled back with them
    with pytest.raises(LookupError), db.transaction() as s:
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [row])
        raise LookupError("a domain error")
    assert _stored(db, t, t.c.user_id == "u1") == []
    with db.transaction() as s:
        insert_ahead(s, t, {}, _KEY_TABLE_COLUMNS, [row])
    assert _stored(db, t, t.c.user_id == "u1") == [row]


def test_bulk_writes_past_one_statement_store_every_row_once(db: Database) -> None:
    """More rows than one multi-row statement takes on SQLite (a few full batches and a
    partial one): every row stored once, in order; with constants, a conflict clause and
    RETURNING, each batch's new rows returned and the clashing ones skipped."""
    _user(db, "u1")
    t = models.table(models.EntryKey)
    rows = [(n, 0, "u1", 1, key_to_db(BIG - n), None, f"+{n}") for n in range(5_001)]
    with db.transaction() as s:
        insert_tuples(s, t, _KEY_TABLE_COLUMNS, rows)
    assert _stored(db, t, t.c.user_id == "u1") == rows
    if not db.is_sqlite:
        return  # insert_values is SQLite's path
    e = models.table(models.ContactEntry)
    constants = {k: v for k, v in _entry(1, "").items() if k not in ("entry_id", "raw")}
    with db.transaction() as s:
        first = insert_values(
            s, e, constants, ("entry_id", "raw"), [(f"e{n}", b"r") for n in range(0, 3_000, 2)]
        )
        again = insert_values(
            s,
            e,
            constants,
            ("entry_id", "raw"),
            [(f"e{n}", b"r") for n in range(3_000)],
            conflict=("book_pk", "entry_id"),
            returning=("entry_id",),
        )
    assert first == []
    assert sorted(again) == sorted((f"e{n}",) for n in range(1, 3_000, 2))
    stored = _stored(db, e, e.c.book_pk == 1)
    assert sorted(r[3] for r in stored) == sorted(f"e{n}" for n in range(3_000))
    assert {(r[2], r[9], r[12]) for r in stored} == {("u1", T0, 2_000_000_000)}


# -- AddressBookRepository.write_entries: PostgreSQL looks up held entry ids and COPYs the rest


def _inputs(names: list[str], version: str = "") -> list[EntryInput]:
    return [
        EntryInput(n, f"raw {n}{version}".encode(), "text/vcard", "", f"{n}{version}".encode())
        for n in names
    ]


def _key_rows(pks: Sequence[int]) -> list[KeyRow]:
    return [
        (pk, "u1", 1, key_to_db(BIG - i), None, f"+{i}", 0) for i, pk in enumerate(pks) if pk >= 0
    ]


def _records(rows: Sequence[KeyRow]) -> list[EntryKeyRecord]:
    return [
        EntryKeyRecord(IdentityKind(kind), key_from_db(k) if k is not None else None, w, v)
        for _, _, kind, k, w, v, _ in rows
    ]


def _write(s: Session, book: int, entries: list[EntryInput]) -> int:
    repo = AddressBookRepository(s)
    return repo.write_entries(
        "u1",
        book,
        1,
        entries,
        [hashlib.sha256(x.raw).hexdigest() for x in entries],
        _key_rows,
        _records,
        T0,
        repo.stamp("u1", ORIGIN_DEVICE_UPLOAD, "d"),
    )


def _entries(db: Database) -> list[tuple[int, str, bytes, int]]:
    """(pk, entry_id, contact, how many key rows) of every stored entry, by pk."""
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            text(
                "SELECT e.id, e.entry_id, e.contact, "
                "(SELECT count(*) FROM entry_keys k WHERE k.entry_pk = e.id) "
                "FROM contact_entries e ORDER BY e.id"
            )
        ).all()
    return [(pk, entry_id, bytes(contact), n) for pk, entry_id, contact, n in rows]


def test_write_entries_resent_entries_are_not_duplicated(db: Database) -> None:
    book = _user(db, "u1")
    names = [f"c{i:02d}" for i in range(7)]
    with db.transaction() as s:
        assert _write(s, book, _inputs(names[:5])) == 5
    first = _entries(db)
    # new keys in entry order, one key row each
    assert [(e, n) for _, e, _, n in first] == [(e, 1) for e in names[:5]]
    # the same chunk again, then again with one changed entry and two new ones: stored
    # entries keep their primary key, nothing is written twice
    with db.transaction() as s:
        assert _write(s, book, _inputs(names[:5])) == 0
        assert _write(s, book, _inputs(names[:2], "v2") + _inputs(names[2:])) == 4
    after = _entries(db)
    assert after[:5] == [
        (pk, e, c if e not in names[:2] else f"{e}v2".encode(), 1) for pk, e, c, _ in first
    ]
    assert [(e, n) for _, e, _, n in after[5:]] == [(e, 1) for e in names[5:]]


def test_write_entries_an_entry_id_twice_in_one_call_is_stored_once(db: Database) -> None:
    book = _user(db, "u1")
    entries = _inputs(["a", "b"]) + _inputs(["a"], "v2")
    with db.transaction() as s:
        _write(s, book, entries)
    assert [(e, c, n) for _, e, c, n in _entries(db)] == [("a", b"a", 1), ("b", b"b", 1)]
    with db.transaction() as s:  # held now: the update path takes the first copy too
        _write(s, book, _inputs(["a"], "v3") + _inputs(["a"], "v4"))
    assert [(e, c, n) for _, e, c, n in _entries(db)] == [("a", b"av3", 1), ("b", b"b", 1)]


def test_concurrent_uploads_of_the_same_entries(db: Database) -> None:
    """A second upload of the same entry ids to the same book waits for the first (the
    user's change counter lock, taken before the lookup) and then finds them held."""
    book = _user(db, "u1")
    names = [f"c{i}" for i in range(20)]
    wrote, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        wrote.wait()
        try:
            with db.transaction() as s:
                _write(s, book, _inputs(names, "v2"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=second)
    worker.start()
    with db.transaction() as s:
        _write(s, book, _inputs(names))
        wrote.set()
        assert not done.wait(0.5)  # the second upload waits for this transaction
    worker.join(30)
    assert not errors
    stored = _entries(db)
    assert [(e, c, n) for _, e, c, n in stored] == [(e, f"{e}v2".encode(), 1) for e in names]


# -- MatchRepository.update_rows: by the ids its reads remembered (PostgreSQL; SQLite when the
# match key is unchanged, setting no indexed column), else by pair


def test_update_rows_by_remembered_ids_and_by_pair(db: Database) -> None:
    def row(owner: str, other: str, kind: int, key: int, entry: int | None) -> BuddyState:
        return BuddyState(owner, other, kind, key, 1, entry, 1)

    stored = [
        row("a", "b", 2, 5, 1),
        row("b", "a", 2, 6, 2),
        row("a", "c", 2, 7, None),
        row("c", "a", 2, BIG, 3),
        row("a", "d", 2, 8, 4),
        row("e", "a", 2, 9, 5),
    ]
    with db.transaction() as s:
        MatchRepository(s).insert_rows(stored, T0)
    later = T0 + timedelta(hours=1)
    changed = [
        row("a", "b", 1, BIG - 1, None),
        row("b", "a", 1, 6, None),
        row("c", "a", 1, BIG, 30),
        row("a", "d", 1, 8, 4),
        row("e", "a", 1, 9, 5),
    ]
    with db.transaction() as s:
        repo = MatchRepository(s)
        read = repo.member_rows_between("a", ["b", "c", "d"])
        assert sorted(read) == sorted(stored[:5])
        # since the read, c -> a was replaced (a new row id) by another writer of the
        # transaction: it is still updated, by its pair; e -> a was not read at all
        other = MatchRepository(s)
        other.delete_rows([stored[3]])
        other.insert_rows([stored[3]], T0)
        repo.update_rows(changed, later)
    with db.transaction(readonly=True) as s:
        after = MatchRepository(s).rows_involving(["a"])
        t = models.table(models.BuddyRow)
        stamps = dict(
            ((o, u), at)
            for o, u, at in s.execute(select(t.c.owner_id, t.c.other_id, t.c.updated_at))
        )
    assert sorted(after) == sorted([*changed, stored[2]])
    assert {pair: at for pair, at in stamps.items() if at == later} == {
        (r.owner_id, r.other_id): later for r in changed
    }
    assert stamps["a", "c"] == T0


def test_update_rows_after_a_key_rewritten_since_the_read(db: Database) -> None:
    """A row whose key another writer of the transaction changed in place after the read gets
    the key the update names (SQLite's update by rowid sets no key: it must not match)."""
    first = BuddyState("a", "b", 2, 5, 1, 1, 1)
    with db.transaction() as s:
        MatchRepository(s).insert_rows([first, BuddyState("a", "c", 2, 6, 1, 2, 1)], T0)
    with db.transaction() as s:
        repo = MatchRepository(s)
        assert sorted(repo.member_rows_between("a", ["b", "c"]))[0] == first
        MatchRepository(s).update_rows([BuddyState("a", "b", 2, 99, 1, 1, 1)], T0)
        turned = [BuddyState("a", "b", 1, 5, 1, 1, 1), BuddyState("a", "c", 1, 6, 1, 2, 1)]
        repo.update_rows(turned, T0 + timedelta(hours=1))
    with db.transaction(readonly=True) as s:
        assert sorted(MatchRepository(s).rows_involving(["a"])) == turned
