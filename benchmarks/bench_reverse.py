"""Reverse lookup ("who holds this key") latency over a large phone-book index, the memory
of the in-memory reverse index (``HolderIndex``) and that of the registry of members' keys.

Setup (bulk load, not measured; see ``benchmarks/_population.py``): ``BEFRIEND_BENCH_MEMBERS``
members (default 1,000,000: users + phone identities) and ``BEFRIEND_BENCH_ENTRIES`` rows of
``entry_keys`` (default 30,000,000 on PostgreSQL = 30 contacts per member's book; the books
of the first entries/30 members) drawn by ``Population.bulk_book_indices`` (35 % members,
40 % of those reciprocal, the rest from a shared non-member pool of 2x members).
SQLite gets ``BEFRIEND_BENCH_SQLITE_ENTRIES`` rows (default: the same as PostgreSQL).

There is no index on the key in the database since migration 0013: a lookup is what the
server does (``befriend.server.services.matching.holders_of``), in one read transaction,
``Registry.holders.entries(repo, [key])`` (catch up on book_key_log, one count of the log's
tail, then a binary search of the in-memory sorted runs for the candidate entry pks) and then
``MatchRepository.holders([key], candidates)`` (each candidate's entry_keys rows read by
primary key and filtered on the key). A key nobody holds has no candidates and no
confirming query: only the catch-up's round trip.

Measured: ``BEFRIEND_BENCH_LOOKUPS`` (default 2,000) lookups of random population keys (each
held by ~10 books) and as many of keys nobody holds, after the holder index is loaded
(``warm``, untimed) and 200 warm-up lookups; p50 / p99 / max. Baseline in the same run:
``SELECT 1`` in its own read transaction (the floor: pool checkout, BEGIN, round trip,
COMMIT). Target p99 <= 5 ms. PostgreSQL also prints entry_keys' block reads and hits during
the first pass and the plan of one confirming query.

Holder index, for each database (its load is short next to the setup's): the time of
``HolderIndex().warm(repo)`` over the loaded entry_keys rows (rows/s), the pairs and runs
held, bytes per stored key in the runs' arrays (16 expected: a uint64 key and an int64 entry
pk), the RSS delta retained after the load and the RSS peak during it. Baseline in the same
run: the same load with the runs uncapped (one run sorted whole, as before ``RUN_CAP``).
Then with a snapshot store (``--index-dir``): the time a first process takes to load the index
and store its snapshot, the time a second takes to map it and its RSS delta, and the lookups
again on the mapped index.

Registry (once, on the first database): ``Registry`` loaded from the members' identities; RSS
delta after load (retained) and peak, tracemalloc peak of the load, and ``KeyIndex.nbytes``
of its two indexes; then with ``--index-dir``, the first process's load and store and the
next one's mapping.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import text

from befriend.clients.population import Population, PopulationConfig
from befriend.server.services.holders import RUN_CAP, HolderIndex
from befriend.server.services.matching import holders_of
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.repositories import key_to_db
from befriend.server.storage.snapshots import SnapshotStore
from benchmarks._population import (
    Loader,
    peak_rss,
    pg_reachable,
    reset_peak_rss,
    scratch_postgres,
)

TARGET_P99_MS = 5.0
BOOK = 30
UNCAPPED = 1 << 62  # the holder index as one run sorted whole (the load before RUN_CAP)
WARMUP = 200


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _latencies(db: Database, fn: Callable[[MatchRepository], object], n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        with db.transaction(readonly=True) as s:
            fn(MatchRepository(s))
        out[i] = time.perf_counter() - t
    return out * 1e3


def _line(name: str, ms: np.ndarray, extra: str = "") -> float:
    p50, p99 = np.percentile(ms, [50, 99])
    print(
        f"  {name:<40} n={ms.size:>5,}  p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
        f"max {ms.max():7.3f} ms{extra}",
        flush=True,
    )
    return float(p99)


def _io(db: Database) -> tuple[int, ...] | None:
    if db.is_sqlite:
        return None
    time.sleep(2)  # PostgreSQL flushes a backend's I/O counters within ~1 s of going idle
    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT heap_blks_read, heap_blks_hit, idx_blks_read, idx_blks_hit "
                "FROM pg_statio_user_tables WHERE relname = 'entry_keys'"
            )
        ).one()
    return tuple(int(x or 0) for x in row)


# MatchRepository.holders's PostgreSQL query, for its plan
_CONFIRM_SQL = (
    "SELECT h.user_id, h.entry_pk, h.kind, h.key "
    "FROM unnest(CAST(:pks AS bigint[])) AS e(pk) CROSS JOIN LATERAL "
    "(SELECT user_id, entry_pk, ordinal, kind, key FROM entry_keys "
    "WHERE entry_pk = e.pk OFFSET 0) AS h "
    "WHERE h.key = ANY(CAST(:keys AS bigint[])) ORDER BY h.entry_pk, h.ordinal"
)


def _lookups(db: Database, reg: Registry, pop: Population, n: int, label: str) -> None:
    """``n`` timed lookups through ``holders_of`` (the server's path) with ``reg``, whose
    holder index is already loaded."""
    rnd = np.random.default_rng(99)
    c = pop.config
    held = pop.keys(rnd.integers(0, c.members + c.pool, n + WARMUP)).tolist()
    # Indices past the population: valid numbers nobody holds.
    missing = pop.keys(rnd.integers(c.members + c.pool, c.members + 2 * c.pool, n)).tolist()
    hits: list[int] = []
    for k in held[:WARMUP]:
        with db.transaction(readonly=True) as s:
            holders_of(MatchRepository(s), reg, [k])
    io0 = _io(db)
    it = iter(held[WARMUP:])
    held_ms = _latencies(db, lambda r: hits.append(len(holders_of(r, reg, [next(it)]))), n)
    io1 = _io(db)
    it = iter(held[WARMUP:])
    again_ms = _latencies(db, lambda r: holders_of(r, reg, [next(it)]), n)
    it2 = iter(missing)
    miss_ms = _latencies(db, lambda r: holders_of(r, reg, [next(it2)]), n)
    floor = _latencies(db, lambda r: r.s.execute(text("SELECT 1")).scalar_one(), n)
    print(f"{label}:")

    def slow(ms: np.ndarray) -> str:
        return f"  >{TARGET_P99_MS:g} ms: {(ms > TARGET_P99_MS).sum()}"

    p99 = _line(
        "holders([key]), population keys",
        held_ms,
        slow(held_ms)
        + f"  ({np.mean(hits):.1f} holders/key, {np.mean(np.array(hits) > 0):.0%} held)",
    )
    _line("holders([key]), same keys again", again_ms, slow(again_ms))
    _line("holders([key]), keys nobody holds", miss_ms, slow(miss_ms))
    base = _line("baseline: SELECT 1 in a read transaction", floor, slow(floor))
    if io0 and io1:
        d = [b - a for a, b in zip(io0, io1, strict=True)]
        print(
            f"  first pass, entry_keys blocks: heap {d[0]:,} read / {d[1]:,} hit (shared "
            f"buffers), index {d[2]:,} read / {d[3]:,} hit; reads come from the OS page cache"
        )
        key = held[-1]
        with db.transaction(readonly=True) as s:
            pks = reg.holders.entries(MatchRepository(s), [key])
        with db.engine.connect() as conn:
            plan = conn.execute(
                text("EXPLAIN (ANALYZE, BUFFERS) " + _CONFIRM_SQL),
                {"pks": pks, "keys": [key_to_db(key)]},
            ).all()
        print(
            f"  plan of one confirming query ({len(pks)} candidate entries):\n"
            + "\n".join(f"    {r[0]}" for r in plan)
        )
    verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
    print(
        f"  p99 {p99:.3f} ms {verdict} the {TARGET_P99_MS} ms target; "
        f"p99 / baseline p99 = {p99 / base:.1f}x"
    )


def _load(db: Database, pop: Population, entries: int) -> tuple[float, float]:
    loader = Loader(db)
    t = time.perf_counter()
    loader.members(pop, 0, pop.config.members)
    t_members = time.perf_counter() - t
    owners = min(pop.config.members, max(1, entries // BOOK))
    t = time.perf_counter()
    loader.entry_keys(pop, owners, BOOK)
    loader.settle()
    return t_members, time.perf_counter() - t


def _count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM entry_keys")).scalar_one())


def _warm(db: Database, index: HolderIndex) -> tuple[int, float]:
    """``index.warm`` in a read transaction: (the pairs held, seconds taken)."""
    t = time.perf_counter()
    with db.transaction(readonly=True) as s:
        pairs = index.warm(MatchRepository(s))
    return pairs, time.perf_counter() - t


def _holder_index(db: Database, rows: int, cap: int = RUN_CAP) -> HolderIndex:
    """Load a ``HolderIndex`` from entry_keys, print its time and memory, and return it.
    ``cap``: its runs' cap (``1 << 62``: one run sorted whole, the baseline)."""
    gc.collect()
    before = _rss()
    reset_peak_rss()
    index = HolderIndex(cap=cap)
    pairs, took = _warm(db, index)
    peak = peak_rss() - before
    gc.collect()
    retained = _rss() - before
    runs, nbytes = index._pairs.sizes, index._pairs.nbytes
    per = max(pairs, 1)
    label = "" if cap == RUN_CAP else " (baseline: one run sorted whole, as before RUN_CAP)"
    print(
        f"holder index{label}: {pairs:,} pairs (of {rows:,} entry_keys rows) loaded in "
        f"{took:.2f} s "
        f"= {rows / max(took, 1e-9):,.0f} rows/s; {len(runs)} run(s), the largest "
        f"{max(runs, default=0):,} pairs\n"
        f"  arrays {nbytes / 2**20:.1f} MiB = {nbytes / per:.1f} bytes/stored key\n"
        f"  RSS delta retained after load {retained / 2**20:.1f} MiB = "
        f"{retained / per:.1f} bytes/key; RSS peak during load +{peak / 2**20:.1f} MiB = "
        f"{peak / per:.0f} bytes/key",
        flush=True,
    )
    return index


def _mapped_holder_index(db: Database, rows: int, directory: str) -> HolderIndex:
    """``--index-dir``: a first process loads the index and stores the snapshot, a second
    maps it; print both times and the second's RSS delta, and return the second."""
    with db.transaction() as s:  # the setup writes no log row: a snapshot needs one
        s.execute(
            text("INSERT INTO book_key_log (entry_ranges, created_at) VALUES (:r, :at)"),
            {"r": b"", "at": datetime.now(UTC)},
        )
    store = SnapshotStore(directory)
    _, stored = _warm(db, HolderIndex(snapshots=store))
    gc.collect()
    before = _rss()
    index = HolderIndex(snapshots=store)
    pairs, mapped = _warm(db, index)
    retained = _rss() - before
    assert index.mapped == 1
    print(
        f"holder index, --index-dir: the first process loads and stores the snapshot in "
        f"{stored:.2f} s; the next maps it in {mapped * 1000:.1f} ms ({pairs:,} pairs, "
        f"{rows / max(mapped, 1e-9):,.0f} rows/s), RSS +{retained / 2**20:.1f} MiB "
        f"(its pages are read as lookups touch them, and shared with every process mapping "
        f"them)",
        flush=True,
    )
    return index


def _load_registry(db: Database, index_dir: str = "") -> tuple[Registry, float]:
    reg = Registry(index_dir=index_dir)
    t = time.perf_counter()
    with db.transaction(readonly=True) as s:
        reg.lookup(MatchRepository(s), np.zeros(0, dtype=np.uint64))
    return reg, time.perf_counter() - t


def _registry(db: Database, members: int) -> None:
    gc.collect()
    before = _rss()
    reset_peak_rss()
    reg, took = _load_registry(db)
    peak = peak_rss() - before
    gc.collect()
    retained = _rss() - before
    by_key, by_pk = reg._by_key.nbytes, reg._by_pk.nbytes
    n, cap = len(reg), reg._by_key.capacity
    del reg
    gc.collect()
    tracemalloc.start()
    reg2, _ = _load_registry(db)
    traced_now, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del reg2
    print(
        f"registry: {n:,} identities loaded in {took:.2f} s\n"
        f"  KeyIndex key->pk {by_key / 2**20:.1f} MiB + pk->key {by_pk / 2**20:.1f} MiB = "
        f"{(by_key + by_pk) / n:.1f} bytes/identity "
        f"({cap:,} slots each for {n:,} keys)\n"
        f"  RSS delta retained after load {retained / 2**20:.1f} MiB = "
        f"{retained / n:.1f} bytes/identity; RSS peak during load +{peak / 2**20:.1f} MiB = "
        f"{peak / n:.0f} bytes/identity (the snapshot's arrays and one batch of rows)\n"
        f"  tracemalloc (second load): retained {traced_now / 2**20:.1f} MiB, "
        f"peak {traced_peak / 2**20:.1f} MiB = {traced_peak / n:.0f} bytes/identity",
        flush=True,
    )
    assert n == members
    with db.transaction() as s:  # the setup writes no identity log: a snapshot needs a row
        s.execute(
            text("INSERT INTO identity_log (identity_pk, op, created_at) VALUES (0, 2, :at)"),
            {"at": datetime.now(UTC)},
        )
    with tempfile.TemporaryDirectory() as index_dir:
        _, stored = _load_registry(db, index_dir)
        gc.collect()
        before = _rss()
        mapped, took = _load_registry(db, index_dir)
        assert mapped.mapped == 1 and len(mapped) == n
        print(
            f"registry, --index-dir: the first process loads and stores the snapshot in "
            f"{stored:.2f} s; the next maps it in {took * 1000:.1f} ms, RSS "
            f"+{(_rss() - before) / 2**20:.1f} MiB",
            flush=True,
        )


def main() -> None:
    members = int(os.environ.get("BEFRIEND_BENCH_MEMBERS", "1000000"))
    entries = int(os.environ.get("BEFRIEND_BENCH_ENTRIES", "30000000"))
    sqlite_entries = int(os.environ.get("BEFRIEND_BENCH_SQLITE_ENTRIES", str(entries)))
    n = int(os.environ.get("BEFRIEND_BENCH_LOOKUPS", "2000"))
    if entries > members * BOOK:
        members = -(-entries // BOOK)
        print(f"members raised to {members:,} so that {entries:,} entries fit {BOOK}-entry books")
    pop = Population(PopulationConfig(members=members))
    registry_done = False
    if pg_reachable():
        with scratch_postgres() as url:
            db = Database(url)
            db.migrate()
            tm, te = _load(db, pop, entries)
            size = _count(db)
            print(
                f"postgres: {members:,} members loaded in {tm:.0f} s; {size:,} entry_keys rows "
                f"loaded and indexed in {te:.0f} s (setup, not measured)",
                flush=True,
            )
            _holder_index(db, size, cap=UNCAPPED)  # the baseline in the same run, dropped
            reg = Registry()
            reg.holders = _holder_index(db, size)
            _lookups(db, reg, pop, n, f"postgres, {size:,} entry_keys rows")
            with tempfile.TemporaryDirectory() as index_dir:
                reg.holders = _mapped_holder_index(db, size, index_dir)
                _lookups(db, reg, pop, n, f"postgres, {size:,} rows, mapped snapshot")
            del reg
            _registry(db, members)
            registry_done = True
            db.dispose()
    else:
        print("PostgreSQL not reachable: SQLite only")
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{d}/befriend.db")
        db.migrate()
        tm, te = _load(db, pop, sqlite_entries)
        size = _count(db)
        print(
            f"sqlite: {members:,} members loaded in {tm:.0f} s; {size:,} entry_keys rows "
            f"loaded and indexed in {te:.0f} s (setup, not measured)",
            flush=True,
        )
        _holder_index(db, size, cap=UNCAPPED)
        reg = Registry()
        reg.holders = _holder_index(db, size)
        _lookups(db, reg, pop, n, f"sqlite, {size:,} entry_keys rows")
        reg.holders = _mapped_holder_index(db, size, f"{d}/index")
        _lookups(db, reg, pop, n, f"sqlite, {size:,} rows, mapped snapshot")
        del reg
        if not registry_done:
            _registry(db, members)
        db.dispose()


if __name__ == "__main__":
    main()
