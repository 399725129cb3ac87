"""Bulk loading of a synthetic population (``befriend.clients.population``) for benchmarks.

Rows go straight into the tables: PostgreSQL ``COPY ... FROM STDIN`` through psycopg, SQLite
``executemany`` on the raw connection (synchronous=OFF, one transaction per batch). This is
setup, never part of a measured figure: it bypasses registration (no tokens, devices or
identity-log rows; the registry snapshot reads the identities table directly) so a million
members load in well under a minute instead of hours of RPCs.

Scratch PostgreSQL databases are created and dropped here too.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from befriend.clients.population import Population
from befriend.server.storage.db import Database
from befriend.server.storage.matching import BUDDY_COLUMNS
from befriend.server.storage.repositories import key_to_db

PG_URL = os.environ.get(
    "BEFRIEND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PHONE = 1  # IdentityKind.PHONE
BATCH = 50_000
# Column order of the bulk-loaded address_books and contact_entries rows.
BOOK_COLUMNS = (
    "id",
    "user_id",
    "book_id",
    "kind",
    "device_id",
    "entry_count",
    "version",
    "created_at",
    "updated_at",
)
USER_COLUMNS = (
    "id",
    "display_name",
    "region_code",
    "time_zone",
    "profile",
    "version",
    "created_at",
    "updated_at",
)
ENTRY_COLUMNS = (
    "id",
    "book_pk",
    "user_id",
    "entry_id",
    "raw",
    "raw_media_type",
    "content_hash",
    "contact",
    "created_at",
    "updated_at",
)
# entry_keys: each loaded entry has one row, its first (ordinal 0)
KEY_COLUMNS = ("entry_pk", "ordinal", "user_id", "kind", "key", "weak_key", "value")
_I64 = 1 << 63


def _signed(keys: np.ndarray[Any, Any]) -> list[int]:
    """Unsigned keys -> signed BIGINT values (phone keys are < 2**50, so this is a copy)."""
    arr = keys.astype(np.uint64)
    if arr.size and int(arr.max()) >= _I64:
        return [key_to_db(int(k)) for k in arr.tolist()]
    return arr.astype(np.int64).tolist()  # type: ignore[no-any-return]


def _sqlite_ts(now: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format (UTC, naive).
    return now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def pg_reachable() -> bool:
    try:
        eng = create_engine(PG_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@contextmanager
def scratch_postgres(prefix: str = "befriend_bench") -> Iterator[str]:
    """A private PostgreSQL database for one benchmark run, dropped afterwards."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Loader:
    """Bulk inserts into a migrated befriend database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.now = datetime.now(UTC)

    # -- low level ----------------------------------------------------------------------
    def _copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        raw = self.db.engine.raw_connection()
        n = 0
        try:
            conn: Any = raw.driver_connection
            with conn.cursor() as cur:
                stmt = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                with cur.copy(stmt) as copy:
                    for row in rows:
                        copy.write_row(row)
                        n += 1
            raw.commit()
        finally:
            raw.close()
        return n

    def _sqlite_insert(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        raw = self.db.engine.raw_connection()
        n = 0
        try:
            conn: Any = raw.driver_connection
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA foreign_keys=OFF")
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})"
            )
            batch: list[Sequence[Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.execute("BEGIN")
                    conn.executemany(sql, batch)
                    conn.execute("COMMIT")
                    n += len(batch)
                    batch = []
            if batch:
                conn.execute("BEGIN")
                conn.executemany(sql, batch)
                conn.execute("COMMIT")
                n += len(batch)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        finally:
            raw.close()
        return n

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        if self.db.is_sqlite:
            return self._sqlite_insert(table, columns, rows)
        return self._copy(table, columns, rows)

    @property
    def _ts(self) -> Any:
        return _sqlite_ts(self.now) if self.db.is_sqlite else self.now

    def fix_sequences(self, tables: Sequence[str]) -> None:
        """After explicit ids: move each PostgreSQL id sequence past the largest id."""
        if self.db.is_sqlite:
            return
        with self.db.engine.begin() as conn:
            for t in tables:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                        f"COALESCE((SELECT max(id) FROM {t}), 0) + 1, false)"
                    )
                )

    def entries_after_keys(self) -> None:
        """New contact_entries ids start past every entry_pk of entry_keys (after
        ``entry_keys``, whose rows point at entries it does not materialise)."""
        with self.db.engine.begin() as conn:
            last = int(
                conn.execute(text("SELECT COALESCE(max(entry_pk), 0) FROM entry_keys")).scalar_one()
            )
            if self.db.is_sqlite:
                conn.execute(text("DELETE FROM sqlite_sequence WHERE name = 'contact_entries'"))
                conn.execute(
                    text("INSERT INTO sqlite_sequence (name, seq) VALUES ('contact_entries', :n)"),
                    {"n": last},
                )
            else:
                conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('contact_entries', 'id'), :n, false)"
                    ),
                    {"n": last + 1},
                )

    def settle(self) -> None:
        """After a bulk load, the state a long-running server's database is in by the time
        it serves, as its autovacuum and checkpointer would leave it: fresh statistics
        (ANALYZE) and, on PostgreSQL, the load's dirty pages written and its write-ahead log
        checkpointed (CHECKPOINT; SQLite's is checkpointed when the loader's connections
        close). Without the checkpoint, the timed work after a 1M-member load wrote the
        load's dirty buffers out to make room (2,035 in one member lookup) and zero-filled
        new 16 MB WAL segments, which a checkpoint would have recycled from the load's
        (XLogFileInit: 30 of the database's 264 perf samples in the second of an upload;
        none after a checkpoint)."""
        with self.db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        if self.db.is_sqlite:
            return
        with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))

    # -- population -----------------------------------------------------------------------
    def members(self, pop: Population, start: int, stop: int) -> int:
        """users + one phone identity each for members ``start..stop``; identity id = i + 1."""
        ts = self._ts
        profile = "{}"
        regions = _regions(pop, start, stop)

        def user_rows() -> Iterator[tuple[Any, ...]]:
            for (uid, _e164, _key), region, i in zip(
                pop.identity_rows(start, stop), regions, range(start, stop), strict=True
            ):
                yield (uid, f"Member {i}", region, "UTC", profile, 1, ts, ts)

        def identity_rows() -> Iterator[tuple[Any, ...]]:
            for (uid, e164, key), i in zip(
                pop.identity_rows(start, stop), range(start, stop), strict=True
            ):
                yield (i + 1, uid, PHONE, e164, key_to_db(key), e164, ts)

        self.insert(
            "users",
            USER_COLUMNS,
            user_rows(),
        )
        n = self.insert(
            "identities",
            ("id", "user_id", "kind", "value", "key", "raw", "created_at"),
            identity_rows(),
        )
        self.fix_sequences(["identities"])
        return n

    def holders_of(self, pop: Population, holding: Mapping[int, Sequence[int]]) -> int:
        """One address book per holder with one entry per key it holds (``holding``: holder
        index -> keys; e.g. the members who hold benchmark uploaders back). Holders must
        already be loaded members."""
        ts = self._ts
        books = (
            (n + 1, pop.user_id(h), "phone", 1, "bench", 1, 1, ts, ts)
            for n, h in enumerate(holding)
        )
        self.insert("address_books", BOOK_COLUMNS, books)
        held = [
            (n + 1, h, j, key) for n, h in enumerate(holding) for j, key in enumerate(holding[h])
        ]

        def card(key: int) -> bytes:
            return (
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Uploader\r\nTEL:+{key}\r\nEND:VCARD\r\n".encode()
            )

        entries = (
            (e + 1, book, pop.user_id(h), f"e{j}", card(key), "text/vcard", "0" * 64, b"", ts, ts)
            for e, (book, h, j, key) in enumerate(held)
        )
        self.insert("contact_entries", ENTRY_COLUMNS, entries)
        keys = (
            (e + 1, 0, pop.user_id(h), PHONE, key_to_db(key), key % 10_000_000, f"+{key}")
            for e, (_, h, _, key) in enumerate(held)
        )
        n = self.insert("entry_keys", KEY_COLUMNS, keys)
        self.fix_sequences(["address_books", "contact_entries"])
        return n

    def entry_keys(self, pop: Population, owners: int, size: int, *, progress: bool = True) -> int:
        """``owners`` x ``size`` rows of the reverse index (entry_keys) for the books of
        members 0..owners-1 drawn by ``Population.bulk_book_indices``.

        Only entry_keys is filled: the reverse lookup reads no other table, so the
        contact_entries rows the entry_pk column points at are not materialised (its foreign
        keys are dropped for the load; this is a scratch database). The secondary indexes
        are dropped during the load and rebuilt afterwards, as a bulk import would do."""
        user_ids = [pop.user_id(i) for i in range(pop.config.members)]
        t0 = time.perf_counter()
        with self.db.engine.connect() as conn:
            last = conn.execute(text("SELECT COALESCE(max(entry_pk), 0) FROM entry_keys"))
            next_id = int(last.scalar_one()) + 1
        first_id = next_id
        per = max(1, 200_000 // size)  # owners per block

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal next_id
            for base in range(0, owners, per):
                own = np.arange(base, min(owners, base + per), dtype=np.int64)
                o, c = pop.bulk_book_indices(own, size)
                keys = pop.keys(c)
                weak = (keys % np.uint64(10_000_000)).astype(np.int64).tolist()
                signed = _signed(keys)
                for j, (oi, k, w) in enumerate(zip(o.tolist(), signed, weak, strict=True)):
                    yield (next_id + j, 0, user_ids[oi], PHONE, k, w, f"+{k}")
                next_id += len(signed)
                if progress and base // per % 25 == 0:
                    done = next_id - first_id
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    print(f"  entry_keys: {done:,} rows, {rate:,.0f} rows/s", flush=True)

        indexes = _drop_entry_key_indexes(self.db)
        n = self.insert("entry_keys", KEY_COLUMNS, rows())
        t1 = time.perf_counter()
        _create_indexes(self.db, indexes)
        if progress:
            print(
                f"  entry_keys: {n:,} rows loaded in {t1 - t0:.0f} s, "
                f"indexes rebuilt in {time.perf_counter() - t1:.0f} s",
                flush=True,
            )
        return n


def _regions(pop: Population, start: int, stop: int) -> Iterator[str]:
    for i in range(start, stop):
        yield pop.country_of(i).region


def _drop_entry_key_indexes(db: Database) -> list[str]:
    """Drop entry_keys' secondary indexes (and, on PostgreSQL, its foreign keys); return
    the CREATE INDEX statements that rebuild the indexes."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            rows = conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type='index' "
                    "AND tbl_name='entry_keys' AND sql IS NOT NULL"
                )
            ).all()
        else:
            rows = conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename='entry_keys' "
                    "AND indexname <> 'entry_keys_pkey'"
                )
            ).all()
            fks = conn.execute(
                text(
                    "SELECT conname FROM pg_constraint WHERE conrelid='entry_keys'::regclass "
                    "AND contype='f'"
                )
            ).all()
            for (fk,) in fks:
                conn.execute(text(f'ALTER TABLE entry_keys DROP CONSTRAINT "{fk}"'))
        for name, _ in rows:
            conn.execute(text(f'DROP INDEX "{name}"'))
    return [sql for _, sql in rows]


def _create_indexes(db: Database, statements: Sequence[str]) -> None:
    with db.engine.begin() as conn:
        if not db.is_sqlite:
            conn.execute(text("SET maintenance_work_mem = '1GB'"))
            conn.execute(text("SET max_parallel_maintenance_workers = 2"))
        for sql in statements:
            conn.execute(text(sql))


# -- whole books and buddy rows from arrays (bench_refresh) -----------------------------------
def drop_secondary(db: Database, table: str) -> list[str]:
    """Drop ``table``'s secondary indexes and, on PostgreSQL, its unique and foreign-key
    constraints; return the statements that restore them (``restore_secondary``).

    Foreign keys come back ``NOT VALID``: enforced for every later write (so the measured
    writes pay for them), without re-checking the bulk-loaded rows. SQLite keeps the indexes
    of inline UNIQUE constraints (they cannot be dropped)."""
    out: list[str] = []
    with db.engine.begin() as conn:
        if db.is_sqlite:
            rows = conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type='index' "
                    "AND tbl_name=:t AND sql IS NOT NULL"
                ),
                {"t": table},
            ).all()
            for name, sql in rows:
                conn.execute(text(f'DROP INDEX "{name}"'))
                out.append(sql)
            return out
        cons = conn.execute(
            text(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('u', 'f')"
            ),
            {"t": table},
        ).all()
        for name, _, _ in cons:
            conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t "
                "AND indexname <> :pk"
            ),
            {"t": table, "pk": f"{table}_pkey"},
        ).all()
        for name, _ in rows:
            conn.execute(text(f'DROP INDEX "{name}"'))
        out = [sql for _, sql in rows]
        out += [f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d}' for n, c, d in cons if c == "u"]
        fks = [(n, d) for n, c, d in cons if c == "f"]
        out += [f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d} NOT VALID' for n, d in fks]
    return out


def restore_secondary(db: Database, statements: Sequence[str]) -> None:
    _create_indexes(db, statements)


def _id_list(values: np.ndarray[Any, Any]) -> list[int]:
    return values.astype(np.int64).tolist()  # type: ignore[no-any-return]


class ArrayLoader(Loader):
    """Loads books and buddy rows given as numpy arrays (one phone key per contact entry).

    ``user_ids[i]`` is the user id of user index ``i``; the book of user ``i`` is
    address_books row ``i + 1``."""

    def _bulk(self, tables: Sequence[str], bulk: bool, load: Any, progress: bool, what: str) -> int:
        t0 = time.perf_counter()
        saved = [s for t in tables for s in drop_secondary(self.db, t)] if bulk else []
        n = int(load())
        t1 = time.perf_counter()
        restore_secondary(self.db, saved)
        if progress:
            print(
                f"  {what}: {n:,} rows loaded in {t1 - t0:.0f} s"
                + (f", indexes rebuilt in {time.perf_counter() - t1:.0f} s" if bulk else ""),
                flush=True,
            )
        return n

    def address_books(self, user_ids: Sequence[str], owners: np.ndarray[Any, Any]) -> int:
        ts = self._ts
        rows = ((o + 1, user_ids[o], "phone", 1, "bench", 300, 1, ts, ts) for o in _id_list(owners))
        return self.insert(
            "address_books",
            BOOK_COLUMNS,
            rows,
        )

    def phone_entries(
        self,
        user_ids: Sequence[str],
        owner: np.ndarray[Any, Any],
        keys: np.ndarray[Any, Any],
        first_id: int,
        *,
        bulk: bool = True,
        progress: bool = True,
    ) -> int:
        """contact_entries + entry_keys: entry ``j`` of the arrays is contact_entries row
        ``first_id + j`` (minimal: empty raw and contact) in the book of ``owner[j]``, with
        one entry_keys row (its first) holding the phone key ``keys[j]``."""
        ts = self._ts
        n = owner.shape[0]
        step = 500_000

        def entry_rows() -> Iterator[tuple[Any, ...]]:
            for s in range(0, n, step):
                own = _id_list(owner[s : s + step])
                for j, o in enumerate(own, first_id + s):
                    yield (j, o + 1, user_ids[o], f"e{j}", b"", "", "", b"", ts, ts)

        def key_rows() -> Iterator[tuple[Any, ...]]:
            for s in range(0, n, step):
                own = _id_list(owner[s : s + step])
                k = keys[s : s + step]
                signed = _signed(k)
                weak = (k % np.uint64(10_000_000)).astype(np.int64).tolist()
                for j, o, key, w in zip(
                    range(first_id + s, first_id + s + len(own)), own, signed, weak, strict=True
                ):
                    yield (j, 0, user_ids[o], PHONE, key, w, f"+{key}")

        self._bulk(
            ["contact_entries"],
            bulk,
            lambda: self.insert("contact_entries", ENTRY_COLUMNS, entry_rows()),
            progress,
            "contact_entries",
        )
        out = self._bulk(
            ["entry_keys"],
            bulk,
            lambda: self.insert("entry_keys", KEY_COLUMNS, key_rows()),
            progress,
            "entry_keys",
        )
        self.fix_sequences(["address_books", "contact_entries"])
        return out

    def buddy_rows(
        self,
        user_ids: Sequence[str],
        owner: np.ndarray[Any, Any],
        other: np.ndarray[Any, Any],
        kind: np.ndarray[Any, Any],
        keys: np.ndarray[Any, Any],
        entry_pk: np.ndarray[Any, Any],
        *,
        origin: int = 1,
        key_kind: int = PHONE,
        bulk: bool = True,
        progress: bool = True,
    ) -> int:
        """buddies rows as the matching repository stores them: member rows only (full /
        one-way, ``other`` a user index; phonebook buddies are derived, never stored)."""
        if owner.shape[0] and int(other.min()) < 0:
            raise ValueError("buddies holds member rows only: every row needs an other")
        ts = self._ts
        n = owner.shape[0]
        step = 500_000

        def rows() -> Iterator[tuple[Any, ...]]:
            i = 1
            for s in range(0, n, step):
                part = zip(
                    _id_list(owner[s : s + step]),
                    _id_list(other[s : s + step]),
                    _id_list(kind[s : s + step]),
                    _signed(keys[s : s + step]),
                    _id_list(entry_pk[s : s + step]),
                    strict=True,
                )
                for o, t, k, key, e in part:
                    yield (
                        i,
                        user_ids[o],
                        user_ids[t],
                        k,
                        key,
                        key_kind,
                        e,
                        origin,
                        ts,
                        ts,
                    )
                    i += 1

        cols = ("id", *BUDDY_COLUMNS)
        out = self._bulk(
            ["buddies"], bulk, lambda: self.insert("buddies", cols, rows()), progress, "buddies"
        )
        self.fix_sequences(["buddies"])
        return out


def peak_rss() -> int:
    """The process's peak resident set size in bytes (VmHWM; 0 where /proc is missing)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Reset this process's VmHWM (peak RSS) to its current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
