"""ContactRepository's feed read side on SQLite and PostgreSQL: (seq, kind, id) order across
contacts and tombstones, the upper bound, and tombstone pruning by whole change numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from befriend.server.storage import models
from befriend.server.storage.changes import ORIGIN_USER_EDIT
from befriend.server.storage.contacts import KIND_CONTACT, KIND_TOMBSTONE, ContactRepository
from befriend.server.storage.db import Database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _user(db: Database, user_id: str) -> int:
    with db.transaction() as s:
        s.add(models.User(id=user_id, display_name=user_id, created_at=T0, updated_at=T0))
        s.flush()
        book = models.AddressBook(
            user_id=user_id, book_id="phone", kind=1, created_at=T0, updated_at=T0
        )
        s.add(book)
        s.flush()
        return book.id


def _write(db: Database, user_id: str, book: int, names: list[str], delete: int = 0) -> list[int]:
    """One change: insert ``names``, and delete the contact ``delete`` (0: none)."""
    with db.transaction() as s:
        repo = ContactRepository(s)
        stamp = repo.stamp(user_id, ORIGIN_USER_EDIT)
        made = [repo.insert(user_id, book, n, b"", None, stamp, T0) for n in names]
        if delete:
            repo.delete(delete, None, stamp, T0 + timedelta(days=len(names)))
        return made


def test_feed_order_bound_and_pruning(db: Database) -> None:
    book = _user(db, "u1")
    other = _user(db, "u2")
    a, b = _write(db, "u1", book, ["a", "b"])  # seq 1
    _write(db, "u2", other, ["x"])  # another user's seq 1
    _write(db, "u1", book, ["c"], delete=a)  # seq 2: contact c, tombstone of a (day 1)
    _write(db, "u1", book, [], delete=b)  # seq 3: tombstone of b (day 0)
    with db.transaction(readonly=True) as s:
        repo = ContactRepository(s)
        assert repo.seq("u1") == (3, 0)
        items = repo.changes("u1", None, (0, 2, 0), 3, 100)
        assert [(i.seq, i.kind) for i in items] == [
            (2, KIND_CONTACT),
            (2, KIND_TOMBSTONE),
            (3, KIND_TOMBSTONE),
        ]
        assert items[1].tombstone is not None and items[1].tombstone.entry_pk == a
        # after the contact of seq 2: only the tombstones; bounded at 2: only seq 2
        assert [i.kind for i in repo.changes("u1", None, (2, 0, items[0].id), 3, 100)] == [
            KIND_TOMBSTONE,
            KIND_TOMBSTONE,
        ]
        assert [i.seq for i in repo.changes("u1", None, (0, 2, 0), 2, 100)] == [2, 2]
        assert len(repo.changes("u1", None, (0, 2, 0), 3, 2)) == 2
    with db.transaction() as s:
        # tombstone of seq 3 is older (day 0) than the cutoff, the one of seq 2 (day 1) is
        # not; pruning goes by whole change numbers, so both go (everything through seq 3)
        assert ContactRepository(s).prune_tombstones(T0 + timedelta(hours=12)) == 2
    with db.transaction(readonly=True) as s:
        repo = ContactRepository(s)
        assert repo.seq("u1") == (3, 3)
        assert repo.seq("u2") == (1, 0)
        assert [i.kind for i in repo.changes("u1", None, (0, 2, 0), 3, 100)] == [KIND_CONTACT]
    with db.transaction() as s:
        assert ContactRepository(s).prune_tombstones(T0 + timedelta(days=9)) == 0
