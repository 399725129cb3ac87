"""The in-memory holder index ("who holds this key in a book") against a plain reference,
and on SQLite and PostgreSQL: it loads the books, tails book_key_log (new, late-committed
and other processes' writes), reads nothing when nothing is new, and its candidates are
confirmed by the database (a removed key is no longer a holder)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func

from befriend.core.keys import KeyRow
from befriend.server.services import holders, retention
from befriend.server.services.holders import HolderIndex, KeyRuns
from befriend.server.storage import models
from befriend.server.storage.addressbooks import entry_ranges, insert_key_rows
from befriend.server.storage.db import Database
from befriend.server.storage.matching import BookKey, MatchRepository
from befriend.server.storage.repositories import key_to_db
from befriend.server.storage.snapshots import SnapshotStore
from tests.conftest import statements_run

PHONE = 1
T0 = datetime(2026, 12, 7, tzinfo=UTC)
HASHED = (1 << 63) + 12345  # an e-mail's key: the top bit set, stored negative


def _row(entry_pk: int, user: str, key: int, ordinal: int = 0) -> KeyRow:
    return (entry_pk, user, PHONE, key_to_db(key), key % 10_000_000, f"+{key}", ordinal)


def _write(db: Database, *rows: KeyRow, seq: int | None = None) -> None:
    """Key rows by the upload path's insert; ``seq``: the log row takes that number."""
    with db.transaction() as s:
        insert_key_rows(s, list(rows))
        if seq is not None:
            top = s.query(func.max(models.BookKeyLog.seq)).scalar()
            s.query(models.BookKeyLog).filter_by(seq=top).update({"seq": seq})


def _entries(db: Database, index: HolderIndex, *keys: int) -> list[int]:
    with db.transaction(readonly=True) as s:
        return index.entries(MatchRepository(s), keys)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 30)), max_size=40), max_size=12),
    st.lists(st.integers(0, 45), max_size=10),
    st.sampled_from([1, 3, 16, 1 << 22]),
    st.booleans(),
)
def test_runs_find_what_a_dict_of_sets_holds(
    batches: list[list[tuple[int, int]]], probes: list[int], cap: int, streamed: bool
) -> None:
    """Whether the batches are added as runs or streamed as a load's slices, and whatever
    the cap on merged runs."""
    runs, reference = KeyRuns(cap), dict[int, set[int]]()
    take, finish = runs.loader()
    for batch in batches:
        keys = np.array([k for k, _ in batch], dtype=np.uint64)
        (take if streamed else runs.add)(keys, np.array([p for _, p in batch], dtype=np.int64))
        for k, p in batch:
            reference.setdefault(k, set()).add(p)
    finish()
    wanted = np.unique(np.array(probes, dtype=np.uint64))
    expected = sorted(set().union(*(reference.get(int(k), set()) for k in wanted)))
    assert runs.find(wanted) == expected
    assert len(runs) == sum(len(b) for b in batches)
    assert runs.runs <= max(1, len(batches))


def test_merges_stop_at_the_cap_and_a_load_sorts_a_cap_at_a_time() -> None:
    cap = 64
    runs = KeyRuns(cap)
    for i in range(1024):
        runs.add(np.array([i], dtype=np.uint64), np.array([i], dtype=np.int64))
    assert max(runs.sizes) <= cap and runs.runs <= 2 * 1024 // cap + 7
    assert runs.find(np.array([0, 63, 64, 1023], dtype=np.uint64)) == [0, 63, 64, 1023]

    loaded = KeyRuns(cap)
    take, finish = loaded.loader()
    for start in range(0, 1000, 10):  # a snapshot in slices of 10 pairs
        take(np.arange(start, start + 10, dtype=np.uint64)[::-1].copy(), np.arange(10) + start)
    assert loaded.runs == 14  # 14 runs of 70 pairs, each sorted once, and 20 pending
    finish()
    assert loaded.sizes == [70] * 14 + [20]
    assert loaded.find(np.array([5, 999], dtype=np.uint64)) == [4, 990]


def test_runs_merge_by_size() -> None:
    runs = KeyRuns()
    for i in range(1, 1025):
        runs.add(np.array([i], dtype=np.uint64), np.array([i], dtype=np.int64))
    assert runs.runs <= 11  # O(log n) runs: one per bit of 1,024 at most
    assert runs.find(np.array([1, 512, 1024], dtype=np.uint64)) == [1, 512, 1024]


def test_entry_ranges_pack_runs_of_consecutive_ids() -> None:
    packed = np.frombuffer(entry_ranges([7, 5, 6, 9, 12, 11, 5]), dtype="<i8")
    assert packed.tolist() == [5, 7, 9, 9, 11, 12]
    assert entry_ranges([]) == b""


def test_tail_sees_new_late_and_other_processes_writes(db: Database) -> None:
    here, there = HolderIndex(), HolderIndex()  # two server processes
    _write(db, _row(11, "a", 8613900000001), _row(12, "a", 8613900000002))
    assert _entries(db, here, 8613900000001, 8613900000003) == [11]
    assert _entries(db, there, 8613900000002) == [12]

    _write(db, _row(21, "b", 8613900000001), _row(21, "b", HASHED, ordinal=1))
    assert _entries(db, here, 8613900000001) == [11, 21]
    assert _entries(db, here, HASHED) == [21]

    # A transaction that took a lower log number commits after a higher one: its row
    # lands inside the replay window, behind the index's position.
    with db.transaction() as s:
        top = s.query(func.max(models.BookKeyLog.seq)).scalar()
    _write(db, _row(31, "c", 8613900000005), seq=top + 10)
    assert _entries(db, there, 8613900000005) == [31]
    _write(db, _row(32, "d", 8613900000005), seq=top + 5)  # the late one
    assert _entries(db, there, 8613900000005) == [31, 32]
    assert _entries(db, here, 8613900000005) == [31, 32]


def test_weak_only_rows_are_not_logged(db: Database) -> None:
    with db.transaction() as s:
        insert_key_rows(s, [(11, "a", PHONE, None, 1234567, "0801234567", 0)])
        assert s.query(func.count()).select_from(models.BookKeyLog).scalar() == 0


def test_lookup_with_nothing_new_reads_no_log_rows(db: Database) -> None:
    index = HolderIndex()
    _write(db, _row(11, "a", 8613900000001))
    for _ in range(2):  # the load, then one re-read of the window behind the snapshot
        assert _entries(db, index, 8613900000001) == [11]
    with statements_run(db.engine) as statements:
        for _ in range(3):
            assert _entries(db, index, 8613900000001) == [11]
    # Per lookup only the log's extent and watermark, at the driver (not recorded here):
    # no log row is read (book_key_log_since), hence no key row (book_keys_in) either.
    assert statements == []


def test_own_commits_are_taken_in_without_reading_their_keys_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index following its process's commits (``Database.on_commit``, as the server's)
    holds their pairs at once and reads no key row back for them; a rolled-back transaction
    leaves nothing, and rows written in a savepoint and another process's commit still come
    by the tail."""
    index = HolderIndex()
    db.on_commit(index.took)
    _write(db, _row(11, "a", 8613900000001))
    for _ in range(2):  # the load, then the re-read of the window behind it
        assert _entries(db, index, 8613900000001) == [11]
    held = len(index)
    read_back: list[list[int]] = []
    real = MatchRepository.book_keys_in

    def spy(repo: MatchRepository, ranges: Any) -> Any:
        read_back.append(ranges.tolist())
        return real(repo, ranges)

    monkeypatch.setattr(MatchRepository, "book_keys_in", spy)
    _write(db, _row(12, "b", 8613900000001), _row(13, "b", HASHED, ordinal=1))
    assert len(index) == held + 2  # taken in at the commit, before any lookup
    assert _entries(db, index, 8613900000001, HASHED) == [11, 12, 13]
    assert read_back == []

    with pytest.raises(_RolledBack), db.transaction() as s:
        insert_key_rows(s, [_row(21, "c", 8613900000002)])
        raise _RolledBack
    assert len(index) == held + 2

    # Rows written in a savepoint are left to the tail: the savepoint could roll back alone.
    with db.transaction() as s:
        with pytest.raises(_RolledBack), s.begin_nested():
            insert_key_rows(s, [_row(22, "c", 8613900000002)])
            raise _RolledBack
        insert_key_rows(s, [_row(23, "c", 8613900000003)])
        with s.begin_nested():
            insert_key_rows(s, [_row(24, "c", 8613900000003, ordinal=1)])
    assert len(index) == held + 3  # 23's pair only
    assert _entries(db, index, 8613900000002, 8613900000003) == [23, 24]
    assert read_back == [[24, 24]]
    read_back.clear()

    other = Database(db.url)  # another process: its commits are not this index's
    try:
        with other.transaction() as s:
            insert_key_rows(s, [_row(31, "d", 8613900000001)])
    finally:
        other.dispose()
    assert _entries(db, index, 8613900000001) == [11, 12, 31]
    assert read_back == [[31, 31]]


class _RolledBack(Exception):
    pass


def test_an_index_behind_the_pruned_log_loads_again(db: Database) -> None:
    behind, current = HolderIndex(), HolderIndex()
    _write(db, _row(11, "a", 8613900000001))
    assert _entries(db, behind, 8613900000001) == [11]
    _write(db, _row(12, "b", 8613900000001))
    assert _entries(db, current, 8613900000001) == [11, 12]
    with db.transaction() as s:  # both log rows are two days old
        s.query(models.BookKeyLog).update({"created_at": T0 - timedelta(days=2)})
    assert retention.prune_book_key_log(db, T0) == 2
    assert retention.prune_book_key_log(db, T0) == 0
    # ``behind`` never read the second row, now pruned: it loads the books again
    assert _entries(db, behind, 8613900000001) == [11, 12]
    _write(db, _row(13, "c", 8613900000001))
    assert _entries(db, current, 8613900000001) == [11, 12, 13]
    assert _entries(db, behind, 8613900000001) == [11, 12, 13]


def test_the_database_confirms_each_candidate(db: Database) -> None:
    index = HolderIndex()
    _write(
        db,
        _row(11, "a", 8613900000001),
        _row(11, "a", 8613900000002, ordinal=1),
        _row(12, "b", 8613900000001),
    )
    assert _entries(db, index, 8613900000001) == [11, 12]
    with db.transaction() as s:
        s.execute(delete(models.EntryKey).where(models.EntryKey.entry_pk == 12))
    with db.transaction(readonly=True) as s:
        repo = MatchRepository(s)
        candidates = index.entries(repo, [8613900000001])
        assert candidates == [11, 12]  # the removed row's entry is still a candidate
        assert repo.holders([8613900000001, 8613900000002], candidates) == [
            ("a", BookKey(11, PHONE, 8613900000001)),
            ("a", BookKey(11, PHONE, 8613900000002)),
        ]
        assert repo.holders([8613900000001], []) == []


def test_a_rolled_back_writers_own_rows_are_not_taken_for_committed(db: Database) -> None:
    """A transaction that logs key rows and looks holders up before it rolls back leaves
    nothing applied: SQLite then hands the same log seq to the next writer, whose keys
    must still be found."""
    index = HolderIndex()
    _write(db, _row(11, "a", 8613900000001))
    assert _entries(db, index, 8613900000001) == [11]

    class RolledBack(Exception):
        pass

    try:
        with db.transaction() as s:
            insert_key_rows(s, [_row(21, "b", 8613900000002)])
            index.entries(MatchRepository(s), [8613900000002])  # ([21] on PostgreSQL)
            raise RolledBack
    except RolledBack:
        pass
    _write(db, _row(31, "c", 8613900000003))  # on SQLite: the rolled-back row's seq
    keys = [8613900000002, 8613900000003]
    found = _entries(db, index, *keys)
    assert 31 in found  # (and 21 on PostgreSQL: a candidate the database turns down)
    with db.transaction(readonly=True) as s:
        assert MatchRepository(s).holders(keys, found) == [("c", BookKey(31, PHONE, 8613900000003))]


def test_warm_leaves_the_first_lookup_one_statement(db: Database) -> None:
    _write(db, _row(11, "a", 8613900000001))
    index = HolderIndex()
    with db.transaction(readonly=True) as s:
        # the snapshot's pair, and the log's again from the window's re-read (harmless)
        assert index.warm(MatchRepository(s)) == 2
    with statements_run(db.engine) as statements:
        assert _entries(db, index, 8613900000001) == [11]
    assert statements == []  # only the extent, at the driver: warm read the window


def test_a_rebuild_drops_removed_keys_while_lookups_and_writes_go_on(db: Database) -> None:
    """``rebuild`` reads the books again without holding lookups up, swaps the new pairs in
    and catches up: a key removed from a book is no candidate any more, and a row written
    while it read is found."""
    index = HolderIndex()
    _write(db, _row(11, "a", 8613900000001), _row(12, "b", 8613900000001))
    _write(db, _row(13, "c", 8613900000002))
    assert _entries(db, index, 8613900000001) == [11, 12]
    assert index.loads == 1
    with db.transaction() as s:  # entry 12 no longer holds the number
        s.execute(delete(models.EntryKey).where(models.EntryKey.entry_pk == 12))
    assert _entries(db, index, 8613900000001) == [11, 12]  # a stale candidate
    seen_meanwhile: list[list[int]] = []

    class Reading(MatchRepository):
        def book_key_snapshot(self, sink: Any) -> int:
            seq = super().book_key_snapshot(sink)
            # another thread's lookup goes on meanwhile, on the pairs held (not blocked)
            with ThreadPoolExecutor(1) as pool:
                lookup = pool.submit(_entries, db, index, 8613900000001)
                seen_meanwhile.append(lookup.result(timeout=30))
            _write(db, _row(14, "d", 8613900000001))  # committed after the snapshot read
            return seq

    with db.transaction(readonly=True) as s:
        rebuilt = index.rebuild(Reading(s))
    assert seen_meanwhile == [[11, 12]]
    assert rebuilt == len(index)
    assert _entries(db, index, 8613900000001) == [11, 14]
    assert _entries(db, index, 8613900000002) == [13]
    assert index.loads == 1  # a rebuild is no load: lookups were never held up


class _Counting(MatchRepository):
    """Counts the reads of every book (``book_key_snapshot``)."""

    reads = 0

    def book_key_snapshot(self, sink: Any) -> int:
        type(self).reads += 1
        return super().book_key_snapshot(sink)


def _counted(db: Database, index: HolderIndex, *keys: int) -> tuple[list[int], int]:
    """The index's entries for ``keys``, and how many times that read every book."""
    _Counting.reads = 0
    with db.transaction(readonly=True) as s:
        return index.entries(_Counting(s), keys), _Counting.reads


def test_processes_share_one_snapshot_of_the_books(db: Database, tmp_path: Path) -> None:
    """With a snapshot store (``--index-dir``) the first process reads the books and stores
    their pairs; the next maps them without reading the books, then catches up by the log."""
    _write(db, _row(11, "a", 8613900000001), _row(12, "b", 8613900000002))
    first = HolderIndex(snapshots=SnapshotStore(tmp_path))
    assert _counted(db, first, 8613900000001) == ([11], 1)
    assert first.mapped == 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("holders-")]) == 1
    _write(db, _row(13, "c", 8613900000001))  # after the snapshot: comes by the log
    second = HolderIndex(snapshots=SnapshotStore(tmp_path))
    assert _counted(db, second, 8613900000001) == ([11, 13], 0)
    assert second.mapped == 1
    assert _counted(db, second, 8613900000002) == ([12], 0)
    assert _counted(db, first, 8613900000001) == ([11, 13], 0)


def test_a_snapshot_the_database_cannot_vouch_for_is_not_used(
    db: Database, other_db: Database, tmp_path: Path
) -> None:
    """A snapshot is used only if the database holds its log row: not another database's,
    nor one whose position the pruning has passed (the log can no longer catch it up)."""
    store = tmp_path / "index"
    _write(db, _row(11, "a", 8613900000001))
    with db.transaction(readonly=True) as s:
        HolderIndex(snapshots=SnapshotStore(store)).warm(MatchRepository(s))
    _write(other_db, _row(21, "x", 8613900000001))
    other = HolderIndex(snapshots=SnapshotStore(store))
    assert _counted(other_db, other, 8613900000001) == ([21], 1)
    assert other.mapped == 0
    # the pruning passes the position of the snapshot of ``other_db`` it stored
    with other_db.transaction() as s:
        s.query(models.BookKeyLog).update({"created_at": T0 - timedelta(days=2)})
    assert retention.prune_book_key_log(other_db, T0) == 1
    _write(other_db, _row(22, "y", 8613900000001))
    late = HolderIndex(snapshots=SnapshotStore(store))
    assert _counted(other_db, late, 8613900000001) == ([21, 22], 1)
    assert late.mapped == 0


def test_a_rebuild_maps_a_snapshot_only_if_fresh(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes' daily rebuilds: the first reads the books (a snapshot older than
    SNAPSHOT_FRESH is not taken for that), the others map what it stored."""
    _write(db, _row(11, "a", 8613900000001), _row(12, "b", 8613900000001))
    a = HolderIndex(snapshots=SnapshotStore(tmp_path))
    b = HolderIndex(snapshots=SnapshotStore(tmp_path))
    assert _counted(db, a, 8613900000001) == ([11, 12], 1)
    assert _counted(db, b, 8613900000001) == ([11, 12], 0)
    with db.transaction() as s:
        s.execute(delete(models.EntryKey).where(models.EntryKey.entry_pk == 12))
    monkeypatch.setattr(holders, "SNAPSHOT_FRESH", timedelta(0))  # a's snapshot is old
    _Counting.reads = 0
    with db.transaction(readonly=True) as s:
        b.rebuild(_Counting(s))
    assert _Counting.reads == 1
    assert _entries(db, b, 8613900000001) == [11]
    monkeypatch.setattr(holders, "SNAPSHOT_FRESH", timedelta(hours=1))
    with db.transaction(readonly=True) as s:
        a.rebuild(_Counting(s))
    assert _Counting.reads == 1  # a mapped b's
    assert (a.mapped, a.loads) == (1, 1)
    assert _entries(db, a, 8613900000001) == [11]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("holders-")]) == 1
