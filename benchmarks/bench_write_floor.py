"""The write floor of one 10,000-contact upload: its rows written the fastest plain way each
database offers, with no server, no gRPC, no reads and no rules.

What one upload of the upload benchmark's book writes (1M members; see ``bench_upload``):
10,000 contact_entries rows, 13,000 entry_keys rows (the reverse index), 3,500 new buddy
rows, 1,400 buddy rows turned full and 4,900 events. Written into a freshly migrated
database, in one transaction and one statement per table (PostgreSQL: binary ``COPY``
through psycopg; SQLite: ``executemany``; the updates by primary key).

Two layouts, alternated run by run (``BEFRIEND_BENCH_FLOOR_RUNS`` each, default 5; medians):
- **today**: the schema as migrated;
- **lean**: the entry's keys packed into its contact row (one more column), and the reverse
  index a two-column table ``(key, entry_pk)`` with its key index only: no surrogate id, no
  user or value strings, no per-entry or per-user index.
The budget the upload target leaves for everything (10,000 contacts at 50,000 contacts/s)
is 200 ms; each figure is printed against it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from benchmarks._population import pg_reachable, scratch_postgres

CONTACTS, KEYS, NEW_PAIRS, TURNED, EVENTS = 10_000, 13_000, 3_500, 1_400, 4_900
BUDGET_MS = 200.0
ENTRY_COLUMNS = (
    "id, book_pk, user_id, entry_id, raw, raw_media_type, content_hash, contact, upload_pk, "
    "created_at, updated_at, version, change_seq, change_origin, change_device, changed_fields"
)
ENTRY_TYPES = ["int8", "int8", "varchar", "varchar", "bytea", "varchar", "varchar", "bytea"]
ENTRY_TYPES += ["int8", "timestamptz", "timestamptz", "int4", "int8", "int2", "varchar"]
ENTRY_TYPES += ["varchar"]
KEY_COLUMNS = "entry_pk, ordinal, user_id, kind, key, weak_key, value"
KEY_TYPES = ["int8", "int2", "varchar", "int2", "int8", "int8", "varchar"]
BUDDY_COLUMNS = "owner_id, other_id, kind, key, key_kind, entry_pk, origin, created_at, updated_at"
BUDDY_TYPES = ["varchar", "varchar", "int2", "int8", "int2", "int8", "int2"]
BUDDY_TYPES += ["timestamptz", "timestamptz"]
EVENT_COLUMNS = "user_id, type, other_id, created_at"
EVENT_TYPES = ["varchar", "int2", "varchar", "timestamptz"]
LEAN_DDL = (
    "ALTER TABLE contact_entries ADD COLUMN keys BLOB",
    "CREATE TABLE lean_keys (key BIGINT NOT NULL, entry_pk BIGINT NOT NULL)",
    "CREATE INDEX ix_lean_keys_key ON lean_keys (key)",
)


class Upload:
    """The rows of one upload (``n``: which one, so that keys and ids never clash)."""

    def __init__(self, n: int, pg: bool) -> None:
        rng = random.Random(n)
        now: Any = datetime.now(UTC) if pg else datetime.now(UTC).isoformat(" ")
        user = uuid.uuid4().hex
        pk0 = 1 + n * CONTACTS
        tail = (1, now, now, 1, 1, 1, "bench-device", "")  # upload, times, version, change
        self.entries = [
            (pk0 + i, pk0, user, f"c{i:06d}", rng.randbytes(150), "text/vcard", hash_, body, *tail)
            for i in range(CONTACTS)
            for hash_, body in [(f"{rng.getrandbits(256):064x}", rng.randbytes(90))]
        ]
        self.keys = []
        for j in range(KEYS):
            key = 8613000000000 + rng.randrange(10**10)
            self.keys.append(
                (pk0 + j % CONTACTS, j // CONTACTS, user, 1, key, key % 10**7, f"+{key}")
            )
        members = [uuid.uuid4().hex for _ in range(NEW_PAIRS)]
        self.buddies = [(user, m, 1, rng.getrandbits(62), 1, pk0, 1, now, now) for m in members]
        self.turned = [(m, user, 2, rng.getrandbits(62), 1, 1, 1, now, now) for m in members]
        self.turned = self.turned[:TURNED]
        self.events = [(m, 1, user, now) for m in members]
        self.events += [(user, 1, m, now) for m in members[: EVENTS - NEW_PAIRS]]
        self.packed = [b"\0" * 8 * 2] * CONTACTS  # about 1.3 keys an entry


def _pg_run(conn: Any, up: Upload, lean: bool) -> float:
    def copy(cur: Any, sql: str, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with cur.copy(f"{sql} FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(types)
            for row in rows:
                cp.write_row(row)

    with conn.cursor() as cur:  # the turned rows exist before the upload
        copy(cur, f"COPY buddies ({BUDDY_COLUMNS})", BUDDY_TYPES, up.turned)
        turned = [pk for (pk,) in cur.execute("SELECT id FROM buddies WHERE kind = 2")]
        conn.commit()
        t = time.perf_counter()
        if lean:
            rows = [(*e, p) for e, p in zip(up.entries, up.packed, strict=True)]
            copy(
                cur, f"COPY contact_entries ({ENTRY_COLUMNS}, keys)", [*ENTRY_TYPES, "bytea"], rows
            )
            keys = [(k[4], k[0]) for k in up.keys]
            copy(cur, "COPY lean_keys (key, entry_pk)", ["int8", "int8"], keys)
        else:
            copy(cur, f"COPY contact_entries ({ENTRY_COLUMNS})", ENTRY_TYPES, up.entries)
            copy(cur, f"COPY entry_keys ({KEY_COLUMNS})", KEY_TYPES, up.keys)
        copy(cur, f"COPY buddies ({BUDDY_COLUMNS})", BUDDY_TYPES, up.buddies)
        cur.execute(
            "UPDATE buddies SET kind = 1 FROM unnest(%s::bigint[]) AS u(id) "
            "WHERE buddies.id = u.id",
            (turned,),
        )
        copy(cur, f"COPY buddy_events ({EVENT_COLUMNS})", EVENT_TYPES, up.events)
        conn.commit()
        took = time.perf_counter() - t
        cur.execute("UPDATE buddies SET kind = 3 WHERE kind = 1")  # out of the next run's way
        conn.commit()
        return took


def _sqlite_run(conn: sqlite3.Connection, up: Upload, lean: bool) -> float:
    def insert(table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    conn.execute("BEGIN")
    insert("buddies", BUDDY_COLUMNS, up.turned)
    turned = [pk for (pk,) in conn.execute("SELECT id FROM buddies WHERE kind = 2")]
    conn.execute("COMMIT")
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    if lean:
        rows = [(*e, p) for e, p in zip(up.entries, up.packed, strict=True)]
        insert("contact_entries", f"{ENTRY_COLUMNS}, keys", rows)
        insert("lean_keys", "key, entry_pk", [(k[4], k[0]) for k in up.keys])
    else:
        insert("contact_entries", ENTRY_COLUMNS, up.entries)
        insert("entry_keys", KEY_COLUMNS, up.keys)
    insert("buddies", BUDDY_COLUMNS, up.buddies)
    conn.executemany("UPDATE buddies SET kind = 1 WHERE id = ?", [(pk,) for pk in turned])
    insert("buddy_events", EVENT_COLUMNS, up.events)
    conn.execute("COMMIT")
    took = time.perf_counter() - t
    conn.execute("UPDATE buddies SET kind = 3 WHERE kind = 1")
    return took


def _series(name: str, run: Callable[[Upload, bool], float], pg: bool) -> None:
    runs = int(os.environ.get("BEFRIEND_BENCH_FLOOR_RUNS", "5"))
    took: dict[bool, list[float]] = {False: [], True: []}
    for n in range(2 * runs):
        lean = n % 2 == 1
        took[lean].append(run(Upload(n, pg), lean) * 1e3)
    medians = {lean: statistics.median(ts) for lean, ts in took.items()}
    for lean, ts in took.items():
        print(
            f"{name:<10} {'lean' if lean else 'today':<5} "
            f"{' '.join(f'{t:5.0f}' for t in ts)} ms; median {medians[lean]:5.0f} ms = "
            f"{medians[lean] / BUDGET_MS:.0%} of the {BUDGET_MS:.0f} ms budget",
            flush=True,
        )
    print(f"{name:<10} lean / today: {medians[True] / medians[False]:.2f}x", flush=True)


def main() -> None:
    from befriend.server.storage.db import Database

    print(
        f"writes of one upload: {CONTACTS:,} contacts, {KEYS:,} keys, {NEW_PAIRS:,} new "
        f"buddy rows, {TURNED:,} turned full, {EVENTS:,} events; one transaction"
    )
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/floor.db"
        Database(f"sqlite:///{path}").migrate()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for ddl in LEAN_DDL:
            conn.execute(ddl)
        _series("sqlite", lambda up, lean: _sqlite_run(conn, up, lean), pg=False)
        conn.close()
    if not pg_reachable():
        print("PostgreSQL not reachable: SQLite only")
        return
    import psycopg

    with scratch_postgres("befriend_floor") as url:
        Database(url).migrate()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn_pg:
            for ddl in LEAN_DDL:
                conn_pg.execute(ddl.replace("BLOB", "bytea"))
            conn_pg.commit()
            _series("postgres", lambda up, lean: _pg_run(conn_pg, up, lean), pg=True)


if __name__ == "__main__":
    main()
