"""Repository of address books, their entries, the entry-key reverse index and uploads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from befriend.core.keys import KeyRow
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
from befriend.server.storage.bulk import (
    bulk_insert,
    bulk_update,
    db_value,
    insert_ahead,
    insert_values,
)
from befriend.server.storage.changes import ChangeStamp
from befriend.server.storage.db import TXN_INFO
from befriend.server.storage.pipeline import send
from befriend.server.storage.repositories import key_from_db, key_to_db

_BATCH = 500  # rows per IN (...) list

# (stored contact, its provenance, the device's new contact) -> (contact to store, its
# provenance, names of the fields that changed, the stored contact's identity keys when they
# differ from the device's — merged numbers kept — else None): how a re-uploaded entry
# combines with what merges and user edits added to it.
Remerge = Callable[
    [bytes, Any, bytes], tuple[bytes, Any, list[str], Sequence[EntryKeyRecord] | None]
]

# entry_keys columns of a KeyRow: (entry_pk, user_id, kind, key as stored, weak_key, value,
# ordinal)
_KEY_COLUMNS = ("entry_pk", "user_id", "kind", "key", "weak_key", "value", "ordinal")
# contact_entries columns of an uploaded entry (beside the constants of its chunk)
_ENTRY_COLUMNS = ("entry_id", "raw", "raw_media_type", "content_hash", "contact")
# A new contact_entries primary key (PostgreSQL). The sequence is looked up once, by a
# subquery: by pg_get_serial_sequence for each row, 2,000 keys took 5.6 ms, not 0.5.
_NEXT_ENTRY_PK = "nextval((SELECT pg_get_serial_sequence('contact_entries', 'id')::regclass))"


@dataclass
class KeyDelta:
    """What a transaction did to a user's entry_keys rows, for the restricted buddy match:
    the exact keys of the rows it inserted or deleted (both the old and the new keys of a
    contact whose identities changed) and whether it inserted or deleted any row at all
    (an unnormalisable number has a weak key only). A contact rewritten with the same
    identities keeps its rows and changes nothing here."""

    keys: set[int] = field(default_factory=set)
    changed: bool = False

    def note(self, stored_keys: Iterable[int | None]) -> None:
        """Record rows by their key as stored (signed; None for a weak-only row)."""
        stored = list(stored_keys)
        if stored:
            self.changed = True
            self.keys.update(key_from_db(k) for k in stored if k is not None)


@dataclass
class KnownEntries:
    """The entries of one book as an upload stream knows them (entry_id -> primary key),
    while it is the only writer of its user's contacts, so that its chunks insert without
    asking the database which of their entry_ids the book holds (``_insert_new``).

    Known from the first chunk of an upload that found its book empty. The knowledge holds
    while the user's change number moves only by this stream's transactions: every writer
    of a user's contacts takes that number (``ChangeStamp``), under the row lock that
    orders them. A number that moved otherwise means another writer came between, and the
    entries are then unknown for the rest of the stream. ``entries`` may name more than the
    book holds (an entry deleted since stays named, and is then only looked up), never
    fewer: a named entry takes the in-place path of ``upsert_entries``, which reads it."""

    book_pk: int = 0
    entries: dict[str, int] | None = None  # None: not known
    seq: int = 0  # the user's change number with which they were last known
    probe: bool = False  # the next write looks whether the book is empty
    # PostgreSQL: primary keys drawn ahead from the table's sequence and not used yet (a
    # sequence never hands a value out twice, rolled back or not), and how many entries
    # the rest of the caller's transaction may insert: ``_new_pks`` draws that many at once
    # (one statement per transaction instead of one per chunk).
    spare: list[int] = field(default_factory=list)
    ahead: int = 0

    def current(self, book_pk: int, seq: int) -> dict[str, int] | None:
        """The entries, if still known when this transaction writes with change number
        ``seq`` (the number of the stream's last write, in the same transaction, or the
        next one)."""
        if self.entries is None or self.book_pk != book_pk:
            return None
        if seq not in (self.seq, self.seq + 1):
            self.entries = None
            return None
        self.seq = seq
        return self.entries

    def gave_back(self) -> None:
        """This transaction gave its change number back."""
        self.seq -= 1


def key_rows_of(
    user_id: str, keyed: Iterable[tuple[int, Sequence[EntryKeyRecord]]]
) -> list[KeyRow]:
    """entry_keys rows from (entry pk, its identity records in order)."""
    rows: list[KeyRow] = []
    for pk, keys in keyed:
        for ordinal, k in enumerate(keys):
            key = None if k.key is None else key_to_db(k.key)
            rows.append((pk, user_id, int(k.kind), key, k.weak_key, k.value, ordinal))
    return rows


def _skip_repeats(pks: list[int]) -> None:
    """Mark -2 each primary key of ``pks`` after its first: an entry_id inserted once but
    given twice, whose first copy is the one written (keys included)."""
    seen: set[int] = set()
    for i, pk in enumerate(pks):
        if pk >= 0:
            if pk in seen:
                pks[i] = -2
            seen.add(pk)


def insert_key_rows(session: Session, rows: Sequence[KeyRow]) -> None:
    """Insert entry_keys rows (``key_rows_of``, ``ChunkKeys.rows``), and log the entries
    that hold an exact key among them in book_key_log (for the in-memory holder indexes)."""
    insert_ahead(session, models.table(models.EntryKey), {}, _KEY_COLUMNS, rows)
    exact = [row for row in rows if row[3] is not None]
    seq = log_book_keys(session, [row[0] for row in exact])
    if seq is not None and not session.in_nested_transaction():
        # (a savepoint's rows could be rolled back with it while the transaction commits)
        session.info.setdefault(_WRITTEN, []).append(
            (
                seq,
                np.fromiter((row[3] for row in exact), np.int64, len(exact)).view(np.uint64),
                np.fromiter((row[0] for row in exact), np.int64, len(exact)),
            )
        )


# Session.info key: (book_key_log seq, exact keys, their entry pks) of each log row this
# transaction wrote, for ``written_book_keys``
_WRITTEN = TXN_INFO + "book_keys_written"
WrittenKeys = tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.int64]]


def written_book_keys(info: Mapping[str, Any]) -> list[WrittenKeys]:
    """The book_key_log rows a transaction wrote, from its ``Session.info`` (as a commit
    listener gets it, ``Database.on_commit``): (seq, exact keys, entry pks) each, the pairs
    that log row names, so this process's holder index takes them in without reading them
    back (``HolderIndex.took``). A seq sent ahead (PostgreSQL) is read from its cursor here,
    once, the pipeline having settled at the commit."""
    written: list[Any] = info.get(_WRITTEN, [])
    for i, (seq, keys, pks) in enumerate(written):
        if not isinstance(seq, int):
            written[i] = (int(seq.fetchone()[0]), keys, pks)
            seq.close()
    return list(written)


def entry_ranges(pks: Iterable[int]) -> bytes:
    """The distinct ``pks`` as inclusive (first, last) ranges, packed as book_key_log stores
    them (little-endian int64 pairs)."""
    bounds: list[int] = []
    for pk in sorted(set(pks)):
        if bounds and pk == bounds[-1] + 1:
            bounds[-1] = pk
        else:
            bounds += (pk, pk)
    return np.asarray(bounds, dtype="<i8").tobytes()


# Session.info key (SQLite): the last book_key_log seq before this transaction's own rows
_OWN_LOG_FLOOR = TXN_INFO + "book_key_log_floor"


def own_book_key_log_floor(session: Session) -> int | None:
    """SQLite: the last book_key_log seq before the rows this transaction wrote there (None
    when it wrote none, and always on PostgreSQL). An in-memory index tailing the log in
    this same transaction leaves the rows after it alone: SQLite hands a rolled-back
    AUTOINCREMENT value out again, and a row read, then rolled back, would make the next
    writer's row look applied. PostgreSQL's sequences never repeat a value."""
    floor = session.info.get(_OWN_LOG_FLOOR)
    return None if floor is None else int(floor)


def log_book_keys(session: Session, entry_pks: Sequence[int]) -> Any:
    """Append to book_key_log that these entries' key rows were written (nothing when
    none): one small row per statement, ranges of ids (an upload's chunk is one range).
    Returns the row's seq (None: none written); on PostgreSQL the statement is sent ahead
    (``pipeline.send``) and this is its cursor, the seq its one row."""
    if not entry_pks:
        return None
    t = models.table(models.BookKeyLog)
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    if not pg and _OWN_LOG_FLOOR not in session.info:
        last = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM book_key_log")
        session.info[_OWN_LOG_FLOOR] = int(last.scalar_one())
    mark = "%s" if pg else "?"
    sql = (
        f"INSERT INTO book_key_log (entry_ranges, created_at) VALUES ({mark}, {mark}) RETURNING seq"
    )
    params = (entry_ranges(entry_pks), db_value(session, t, "created_at", datetime.now(UTC)))
    if pg:
        return send(session, sql, params)
    return int(conn.exec_driver_sql(sql, params).scalar_one())


def _key_tuple(k: EntryKeyRecord) -> tuple[Any, ...]:
    """An entry_keys row as stored: (kind, key as stored, weak key, value)."""
    return (int(k.kind), key_to_db(k.key) if k.key is not None else None, k.weak_key, k.value)


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

    def touch_book(self, book_pk: int, device_id: str, now: datetime) -> None:
        """A committed change to the book: new version (etag), device and time. Its entry
        count is read when books are listed (a count over a large book costs more than the
        write that changed it)."""
        self.s.execute(
            update(models.AddressBook)
            .where(models.AddressBook.id == book_pk)
            .values(
                device_id=device_id,
                version=models.AddressBook.version + 1,
                updated_at=now,
            )
        )

    def list_books(self, user_id: str, offset: int, limit: int) -> list[BookRecord]:
        b, e = models.AddressBook, models.ContactEntry
        count = select(func.count()).where(e.book_pk == b.id).scalar_subquery()
        rows = self.s.execute(
            select(b.book_id, b.kind, b.device_id, count, b.version, b.updated_at)
            .where(b.user_id == user_id)
            .order_by(b.updated_at.desc(), b.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return [BookRecord(*row) for row in rows]

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

    def stamp(self, user_id: str, origin: int, device_id: str = "") -> ChangeStamp:
        """The change-feed stamp of this transaction's contact changes."""
        return ChangeStamp(self.s, user_id, origin, device_id)

    # -- entries -----------------------------------------------------------------------
    def delete_entries(
        self,
        book_pk: int,
        entry_ids: Sequence[str],
        stamp: ChangeStamp,
        now: datetime,
        delta: KeyDelta | None = None,
    ) -> None:
        """Delete entries by entry_id, leaving change-feed tombstones (and noting their keys
        in ``delta``)."""
        for i in range(0, len(entry_ids), _BATCH):
            if delta is not None:
                delta.note(
                    self._keys_where(
                        (models.ContactEntry.book_pk == book_pk)
                        & models.ContactEntry.entry_id.in_(entry_ids[i : i + _BATCH])
                    )
                )
            stamp.delete_entries(
                (models.ContactEntry.book_pk == book_pk)
                & models.ContactEntry.entry_id.in_(entry_ids[i : i + _BATCH]),
                now,
            )

    def _keys_where(self, where: Any) -> list[int | None]:
        """Keys (as stored) of the entry_keys rows of the entries matching ``where``."""
        return list(
            self.s.execute(
                select(models.EntryKey.key)
                .join(models.ContactEntry, models.ContactEntry.id == models.EntryKey.entry_pk)
                .where(where)
            ).scalars()
        )

    def _key_lists(self, entry_pks: Sequence[int]) -> dict[int, list[tuple[Any, ...]]]:
        """entry pk -> its entry_keys rows (kind, key as stored, weak key, value) in order."""
        k = models.EntryKey
        rows: list[tuple[int, int, int, int | None, int | None, str]] = []
        for i in range(0, len(entry_pks), _BATCH):
            rows.extend(
                tuple(r)  # type: ignore[misc]
                for r in self.s.execute(
                    select(k.entry_pk, k.ordinal, k.kind, k.key, k.weak_key, k.value).where(
                        k.entry_pk.in_(entry_pks[i : i + _BATCH])
                    )
                )
            )
        rows.sort()
        out: dict[int, list[tuple[Any, ...]]] = {pk: [] for pk in entry_pks}
        for pk, _, kind, key, weak, value in rows:
            out[pk].append((kind, key, weak, value))
        return out

    def keys_of_entries(self, entry_pks: Sequence[int]) -> list[int | None]:
        """Keys (as stored; None for a weak-only row) of these entries' entry_keys rows."""
        out: list[int | None] = []
        for i in range(0, len(entry_pks), _BATCH):
            out.extend(
                self.s.execute(
                    select(models.EntryKey.key).where(
                        models.EntryKey.entry_pk.in_(entry_pks[i : i + _BATCH])
                    )
                ).scalars()
            )
        return out

    def replace_entry_keys(
        self,
        user_id: str,
        entry_pk: int,
        keys: Sequence[EntryKeyRecord],
        delta: KeyDelta | None = None,
    ) -> bool:
        """Make ``keys`` the entry's entry_keys rows; rows already equal (same identities in
        the same order) are left alone. Returns whether anything changed; the keys of the
        rows deleted and inserted go to ``delta``."""
        old = self._key_lists([entry_pk])[entry_pk]
        new = [_key_tuple(k) for k in keys]
        if old == new:
            return False
        self.s.execute(delete(models.EntryKey).where(models.EntryKey.entry_pk == entry_pk))
        insert_key_rows(
            self.s,
            [
                (entry_pk, user_id, kind, key, weak, value, ordinal)
                for ordinal, (kind, key, weak, value) in enumerate(new)
            ],
        )
        if delta is not None:
            delta.note([row[1] for row in old] + [row[1] for row in new])
        return True

    def upsert_entries(
        self,
        user_id: str,
        book_pk: int,
        upload_pk: int,
        entries: Sequence[tuple[EntryInput, Sequence[EntryKeyRecord]]],
        now: datetime,
        stamp: ChangeStamp,
        remerge: Remerge | None = None,
        delta: KeyDelta | None = None,
    ) -> int:
        """Write entries by entry_id, in bulk: new ones are inserted, changed ones updated in
        place (the contact keeps its id and provenance; ``remerge`` combines the stored
        contact with the device's new version; its entry_keys rows are rewritten only when
        its identities changed), unchanged ones only join this upload. The keys of the rows
        inserted and deleted go to ``delta``. An entry_id given twice is written once, as
        given first (as ``write_entries`` does). Returns how many entries changed."""
        if not entries:
            return 0
        first: dict[str, tuple[EntryInput, Sequence[EntryKeyRecord]]] = {}
        for item in entries:
            first.setdefault(item[0].entry_id, item)
        if len(first) < len(entries):
            entries = list(first.values())
        e = models.ContactEntry
        ids = [entry.entry_id for entry, _ in entries]
        stored: dict[str, tuple[int, str, bytes, Any]] = {}
        for i in range(0, len(ids), _BATCH):
            stored.update(
                (entry_id, (pk, content_hash, contact, provenance))
                for entry_id, pk, content_hash, contact, provenance in self.s.execute(
                    select(e.entry_id, e.id, e.content_hash, e.contact, e.provenance).where(
                        e.book_pk == book_pk, e.entry_id.in_(ids[i : i + _BATCH])
                    )
                )
            )
        fresh: list[tuple[EntryInput, Sequence[EntryKeyRecord]]] = []
        unchanged: list[int] = []
        changed: list[dict[str, Any]] = []
        rekeyed: list[tuple[int, Sequence[EntryKeyRecord]]] = []
        for entry, keys in entries:
            old = stored.get(entry.entry_id)
            if old is None:
                fresh.append((entry, keys))
                continue
            pk, old_hash, old_contact, old_provenance = old
            if old_hash == entry.content_hash and old_contact == entry.contact:
                unchanged.append(pk)
                continue
            contact, provenance, fields, merged_keys = (
                remerge(old_contact, old_provenance, entry.contact)
                if remerge is not None
                else (entry.contact, old_provenance, [], None)
            )
            changed.append(
                {
                    "id": pk,
                    "raw": entry.raw,
                    "raw_media_type": entry.media_type,
                    "content_hash": entry.content_hash,
                    "contact": contact,
                    "provenance": provenance,
                    "upload_pk": upload_pk,
                    "updated_at": now,
                    **stamp.values(",".join(fields)),
                }
            )
            rekeyed.append((pk, keys if merged_keys is None else merged_keys))
        for i in range(0, len(unchanged), _BATCH):
            self.s.execute(
                update(e).where(e.id.in_(unchanged[i : i + _BATCH])).values(upload_pk=upload_pk)
            )
        if changed:
            bulk_update(self.s, models.table(e), changed, bump="version")
            # A changed contact with the same identities (a rename) keeps its key rows.
            old_keys = self._key_lists([pk for pk, _ in rekeyed])
            rekeyed = [
                (pk, keys) for pk, keys in rekeyed if old_keys[pk] != [_key_tuple(k) for k in keys]
            ]
            pks = [pk for pk, _ in rekeyed]
            if delta is not None:
                delta.note(row[1] for pk in pks for row in old_keys[pk])
            for i in range(0, len(pks), _BATCH):
                self.s.execute(
                    delete(models.EntryKey).where(models.EntryKey.entry_pk.in_(pks[i : i + _BATCH]))
                )
        if fresh:
            stamped = stamp.values()
            # One bulk statement (no RETURNING), then one query for the new primary keys.
            bulk_insert(
                self.s,
                models.table(e),
                [
                    {
                        "book_pk": book_pk,
                        "user_id": user_id,
                        "entry_id": entry.entry_id,
                        "raw": entry.raw,
                        "raw_media_type": entry.media_type,
                        "content_hash": entry.content_hash,
                        "contact": entry.contact,
                        "upload_pk": upload_pk,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                        **stamped,
                    }
                    for entry, _ in fresh
                ],
            )
            new_ids = [entry.entry_id for entry, _ in fresh]
            pk_of: dict[str, int] = {}
            for i in range(0, len(new_ids), _BATCH):
                pk_of.update(
                    (entry_id, pk)
                    for entry_id, pk in self.s.execute(
                        select(e.entry_id, e.id).where(
                            e.book_pk == book_pk, e.entry_id.in_(new_ids[i : i + _BATCH])
                        )
                    )
                )
            rekeyed.extend((pk_of[entry.entry_id], keys) for entry, keys in fresh)
        key_rows = key_rows_of(user_id, rekeyed)
        if key_rows:
            insert_key_rows(self.s, key_rows)
            if delta is not None:
                delta.note(
                    key_to_db(k.key) if k.key is not None else None
                    for _, keys in rekeyed
                    for k in keys
                )
        return len(changed) + len(fresh)

    def _insert_new(
        self,
        book_pk: int,
        constants: dict[str, Any],
        rows: Sequence[tuple[str, bytes, str, str, bytes]],
        known: KnownEntries | None = None,
    ) -> dict[str, int]:
        """Insert the ``rows`` (over _ENTRY_COLUMNS, with the ``constants``) whose entry_id
        the book does not hold; returns entry_id -> primary key of those inserted (an
        entry_id given twice is inserted once, as INSERT … ON CONFLICT DO NOTHING does).

        With the book's entries ``known`` (``KnownEntries``) the held ones are known and
        only new primary keys are drawn (``_new_pks``); the rows then go in as they are,
        with their keys. Otherwise the database is asked: SQLite by one INSERT … ON
        CONFLICT DO NOTHING RETURNING per batch; PostgreSQL by one query that reads which
        entry_ids the book holds and draws a key for each of the others
        (``_held_and_new_pg``), then one INSERT of the new rows sent ahead
        (``insert_ahead``: PostgreSQL writes them while the server goes on). That read and
        a plain insert took ~35 % less database time than one INSERT … SELECT unnest(…) ON
        CONFLICT DO NOTHING RETURNING (71 -> 45 ms for 4,000 rows, with a COPY then), which
        checks and returns row by row. Keys are handed out in entry order, as that INSERT
        did. Known entries, PostgreSQL: 0.8 instead of 2.6 ms per 500 entries; SQLite: 47
        instead of 61 ms for the 10,000 of the upload benchmark's book (its breakdown,
        medians of 3 alternated runs).

        No other transaction can insert one of these entry_ids between the read and the
        insert: every writer of a user's contacts (uploads, merges, user edits) takes the
        user's change number first, which locks the user's change_counters row until it
        commits (``ChangeStamp``; SQLite has one writer at a time anyway), and
        ``write_entries`` takes it before calling this. So a concurrent upload to the same
        book waits for this transaction, and its read (a new snapshot per statement under
        READ COMMITTED) then sees these rows as held. A writer breaking that rule would
        meet uq_contact_entries_book_entry: an IntegrityError that rolls the transaction
        back (nothing half-written)."""
        t = models.table(models.ContactEntry)
        entries = self._known_entries(book_pk, int(constants["change_seq"]), known)
        pg = self.s.get_bind().dialect.name == "postgresql"
        if entries is None and not pg:
            return {
                entry_id: pk
                for pk, entry_id in insert_values(
                    self.s,
                    t,
                    constants,
                    _ENTRY_COLUMNS,
                    rows,
                    conflict=("book_pk", "entry_id"),
                    returning=("id", "entry_id"),
                )
            }
        wanted = list(dict.fromkeys(row[0] for row in rows))
        found: list[tuple[str | None, int]]
        if entries is None:
            found = self._held_and_new_pg(book_pk, wanted)
        else:
            found = [(e, entries[e]) for e in wanted if e in entries]
            found += [(None, pk) for pk in self._new_pks(len(wanted) - len(found), known)]
        held = {entry_id for entry_id, _ in found if entry_id is not None}
        fresh = iter(sorted(pk for entry_id, pk in found if entry_id is None))
        inserted: dict[str, int] = {}
        new_rows: list[tuple[Any, ...]] = []
        for row in rows:
            entry_id = row[0]
            if entry_id in held or entry_id in inserted:
                continue
            pk = inserted[entry_id] = next(fresh)
            new_rows.append((pk, *row))
        insert_ahead(self.s, t, constants, ("id", *_ENTRY_COLUMNS), new_rows)
        if entries is not None:
            entries.update(inserted)
        return inserted

    def _known_entries(
        self, book_pk: int, seq: int, known: KnownEntries | None
    ) -> dict[str, int] | None:
        """The book's entries if ``known`` knows them for this write (change number ``seq``,
        taken already: no other writer can add to the book until this transaction ends),
        looking first whether the book is empty when ``known`` asks to."""
        if known is None:
            return None
        if known.probe and known.book_pk == book_pk:
            known.probe = False
            e = models.ContactEntry
            if not self.s.execute(select(exists().where(e.book_pk == book_pk))).scalar_one():
                known.entries, known.seq = {}, seq
        return known.current(book_pk, seq)

    def _new_pks(self, count: int, known: KnownEntries | None = None) -> list[int]:
        """``count`` new contact_entries primary keys, in increasing order. PostgreSQL: from
        ``known``'s spare keys, drawn from the table's sequence when too few, as many as
        ``known.ahead`` asks for at least (as one array: a row per key cost a fetch and a
        row object each). SQLite: the next ones after the largest ever handed out (its
        AUTOINCREMENT counter, which the insert of these keys moves on; no other writer can
        meanwhile)."""
        conn = self.s.connection()
        if conn.dialect.name == "postgresql":
            spare = known.spare if known is not None else []
            if len(spare) < count:
                want = max(count, known.ahead if known is not None else 0) - len(spare)
                drawn = conn.exec_driver_sql(
                    f"SELECT ARRAY(SELECT {_NEXT_ENTRY_PK} FROM generate_series(1, %s))",
                    (want,),
                )
                spare += drawn.scalar_one()
            taken = spare[:count]
            del spare[:count]
            return taken
        last = conn.exec_driver_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = 'contact_entries'"
        ).scalar()
        return list(range(int(last or 0) + 1, int(last or 0) + count + 1))

    def _held_and_new_pg(self, book_pk: int, wanted: list[str]) -> list[tuple[str | None, int]]:
        """(entry_id, pk) of each of ``wanted`` the book holds, then (None, a new pk from
        the sequence) for each of the others."""
        return [
            (entry_id, pk)
            for entry_id, pk in self.s.connection()
            .exec_driver_sql(
                # One probe of the (book_pk, entry_id) unique index per entry id (a LATERAL
                # subquery, OFFSET 0 keeps it from being flattened): with ``entry_id =
                # ANY(ids)`` and statistics from before the book grew (a book being uploaded)
                # the planner reads all of the book's rows and filters them by the list
                # (seen: 39 ms a chunk). %b: binary parameters (a text-format array of
                # strings costs a regex escape per element in psycopg).
                "WITH held AS MATERIALIZED (SELECT h.entry_id, h.id "
                "FROM unnest(%b::text[]) AS u(entry_id) CROSS JOIN LATERAL "
                "(SELECT entry_id, id FROM contact_entries "
                "WHERE book_pk = %b AND entry_id = u.entry_id OFFSET 0) AS h) "
                f"SELECT entry_id, id FROM held UNION ALL SELECT NULL, {_NEXT_ENTRY_PK} "
                "FROM generate_series(1, %b - (SELECT count(*) FROM held))",
                (wanted, book_pk, len(wanted)),
            )
            .all()
        ]

    def write_entries(
        self,
        user_id: str,
        book_pk: int,
        upload_pk: int,
        entries: Sequence[EntryInput],
        hashes: Sequence[str],
        key_rows: Callable[[Sequence[int]], list[KeyRow]],
        key_records: Callable[[Sequence[KeyRow]], list[EntryKeyRecord]],
        now: datetime,
        stamp: ChangeStamp,
        remerge: Remerge | None = None,
        delta: KeyDelta | None = None,
        known: KnownEntries | None = None,
    ) -> int:
        """``upsert_entries`` for an upload chunk (``hashes[i]``: the content hash of
        ``entries[i]``): the entries the book lacks are inserted skipping the ones it holds
        (``_insert_new``), and their keys by one bulk insert (``key_rows`` maps the entries'
        primary keys, -1 for none, to their entry_keys rows); only the entries the book held
        go through ``upsert_entries`` (``key_records`` turns their rows into records).
        ``known``: what the upload stream knows of the book (see ``KnownEntries``). An
        entry_id given twice is written once, as given first. Returns how many entries
        changed."""
        if not entries:
            return 0
        unstamped = not stamp.taken
        # The change number first: it locks the user's change counter until commit, which
        # every writer of the user's contacts takes before inserting (see _insert_new).
        constants = {
            "book_pk": book_pk,
            "user_id": user_id,
            "upload_pk": upload_pk,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            **stamp.values(),
        }
        rows = [
            (x.entry_id, x.raw, x.media_type, h, x.contact)
            for x, h in zip(entries, hashes, strict=True)
        ]
        inserted = self._insert_new(book_pk, constants, rows, known)
        if not inserted and unstamped:
            stamp.give_back()  # nothing new: the number goes to the first real change
            if known is not None:
                known.gave_back()
        pks = [inserted.get(x.entry_id, -1) for x in entries]  # -1: held by the book
        if len(pks) - pks.count(-1) > len(inserted):
            _skip_repeats(pks)
        held = [i for i, pk in enumerate(pks) if pk == -1]
        new_rows = key_rows(pks)
        insert_key_rows(self.s, new_rows)
        if delta is not None:
            delta.note(row[3] for row in new_rows)
        if not held:
            return len(entries) - pks.count(-2)
        # Entries the book held (an earlier upload, or an earlier chunk of this one): compare,
        # update in place or only move them to this upload, as upsert_entries does.
        mark = [-1] * len(entries)
        for n, i in enumerate(held):
            mark[i] = n
        by_entry: list[list[KeyRow]] = [[] for _ in held]
        for row in key_rows(mark):
            by_entry[row[0]].append(row)
        changed = self.upsert_entries(
            user_id,
            book_pk,
            upload_pk,
            [
                (
                    entries[i]
                    if entries[i].content_hash == hashes[i]
                    else entries[i]._replace(content_hash=hashes[i]),
                    key_records(by_entry[n]),
                )
                for n, i in enumerate(held)
            ],
            now,
            stamp,
            remerge,
            delta,
        )
        return len(entries) - pks.count(-2) - len(held) + changed

    def drop_entries_not_in_upload(
        self,
        book_pk: int,
        upload_pk: int,
        stamp: ChangeStamp,
        now: datetime,
        delta: KeyDelta | None = None,
    ) -> int:
        """A full snapshot's end: delete the book's entries it did not carry (their keys
        noted in ``delta``)."""
        where = (models.ContactEntry.book_pk == book_pk) & (
            (models.ContactEntry.upload_pk != upload_pk) | models.ContactEntry.upload_pk.is_(None)
        )
        if delta is not None:
            delta.note(self._keys_where(where))
        return stamp.delete_entries(where, now)

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
    def user_keys(self, user_id: str) -> set[int]:
        """Every exact key the user's books hold."""
        rows = self.s.execute(
            select(models.EntryKey.key).where(
                models.EntryKey.user_id == user_id, models.EntryKey.key.is_not(None)
            )
        ).scalars()
        return {key_from_db(k) for k in rows if k is not None}

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
