"""The scheduled buddy refresh end to end, through the database (seed 001's monthly re-match).

What runs is the server's job itself: ``refresh.start`` + ``refresh.run`` (what the APScheduler
cron job and the RefreshMatches RPC call): read every book's keys, the users and their
identities and every stored buddy row (member rows: full and one-way) from the database, build
the member index, run the compiled ``bulk_match``, diff its member edges against the stored
rows, and re-match only the users whose rows differ by the whole-book rules
(``matching.match_users``), ``refresh.BATCH`` users per transaction, recording the job's
position after each batch. Phonebook buddies are not stored (migration 0007: they are derived
from the books when the list is read), so they are neither loaded, read, diffed nor written.

Setup (bulk-loaded, never part of a figure; ``benchmarks/_population.py``):
``--members`` members (users + one phone identity each, ``befriend.clients.population``),
``--books`` books of ``--contacts`` contacts (address_books, minimal contact_entries, one
entry_keys row each; drawn by ``Population.bulk_book_indices``: 35 % members, 40 % of those
reciprocal ring neighbours, the rest from a non-member pool of 2x members), and the member
rows the matching rules give for that population, computed with
``befriend.core.match.bulk_match`` on the same arrays and stored as ``MatchRepository`` stores
them (full / one-way rows pointing at the first entry naming the member; key_kind PHONE, origin
ADDRESS_BOOK). ``bulk_match``'s phonebook output is only counted (derived, not stored).

Run 1 refreshes the unchanged population: it must find 0 users to re-match. Then a month of
drift is written straight into the tables, as registration, number changes and uploads leave
them (identity_log rows included; the server's registry, warm since before the drift, tails
them): ``--change`` of the members change their number (to a recycled non-member number
some books hold: their holders gain a member row, the old number's holders lose one),
``--register`` new members register with such numbers (new member rows for the books holding
them), ``--grow`` of the books get ``--grow-contacts`` new contacts (35 % members: new member
rows). Run 2 is the measured refresh; its users' member rows are checked against the
bulk-match expectation and against ``match_user`` (a second call must change nothing), and
run 3 (``--recheck``) must find nothing left to do.

Figures: end-to-end time of each run and its split (the phases are timed by wrapping the
repository's and the kernel's functions from the outside), contacts/s of the matching step and
end to end with the ratio to the 1M contacts/s target, users and rows changed, peak RSS.
``--one-at-a-time`` is the baseline of the batched write: run 2 re-matches its users one per
``matching.match_users`` call (what the job did before it batched them).
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from befriend.clients.population import Population, PopulationConfig
from befriend.core import IMPLEMENTATION
from befriend.core.index import EMPTY_KEY, KeyIndex
from befriend.core.match import bulk_match
from befriend.server.app import settle_collector
from befriend.server.services import matching, refresh
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.matching import FULL, ONE_WAY, BuddyState, MatchRepository
from befriend.server.storage.repositories import (
    IDENTITY_ADDED,
    IDENTITY_REMOVED,
    key_from_db,
    key_to_db,
)
from benchmarks._population import (
    PHONE,
    USER_COLUMNS,
    ArrayLoader,
    peak_rss,
    pg_reachable,
    reset_peak_rss,
    scratch_postgres,
)

TARGET = 1_000_000  # contacts/s, the matching step on one core (issue 5)
U64 = np.uint64
Arr = np.ndarray[Any, Any]
READS = (
    "refresh_user_ids",
    "refresh_identity_keys",
    "refresh_book_keys",
    "refresh_buddy_rows",
    "decision_users",
)
PER_USER = (
    "book_key_rows",
    "registry.lookup",
    "identity_keys_by_pk",
    "own_keys_of",
    "holders",
    "rows_involving",
    "decisions_involving",
    "delete_rows",
    "insert_rows",
    "update_rows",
    "add_events",
)


# -- the population as arrays ----------------------------------------------------------------
@dataclass
class Model:
    """Users (index -> id, one phone key each) and book entries in entry-id order (entry
    ``j`` has id ``j + 1``)."""

    user_ids: list[str]
    member_key: Arr  # uint64 per user index
    owner: Arr  # int64 per entry: user index
    keys: Arr  # uint64 per entry


@dataclass
class State:
    """The member rows the rules give (full / one-way), by owner, then other: what the
    ``buddies`` table should hold. ``phonebook``: how many phonebook buddies ``bulk_match``
    derives (never stored)."""

    owner: Arr
    other: Arr
    kind: Arr
    key: Arr
    entry: Arr
    phonebook: int
    t_match: float = 0.0


def build_model(pop: Population, books: int, size: int) -> Model:
    n = pop.config.members
    owners, contacts = [], []
    for s in range(0, books, 10_000):
        o, c = pop.bulk_book_indices(np.arange(s, min(books, s + 10_000), dtype=np.int64), size)
        owners.append(o)
        contacts.append(c)
    c_all = np.concatenate(contacts)
    return Model(
        [pop.user_id(i) for i in range(n)],
        pop.member_keys(),
        np.concatenate(owners),
        pop.keys(c_all),
    )


def expected(m: Model) -> State:
    """The member rows for ``m`` by ``bulk_match``, with the entry each row points at."""
    order = np.argsort(m.owner, kind="stable")  # by owner, then entry id
    o, k, eid = m.owner[order], m.keys[order], order.astype(np.int64) + 1
    n_users = len(m.user_ids)
    indptr = np.searchsorted(o, np.arange(n_users + 1)).astype(np.int64)
    index = KeyIndex.from_arrays(m.member_key, np.arange(n_users, dtype=U64))
    t = time.perf_counter()
    r = bulk_match(indptr, k, index)
    t_match = time.perf_counter() - t
    mem = index.lookup(k)
    hit = mem != U64(EMPTY_KEY)
    # an edge's row points at the first entry of the owner's book naming the member
    code = (o[hit].astype(U64) << U64(32)) | mem[hit]
    uniq, first = np.unique(code, return_index=True)
    ecode = (r.owner.astype(U64) << U64(32)) | r.other.astype(U64)
    pos = np.searchsorted(uniq, ecode)
    assert np.array_equal(uniq[pos], ecode)
    edge_entry = eid[hit][first[pos]]
    assert np.array_equal(k[hit][first[pos]], r.key)
    return State(
        r.owner,
        r.other,
        np.where(r.mutual, FULL, ONE_WAY).astype(np.int64),
        r.key,
        edge_entry,
        int(r.phonebook_owner.shape[0]),
        t_match,
    )


def rows_of(st: State, m: Model, user: int) -> set[tuple[str, str, int, int, int]]:
    """(owner, other, kind, key, entry) of every expected member row involving ``user``."""
    sel = np.flatnonzero((st.owner == user) | (st.other == user))
    return {
        (
            m.user_ids[int(st.owner[i])],
            m.user_ids[int(st.other[i])],
            int(st.kind[i]),
            int(st.key[i]),
            int(st.entry[i]),
        )
        for i in sel
    }


def expected_dirty(a: State, b: State) -> int:
    """Users ``refresh.changed_users`` should find between states ``a`` and ``b``: both ends
    of a member row added, removed or of another kind."""

    def edges(s: State) -> Arr:
        code = (s.owner.astype(U64) << U64(32)) | s.other.astype(U64)
        return code * U64(4) + s.kind.astype(U64)  # owner < 2**30 in any run here

    diff = np.setxor1d(edges(a), edges(b)) // U64(4)
    dirty = set((diff >> U64(32)).tolist()) | set((diff & U64(0xFFFFFFFF)).tolist())
    return len(dirty)


# -- setup -----------------------------------------------------------------------------------
def load(db: Database, pop: Population, m: Model, st: State, books: int) -> None:
    loader = ArrayLoader(db)
    t = time.perf_counter()
    loader.members(pop, 0, pop.config.members)
    print(f"  users + identities: {pop.config.members:,} in {time.perf_counter() - t:.0f} s")
    loader.address_books(m.user_ids, np.arange(books))
    loader.phone_entries(m.user_ids, m.owner, m.keys, 1)
    loader.buddy_rows(m.user_ids, st.owner, st.other, st.kind, st.key, st.entry)
    t = time.perf_counter()
    loader.settle()
    print(f"  ANALYZE {time.perf_counter() - t:.0f} s", flush=True)


@dataclass
class Drift:
    changed: int
    registered: int
    grown_books: int
    new_entries: int


def drift(
    db: Database, pop: Population, m: Model, rng: np.random.Generator, args: argparse.Namespace
) -> tuple[Model, Drift]:
    """A month of changes, written as registration / number change / upload leave them."""
    n = pop.config.members
    books = int(m.owner.max()) + 1
    n_change = round(n * args.change)
    n_reg = round(n * args.register)
    # recycled numbers: population indices of the non-member pool, held by books
    picks = rng.choice(pop.config.pool, n_change + n_reg, replace=False) + n
    changers = np.sort(rng.choice(n, n_change, replace=False))
    new_of_changer = pop.keys(picks[:n_change])
    reg_idx = np.sort(picks[n_change:])
    reg_keys = pop.keys(reg_idx)
    grown = np.sort(rng.choice(books, round(books * args.grow), replace=False))
    g = args.grow_contacts
    g_owner = np.repeat(grown, g)
    member_pick = rng.random(g_owner.shape[0]) < 0.35

    member_key = m.member_key.copy()
    member_key[changers] = new_of_changer
    member_key = np.concatenate([member_key, reg_keys])
    user_ids = m.user_ids + [pop.user_id(int(i)) for i in reg_idx]
    g_keys = np.where(
        member_pick,
        member_key[rng.integers(0, member_key.shape[0], g_owner.shape[0])],
        pop.keys(n + rng.integers(0, pop.config.pool, g_owner.shape[0])),
    )

    loader = ArrayLoader(db)
    ts = loader._ts
    with db.engine.connect() as conn:
        next_ident = int(conn.execute(text("SELECT max(id) FROM identities")).scalar_one()) + 1
    with db.engine.begin() as conn:
        gone = [int(c) + 1 for c in changers]  # identity id = member index + 1 (the loader)
        for s in range(0, len(gone), 500):
            part = ", ".join(map(str, gone[s : s + 500]))
            conn.execute(text(f"DELETE FROM identities WHERE id IN ({part})"))
    loader.insert(
        "users",
        USER_COLUMNS,
        (
            (
                pop.user_id(int(i)),
                f"Member {i}",
                pop.country_of(int(i)).region,
                "UTC",
                "{}",
                1,
                ts,
                ts,
            )
            for i in reg_idx
        ),
    )
    owners = [m.user_ids[int(c)] for c in changers] + user_ids[n:]
    new_keys = np.concatenate([new_of_changer, reg_keys]).tolist()
    ident_ids = list(range(next_ident, next_ident + len(owners)))
    loader.insert(
        "identities",
        ("id", "user_id", "kind", "value", "key", "raw", "created_at"),
        (
            (i, u, PHONE, f"+{k}", key_to_db(k), f"+{k}", ts)
            for i, u, k in zip(ident_ids, owners, new_keys, strict=True)
        ),
    )
    log = [(pk, IDENTITY_REMOVED, ts) for pk in gone] + [
        (pk, IDENTITY_ADDED, ts) for pk in ident_ids
    ]
    loader.insert("identity_log", ("identity_pk", "op", "created_at"), log)
    loader.fix_sequences(["identities"])
    first = m.owner.shape[0] + 1
    loader.phone_entries(user_ids, g_owner, g_keys, first, bulk=False, progress=False)
    after = Model(
        user_ids,
        member_key,
        np.concatenate([m.owner, g_owner]),
        np.concatenate([m.keys, g_keys]),
    )
    return after, Drift(n_change, n_reg, len(grown), int(g_owner.shape[0]))


# -- instrumentation -------------------------------------------------------------------------
@dataclass
class Probe:
    """Times the job's steps by wrapping module / class attributes (restored afterwards)."""

    total: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    timeline: list[tuple[str, float, float]] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _undo: list[tuple[Any, str, Any]] = field(default_factory=list)
    # Python's collector during the run: seconds and collections, by generation
    gc_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gc_n: list[int] = field(default_factory=lambda: [0, 0, 0])
    _gc_at: float = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_at = time.perf_counter()
        else:
            self.gc_s[info["generation"]] += time.perf_counter() - self._gc_at
            self.gc_n[info["generation"]] += 1

    def _timed(self, label: str, fn: Callable[..., Any], keep: bool) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                e = time.perf_counter()
                self.total[label] += e - t
                self.count[label] += 1
                if keep:
                    self.timeline.append((label, t, e))

        return timed

    def wrap(self, owner: Any, name: str, label: str = "", keep: bool = False) -> None:
        orig = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        self._undo.append((owner, name, orig))
        setattr(owner, name, self._timed(label or name, getattr(owner, name), keep))

    def replace(self, owner: Any, name: str, value: Any) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()
        if self.on_gc in gc.callbacks:
            gc.callbacks.remove(self.on_gc)


@contextmanager
def probed(one_at_a_time: bool = False) -> Iterator[Probe]:
    p = Probe()
    for name in READS:
        p.wrap(MatchRepository, name, keep=True)
    for name in PER_USER:
        if name != "registry.lookup":
            p.wrap(MatchRepository, name)
    p.wrap(Registry, "lookup", "registry.lookup")
    p.wrap(refresh, "changed_users", keep=True)
    p.wrap(refresh, "bulk_match", keep=True)
    gc.callbacks.append(p.on_gc)

    class TimedKeyIndex:
        from_arrays = staticmethod(p._timed("from_arrays", KeyIndex.from_arrays, True))

    p.replace(refresh, "KeyIndex", TimedKeyIndex)
    match_users = matching.match_users

    def counting(repo: MatchRepository, reg: Registry, users: Sequence[str], *a: Any) -> Any:
        p.users.extend(users)
        if one_at_a_time:  # the baseline: as before batching, one user per call
            return [e for u in users for e in match_users(repo, reg, [u], *a)]
        return match_users(repo, reg, users, *a)

    p.replace(matching, "match_users", counting)
    p.wrap(matching, "match_users")
    for name in ("delete_rows", "insert_rows", "update_rows"):
        inner = MatchRepository.__dict__[name]

        def counted(self: Any, rows: Any, *a: Any, _n: str = name, _f: Any = inner) -> Any:
            rows = list(rows)
            p.rows[_n] += len(rows)
            return _f(self, rows, *a)

        p.replace(MatchRepository, name, counted)
    try:
        yield p
    finally:
        p.restore()


@dataclass
class Run:
    label: str
    total: float
    users: int
    probe: Probe
    peak_rss: int


def run_job(
    db: Database, registry: Registry, job_id: str, label: str, one_at_a_time: bool = False
) -> Run:
    def clock() -> datetime:
        return datetime.now(UTC)

    reset_peak_rss()
    with probed(one_at_a_time) as p:
        t = time.perf_counter()
        refresh.start(db, job_id, clock())
        users = refresh.run(db, registry, job_id, clock)
        total = time.perf_counter() - t
    return Run(label, total, users, p, peak_rss())


def _span(p: Probe, label: str) -> tuple[float, float]:
    for name, s, e in p.timeline:
        if name == label:
            return s, e
    return 0.0, 0.0


def report(r: Run, contacts: int, member_rows: int) -> dict[str, float]:
    p = r.probe
    t = p.total
    cu0, cu1 = _span(p, "changed_users")
    _, ident_end = _span(p, "refresh_identity_keys")
    idx0, idx1 = _span(p, "from_arrays")
    _, book_end = _span(p, "refresh_book_keys")
    bm0, bm1 = _span(p, "bulk_match")
    read_keys = t["refresh_user_ids"] + t["refresh_identity_keys"] + t["refresh_book_keys"]
    member_index = (idx0 - ident_end) + (idx1 - idx0)
    to_arrays = bm0 - book_end
    read_buddies = t["refresh_buddy_rows"] + t["decision_users"]
    diff = (cu1 - bm1) - read_buddies
    scan = cu1 - cu0
    write = r.total - scan
    per_user = t["match_users"]
    n = max(1, len(p.users))
    print(f"{r.label}: {r.total:.2f} s end to end, {r.users:,} users re-matched", flush=True)
    print(
        f"  DB read of keys {read_keys:.2f} s (user ids {t['refresh_user_ids']:.2f}, identities "
        f"{t['refresh_identity_keys']:.2f}, entry keys {t['refresh_book_keys']:.2f} s for "
        f"{contacts:,} rows: {contacts / max(t['refresh_book_keys'], 1e-9) / 1e6:.2f} M rows/s)"
    )
    print(
        f"  member index {member_index:.2f} s (identity rows -> arrays {idx0 - ident_end:.2f}, "
        f"KeyIndex build {idx1 - idx0:.3f}); book keys sorted by owner {to_arrays:.2f} s"
    )
    print(
        f"  bulk match {bm1 - bm0:.2f} s: {contacts / (bm1 - bm0) / 1e6:.2f} M contacts/s = "
        f"{contacts / (bm1 - bm0) / TARGET:.1f}x the 1 M/s target"
    )
    print(
        f"  DB read of member rows {read_buddies:.2f} s ({member_rows:,} rows); "
        f"diff {diff:.2f} s (pair codes, set differences per kind)"
    )
    print(
        f"  scan total (changed_users) {scan:.2f} s; DB write {write:.2f} s: match_users of "
        f"{len(p.users):,} users in {p.count['match_users']:,} batches = {per_user:.2f} s "
        f"({per_user / n * 1e3:.2f} ms/user), transactions + job rows {write - per_user:.2f} s"
    )
    if p.count["match_users"]:
        inner = ", ".join(f"{k} {t[k]:.2f}" for k in PER_USER if t[k] >= 0.005)
        print(f"    inside match_users (s): {inner}")
        print(
            "    rows: "
            + ", ".join(f"{k.split('_')[0]} {p.rows[k]:,}" for k in p.rows)
            + f"; events {p.count['add_events']:,} calls"
        )
    print(
        "  Python's collector during the run: "
        + ", ".join(f"gen{g} {p.gc_n[g]:,}x {p.gc_s[g]:.2f} s" for g in range(3))
    )
    print(
        f"  end to end {contacts / r.total / 1e6:.2f} M contacts/s = "
        f"{contacts / r.total / TARGET:.2f}x the 1 M/s target; peak RSS "
        f"{r.peak_rss / 2**30:.1f} GiB",
        flush=True,
    )
    return {
        "total": r.total,
        "read_keys": read_keys,
        "index": member_index,
        "to_arrays": to_arrays,
        "match": bm1 - bm0,
        "read_buddies": read_buddies,
        "diff": diff,
        "write": write,
    }


# -- checks ----------------------------------------------------------------------------------
def stored_rows(db: Database, user_id: str) -> set[tuple[str, str, int, int, int]]:
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            text(
                "SELECT owner_id, other_id, kind, key, entry_pk FROM buddies "
                "WHERE owner_id = :u OR other_id = :u"
            ),
            {"u": user_id},
        ).all()
    return {(o, t, int(k), key_from_db(int(key)), int(e)) for o, t, k, key, e in rows}


class _DryRun(MatchRepository):
    """Counts the rows ``match_user`` writes."""

    writes = 0

    def delete_rows(self, rows: Iterable[BuddyState]) -> None:
        rows = list(rows)
        self.writes += len(rows)
        super().delete_rows(rows)

    def insert_rows(self, rows: Sequence[BuddyState], now: datetime) -> None:
        self.writes += len(rows)
        super().insert_rows(rows, now)

    def update_rows(self, rows: Sequence[BuddyState], now: datetime) -> None:
        self.writes += len(rows)
        super().update_rows(rows, now)


def check_users(
    db: Database, registry: Registry, m: Model, st: State, users: Sequence[str], n: int
) -> None:
    pos = {u: i for i, u in enumerate(m.user_ids)}
    rnd = np.random.default_rng(5)
    sample = [users[i] for i in rnd.choice(len(users), min(n, len(users)), replace=False)]
    bad = 0
    for u in sample:
        got, want = stored_rows(db, u), rows_of(st, m, pos[u])
        if got != want:
            bad += 1
            print(
                f"  MISMATCH {u}: stored-only {sorted(got - want, key=str)[:3]}, "
                f"expected-only {sorted(want - got, key=str)[:3]}"
            )
    # the per-user path again, in a transaction rolled back: it must find nothing to write
    writes = 0
    with Session(db.engine) as s:
        repo = _DryRun(s)
        for u in sample:
            ev = matching.match_user(repo, registry, u, datetime.now(UTC), matching.ORIGIN_REFRESH)
            writes += len(ev)
        writes += repo.writes
        s.rollback()
    print(
        f"  check: {len(sample)} re-matched users' member rows (both directions) == bulk_match "
        f"expectation: {len(sample) - bad}/{len(sample)}; match_user again writes "
        f"{writes} rows/events"
    )
    assert bad == 0 and writes == 0


def count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- one backend -----------------------------------------------------------------------------
def bench(url: str, backend: str, members: int, books: int, args: argparse.Namespace) -> None:
    print(f"\n--- {backend}: {members:,} members, {books:,} books x {args.contacts} ---")
    pop = Population(PopulationConfig(members=members))
    t = time.perf_counter()
    m = build_model(pop, books, args.contacts)
    st = expected(m)
    contacts = m.owner.shape[0]
    print(
        f"population: {contacts:,} contacts; expected {st.owner.shape[0]:,} member rows "
        f"({int((st.kind == FULL).sum()):,} full); {st.phonebook:,} phonebook buddies "
        f"(derived, not stored); in-memory bulk_match {st.t_match:.2f} s "
        f"({contacts / st.t_match / 1e6:.1f} M/s) (generated in {time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    db = Database(url)
    db.migrate()
    t = time.perf_counter()
    load(db, pop, m, st, books)
    print(f"setup loaded in {time.perf_counter() - t:.0f} s (not measured)", flush=True)
    registry = Registry()
    t = time.perf_counter()
    with db.transaction(readonly=True) as s:
        registry.warm(MatchRepository(s))
    print(f"registry warmed in {time.perf_counter() - t:.2f} s (server start, not measured)")
    # As a server's start does (``settle_collector``): what is alive now (here the population
    # model) frozen out of the collector's sight, and the server's collection thresholds.
    settle_collector()

    r1 = run_job(db, registry, "bench-unchanged", "run 1, unchanged population")
    report(r1, contacts, st.owner.shape[0])
    if r1.users:
        print(f"  run 1 should re-match nobody; first users: {r1.probe.users[:3]}")
        check_users(db, registry, m, st, r1.probe.users, 3)

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    m2, d = drift(db, pop, m, rng, args)
    st2 = expected(m2)
    want = expected_dirty(st, st2)
    print(
        f"drift (written in {time.perf_counter() - t:.0f} s, not measured): {d.changed:,} "
        f"number changes, {d.registered:,} registrations, {d.grown_books:,} books +"
        f"{args.grow_contacts} contacts ({d.new_entries:,} entries); member rows the rules now "
        f"give differ for {want:,} users; phonebook buddies (derived, not stored) "
        f"{st.phonebook:,} -> {st2.phonebook:,}",
        flush=True,
    )
    rows_before = count(db, "buddies")
    r2 = run_job(db, registry, "bench-month", "run 2, after a month of drift", args.one_at_a_time)
    rows_after = count(db, "buddies")
    fig = report(r2, m2.owner.shape[0], rows_before)
    print(
        f"  users re-matched {r2.users:,} (expected {want:,}); member rows {rows_before:,} -> "
        f"{rows_after:,}; expected {st2.owner.shape[0]:,}"
    )
    check_users(db, registry, m2, st2, r2.probe.users, args.check)
    ok = r2.users == want and rows_after == st2.owner.shape[0]
    if args.recheck:
        r3 = run_job(db, registry, "bench-recheck", "run 3, nothing changed since run 2")
        report(r3, m2.owner.shape[0], rows_after)
        ok = ok and r3.users == 0
    print(
        f"summary {backend}: {contacts:,} contacts; matching step "
        f"{m2.owner.shape[0] / fig['match'] / 1e6:.1f} M contacts/s "
        f"({m2.owner.shape[0] / fig['match'] / TARGET:.1f}x target); end to end after drift "
        f"{fig['total']:.1f} s = {m2.owner.shape[0] / fig['total'] / 1e6:.2f} M contacts/s "
        f"({m2.owner.shape[0] / fig['total'] / TARGET:.2f}x target); unchanged run "
        f"{r1.total:.1f} s; checks {'passed' if ok and r1.users == 0 else 'FAILED'}",
        flush=True,
    )
    db.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_refresh", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--sqlite-books", type=int, help="books on SQLite (default --books)")
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--change", type=float, default=0.005, help="members changing number")
    parser.add_argument("--register", type=float, default=0.005, help="new members (x members)")
    parser.add_argument("--grow", type=float, default=0.005, help="books getting new contacts")
    parser.add_argument("--grow-contacts", type=int, default=20)
    parser.add_argument("--check", type=int, default=20, help="re-matched users checked")
    parser.add_argument("--no-recheck", dest="recheck", action="store_false")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="baseline: the job's batches matched one user per match_users call",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 members, 1,000 books, 0.2 %% changes and registrations, no run 3",
    )
    if argv is None:  # ``python -m benchmarks refresh``: flags from the environment
        argv = shlex.split(os.environ.get("BEFRIEND_BENCH_REFRESH_ARGS", ""))
    args = parser.parse_args(argv)
    if args.quick:
        args.members, args.books, args.sqlite_books = 10_000, 1_000, None
        args.change = args.register = 0.002
        args.recheck = False
    print(f"implementation={IMPLEMENTATION}")
    if args.backend in ("postgres", "both"):
        if pg_reachable():
            with scratch_postgres("befriend_refresh") as url:
                bench(url, "postgres", args.members, args.books, args)
        else:
            print("PostgreSQL not reachable: skipped")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as d:
            books = args.sqlite_books or args.books
            bench(f"sqlite:///{d}/befriend.db", "sqlite", args.members, books, args)


if __name__ == "__main__":
    main(sys.argv[1:])
