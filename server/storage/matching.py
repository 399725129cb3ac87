"""Repository for buddy matching: registry feed, reverse index, buddy rows, decisions,
events and presence."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import pq
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, aliased

from befriend.server.records import IdentityKind
from befriend.server.storage import models
from befriend.server.storage.addressbooks import own_book_key_log_floor
from befriend.server.storage.bulk import db_value, insert_tuples
from befriend.server.storage.changes import current_seq
from befriend.server.storage.db import on_rollback
from befriend.server.storage.pipeline import driver_connection
from befriend.server.storage.repositories import WROTE_IDENTITY_LOG, key_from_db, key_to_db
from befriend.server.storage.retention import BOOK_KEY_LOG
from befriend.server.storage.snapshots import fingerprint

_BATCH = 500
BUDDY_COLUMNS = (
    "owner_id",
    "other_id",
    "kind",
    "key",
    "key_kind",
    "entry_pk",
    "origin",
    "created_at",
    "updated_at",
)
_U64 = 1 << 64

FULL, ONE_WAY, PHONEBOOK = 1, 2, 3
ACCEPTED, BLOCKED = 1, 2
ACTIVE_OPEN, ACTIVE_CONFIRMED, ACTIVE_EXCLUDED = 1, 2, 3
JOB_RUNNING, JOB_DONE = 1, 2
MATCHING_LOCK = 0x62656672_6D617463  # "befrmatc": the PostgreSQL advisory lock of matching
WEAK_MATCH = 4  # BuddyMatchKey.WEAK_SUFFIX, beside IdentityKind 1-3 in BookKey.kind


class BookKey(NamedTuple):
    """One key row of a book (a named tuple: matching builds ~10^5 of them per book)."""

    entry_pk: int
    kind: int  # IdentityKind
    key: int  # unsigned


class BuddyState(NamedTuple):
    """The matching-relevant columns of one buddy row (a member match: phonebook buddies
    are not stored, see ``befriend.server.services.matching.phonebook_buddies``)."""

    owner_id: str
    other_id: str
    kind: int
    key: int  # unsigned
    key_kind: int
    entry_pk: int | None
    origin: int


@dataclass(frozen=True)
class ActiveProposal:
    id: int
    e164: str
    raw: str
    display_name: str
    interactions: int
    sources: int  # bit (1 << CommunicationLogSource) per source seen
    last_seen: datetime
    state: int


@dataclass(frozen=True)
class BuddyView:
    """A stored buddy row with what ListBuddies shows."""

    other_id: str | None
    other_name: str
    kind: int
    key: int
    key_kind: int
    contact: bytes | None  # the original phonebook entry (serialised Contact)
    origin: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EntryCard:
    """The contact behind a phonebook buddy."""

    contact: bytes
    created_at: datetime
    updated_at: datetime
    book_id: str


@dataclass(frozen=True)
class BlockedView:
    user_id: str
    display_name: str
    blocked_at: datetime


@dataclass(frozen=True)
class HeldNumber:
    """A phone key in a user's book: the first entry holding it."""

    key: int
    entry_pk: int
    e164: str
    contact: bytes | None


def _view(r: models.BuddyRow, name: str | None, contact: bytes | None) -> BuddyView:
    return BuddyView(
        r.other_id,
        name or "",
        r.kind,
        key_from_db(r.key),
        r.key_kind,
        contact,
        r.origin,
        r.created_at,
        r.updated_at,
    )


def _chunks(values: Sequence[int], size: int = _BATCH) -> Iterable[Sequence[int]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class MatchRepository:
    def __init__(self, session: Session) -> None:
        self.s = session
        # (owner, other) -> id of the buddy rows the last member_rows_between or
        # rows_involving read, for update_rows
        self._read_ids: dict[tuple[str, str], int] = {}
        self._read_keys: dict[tuple[str, str], int] = {}  # and their match keys

    # -- driver-level statements ---------------------------------------------------------
    # The queries of the per-chunk match run at the driver: a SQLAlchemy select with an
    # expanding IN list of 500 values costs ~1 ms more in Python than the query itself.
    # They are written with %s placeholders; ``_in`` is membership in one list parameter
    # (an array on PostgreSQL, a JSON array read by json_each on SQLite).
    def _in(self, column: str, sql_type: str = "bigint") -> str:
        if self._pg():
            return f"{column} = ANY(%s::{sql_type}[])"
        return f"{column} IN (SELECT value FROM json_each(%s))"

    def _list(self, values: Iterable[Any]) -> Any:
        return list(values) if self._pg() else json.dumps(list(values))

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        pg = self._pg()
        # PostgreSQL: binary parameters (%b; a list in the text format goes through a regex
        # escape per element) and binary results.
        sql = sql.replace("%s", "%b" if pg else "?")
        cur = driver_connection(self.s).cursor()
        try:
            if pg:
                cur.execute(sql, params, binary=True)
            else:
                cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def serialize_matching(self) -> None:
        """Hold the matching lock until the transaction ends. PostgreSQL: a transaction-level
        advisory lock (no other match runs until this transaction commits, and statements
        after it see every earlier match's commit). SQLite: nothing to do, a writing
        transaction already holds the database's write lock from its BEGIN IMMEDIATE.

        PostgreSQL also plans the rest of the transaction without sequential scans: the
        match's queries probe indexes once per key or read one user's rows, and with stale
        statistics (a table analysed while small, a book uploaded since) the planner would
        otherwise re-scan a table for every key (seen: 200 ms per 500-key chunk), and
        without parallel workers, whose start-up is not worth it for reads of a few thousand
        rows (a refresh batch's buddy rows of 50 users started two)."""
        if self._pg():
            self._rows(
                "SELECT pg_advisory_xact_lock(%s), set_config('enable_seqscan', 'off', true), "
                "set_config('max_parallel_workers_per_gather', '0', true)",
                MATCHING_LOCK,
            )

    # -- registry feed -------------------------------------------------------------------
    def identity_snapshot(self) -> tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """(log position, identity pks, their keys) of every registered identity, read into
        arrays as the refresh scan reads its columns (``_int8_columns``): no Python object
        per identity outlives its batch (one list of every row peaked at +331 MiB for 1M)."""
        seq = self.s.execute(
            select(func.coalesce(func.max(models.IdentityLog.seq), 0))
        ).scalar_one()
        pk, key = self._int8_columns("SELECT id, key FROM identities", 2)
        return int(seq), pk.astype(np.uint64), key.view(np.uint64)  # the key's bits: key_from_db

    def identity_log_extent(self, seq: int) -> tuple[int, int]:
        """(how many log entries come after ``seq``, the last one's seq or 0): one cheap
        index range count, to tell whether a tail has anything new to read. It precedes
        every registry lookup, so it runs at the driver (``book_key_log_extent``)."""
        ((n, top),) = self._rows(
            "SELECT count(*), coalesce(max(seq), 0) FROM identity_log WHERE seq > %s", seq
        )
        return int(n), int(top)

    def identity_log_check(self, seq: int) -> str | None:
        """The fingerprint of the identity log row ``seq``, None if there is no such row
        (a registry snapshot at ``seq`` belongs to this database when it matches)."""
        log = models.IdentityLog
        row = self.s.execute(
            select(log.created_at, log.identity_pk, log.op).where(log.seq == seq)
        ).one_or_none()
        return None if row is None else fingerprint(row[0], f"{row[1]}:{row[2]}".encode())

    def identity_log_since(self, seq: int) -> list[tuple[int, int, int, int | None]]:
        """(seq, identity pk, op, key or None) after ``seq``, oldest first."""
        rows = self.s.execute(
            select(
                models.IdentityLog.seq,
                models.IdentityLog.identity_pk,
                models.IdentityLog.op,
                models.Identity.key,
            )
            .outerjoin(models.Identity, models.Identity.id == models.IdentityLog.identity_pk)
            .where(models.IdentityLog.seq > seq)
            .order_by(models.IdentityLog.seq)
        )
        return [(q, pk, op, key_from_db(k) if k is not None else None) for q, pk, op, k in rows]

    def owners_of_identities(self, pks: Sequence[int]) -> dict[int, tuple[str, int]]:
        """identity pk -> (user id, IdentityKind) for identities that exist now."""
        if not pks:
            return {}
        rows = self._rows(
            f"SELECT id, user_id, kind FROM identities WHERE {self._in('id')}", self._list(pks)
        )
        return {pk: (uid, kind) for pk, uid, kind in rows}

    def identity_keys_by_pk(self, pks: Sequence[int]) -> dict[int, tuple[str, int]]:
        """identity pk -> (user id, key) for identities that exist now (to confirm a
        registry hit: the pk must still carry the key looked up)."""
        if not pks:
            return {}
        rows = self._rows(
            f"SELECT id, user_id, key FROM identities WHERE {self._in('id')}", self._list(pks)
        )
        return {pk: (uid, key_from_db(k)) for pk, uid, k in rows}

    # -- books and the reverse index ------------------------------------------------------
    def own_keys(self, user_id: str) -> list[tuple[int, int]]:
        rows = self._rows("SELECT kind, key FROM identities WHERE user_id = %s", user_id)
        return [(kind, key_from_db(k)) for kind, k in rows]

    def own_keys_of(self, users: Sequence[str]) -> dict[str, list[int]]:
        """user -> the keys of the user's own identities, for each of ``users`` (one query)."""
        out: dict[str, list[int]] = {u: [] for u in users}
        rows = self._rows(
            f"SELECT user_id, key FROM identities WHERE {self._in('user_id', 'text')}",
            self._list(sorted(out)),
        )
        for u, k in rows:
            out[u].append(key_from_db(k))
        return out

    def _book_rows(
        self, users: Sequence[str], columns: str, where: str
    ) -> dict[str, list[tuple[Any, ...]]]:
        """user -> the user's key rows matching ``where`` as ``(entry_pk, ordinal, *columns)``
        (several users: the user id last), in entry order (entry pk, then ordinal), for each
        of ``users``. Read through the (user, key) index and sorted here: given an ORDER BY,
        SQLite would rather walk the whole table in entry_pk order than sort the users'
        rows. Several users' rows are sorted together (an entry's rows are all its user's)
        and handed out as fetched: 2.0 -> 1.4 µs a row with the book keys made of them."""
        read = f"FROM entry_keys{'' if self._pg() else ' INDEXED BY ix_entry_keys_user_key'}"
        if len(users) == 1:  # (an upload's match: no user column to fetch for every row)
            rows = self._rows(
                f"SELECT entry_pk, ordinal, {columns} {read} WHERE user_id = %s AND {where}",
                users[0],
            )
            rows.sort()
            return {users[0]: rows}
        out: dict[str, list[tuple[Any, ...]]] = {u: [] for u in users}
        rows = self._rows(
            f"SELECT entry_pk, ordinal, {columns}, user_id {read} "
            f"WHERE {self._in('user_id', 'text')} AND {where}",
            self._list(sorted(set(users))),
        )
        rows.sort()
        for row in rows:
            out[row[-1]].append(row)
        return out

    def change_seq(self, user_id: str) -> int:
        """The user's last change number: every change to the user's books takes one."""
        return current_seq(self.s, user_id)[0]

    def book_keys(self, user_id: str) -> list[BookKey]:
        """Exact keys in every book of the user, in entry order."""
        return self.book_keys_of([user_id])[user_id]

    def book_keys_of(self, users: Sequence[str]) -> dict[str, list[BookKey]]:
        """user -> ``book_keys`` of the user, for each of ``users`` (one query)."""
        return {
            u: [BookKey(r[0], r[2], r[3] + _U64 if r[3] < 0 else r[3]) for r in rows]
            for u, rows in self.book_key_rows(users).items()
        }

    def book_key_rows(self, users: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """user -> the exact key rows of the user's books as read, in entry order: the
        entry pk at [0], the kind at [2], the key as stored (a signed BIGINT) at [3]."""
        return self._book_rows(users, "kind, key", "key IS NOT NULL")

    def book_weak_keys(self, user_id: str) -> list[BookKey]:
        """Weak keys of the phone numbers in the user's books that could not be normalised,
        in entry order."""
        where = "key IS NULL AND weak_key IS NOT NULL"
        return [
            BookKey(e, WEAK_MATCH, w)
            for e, _, w in self._book_rows([user_id], "weak_key", where)[user_id]
        ]

    def book_phone_keys(self, user_id: str) -> list[int]:
        """Exact phone keys (E.164 digits) in every book of the user, unordered, repeated."""
        rows = self.s.execute(
            select(models.EntryKey.key).where(
                models.EntryKey.user_id == user_id,
                models.EntryKey.kind == int(IdentityKind.PHONE),
                models.EntryKey.key.is_not(None),
            )
        ).scalars()
        return [key_from_db(k) for k in rows if k is not None]

    def held_numbers(self, user_id: str, keys: Sequence[int]) -> dict[int, HeldNumber]:
        """key -> the user's first entry holding that phone key (a page of keys at most)."""
        out: dict[int, HeldNumber] = {}
        for part in _chunks([key_to_db(k) for k in keys]):
            rows = self.s.execute(
                select(
                    models.EntryKey.key,
                    models.EntryKey.entry_pk,
                    models.EntryKey.value,
                    models.ContactEntry.contact,
                )
                .join(models.ContactEntry, models.ContactEntry.id == models.EntryKey.entry_pk)
                .where(
                    models.EntryKey.user_id == user_id,
                    models.EntryKey.kind == int(IdentityKind.PHONE),
                    models.EntryKey.key.in_(part),
                )
                .order_by(models.EntryKey.entry_pk, models.EntryKey.ordinal)
            )
            for k, entry_pk, value, contact in rows:
                key = key_from_db(k) if k is not None else -1
                if key >= 0 and key not in out:
                    out[key] = HeldNumber(key, entry_pk, value, contact)
        return out

    def weak_holders(self, weak_keys: Sequence[int]) -> list[tuple[str, BookKey]]:
        """Who holds an unnormalisable number ending in one of these weak keys (through the
        partial index of such rows; SQLite is told to, or it would walk every key IS NULL
        row through the key index)."""
        if not weak_keys:
            return []
        hint = "" if self._pg() else " INDEXED BY ix_entry_keys_weak_key"
        rows = self._rows(
            f"SELECT user_id, entry_pk, weak_key FROM entry_keys{hint} "
            f"WHERE {self._in('weak_key')} AND key IS NULL ORDER BY entry_pk, ordinal",
            self._list(weak_keys),
        )
        return [(u, BookKey(e, WEAK_MATCH, w)) for u, e, w in rows]

    def holders(self, keys: Sequence[int], entry_pks: Sequence[int]) -> list[tuple[str, BookKey]]:
        """Who holds any of these keys in a book, (holder, the entry key) in entry order,
        among the entries ``entry_pks`` (a superset of the holding ones: the in-memory
        ``HolderIndex``'s candidates), each read by primary key."""
        if not keys or not entry_pks:
            return []
        wanted = self._list(key_to_db(k) for k in keys)
        pks = self._list(sorted(set(entry_pks)))
        if self._pg():
            rows = self._rows(
                "SELECT h.user_id, h.entry_pk, h.kind, h.key "
                "FROM unnest(%s::bigint[]) AS e(pk) CROSS JOIN LATERAL "
                "(SELECT user_id, entry_pk, ordinal, kind, key FROM entry_keys "
                "WHERE entry_pk = e.pk OFFSET 0) AS h "
                "WHERE h.key = ANY(%s::bigint[]) ORDER BY h.entry_pk, h.ordinal",
                pks,
                wanted,
            )
        else:  # NOT INDEXED: through the primary key (the table's own b-tree)
            rows = self._rows(
                "SELECT user_id, entry_pk, kind, key FROM entry_keys NOT INDEXED "
                f"WHERE {self._in('entry_pk')} AND {self._in('key')} ORDER BY entry_pk, ordinal",
                pks,
                wanted,
            )
        return [(u, BookKey(e, kind, key_from_db(k))) for u, e, kind, k in rows]

    # -- the holder index's feed (befriend.server.services.holders) ----------------------
    def book_key_snapshot(
        self, sink: Callable[[npt.NDArray[np.uint64], npt.NDArray[np.int64]], None]
    ) -> int:
        """Stream (keys, their entry pks) of every exact key row of every book to ``sink``,
        a slice of rows at a time (``_int8_slices``); returns the log position. It is read
        first (the last log row, or the pruning watermark when later): a row written after
        it is in the snapshot and comes again by the log (twice in the index, harmlessly)."""
        _, top, pruned = self.book_key_log_extent(0)
        self._int8_slices(
            "SELECT key, entry_pk FROM entry_keys WHERE key IS NOT NULL",
            2,
            lambda cols: sink(cols[0].view(np.uint64), cols[1]),
        )
        return max(top, pruned)

    def book_key_log_extent(self, seq: int) -> tuple[int, int, int]:
        """(how many log rows come after ``seq``, the last one's seq or 0, the log's pruning
        watermark, 0 if never pruned): one statement at the driver, a cheap index range
        count and a primary-key read. It precedes every reverse lookup; through the ORM it
        cost ~0.5 ms more on PostgreSQL (p50 0.92 against 0.46 ms, ``SELECT 1``: 0.38)."""
        ((n, top, pruned),) = self._rows(
            "SELECT count(*), coalesce(max(seq), 0), (SELECT coalesce(max(pruned_through), 0) "
            "FROM feed_watermarks WHERE name = %s) FROM book_key_log WHERE seq > %s",
            BOOK_KEY_LOG,
            seq,
        )
        return int(n), int(top), int(pruned)

    def wrote_identity_log(self) -> bool:
        """This transaction wrote identity_log rows (a registration, a number change)."""
        return bool(self.s.info.get(WROTE_IDENTITY_LOG))

    def on_rollback(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` if this transaction rolls back (``db.on_rollback``)."""
        on_rollback(self.s, fn)

    def own_book_key_log_floor(self) -> int | None:
        """The last book_key_log seq before the rows this transaction wrote there, to leave
        them to a tail after its commit (``addressbooks.own_book_key_log_floor``); None:
        none to leave."""
        return own_book_key_log_floor(self.s)

    def book_key_log_check(self, seq: int) -> str | None:
        """The fingerprint of the log row ``seq`` (``snapshots.fingerprint``), None if there
        is no such row: a snapshot of the holder index at ``seq`` belongs to this database
        and can be brought up to date from it only when this matches its own."""
        log = models.BookKeyLog
        row = self.s.execute(
            select(log.created_at, log.entry_ranges).where(log.seq == seq)
        ).one_or_none()
        return None if row is None else fingerprint(row[0], bytes(row[1]))

    def book_key_log_since(self, seq: int) -> list[tuple[int, bytes]]:
        """(seq, packed entry ranges) of the log rows after ``seq``, oldest first."""
        log = models.BookKeyLog
        rows = self.s.execute(
            select(log.seq, log.entry_ranges).where(log.seq > seq).order_by(log.seq)
        )
        return [(int(q), bytes(r)) for q, r in rows]

    def book_keys_in(
        self, ranges: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        """(keys, entry pks) of the exact key rows of the entries in ``ranges`` (an array of
        inclusive (first, last) pairs, flattened), each range read along the primary key."""
        if not ranges.size:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        first, last = ranges[0::2].tolist(), ranges[1::2].tolist()
        if self._pg():
            rows = self._rows(
                "SELECT k.key, k.entry_pk FROM unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi) "
                "CROSS JOIN LATERAL (SELECT key, entry_pk FROM entry_keys "
                "WHERE entry_pk BETWEEN r.lo AND r.hi AND key IS NOT NULL OFFSET 0) AS k",
                first,
                last,
            )
        else:
            rows = self._rows(
                "SELECT k.key, k.entry_pk FROM json_each(?) AS r CROSS JOIN entry_keys AS k "
                "NOT INDEXED WHERE k.entry_pk BETWEEN json_extract(r.value, '$[0]') "
                "AND json_extract(r.value, '$[1]') AND k.key IS NOT NULL",
                json.dumps(list(zip(first, last, strict=True))),
            )
        if not rows:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        flat = np.asarray(rows, dtype=np.int64)
        return np.ascontiguousarray(flat[:, 0]).view(np.uint64), np.ascontiguousarray(flat[:, 1])

    # -- the restricted match (a few keys of one user's books) ----------------------------
    # Each of these costs in proportion to the keys asked, never to the size of the books,
    # whatever the planner's statistics. On PostgreSQL the keys go as one array and each is
    # probed through a LATERAL subquery (OFFSET 0 keeps it from being flattened): without
    # statistics (a book uploaded since the last ANALYZE) the planner would otherwise scan
    # all of the user's rows for each chunk of an upload.
    def _pg(self) -> bool:
        return self.s.get_bind().dialect.name == "postgresql"

    def book_rows_with_keys(self, user_id: str, keys: Sequence[int]) -> list[BookKey]:
        """The user's exact key rows whose key is one of ``keys``, in entry order (entry pk,
        then ordinal: the order ``book_keys`` gives); one probe of the (user, key) index per
        key."""
        wanted = sorted({key_to_db(k) for k in keys})
        if not wanted:
            return []
        if self._pg():
            rows = self._rows(
                "SELECT h.entry_pk, h.ordinal, h.kind, h.key "
                "FROM unnest(%s::bigint[]) AS k(key) CROSS JOIN LATERAL "
                "(SELECT entry_pk, ordinal, kind, key FROM entry_keys "
                "WHERE user_id = %s AND key = k.key OFFSET 0) AS h",
                wanted,
                user_id,
            )
        else:
            rows = self._rows(
                "SELECT entry_pk, ordinal, kind, key FROM entry_keys "
                "INDEXED BY ix_entry_keys_user_key "
                f"WHERE user_id = %s AND {self._in('key')}",
                user_id,
                self._list(wanted),
            )
        rows.sort()
        return [BookKey(entry_pk, kind, key_from_db(k)) for entry_pk, _, kind, k in rows]

    def identities_of_owners(self, pks: Sequence[int]) -> list[tuple[int, str, int]]:
        """(pk, user, key) of every identity of the users owning one of these identities."""
        rows = self._rows(
            "SELECT id, user_id, key FROM identities WHERE user_id IN "
            f"(SELECT user_id FROM identities WHERE {self._in('id')})",
            self._list(sorted(set(pks))),
        )
        return [(pk, u, key_from_db(k)) for pk, u, k in rows]

    def holders_among(self, keys: Sequence[int], users: Sequence[str]) -> list[tuple[str, BookKey]]:
        """``holders(keys)`` restricted to the books of ``users``, in the same order: one
        probe of the (user, key) index per pair, whoever else holds the keys."""
        ids = sorted(set(users))
        wanted = sorted({key_to_db(k) for k in keys})
        if not (ids and wanted):
            return []
        if self._pg():
            found = self._rows(
                "SELECT h.user_id, h.entry_pk, h.ordinal, h.kind, h.key "
                "FROM unnest(%s::text[]) AS u(id) CROSS JOIN unnest(%s::bigint[]) AS k(key) "
                "CROSS JOIN LATERAL (SELECT user_id, entry_pk, ordinal, kind, key FROM entry_keys "
                "WHERE user_id = u.id AND key = k.key OFFSET 0) AS h",
                ids,
                wanted,
            )
        else:
            found = self._rows(
                "SELECT user_id, entry_pk, ordinal, kind, key FROM entry_keys "
                "INDEXED BY ix_entry_keys_user_key "
                f"WHERE {self._in('user_id', 'text')} AND {self._in('key')}",
                self._list(ids),
                self._list(wanted),
            )
        rows = sorted((entry_pk, n, u, kind, k) for u, entry_pk, n, kind, k in found)
        return [(u, BookKey(entry_pk, kind, key_from_db(k))) for entry_pk, _, u, kind, k in rows]

    def member_rows_between(self, user_id: str, others: Sequence[str]) -> list[BuddyState]:
        """The rows user -> other and other -> user for each of ``others``."""
        ids = sorted(set(others) - {user_id})
        if not ids:
            return []
        cols = "SELECT owner_id, other_id, kind, key, key_kind, entry_pk, origin, id FROM buddies"
        rows = self._rows(
            f"{cols} WHERE owner_id = %s AND {self._in('other_id', 'text')} UNION ALL "
            f"{cols} WHERE other_id = %s AND {self._in('owner_id', 'text')}",
            user_id,
            self._list(ids),
            user_id,
            self._list(ids),
        )
        return self._remember(rows)

    # -- buddy rows ---------------------------------------------------------------------
    def _either(self, cols: str, first: str, second: str, users: Sequence[str]) -> list[Any]:
        """``cols`` (``SELECT … FROM table``) of the rows whose ``first`` column is one of
        ``users`` and of those whose ``second`` column is one and ``first`` is not."""
        if len(users) == 1:
            (u,) = users
            return self._rows(
                f"{cols} WHERE {first} = %s UNION ALL {cols} WHERE {second} = %s AND {first} <> %s",
                u,
                u,
                u,
            )
        ids = self._list(sorted(set(users)))
        return self._rows(
            f"{cols} WHERE {self._in(first, 'text')} UNION ALL "
            f"{cols} WHERE {self._in(second, 'text')} AND NOT {self._in(first, 'text')}",
            ids,
            ids,
            ids,
        )

    def rows_involving(self, users: Sequence[str]) -> list[BuddyState]:
        """Every row one of ``users`` owns or is the other of."""
        cols = "SELECT owner_id, other_id, kind, key, key_kind, entry_pk, origin, id FROM buddies"
        rows = self._either(cols, "owner_id", "other_id", users)
        return self._remember(rows)

    def _remember(self, rows: Sequence[Sequence[Any]]) -> list[BuddyState]:
        """Buddy rows read as (owner_id, other_id, kind, key, key_kind, entry_pk, origin, id),
        their ids and keys remembered for ``update_rows``."""
        out = [
            BuddyState(o, t, kind, k + _U64 if k < 0 else k, kk, e, origin)
            for o, t, kind, k, kk, e, origin, _ in rows
        ]
        ids = (row[7] for row in rows)
        self._read_ids = {(r.owner_id, r.other_id): pk for r, pk in zip(out, ids, strict=True)}
        self._read_keys = {(r.owner_id, r.other_id): r.key for r in out}
        return out

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement (``%s`` placeholders) executed for each of ``rows``."""
        if rows:
            if not self._pg():
                sql = sql.replace("%s", "?")
            self.s.connection().exec_driver_sql(sql, list(rows))

    def delete_rows(self, rows: Iterable[BuddyState]) -> None:
        self._many(
            "DELETE FROM buddies WHERE owner_id = %s AND other_id = %s",
            [(r.owner_id, r.other_id) for r in rows],
        )

    def insert_rows(self, rows: Sequence[BuddyState], now: datetime) -> None:
        t = models.table(models.BuddyRow)
        at = db_value(self.s, t, "created_at", now)
        insert_tuples(
            self.s,
            t,
            BUDDY_COLUMNS,
            [(*r[:3], key_to_db(r.key), *r[4:], at, at) for r in rows],
        )

    def update_rows(self, rows: Sequence[BuddyState], now: datetime) -> None:
        """Rewrite changed rows.

        PostgreSQL: the rows this repository's last ``member_rows_between`` or
        ``rows_involving`` read (it remembers their ids; a row's pair never changes, ids are
        never reused) by one UPDATE … FROM unnest(arrays) joined on the primary key only; a
        row deleted or replaced since is updated by its pair, below. 1,400 one-way rows to
        one member turned full, among 1M rows: 20-27 ms, against 23-29 ms for the
        executemany by (owner_id, other_id) when that probes the unique index (min of 8,
        four runs; upload benchmark: 23 and 34 ms against 29 and 54). But the planner may
        serve a lookup by a parameterised (owner_id, other_id) through ix_buddies_other_id,
        reading for each row every row that names a member many hold: 498-582 ms for that
        executemany on a table whose other_id values look distinct, and an UPDATE … FROM
        unnest joined on the pair, or a lookup of the ids by pair, goes the same way (so
        does this UPDATE as a generic plan if it also compares the pair: 650-890 ms).

        SQLite: the rows read whose match key stays as read, by rowid, setting no indexed
        column (``_update_read_rows_sqlite``).

        Other rows: one executemany by (owner_id, other_id). (On SQLite an UPDATE … FROM a
        VALUES list, as ``bulk_update`` does, was slower here: 1,400 rows by rowid among 1M,
        22 against 13 ms.)"""
        if not rows:
            return
        at = db_value(self.s, models.table(models.BuddyRow), "updated_at", now)
        known = self._read_ids
        if self._pg() and known:
            picked = [r for r in rows if (r.owner_id, r.other_id) in known]
            if picked:
                updated = self._rows(
                    "UPDATE buddies SET kind = u.kind, key = u.key, key_kind = u.key_kind, "
                    "entry_pk = u.entry_pk, origin = u.origin, updated_at = %s "
                    "FROM unnest(%s::bigint[], %s::smallint[], %s::bigint[], %s::smallint[], "
                    "%s::bigint[], %s::smallint[]) "
                    "AS u(id, kind, key, key_kind, entry_pk, origin) "
                    "WHERE buddies.id = u.id RETURNING buddies.id",
                    at,
                    [known[r.owner_id, r.other_id] for r in picked],
                    [r.kind for r in picked],
                    [key_to_db(r.key) for r in picked],
                    [r.key_kind for r in picked],
                    [r.entry_pk for r in picked],
                    [r.origin for r in picked],
                )
                done = {pk for (pk,) in updated}
                rows = [r for r in rows if known.get((r.owner_id, r.other_id)) not in done]
                if not rows:
                    return
        if not self._pg() and known:
            rows = self._update_read_rows_sqlite(rows, at)
        self._many(
            "UPDATE buddies SET kind = %s, key = %s, key_kind = %s, entry_pk = %s, origin = %s, "
            "updated_at = %s WHERE owner_id = %s AND other_id = %s",
            [
                (
                    r.kind,
                    key_to_db(r.key),
                    r.key_kind,
                    r.entry_pk,
                    r.origin,
                    at,
                    r.owner_id,
                    r.other_id,
                )
                for r in rows
            ],
        )

    def _update_read_rows_sqlite(self, rows: Sequence[BuddyState], at: Any) -> list[BuddyState]:
        """SQLite: update the rows of ``rows`` that the last read saw with their match key
        unchanged (a one-way row turned full keeps its key) by rowid, setting no indexed
        column, so that no index entry is rewritten (SQLite rewrites the entries of every
        index holding a column the UPDATE sets, whatever the value: 1,400 such rows among
        1M, 20 ms by pair setting the key too, 8 ms so). The pair and the key are compared
        as well: a row deleted since (its rowid perhaps another pair's now) or rewritten
        since is not touched. Returns the rows left for the update by pair: those whose key
        changed, and all of them when some rowid no longer named its pair and key."""
        known, keys = self._read_ids, self._read_keys
        same = [
            r
            for r in rows
            if (r.owner_id, r.other_id) in known and keys[r.owner_id, r.other_id] == r.key
        ]
        if not same:
            return list(rows)
        cur = self.s.connection().exec_driver_sql(
            "UPDATE buddies SET kind = ?, key_kind = ?, entry_pk = ?, origin = ?, updated_at = ? "
            "WHERE id = ? AND owner_id = ? AND other_id = ? AND key = ?",
            [
                (r.kind, r.key_kind, r.entry_pk, r.origin, at, known[pair], *pair, key_to_db(r.key))
                for r in same
                for pair in [(r.owner_id, r.other_id)]
            ],
        )
        if cur.rowcount != len(same):
            return list(rows)  # (setting the same values again is harmless)
        done = {(r.owner_id, r.other_id) for r in same}
        return [r for r in rows if (r.owner_id, r.other_id) not in done]

    def list_buddies(
        self, owner_id: str, kind: int | None, offset: int, limit: int
    ) -> tuple[list[BuddyView], int]:
        """A page of the owner's member buddies (full, then one-way; of one kind if given)
        and how many there are."""
        where = [models.BuddyRow.owner_id == owner_id]
        if kind is not None:
            where.append(models.BuddyRow.kind == kind)
        total = self.s.execute(
            select(func.count()).select_from(models.BuddyRow).where(*where)
        ).scalar_one()
        if offset >= total:
            return [], int(total)
        # The page is cut from the owner's rows first and only its rows are joined: joined
        # first, SQLite looked up the member and the contact of all 3,500 rows of a 10,000-
        # contact book to return 100 (13 ms a page).
        page = (
            select(models.BuddyRow)
            .where(*where)
            .order_by(models.BuddyRow.kind, models.BuddyRow.id)
            .offset(offset)
            .limit(limit)
            .subquery()
        )
        b = aliased(models.BuddyRow, page)
        rows = self.s.execute(
            select(b, models.User.display_name, models.ContactEntry.contact)
            .outerjoin(models.User, models.User.id == b.other_id)
            .outerjoin(models.ContactEntry, models.ContactEntry.id == b.entry_pk)
            .order_by(b.kind, b.id)
        )
        return [_view(r, name, contact) for r, name, contact in rows], int(total)

    def get_buddy(self, owner_id: str, other_id: str) -> BuddyView | None:
        """The member ``other_id`` on the owner's list, if there."""
        row = self.s.execute(
            select(models.BuddyRow, models.User.display_name, models.ContactEntry.contact)
            .outerjoin(models.User, models.User.id == models.BuddyRow.other_id)
            .outerjoin(models.ContactEntry, models.ContactEntry.id == models.BuddyRow.entry_pk)
            .where(models.BuddyRow.owner_id == owner_id, models.BuddyRow.other_id == other_id)
            .limit(1)
        ).first()
        return None if row is None else _view(row[0], row[1], row[2])

    def entry_cards(self, entry_pks: Sequence[int]) -> dict[int, EntryCard]:
        """entry pk -> what a phonebook buddy shows of its contact."""
        out: dict[int, EntryCard] = {}
        for part in _chunks(sorted(set(entry_pks))):
            rows = self.s.execute(
                select(
                    models.ContactEntry.id,
                    models.ContactEntry.contact,
                    models.ContactEntry.created_at,
                    models.ContactEntry.updated_at,
                    models.AddressBook.book_id,
                )
                .join(models.AddressBook, models.AddressBook.id == models.ContactEntry.book_pk)
                .where(models.ContactEntry.id.in_(part))
            )
            out.update(
                (pk, EntryCard(c, created, updated, book)) for pk, c, created, updated, book in rows
            )
        return out

    def presences(self, user_ids: Sequence[str]) -> dict[str, tuple[int, str, str, datetime]]:
        """user id -> (state, status message, picture, set at) of those who set one."""
        if not user_ids:
            return {}
        rows = self.s.scalars(
            select(models.PresenceRow).where(models.PresenceRow.user_id.in_(list(user_ids)))
        )
        return {r.user_id: (r.state, r.status_message, r.picture_uri, r.updated_at) for r in rows}

    def presence_of(self, user_id: str) -> tuple[int, str, str, datetime] | None:
        """(state, status message, picture, set at) of a member, if they set one."""
        row = self.s.get(models.PresenceRow, user_id)
        if row is None:
            return None
        return row.state, row.status_message, row.picture_uri, row.updated_at

    # -- decisions, events, presence -----------------------------------------------------
    def decisions_involving(self, users: Sequence[str]) -> dict[tuple[str, str], int]:
        """(decider, requester) -> decision of every decision one of ``users`` made or had
        made about them."""
        cols = "SELECT decider_id, requester_id, decision FROM buddy_decisions"
        rows = self._either(cols, "decider_id", "requester_id", users)
        return {(d, r): decision for d, r, decision in rows}

    def decide(self, decider: str, requester: str, decision: int, now: datetime) -> None:
        self.s.execute(
            delete(models.BuddyDecision).where(
                models.BuddyDecision.decider_id == decider,
                models.BuddyDecision.requester_id == requester,
            )
        )
        self.s.add(
            models.BuddyDecision(
                decider_id=decider, requester_id=requester, decision=decision, created_at=now
            )
        )
        self.s.flush()

    def decision(self, decider: str, requester: str) -> int | None:
        return self.s.execute(
            select(models.BuddyDecision.decision).where(
                models.BuddyDecision.decider_id == decider,
                models.BuddyDecision.requester_id == requester,
            )
        ).scalar_one_or_none()

    def undecide(self, decider: str, requester: str) -> None:
        self.s.execute(
            delete(models.BuddyDecision).where(
                models.BuddyDecision.decider_id == decider,
                models.BuddyDecision.requester_id == requester,
            )
        )

    def blocked_by(self, decider: str, offset: int, limit: int) -> tuple[list[BlockedView], int]:
        """Members ``decider`` blocked, most recent first, and how many there are."""
        where = [
            models.BuddyDecision.decider_id == decider,
            models.BuddyDecision.decision == BLOCKED,
        ]
        total = self.s.execute(
            select(func.count()).select_from(models.BuddyDecision).where(*where)
        ).scalar_one()
        rows = self.s.execute(
            select(
                models.BuddyDecision.requester_id,
                models.User.display_name,
                models.BuddyDecision.created_at,
            )
            .join(models.User, models.User.id == models.BuddyDecision.requester_id)
            .where(*where)
            .order_by(models.BuddyDecision.created_at.desc(), models.BuddyDecision.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return [BlockedView(u, n, t) for u, n, t in rows], int(total)

    def add_events(self, events: Sequence[tuple[str, int, str]], now: datetime) -> None:
        t = models.table(models.BuddyEvent)
        at = db_value(self.s, t, "created_at", now)
        insert_tuples(
            self.s, t, ("user_id", "type", "other_id", "created_at"), [(*e, at) for e in events]
        )

    def events(
        self, user_id: str, after: int = 0, limit: int = 500
    ) -> list[tuple[int, int, str, datetime]]:
        """(seq, type, other user, time) of the user's events after ``after``."""
        rows = self.s.execute(
            select(
                models.BuddyEvent.seq,
                models.BuddyEvent.type,
                models.BuddyEvent.other_id,
                models.BuddyEvent.created_at,
            )
            .where(models.BuddyEvent.user_id == user_id, models.BuddyEvent.seq > after)
            .order_by(models.BuddyEvent.seq)
            .limit(limit)
        )
        return [(q, t, o, at) for q, t, o, at in rows]

    def last_event_seq(self, user_id: str) -> int:
        return int(
            self.s.execute(
                select(func.coalesce(func.max(models.BuddyEvent.seq), 0)).where(
                    models.BuddyEvent.user_id == user_id
                )
            ).scalar_one()
        )

    def set_presence(
        self, user_id: str, state: int, message: str, picture: str, now: datetime
    ) -> None:
        self.s.execute(delete(models.PresenceRow).where(models.PresenceRow.user_id == user_id))
        self.s.add(
            models.PresenceRow(
                user_id=user_id,
                state=state,
                status_message=message,
                picture_uri=picture,
                updated_at=now,
            )
        )
        self.s.flush()

    def full_buddies(self, owner_id: str) -> set[str]:
        return {
            o
            for o in self.s.execute(
                select(models.BuddyRow.other_id).where(
                    models.BuddyRow.owner_id == owner_id, models.BuddyRow.kind == FULL
                )
            ).scalars()
            if o is not None
        }

    def presence_of_full_buddies(self, owner_id: str) -> list[tuple[str, int, str, str, datetime]]:
        rows = self.s.execute(
            select(
                models.PresenceRow.user_id,
                models.PresenceRow.state,
                models.PresenceRow.status_message,
                models.PresenceRow.picture_uri,
                models.PresenceRow.updated_at,
            )
            .join(models.BuddyRow, models.BuddyRow.other_id == models.PresenceRow.user_id)
            .where(models.BuddyRow.owner_id == owner_id, models.BuddyRow.kind == FULL)
            .order_by(models.PresenceRow.user_id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def one_way_requests_to(self, user_id: str) -> list[tuple[str, str, datetime]]:
        """(requester, requester's display name, since) of pending one-way requests."""
        rows = self.s.execute(
            select(models.BuddyRow.owner_id, models.User.display_name, models.BuddyRow.created_at)
            .join(models.User, models.User.id == models.BuddyRow.owner_id)
            .where(models.BuddyRow.other_id == user_id, models.BuddyRow.kind == ONE_WAY)
            .order_by(models.BuddyRow.created_at, models.BuddyRow.id)
        )
        return [(o, n, t) for o, n, t in rows]

    # -- active contacts ----------------------------------------------------------------
    def member_buddy_keys(self, owner_id: str) -> set[int]:
        """Keys of the members on the owner's list: every identity key of each."""
        members = (
            select(models.BuddyRow.other_id)
            .where(models.BuddyRow.owner_id == owner_id)
            .scalar_subquery()
        )
        return {
            key_from_db(k)
            for k in self.s.execute(
                select(models.Identity.key).where(models.Identity.user_id.in_(members))
            ).scalars()
        }

    def upsert_active(
        self, user_id: str, seen: Sequence[tuple[str, str, str, int, int, datetime]]
    ) -> None:
        """Merge (e164, raw, name, interactions, source bits, last seen) into proposals."""
        for e164, raw, name, count, bits, last in seen:
            row = self.s.scalars(
                select(models.ActiveContact).where(
                    models.ActiveContact.user_id == user_id, models.ActiveContact.e164 == e164
                )
            ).one_or_none()
            if row is None:
                self.s.add(
                    models.ActiveContact(
                        user_id=user_id,
                        e164=e164,
                        raw=raw[:64],
                        display_name=name[:200],
                        interactions=count,
                        sources=bits,
                        last_seen=last,
                        state=ACTIVE_OPEN,
                    )
                )
            else:
                row.interactions += count
                row.sources |= bits
                row.last_seen = max(row.last_seen, last)
                row.display_name = row.display_name or name[:200]
        self.s.flush()

    def active_proposals(self, user_id: str, state: int = 0) -> list[ActiveProposal]:
        stmt = select(models.ActiveContact).where(models.ActiveContact.user_id == user_id)
        if state:
            stmt = stmt.where(models.ActiveContact.state == state)
        stmt = stmt.order_by(models.ActiveContact.interactions.desc(), models.ActiveContact.id)
        return [
            ActiveProposal(
                r.id, r.e164, r.raw, r.display_name, r.interactions, r.sources, r.last_seen, r.state
            )
            for r in self.s.scalars(stmt)
        ]

    def set_active_state(self, user_id: str, ids: Sequence[int], state: int) -> None:
        if ids:
            self.s.execute(
                update(models.ActiveContact)
                .where(models.ActiveContact.user_id == user_id, models.ActiveContact.id.in_(ids))
                .values(state=state)
            )

    def members_by_e164(self, values: Sequence[str]) -> set[str]:
        if not values:
            return set()
        return set(
            self.s.execute(
                select(models.Identity.value).where(models.Identity.value.in_(list(values)))
            ).scalars()
        )

    # -- refresh jobs -------------------------------------------------------------------
    def create_job(self, job_id: str, user_count: int, now: datetime) -> bool:
        """Create a refresh job; False when that job id exists already (another worker or
        replica started it)."""
        if self.s.get(models.RefreshJob, job_id) is not None:
            return False
        self.s.add(
            models.RefreshJob(
                job_id=job_id,
                state=JOB_RUNNING,
                last_user_id="",
                user_count=user_count,
                done_count=0,
                started_at=now,
                updated_at=now,
            )
        )
        self.s.flush()
        return True

    def running_jobs(self) -> list[str]:
        return list(
            self.s.execute(
                select(models.RefreshJob.job_id).where(models.RefreshJob.state == JOB_RUNNING)
            ).scalars()
        )

    def job_position(self, job_id: str) -> tuple[int, str]:
        job = self.s.get_one(models.RefreshJob, job_id, with_for_update=True)
        return job.state, job.last_user_id

    def advance_job(self, job_id: str, last_user_id: str, done: int, now: datetime) -> None:
        self.s.execute(
            update(models.RefreshJob)
            .where(models.RefreshJob.job_id == job_id)
            .values(
                last_user_id=last_user_id,
                done_count=models.RefreshJob.done_count + done,
                state=JOB_RUNNING if done else JOB_DONE,
                updated_at=now,
            )
        )

    def user_count(self) -> int:
        return int(self.s.execute(select(func.count()).select_from(models.User)).scalar_one())

    # -- bulk refresh inputs (whole tables, streamed) -----------------------------------
    # The scheduled refresh reads every user, identity, exact entry key and buddy row. Rows
    # come in any order (no ORDER BY, no index) straight into numpy arrays: PostgreSQL
    # streams them with COPY ... TO STDOUT (FORMAT binary), fixed-width int8 rows parsed by
    # numpy in 16 MiB slices; SQLite through fetchmany in batches of 100,000. No row carries
    # a string: users are numbered in SQL (row_number over their ids), and number ``n`` is
    # ``refresh_user_ids()[n]``, which holds because the transaction reads one snapshot
    # (``begin_refresh_scan``). Keys are stored signed: the arrays hold their unsigned bits.
    _REFRESH_USERS = "(SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM users)"

    def _refresh_join(self) -> str:
        # SQLite: the table scanned, users probed (an automatic index on the numbered
        # users); its planner would rather walk the users through ix_entry_keys_user_key.
        return "JOIN" if self._pg() else "CROSS JOIN"

    def begin_refresh_scan(self) -> None:
        """Make the rest of this transaction read one snapshot; must precede its first
        statement. PostgreSQL: REPEATABLE READ, and each whole-table read joined to the
        numbered users by hash (one in-memory batch: no merge join through sorts or
        indexes, whatever the statistics say). A SQLite read transaction is one snapshot."""
        if not self._pg():
            return
        conn = driver_connection(self.s)
        if conn.info.transaction_status != 0:  # psycopg.pq.TransactionStatus.IDLE
            raise RuntimeError("begin_refresh_scan must start its transaction")
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET LOCAL work_mem = '256MB'")
            cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute("SET LOCAL enable_nestloop = off")

    def refresh_user_ids(self) -> list[str]:
        """Every user id; the position of each is its number in the arrays below."""
        return [u for (u,) in self._rows("SELECT id FROM users ORDER BY id")]

    def refresh_identity_keys(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
        """(user number, key) of every identity."""
        n, key = self._int8_columns(
            f"SELECT u.n, i.key FROM identities i {self._refresh_join()} {self._REFRESH_USERS} u "
            "ON u.id = i.user_id",
            2,
        )
        return n, key.view(np.uint64)

    def refresh_book_keys(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
        """(owner number, key) of every exact key of every book."""
        owner, key = self._int8_columns(
            "SELECT u.n, k.key FROM entry_keys k "
            f"{self._refresh_join()} {self._REFRESH_USERS} u "
            "ON u.id = k.user_id WHERE k.key IS NOT NULL",
            2,
        )
        return owner, key.view(np.uint64)

    def refresh_buddy_rows(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(owner number, other's number, kind) of every stored buddy row."""
        owner, other, kind = self._int8_columns(
            "SELECT o.n, t.n, CAST(b.kind AS BIGINT) FROM buddies b "
            f"{self._refresh_join()} {self._REFRESH_USERS} o ON o.id = b.owner_id "
            f"{self._refresh_join()} {self._REFRESH_USERS} t ON t.id = b.other_id",
            3,
        )
        return owner, other, kind

    def decision_users(self) -> set[str]:
        rows = self.s.execute(
            select(models.BuddyDecision.decider_id, models.BuddyDecision.requester_id)
        )
        return {u for pair in rows for u in pair}

    def _int8_columns(self, sql: str, ncols: int) -> list[npt.NDArray[np.int64]]:
        """The result of ``sql`` (``ncols`` non-NULL integer columns) as one array each."""
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(ncols)]

        def collect(columns: list[npt.NDArray[np.int64]]) -> None:
            for col, part in zip(columns, parts, strict=True):
                part.append(col)

        self._int8_slices(sql, ncols, collect)
        return [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]

    def _int8_slices(self, sql: str, ncols: int, sink: Int8Sink) -> None:
        """Stream the result of ``sql`` (``ncols`` non-NULL integer columns) to ``sink``, one
        array per column for each slice of rows (PostgreSQL: binary ``COPY``, ~760,000 rows
        a slice; SQLite: fetchmany of 100,000), so a caller need not hold it all twice."""
        conn = driver_connection(self.s)
        if self._pg():
            _copy_int8(conn, sql, ncols, sink)
            return
        cur = conn.cursor()
        try:
            cur.execute(sql)
            while rows := cur.fetchmany(100_000):
                flat = np.fromiter(
                    itertools.chain.from_iterable(rows), np.int64, len(rows) * ncols
                ).reshape(len(rows), ncols)
                sink([np.ascontiguousarray(col) for col in flat.T])
        finally:
            cur.close()


Int8Sink = Callable[[list[npt.NDArray[np.int64]]], None]  # one slice's column arrays

_PGCOPY = b"PGCOPY\n\xff\r\n\x00"
_SLICE = 1 << 24


def _copy_int8(conn: Any, sql: str, ncols: int, sink: Int8Sink) -> None:
    """Stream ``COPY (sql) TO STDOUT (FORMAT binary)`` to ``sink`` (one array per column, a
    slice of rows at a time). Every row is ``int16 ncols`` then per column ``int32 8`` and a
    big-endian int8; anything else (a NULL, another type) is an error. The rows are read at
    the libpq level (one blocking ``PQgetCopyData`` per row): psycopg's ``Copy.read`` costs
    2x the whole read in its per-row generator."""
    fields: list[tuple[str, str]] = [("ncols", ">i2")]
    for i in range(ncols):
        fields += [(f"len{i}", ">i4"), (f"col{i}", ">i8")]
    row = np.dtype(fields)
    buf = bytearray()
    header = True

    def consume() -> None:
        nonlocal header
        start = 0
        if header:
            if len(buf) < 19:
                return
            if bytes(buf[:11]) != _PGCOPY:
                raise ValueError("not a binary COPY stream")
            start = 19 + int.from_bytes(buf[15:19], "big")
            if len(buf) < start:
                return
            header = False
        n = (len(buf) - start) // row.itemsize
        rec = np.frombuffer(buf, dtype=row, count=n, offset=start)
        bad = rec["ncols"] != ncols
        for i in range(ncols):
            bad |= rec[f"len{i}"] != 8
        if bad.any():
            raise ValueError("a COPY row is not one non-NULL int8 per column")
        if n:
            sink([rec[f"col{i}"].astype(np.int64) for i in range(ncols)])
        del rec, bad
        del buf[: start + n * row.itemsize]

    pg = conn.pgconn
    nonblocking = pg.nonblocking
    pg.nonblocking = 0
    try:
        pg.send_query(f"COPY ({sql}) TO STDOUT (FORMAT binary)".encode())
        res = pg.get_result()
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            message = pg.error_message.decode(errors="replace")
            while pg.get_result() is not None:
                pass
            raise psycopg.DatabaseError(message)
        get = pg.get_copy_data
        got: tuple[int, Any] = (0, b"")
        try:
            while (got := get(0))[0] > 0:
                buf += got[1]
                if len(buf) >= _SLICE:
                    consume()
        finally:  # the rest of the stream and the command's result, even after an error
            while got[0] > 0:
                got = get(0)
            results = []
            while (res := pg.get_result()) is not None:
                results.append(res.status)
        if got[0] != -1 or results != [pq.ExecStatus.COMMAND_OK]:
            raise psycopg.DatabaseError(pg.error_message.decode(errors="replace"))
    finally:
        pg.nonblocking = nonblocking
    consume()
    if header or bytes(buf) != b"\xff\xff":
        raise ValueError("binary COPY stream not made of whole non-NULL int8 rows")
