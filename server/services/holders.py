"""Who holds a key in a book: the reverse index, in memory (a cache of entry_keys).

A member who registers, or changes to a number, is matched against every book that holds
one of their keys. Those entries used to be found through a database index over every
book's keys, which every uploaded key went into at a random place: once the books hold
millions of entries, that index alone made SQLite write a page to its log for nearly every
key (migration 0013). Here the pairs (key, entry pk) are held as sorted numpy runs in each
server process instead, loaded from entry_keys on first use (or at start-up, ``warm``) and
kept current by tailing book_key_log, which every insert of key rows appends to in the same
transaction (``befriend.server.storage.addressbooks.insert_key_rows``). The pairs this
process commits itself are taken in at the commit (``took``, a ``Database.on_commit``
listener the server's Backend registers), so the tail reads only other processes' keys.

The index answers with candidate entries, a superset of the holding ones: a key removed from
a book stays here until the daily rebuild (``rebuild``) or a restart, so every answer is
confirmed against entry_keys by primary key (``MatchRepository.holders``), which also gives
the holder, kind and order. A candidate never missed is what the tail guarantees: like the
registry's, it re-reads a window behind its position, which covers transactions that commit
out of sequence order, and applies each log row once. It never applies the caller's own
uncommitted rows (SQLite would hand their seqs out again after a rollback); their keys are
the caller's books, which its own match does not look up, and come by the log after the
commit.

Memory: 16 bytes per stored exact key (480 MB for 30M book entries), plus the runs'
merge, which copies the two runs it merges. Runs are merged by size (a new run is merged
into the one before while that one is at most twice as large) up to RUN_CAP pairs, so a
lookup searches O(n / RUN_CAP + log RUN_CAP) runs, every pair is copied O(log RUN_CAP)
times in all, and neither a merge nor a load (sorted a slice at a time) needs more than a
few RUN_CAPs' worth of memory beyond the index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from befriend.server.observability import INDEX_LOADS
from befriend.server.storage.addressbooks import written_book_keys
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.snapshots import Run, SnapshotStore, open_runs, save_runs

REPLAY_WINDOW = 1000  # log rows re-read behind the position (late commits)
# A rebuild maps a snapshot written this recently (another process's rebuild of the day)
# rather than reading the books again; a load maps any that belongs to the database.
SNAPSHOT_FRESH = timedelta(hours=1)
RUN_CAP = 1 << 22  # pairs in a run made by merging (64 MiB); see KeyRuns


def _sorted_run(keys: npt.NDArray[np.uint64], pks: npt.NDArray[np.int64]) -> Run:
    # stable: numpy's timsort, linear on two concatenated sorted runs (a merge)
    order = np.argsort(keys, kind="stable")
    return keys[order], pks[order]


class KeyRuns:
    """A multimap key -> entry pks as sorted runs of (key, pk) pairs: ``add`` appends a run
    and merges runs by size, ``find`` searches each run.

    No merge makes a run of more than ``cap`` pairs (a run added larger stays as it is). So
    a merge never copies more than that, its memory and time (under the index's lock) are
    bounded however large the index, and a load can sort one cap's worth at a time
    (``loader``): 30M pairs make 7-8 runs, and a lookup's binary searches in them cost
    microseconds."""

    def __init__(self, cap: int = RUN_CAP) -> None:
        self._runs: list[Run] = []
        self._cap = cap

    def add(self, keys: npt.NDArray[np.uint64], pks: npt.NDArray[np.int64]) -> None:
        if not keys.size:
            return
        runs = [*self._runs, _sorted_run(keys, pks)]
        while (
            len(runs) > 1
            and runs[-2][0].size <= 2 * runs[-1][0].size
            and runs[-2][0].size + runs[-1][0].size <= self._cap
        ):
            (k2, p2), (k1, p1) = runs.pop(), runs.pop()
            runs.append(_sorted_run(np.concatenate([k1, k2]), np.concatenate([p1, p2])))
        self._runs = runs  # a new list: a reader searching the old one is undisturbed

    @classmethod
    def of(cls, runs: Sequence[Run], cap: int = RUN_CAP) -> KeyRuns:
        """Runs sorted already (a snapshot's, ``befriend.server.storage.snapshots``), held
        as they are: mapped files stay mapped until a merge copies one."""
        made = cls(cap)
        made._runs = list(runs)
        return made

    def arrays(self) -> list[Run]:
        """The runs, oldest first (for a snapshot)."""
        return list(self._runs)

    def loader(
        self,
    ) -> tuple[Callable[[npt.NDArray[np.uint64], npt.NDArray[np.int64]], None], Callable[[], None]]:
        """(take, finish) for a load streamed in slices: ``take`` collects pairs and adds
        them as one run whenever ``cap`` are pending, ``finish`` adds the rest. So a load
        holds only the runs so far and one cap's worth of pairs being sorted, not the whole
        snapshot, its concatenation and the sort's permutation at once."""
        pending: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]] = []
        held = 0

        def finish() -> None:
            nonlocal held
            if pending:
                keys = np.concatenate([k for k, _ in pending])
                pks = np.concatenate([p for _, p in pending])
                pending.clear()
                held = 0
                self.add(keys, pks)

        def take(keys: npt.NDArray[np.uint64], pks: npt.NDArray[np.int64]) -> None:
            nonlocal held
            pending.append((keys, pks))
            held += keys.size
            if held >= self._cap:
                finish()

        return take, finish

    def find(self, keys: npt.NDArray[np.uint64]) -> list[int]:
        """The distinct pks paired with one of ``keys`` (distinct, sorted), ascending."""
        found: list[npt.NDArray[np.int64]] = []
        for run_keys, run_pks in self._runs:
            lo = np.searchsorted(run_keys, keys, "left")
            counts = np.searchsorted(run_keys, keys, "right") - lo
            total = int(counts.sum())
            if total:
                # each hit range [lo, lo + count) as one index array
                starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
                found.append(run_pks[starts + np.arange(total)])
        return np.unique(np.concatenate(found)).tolist() if found else []

    @property
    def runs(self) -> int:
        return len(self._runs)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + p.nbytes for k, p in self._runs)

    @property
    def sizes(self) -> list[int]:
        """Pairs per run, oldest first."""
        return [k.size for k, _ in self._runs]

    def __len__(self) -> int:
        return sum(k.size for k, _ in self._runs)


class HolderIndex:
    def __init__(self, *, cap: int = RUN_CAP, snapshots: SnapshotStore | None = None) -> None:
        self._cap = cap  # pairs in a merged run (KeyRuns)
        self._snapshots = snapshots  # shared with the machine's other processes (--index-dir)
        self._pairs = KeyRuns(cap)
        self._seq = -1  # the log position applied up to (-1: not loaded)
        self._applied: set[int] = set()  # log rows applied within the replay window
        self._window = (-1, -1)  # (rows, last seq) after the window's low end, as applied
        self._lock = threading.Lock()
        self._rebuilding = threading.Lock()
        self.loads = 0  # whole loads under the lock: the first, and one per fall behind the log
        self.mapped = 0  # reads that mapped a snapshot instead of reading the books

    def _read_books(self, repo: MatchRepository) -> tuple[KeyRuns, int]:
        """Every book's pairs, and the log position they are complete up to."""
        pairs = KeyRuns(self._cap)
        take, finish = pairs.loader()
        seq = repo.book_key_snapshot(take)
        finish()
        floor = repo.own_book_key_log_floor()
        return pairs, seq if floor is None else min(seq, floor)

    def _read(self, repo: MatchRepository, *, fresh: bool = False) -> tuple[KeyRuns, int, bool]:
        """Every book's pairs, their log position, and whether they were mapped: from the
        machine's newest snapshot of this database, if any (``fresh``: written within
        SNAPSHOT_FRESH, as a rebuild wants), else from the books, then stored as the
        snapshot for the other processes (not when the position is this transaction's own
        uncommitted log row)."""
        store = self._snapshots
        if store is None:
            return *self._read_books(repo), False

        def read() -> tuple[int, list[Run]]:
            pairs, seq = self._read_books(repo)
            return seq, pairs.arrays()

        seq, runs, mapped = store.map_or_read(
            repo.book_key_log_check,
            open_runs,
            read,
            save_runs,
            written_after=datetime.now(UTC) - SNAPSHOT_FRESH if fresh else None,
            may_store=repo.own_book_key_log_floor() is None,
        )
        self.mapped += mapped
        return KeyRuns.of(runs, self._cap), seq, mapped

    def _install(self, pairs: KeyRuns, seq: int) -> None:
        self._pairs = pairs
        self._seq = seq
        self._applied = set()
        self._window = (-1, -1)  # unknown: the first tail re-reads the window

    def _load(self, repo: MatchRepository) -> None:
        self._pairs = KeyRuns(self._cap)  # the old one's memory goes before the load
        pairs, seq, mapped = self._read(repo)
        self._install(pairs, seq)
        self.loads += 1
        INDEX_LOADS.labels("holders", "load").inc()
        if mapped:
            # pairs read from the books in this transaction are complete for it; a mapped
            # snapshot's only up to its position, so the log since comes in now
            self._tail(repo)

    def _low(self) -> int:
        return max(0, self._seq - REPLAY_WINDOW)

    def _catch_up(self, repo: MatchRepository) -> None:
        if self._seq >= 0:
            n, top, pruned_through = repo.book_key_log_extent(self._low())
            # The daily retention job prunes the log's old rows: an index whose position is
            # below them may have missed some, and loads again (blocking lookups). The
            # server's periodic catch-up (HOLDER_TAIL_SECONDS) keeps an idle process above.
            if pruned_through <= self._seq:
                if (n, top) != self._window:
                    self._tail(repo)
                return
        self._load(repo)

    def _tail(self, repo: MatchRepository) -> None:
        # Rows the caller's own transaction wrote are left for after its commit: read now and
        # rolled back, their seqs would look applied when SQLite hands them out again.
        floor = repo.own_book_key_log_floor()
        fresh = [
            (q, r)
            for q, r in repo.book_key_log_since(self._low())
            if q not in self._applied and (floor is None or q <= floor)
        ]
        if fresh:
            ranges = np.frombuffer(b"".join(r for _, r in fresh), dtype="<i8").astype(np.int64)
            self._pairs.add(*repo.book_keys_in(ranges))
            self._applied.update(q for q, _ in fresh)
            self._seq = max(self._seq, max(q for q, _ in fresh))
        low = self._low()
        self._applied = {q for q in self._applied if q > low}
        self._window = (len(self._applied), max(self._applied, default=0))

    def took(self, info: Mapping[str, Any]) -> None:
        """A commit listener (``Database.on_commit``): take in the pairs a transaction of
        this process wrote and committed, and mark their log rows applied, so the tail does
        not read those keys back (for a 10,000-contact upload's final match: 38 ms on
        PostgreSQL). Not loaded yet: the load will read them."""
        written = written_book_keys(info)
        if not written:
            return
        with self._lock:
            if self._seq < 0:
                return
            fresh = [w for w in written if w[0] not in self._applied]
            if not fresh:
                return
            self._pairs.add(
                np.concatenate([keys for _, keys, _ in fresh]),
                np.concatenate([pks for _, _, pks in fresh]),
            )
            # the next catch-up sees more log rows than its window held and reads the log's
            # rows since the window's low end (ranges, not keys), to find any others
            self._applied.update(q for q, _, _ in fresh)
            self._seq = max(self._seq, max(q for q, _, _ in fresh))

    def warm(self, repo: MatchRepository) -> int:
        """Load (or catch up) now, e.g. at start-up; returns the pairs held. A load is
        followed by the re-read of the window behind it (up to REPLAY_WINDOW log rows and
        their keys), so the first request pays for neither."""
        with self._lock:
            self._catch_up(repo)
            self._catch_up(repo)
            return len(self)

    def rebuild(self, repo: MatchRepository) -> int:
        """Read every book's pairs again while lookups go on with the pairs held, then swap
        the new ones in and catch up; returns the pairs held. The daily job of every server
        process (``--holder-rebuild-cron``): it drops the pairs of keys removed from books
        since the last load, which would otherwise stay until a restart, and re-packs the
        runs. Memory: the old pairs and the new ones, until the swap."""
        with self._rebuilding:  # one rebuild at a time; lookups are not held up
            pairs, seq, _ = self._read(repo, fresh=True)
            INDEX_LOADS.labels("holders", "rebuild").inc()
            with self._lock:
                # The pairs ``took`` added meanwhile are in the log: the catch-up after the
                # swap reads them again from the snapshot's position (and its window).
                self._install(pairs, seq)
                self._catch_up(repo)
                return len(self)

    def entries(self, repo: MatchRepository, keys: Iterable[int]) -> list[int]:
        """After catching up: the entry pks (ascending, distinct) that held one of ``keys``
        when written, a superset of those holding one now."""
        wanted = np.unique(np.fromiter(keys, dtype=np.uint64))
        with self._lock:
            self._catch_up(repo)
            pairs = self._pairs
        return pairs.find(wanted) if wanted.size else []

    def __len__(self) -> int:
        return len(self._pairs)
