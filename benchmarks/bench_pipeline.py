"""Writes sent ahead against COPY, PostgreSQL: what the upload's pipeline buys.

An upload writes, per 500-entry chunk, 500 contact_entries rows and their entry_keys rows
(650 here, as in the upload benchmark's book), and between two chunks the server does its
own work (validation, normalisation, the next rows). This writes 20 such chunks in one
transaction into a migrated scratch database, with ``BEFRIEND_BENCH_PIPELINE_WORK_MS`` of
busy Python per chunk standing in for the server's work (default 5), two ways:

- **COPY**: ``bulk.insert_tuples`` (one binary COPY per table and chunk, each waited for);
- **sent ahead**: ``bulk.insert_ahead`` (an INSERT … unnest per table and chunk, sent in the
  connection's pipeline; the commit waits for them all), as the upload writes them.

Alternated, ``BEFRIEND_BENCH_PIPELINE_RUNS`` times each (default 5); medians of the wall
time, this process's CPU and the local PostgreSQL server's CPU. Printed: the ratio of the
wall times (COPY / sent ahead) and the floor, max(work, database CPU)."""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from befriend.server.storage import models
from befriend.server.storage.bulk import insert_ahead, insert_tuples
from befriend.server.storage.db import Database
from benchmarks._population import pg_reachable, scratch_postgres
from benchmarks.bench_upload import _database_cpu

CHUNKS, PER_CHUNK, KEYS_PER_CHUNK = 20, 500, 650
ENTRY = ("id", "entry_id", "raw", "raw_media_type", "content_hash", "contact")
KEY = ("entry_pk", "user_id", "kind", "key", "weak_key", "value", "ordinal")


def _chunks(base: int) -> list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    out = []
    for c in range(CHUNKS):
        first = base + c * PER_CHUNK
        entries = [
            (
                pk,
                f"e{pk:09d}",
                os.urandom(120),
                "text/vcard",
                hashlib.sha256(str(pk).encode()).hexdigest(),
                os.urandom(90),
            )
            for pk in range(first, first + PER_CHUNK)
        ]
        keys = [
            (
                first + i % PER_CHUNK,
                "u" * 32,
                1,
                8613800000000 + first + i,
                None,
                f"+{i}",
                i // PER_CHUNK,
            )
            for i in range(KEYS_PER_CHUNK)
        ]
        out.append((entries, keys))
    return out


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def _write(db: Database, ahead: bool, base: int, work_ms: float) -> tuple[float, float, float]:
    chunks = _chunks(base)
    now = datetime.now(UTC)
    constants = {
        "book_pk": 1,
        "user_id": "u" * 32,
        "upload_pk": 1,
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "change_seq": base,
        "change_origin": 1,
        "change_device": "bench",
        "changed_fields": "",
    }
    e, k = models.table(models.ContactEntry), models.table(models.EntryKey)

    def by_copy(s: Session, rows: list[tuple[Any, ...]], keys: list[tuple[Any, ...]]) -> None:
        insert_tuples(s, e, (*constants, *ENTRY), [(*constants.values(), *r) for r in rows])
        insert_tuples(s, k, KEY, keys)

    def sent_ahead(s: Session, rows: list[tuple[Any, ...]], keys: list[tuple[Any, ...]]) -> None:
        insert_ahead(s, e, constants, ENTRY, rows)
        insert_ahead(s, k, {}, KEY, keys)

    write = sent_ahead if ahead else by_copy
    db_cpu, cpu, wall = _database_cpu(), time.process_time(), time.perf_counter()
    with db.transaction() as s:
        for rows, keys in chunks:
            write(s, rows, keys)
            _busy(work_ms)
    return (
        (time.perf_counter() - wall) * 1e3,
        (time.process_time() - cpu) * 1e3,
        (_database_cpu() - db_cpu) * 1e3,
    )


def main() -> None:
    if not pg_reachable():
        print("PostgreSQL not reachable: nothing to measure (the pipeline is PostgreSQL's)")
        return
    runs = int(os.environ.get("BEFRIEND_BENCH_PIPELINE_RUNS", "5"))
    work = float(os.environ.get("BEFRIEND_BENCH_PIPELINE_WORK_MS", "5"))
    print(
        f"{CHUNKS} chunks of {PER_CHUNK} contact rows + {KEYS_PER_CHUNK} key rows in one "
        f"transaction, {work:g} ms of Python per chunk; {runs} runs each, alternated"
    )
    with scratch_postgres("befriend_bench_pipeline") as url:
        db = Database(url)
        db.migrate()
        # a table that already holds some rows, as a server's does
        _write(db, False, 10_000_000, 0)
        got: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for run in range(runs):
            for ahead in (False, True):
                got[ahead].append(_write(db, ahead, (run * 2 + ahead + 1) * 100_000, work))
        db.dispose()
    med = {a: [statistics.median(x[i] for x in got[a]) for i in range(3)] for a in got}
    for ahead, label in ((False, "COPY, each waited for"), (True, "sent ahead (pipeline)")):
        wall, cpu, db_cpu = med[ahead]
        print(
            f"{label:24s} wall {wall:7.1f} ms  this process's CPU {cpu:7.1f} ms  "
            f"database CPU {db_cpu:7.1f} ms"
        )
    floor = max(CHUNKS * work, med[True][2])
    print(
        f"COPY / sent ahead: {med[False][0] / med[True][0]:.2f}x the wall time; the floor "
        f"max(work {CHUNKS * work:.0f} ms, database CPU {med[True][2]:.0f} ms) = {floor:.0f} ms"
    )
