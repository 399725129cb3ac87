"""Repository of address books, their entries, the entry-key reverse index and uploads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from befriend.server.records import (
    BookRecord,
    EntryInput,
    EntryKeyRecord,
    StoredEntry,
    UploadMode,
    UploadRecord,
    UploadState,
)
from befriend.server.storage import models
from befriend.server.storage.bulk import bulk_insert
from befriend.server.storage.repositories import key_from_db, key_to_db

_BATCH = 500  # rows per IN (...) list


def _book(row: models.AddressBook) -> BookRecord:
    return BookRecord(
        row.book_id, row.kind, row.device_id, row.entry_count, row.version, row.updated_at
    )


class AddressBookRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- books -------------------------------------------------------------------------
    def book(self, user_id: str, book_id: str) -> tuple[int, BookRecord] | None:
        row = self.s.scalars(
            select(models.AddressBook).where(
                models.AddressBook.user_id == user_id, models.AddressBook.book_id == book_id
            )
        ).one_or_none()
        return (row.id, _book(row)) if row is not None else None

    def ensure_book(
        self, user_id: str, book_id: str, kind: int, device_id: str, now: datetime
    ) -> tuple[int, BookRecord]:
        found = self.book(user_id, book_id)
        if found is not None:
            return found
        row = models.AddressBook(
            user_id=user_id,
            book_id=book_id,
            kind=kind,
            device_id=device_id,
            entry_count=0,
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.s.add(row)
        self.s.flush()
        return row.id, _book(row)

    def touch_book(self, book_pk: int, device_id: str, now: datetime) -> BookRecord:
        count = self.s.execute(
            select(func.count()).where(models.ContactEntry.book_pk == book_pk)
        ).scalar_one()
        self.s.execute(
            update(models.AddressBook)
            .where(models.AddressBook.id == book_pk)
            .values(
                entry_count=count,
                device_id=device_id,
                version=models.AddressBook.version + 1,
                updated_at=now,
            )
        )
        row = self.s.get_one(models.AddressBook, book_pk)
        self.s.refresh(row)
        return _book(row)

    def list_books(self, user_id: str, offset: int, limit: int) -> list[BookRecord]:
        rows = self.s.scalars(
            select(models.AddressBook)
            .where(models.AddressBook.user_id == user_id)
            .order_by(models.AddressBook.updated_at.desc(), models.AddressBook.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return [_book(r) for r in rows]

    # -- uploads -----------------------------------------------------------------------
    def upload(self, user_id: str, upload_id: str) -> tuple[int, int, UploadRecord] | None:
        """(upload pk, book pk, record), row-locked for the chunk's transaction."""
        row = self.s.execute(
            select(models.Upload, models.AddressBook.book_id)
            .join(models.AddressBook, models.AddressBook.id == models.Upload.book_pk)
            .where(models.Upload.user_id == user_id, models.Upload.upload_id == upload_id)
            .with_for_update(of=models.Upload)
        ).one_or_none()
        if row is None:
            return None
        up, book_id = row
        record = UploadRecord(
            up.upload_id,
            book_id,
            up.device_id,
            UploadMode(up.mode),
            UploadState(up.state),
            up.last_sequence,
            up.entry_count,
            up.last_entry_id,
            up.updated_at,
            up.expires_at,
        )
        return up.id, up.book_pk, record

    def create_upload(
        self,
        user_id: str,
        upload_id: str,
        book_pk: int,
        device_id: str,
        mode: UploadMode,
        now: datetime,
        expires_at: datetime,
    ) -> int:
        row = models.Upload(
            user_id=user_id,
            upload_id=upload_id,
            book_pk=book_pk,
            device_id=device_id,
            mode=int(mode),
            state=int(UploadState.IN_PROGRESS),
            last_sequence=0,
            entry_count=0,
            last_entry_id="",
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        self.s.add(row)
        self.s.flush()
        return row.id

    def advance_upload(
        self,
        upload_pk: int,
        *,
        sequence: int,
        added: int,
        last_entry_id: str,
        state: UploadState,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        values: dict[str, object] = {
            "last_sequence": sequence,
            "entry_count": models.Upload.entry_count + added,
            "state": int(state),
            "updated_at": now,
            "expires_at": expires_at,
        }
        if last_entry_id:
            values["last_entry_id"] = last_entry_id
        self.s.execute(update(models.Upload).where(models.Upload.id == upload_pk).values(values))

    # -- entries -----------------------------------------------------------------------
    def delete_entries(self, book_pk: int, entry_ids: Sequence[str]) -> None:
        for i in range(0, len(entry_ids), _BATCH):
            self.s.execute(
                delete(models.ContactEntry).where(
                    models.ContactEntry.book_pk == book_pk,
                    models.ContactEntry.entry_id.in_(entry_ids[i : i + _BATCH]),
                )
            )

    def upsert_entries(
        self,
        user_id: str,
        book_pk: int,
        upload_pk: int,
        entries: Sequence[tuple[EntryInput, Sequence[EntryKeyRecord]]],
        now: datetime,
    ) -> None:
        """Replace entries by entry_id (with their keys), in bulk."""
        if not entries:
            return
        self.delete_entries(book_pk, [e.entry_id for e, _ in entries])
        # One bulk statement per chunk (no RETURNING), then one query for the new keys.
        bulk_insert(
            self.s,
            models.table(models.ContactEntry),
            [
                {
                    "book_pk": book_pk,
                    "user_id": user_id,
                    "entry_id": e.entry_id,
                    "raw": e.raw,
                    "raw_media_type": e.media_type,
                    "content_hash": e.content_hash,
                    "contact": e.contact,
                    "upload_pk": upload_pk,
                    "created_at": now,
                    "updated_at": now,
                }
                for e, _ in entries
            ],
        )
        ids = [e.entry_id for e, _ in entries]
        pk_of: dict[str, int] = {}
        for i in range(0, len(ids), _BATCH):
            pk_of.update(
                (entry_id, pk)
                for entry_id, pk in self.s.execute(
                    select(models.ContactEntry.entry_id, models.ContactEntry.id).where(
                        models.ContactEntry.book_pk == book_pk,
                        models.ContactEntry.entry_id.in_(ids[i : i + _BATCH]),
                    )
                )
            )
        pks = [pk_of[entry_id] for entry_id in ids]
        key_rows = [
            {
                "entry_pk": pk,
                "user_id": user_id,
                "kind": int(k.kind),
                "key": key_to_db(k.key) if k.key is not None else None,
                "weak_key": k.weak_key,
                "value": k.value,
            }
            for pk, (_, keys) in zip(pks, entries, strict=True)
            for k in keys
        ]
        if key_rows:
            bulk_insert(self.s, models.table(models.EntryKey), key_rows)

    def drop_entries_not_in_upload(self, book_pk: int, upload_pk: int) -> int:
        result = self.s.execute(
            delete(models.ContactEntry).where(
                models.ContactEntry.book_pk == book_pk,
                (models.ContactEntry.upload_pk != upload_pk)
                | models.ContactEntry.upload_pk.is_(None),
            )
        )
        return int(getattr(result, "rowcount", 0))

    def entry_index(self, book_pk: int) -> list[tuple[int, str, str]]:
        """(pk, entry_id, content_hash) of every entry of the book, in upload order."""
        rows = self.s.execute(
            select(
                models.ContactEntry.id,
                models.ContactEntry.entry_id,
                models.ContactEntry.content_hash,
            )
            .where(models.ContactEntry.book_pk == book_pk)
            .order_by(models.ContactEntry.id)
        )
        return [(pk, eid, h) for pk, eid, h in rows]

    def fetch_entries(self, pks: Sequence[int]) -> list[StoredEntry]:
        rows = self.s.scalars(
            select(models.ContactEntry)
            .where(models.ContactEntry.id.in_(list(pks)))
            .order_by(models.ContactEntry.id)
        )
        return [
            StoredEntry(r.entry_id, r.raw, r.raw_media_type, r.content_hash, r.contact)
            for r in rows
        ]

    # -- enumeration quota ---------------------------------------------------------------
    def known_keys(self, user_id: str, keys: Sequence[int]) -> set[int]:
        """Which of these keys the user's books already hold."""
        found: set[int] = set()
        wanted = [key_to_db(k) for k in keys]
        for i in range(0, len(wanted), _BATCH):
            rows = self.s.execute(
                select(models.EntryKey.key).where(
                    models.EntryKey.user_id == user_id,
                    models.EntryKey.key.in_(wanted[i : i + _BATCH]),
                )
            ).scalars()
            found.update(key_from_db(k) for k in rows if k is not None)
        return found

    def quota_used(self, user_id: str, day: str) -> int:
        used = self.s.execute(
            select(models.KeyQuota.used).where(
                models.KeyQuota.user_id == user_id, models.KeyQuota.day == day
            )
        ).scalar_one_or_none()
        return int(used or 0)

    def add_quota(self, user_id: str, day: str, count: int) -> None:
        updated = self.s.execute(
            update(models.KeyQuota)
            .where(models.KeyQuota.user_id == user_id, models.KeyQuota.day == day)
            .values(used=models.KeyQuota.used + count)
        )
        if not getattr(updated, "rowcount", 0):
            self.s.add(models.KeyQuota(user_id=user_id, day=day, used=count))
            self.s.flush()
