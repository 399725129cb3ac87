"""Repository of single contacts (the rows of ``contact_entries`` with their book), the
contact change feed's read side (contact rows merged with tombstones), tombstone pruning
and sync settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from befriend.server.records import EntryKeyRecord
from befriend.server.storage import models
from befriend.server.storage.addressbooks import insert_key_rows, key_rows_of
from befriend.server.storage.changes import ChangeStamp, current_seq

# Kinds of change-feed rows, in their order within one change number.
KIND_CONTACT = 0
KIND_TOMBSTONE = 1


@dataclass(frozen=True)
class ContactRow:
    """A stored contact with its book."""

    id: int
    book_pk: int
    book_id: str
    book_device_id: str
    book_kind: int
    entry_id: str
    contact: bytes
    content_hash: str
    provenance: Any
    version: int
    change_seq: int
    change_origin: int
    change_device: str
    changed_fields: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TombstoneRow:
    id: int
    entry_pk: int
    book_id: str
    change_seq: int
    change_origin: int
    change_device: str
    deleted_at: datetime


@dataclass(frozen=True)
class FeedItem:
    """One change-feed row: a live contact at its last change, or a tombstone."""

    seq: int
    kind: int
    id: int
    contact: ContactRow | None = None
    tombstone: TombstoneRow | None = None


@dataclass(frozen=True)
class SettingsRow:
    sync_pictures: bool
    default_network_source: int
    default_target: int
    version: int
    updated_at: datetime | None


_E = models.ContactEntry
_B = models.AddressBook
_T = models.ContactTombstone
_CONTACT_COLUMNS = (
    _E.id,
    _E.book_pk,
    _B.book_id,
    _B.device_id,
    _B.kind,
    _E.entry_id,
    _E.contact,
    _E.content_hash,
    _E.provenance,
    _E.version,
    _E.change_seq,
    _E.change_origin,
    _E.change_device,
    _E.changed_fields,
    _E.created_at,
    _E.updated_at,
)


def _contact(row: Any) -> ContactRow:
    return ContactRow(*row)


def _after(
    seq_col: Any, id_col: Any, kind: int, seq: int, after_kind: int, after_id: int
) -> ColumnElement[bool]:
    """Rows of ``kind`` positioned after (seq, after_kind, after_id) in feed order."""
    if kind < after_kind:
        return seq_col > seq  # type: ignore[no-any-return]
    if kind > after_kind:
        return seq_col >= seq  # type: ignore[no-any-return]
    return or_(seq_col > seq, and_(seq_col == seq, id_col > after_id))


class ContactRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- books ------------------------------------------------------------------------
    def book(self, user_id: str, book_id: str) -> tuple[int, str] | None:
        """(pk, device_id) of one of the user's books."""
        row = self.s.execute(
            select(_B.id, _B.device_id).where(_B.user_id == user_id, _B.book_id == book_id)
        ).one_or_none()
        return (int(row[0]), str(row[1])) if row is not None else None

    def stamp(self, user_id: str, origin: int, device_id: str = "") -> ChangeStamp:
        """The change-feed stamp of this transaction's contact changes."""
        return ChangeStamp(self.s, user_id, origin, device_id)

    # -- contacts ---------------------------------------------------------------------
    def get(self, user_id: str, contact_id: int) -> ContactRow | None:
        row = self.s.execute(
            select(*_CONTACT_COLUMNS)
            .join(_B, _B.id == _E.book_pk)
            .where(_E.user_id == user_id, _E.id == contact_id)
        ).one_or_none()
        return _contact(row) if row is not None else None

    def list_contacts(
        self, user_id: str, book_pk: int | None, after_id: int, limit: int
    ) -> list[ContactRow]:
        """Contacts by id after ``after_id`` (keyset pagination)."""
        query = (
            select(*_CONTACT_COLUMNS)
            .join(_B, _B.id == _E.book_pk)
            .where(_E.user_id == user_id, _E.id > after_id)
            .order_by(_E.id)
            .limit(limit)
        )
        if book_pk is not None:
            query = query.where(_E.book_pk == book_pk)
        return [_contact(r) for r in self.s.execute(query)]

    def count(self, user_id: str, book_pk: int | None) -> int:
        query = select(func.count()).select_from(_E).where(_E.user_id == user_id)
        if book_pk is not None:
            query = query.where(_E.book_pk == book_pk)
        return int(self.s.execute(query).scalar_one())

    def insert(
        self,
        user_id: str,
        book_pk: int,
        entry_id: str,
        contact: bytes,
        provenance: Any,
        stamp: ChangeStamp,
        now: datetime,
    ) -> int:
        result = self.s.execute(
            insert(_E)
            .values(
                book_pk=book_pk,
                user_id=user_id,
                entry_id=entry_id,
                raw=b"",
                raw_media_type="",
                content_hash="",
                contact=contact,
                upload_pk=None,
                created_at=now,
                updated_at=now,
                provenance=provenance,
                version=1,
                **stamp.values(),
            )
            .returning(_E.id)
        )
        return int(result.scalar_one())

    def update(
        self,
        contact_id: int,
        version: int,
        contact: bytes,
        provenance: Any,
        changed: Sequence[str],
        stamp: ChangeStamp,
        now: datetime,
    ) -> bool:
        """Write a new version if the stored one is still ``version`` (False otherwise)."""
        result = self.s.execute(
            update(_E)
            .where(_E.id == contact_id, _E.version == version)
            .values(
                contact=contact,
                provenance=provenance,
                version=version + 1,
                updated_at=now,
                **stamp.values(",".join(changed)),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    def delete(
        self, contact_id: int, version: int | None, stamp: ChangeStamp, now: datetime
    ) -> int:
        where = _E.id == contact_id
        if version is not None:
            where = and_(where, _E.version == version)
        return stamp.delete_entries(where, now)

    def replace_keys(self, user_id: str, contact_id: int, keys: Sequence[EntryKeyRecord]) -> None:
        self.s.execute(delete(models.EntryKey).where(models.EntryKey.entry_pk == contact_id))
        insert_key_rows(self.s, key_rows_of(user_id, [(contact_id, keys)]))

    # -- change feed ------------------------------------------------------------------
    def seq(self, user_id: str) -> tuple[int, int]:
        """(last change number, pruned_through) of the user."""
        return current_seq(self.s, user_id)

    def changes(
        self,
        user_id: str,
        book_pk: int | None,
        after: tuple[int, int, int],
        through_seq: int,
        limit: int,
    ) -> list[FeedItem]:
        """Feed rows after ``after`` = (seq, kind, id) up to change ``through_seq``, in
        (seq, kind, id) order: contacts at their last change merged with tombstones."""
        seq, kind, ident = after
        contacts = (
            select(*_CONTACT_COLUMNS)
            .join(_B, _B.id == _E.book_pk)
            .where(
                _E.user_id == user_id,
                _E.change_seq <= through_seq,
                _after(_E.change_seq, _E.id, KIND_CONTACT, seq, kind, ident),
            )
            .order_by(_E.change_seq, _E.id)
            .limit(limit)
        )
        tombs = (
            select(
                _T.id,
                _T.entry_pk,
                _B.book_id,
                _T.change_seq,
                _T.change_origin,
                _T.change_device,
                _T.deleted_at,
            )
            .join(_B, _B.id == _T.book_pk)
            .where(
                _T.user_id == user_id,
                _T.change_seq <= through_seq,
                _after(_T.change_seq, _T.id, KIND_TOMBSTONE, seq, kind, ident),
            )
            .order_by(_T.change_seq, _T.id)
            .limit(limit)
        )
        if book_pk is not None:
            contacts = contacts.where(_E.book_pk == book_pk)
            tombs = tombs.where(_T.book_pk == book_pk)
        items = [
            FeedItem(c.change_seq, KIND_CONTACT, c.id, contact=c)
            for c in map(_contact, self.s.execute(contacts))
        ]
        items += [
            FeedItem(t.change_seq, KIND_TOMBSTONE, t.id, tombstone=t)
            for t in (TombstoneRow(*r) for r in self.s.execute(tombs))
        ]
        items.sort(key=lambda i: (i.seq, i.kind, i.id))
        return items[:limit]

    def prune_tombstones(self, before: datetime) -> int:
        """Delete tombstones deleted before ``before``, always whole change numbers: each
        user's ``pruned_through`` is raised to the highest pruned change number and every
        tombstone at or below it goes. Returns how many tombstones were deleted."""
        old = (
            select(_T.user_id, func.max(_T.change_seq))
            .where(_T.deleted_at < before)
            .group_by(_T.user_id)
        )
        marks = [(str(u), int(m)) for u, m in self.s.execute(old)]
        if not marks:
            return 0
        c = models.ChangeCounter
        deleted = 0
        for user_id, mark in marks:
            self.s.execute(
                update(c)
                .where(c.user_id == user_id)
                .values(
                    pruned_through=case((c.pruned_through < mark, mark), else_=c.pruned_through)
                )
            )
            result = self.s.execute(delete(_T).where(_T.user_id == user_id, _T.change_seq <= mark))
            deleted += int(getattr(result, "rowcount", 0))
        return deleted

    # -- sync settings ----------------------------------------------------------------
    def settings(self, user_id: str) -> SettingsRow | None:
        row = self.s.get(models.SyncSettingsRow, user_id)
        if row is None:
            return None
        return SettingsRow(
            row.sync_pictures,
            row.default_network_source,
            row.default_target,
            row.version,
            row.updated_at,
        )

    def save_settings(self, user_id: str, version: int, values: SettingsRow, now: datetime) -> bool:
        """Store ``values`` as version ``version + 1`` if the stored one is ``version``
        (0: none stored yet). False when someone else changed them first."""
        s = models.SyncSettingsRow
        fields = {
            "sync_pictures": values.sync_pictures,
            "default_network_source": values.default_network_source,
            "default_target": values.default_target,
            "version": version + 1,
            "updated_at": now,
        }
        if version == 0:
            self.s.add(s(user_id=user_id, **fields))
            self.s.flush()  # a concurrent first save fails on the primary key (retried)
            return True
        result = self.s.execute(
            update(s).where(s.user_id == user_id, s.version == version).values(fields)
        )
        return bool(getattr(result, "rowcount", 0))
