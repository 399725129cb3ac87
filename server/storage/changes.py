"""The contact change feed's write side: per-user change numbers and tombstones.

Every transaction that changes a user's contacts takes one number from the user's
``change_counters`` row (lazily, on the first change) and stamps it on each contact it
writes; deleted contacts leave a tombstone with that number. The row lock held until commit
makes numbers follow commit order, so a reader paging by (change_seq, id) never skips a
change committed behind its cursor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from befriend.server.storage import models

# ContactChangeOrigin values (befriend.v1.sync.proto).
ORIGIN_DEVICE_UPLOAD = 1
ORIGIN_MERGE = 2
ORIGIN_MERGE_UNDO = 3
ORIGIN_USER_EDIT = 4


def next_seq(session: Session, user_id: str) -> int:
    """The user's next change number, row-locked until the transaction ends."""
    bump = (
        update(models.ChangeCounter)
        .where(models.ChangeCounter.user_id == user_id)
        .values(seq=models.ChangeCounter.seq + 1)
        .returning(models.ChangeCounter.seq)
    )
    seq = session.execute(bump).scalar_one_or_none()
    if seq is not None:
        return int(seq)
    dialect = session.get_bind().dialect.name
    make: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        make(models.ChangeCounter)
        .values(user_id=user_id, seq=0, pruned_through=0)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    return int(session.execute(bump).scalar_one())


def current_seq(session: Session, user_id: str) -> tuple[int, int]:
    """(last change number, pruned_through) of the user; (0, 0) before any change."""
    row = session.execute(
        select(models.ChangeCounter.seq, models.ChangeCounter.pruned_through).where(
            models.ChangeCounter.user_id == user_id
        )
    ).one_or_none()
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


class ChangeStamp:
    """What one transaction stamps on the contacts it changes: the change number (taken on
    first use), the origin and the device that caused it."""

    def __init__(self, session: Session, user_id: str, origin: int, device_id: str = "") -> None:
        self.s = session
        self.user_id = user_id
        self.origin = origin
        self.device_id = device_id
        self._seq: int | None = None

    @property
    def seq(self) -> int:
        if self._seq is None:
            self._seq = next_seq(self.s, self.user_id)
        return self._seq

    @property
    def taken(self) -> bool:
        """Whether this transaction took its change number yet."""
        return self._seq is not None

    def give_back(self) -> None:
        """Return the change number when nothing was stamped with it after all (an insert
        that found every row already stored). The counter row stays locked by this
        transaction, so no one took a number after it."""
        if self._seq is None:
            return
        self.s.execute(
            update(models.ChangeCounter)
            .where(models.ChangeCounter.user_id == self.user_id)
            .values(seq=models.ChangeCounter.seq - 1)
        )
        self._seq = None

    def values(self, changed_fields: str = "") -> dict[str, Any]:
        """Column values of a contact row written by this change."""
        return {
            "change_seq": self.seq,
            "change_origin": self.origin,
            "change_device": self.device_id,
            "changed_fields": changed_fields,
        }

    def delete_entries(self, where: ColumnElement[bool], now: datetime) -> int:
        """Delete the user's contacts matching ``where``, leaving tombstones."""
        e = models.ContactEntry
        chosen = select(
            e.user_id,
            e.book_pk,
            e.id,
            e.entry_id,
            literal(self.seq),
            literal(self.origin),
            literal(self.device_id),
            literal(now, models.UTCDateTime()),
        ).where(e.user_id == self.user_id, where)
        t = models.ContactTombstone
        self.s.execute(
            insert(t).from_select(
                [
                    "user_id",
                    "book_pk",
                    "entry_pk",
                    "entry_id",
                    "change_seq",
                    "change_origin",
                    "change_device",
                    "deleted_at",
                ],
                chosen,
            )
        )
        # No foreign keys cascade (migration 0008): the entries' key rows go with them, and
        # member rows naming one of them forget it (the match that follows re-points them).
        gone = select(e.id).where(e.user_id == self.user_id, where)
        k, b = models.EntryKey, models.BuddyRow
        self.s.execute(delete(k).where(k.user_id == self.user_id, k.entry_pk.in_(gone)))
        self.s.execute(
            update(b).where(b.owner_id == self.user_id, b.entry_pk.in_(gone)).values(entry_pk=None)
        )
        result = self.s.execute(delete(e).where(e.user_id == self.user_id, where))
        return int(getattr(result, "rowcount", 0))
