"""The in-memory registry of members' identity keys: a cache of the identities table.

It is loaded from the database on first use and kept current by tailing the ordered
identity log, so every process (and replica) answers the same and losing one loses nothing.
Hits are always confirmed against the database by the caller, so a stale entry can cost a
lookup but never a wrong match. The tail re-reads a window behind its position, which covers
transactions that commit out of sequence order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

from befriend.core.index import EMPTY_KEY, KeyIndex
from befriend.server.observability import INDEX_LOADS, PHONEBOOK_LISTS
from befriend.server.records import WEAK_DIGITS
from befriend.server.services.holders import HolderIndex
from befriend.server.storage.matching import BookKey, MatchRepository
from befriend.server.storage.repositories import IDENTITY_ADDED, IDENTITY_REMOVED
from befriend.server.storage.snapshots import SnapshotStore

REPLAY_WINDOW = 1000
PHONE_KEY_LIMIT = np.uint64(1 << 50)  # phone keys are E.164 digits; hashed ids are >= 2**63
# Derived phonebook lists kept (``Registry.phonebook``), counted in entries (152 bytes each:
# ~73 MiB at most; a 10,000-contact book has ~6,500).
PHONEBOOK_BUDGET = 500_000

_State = tuple[int, int]  # (the user's change number, the registry's version)
# A load maps a registry snapshot at most this old; an older one is read again from the
# identities (and stored anew), so the log a mapped snapshot replays stays short.
SNAPSHOT_MAX_AGE = timedelta(days=1)


def _open_indexes(path: Path) -> tuple[KeyIndex, KeyIndex]:
    """The two KeyIndex files of a registry snapshot, mapped copy-on-write."""
    return KeyIndex.load(path / "by_key.idx", mmap=True), KeyIndex.load(
        path / "by_pk.idx", mmap=True
    )


def _save_indexes(indexes: tuple[KeyIndex, KeyIndex]) -> Callable[[Path], None]:
    """A snapshot's ``fill``: the registry's two KeyIndex files."""

    def fill(path: Path) -> None:
        indexes[0].save(path / "by_key.idx")
        indexes[1].save(path / "by_pk.idx")

    return fill


class Registry:
    def __init__(self, *, weak: bool = False, index_dir: str = "") -> None:
        self.weak = weak  # also match unnormalisable numbers by their weak key
        # snapshots shared with the machine's other processes (--index-dir)
        self._snapshots = SnapshotStore(index_dir, "registry") if index_dir else None
        self.mapped = 0  # loads that mapped a snapshot instead of reading the identities
        # book key -> the entries holding it (reverse index)
        self.holders = HolderIndex(
            snapshots=SnapshotStore(index_dir, "holders") if index_dir else None
        )
        self._by_key = KeyIndex()  # identity key -> identity pk
        self._by_pk = KeyIndex()  # identity pk -> identity key (to apply removals)
        self._seq = -1
        self._window = (-1, -1)  # (entries, last seq) of the replay window as applied
        self._lock = threading.Lock()
        self._version = 0  # bumped on every change
        self._weak = KeyIndex()  # weak suffix -> identity pk, for unambiguous suffixes only
        self._weak_version = -1
        # user -> (the state it was derived in, the phonebook list); least recently used out
        self._phonebooks: LRUCache[str, tuple[_State, tuple[BookKey, ...]]] = LRUCache(
            PHONEBOOK_BUDGET, getsizeof=lambda item: 1 + len(item[1])
        )

    def _load(self, repo: MatchRepository) -> bool:
        """Load the identities: from the machine's snapshot of this database written within
        SNAPSHOT_MAX_AGE (``--index-dir``; returns True), else from the database (then
        stored as the snapshot, unless this transaction changed identities itself)."""

        def read() -> tuple[int, tuple[KeyIndex, KeyIndex]]:
            seq, pks, keys = repo.identity_snapshot()
            return seq, (KeyIndex.from_arrays(keys, pks), KeyIndex.from_arrays(pks, keys))

        store = self._snapshots
        if store is None:
            (seq, (self._by_key, self._by_pk)), mapped = read(), False
        else:
            seq, (self._by_key, self._by_pk), mapped = store.map_or_read(
                repo.identity_log_check,
                _open_indexes,
                read,
                _save_indexes,
                written_after=datetime.now(UTC) - SNAPSHOT_MAX_AGE,
                may_store=not repo.wrote_identity_log(),
            )
        self.mapped += mapped
        self._seq = seq
        self._window = (-1, -1)  # unknown: the first tail re-reads the window
        self._version += 1
        INDEX_LOADS.labels("registry", "load").inc()
        return mapped

    def _low(self) -> int:
        return max(0, self._seq - REPLAY_WINDOW)

    def _tail(self, repo: MatchRepository) -> None:
        # The window behind the position is re-read only when its extent (entry count,
        # last seq) differs from what was applied: a late commit inside it, or new entries.
        if repo.identity_log_extent(self._low()) == self._window:
            return
        seqs: list[int] = []
        for seq, pk, op, key in repo.identity_log_since(self._low()):
            seqs.append(seq)
            if op == IDENTITY_ADDED and key is not None:
                self._by_key.insert(key, pk)
                self._by_pk.insert(pk, key)
            elif op == IDENTITY_REMOVED:
                old = self._by_pk.get(pk)
                if old is not None:
                    if self._by_key.get(old) == pk:
                        self._by_key.delete(old)
                    self._by_pk.delete(pk)
            self._seq = max(self._seq, seq)
        self._version += 1
        applied = [q for q in seqs if q > self._low()]
        self._window = (len(applied), max(applied, default=0))

    def _catch_up(self, repo: MatchRepository) -> None:
        # identities read from the database are complete for this transaction; a mapped
        # snapshot's only up to its position, so the log since comes in at once
        if self._seq >= 0 or self._load(repo):
            self._tail(repo)
        if repo.wrote_identity_log():
            # What this took in includes the caller's own identity changes (its matching
            # needs them, e.g. a holder's re-match sees a changed number). Rolled back, they
            # would stay: an identity it removed missing, or, on SQLite, whose rolled-back
            # log seq is handed out again, the next writer's entry looking applied. So the
            # registry loads again after such a rollback.
            repo.on_rollback(self._forget)

    def _forget(self) -> None:
        with self._lock:
            self._seq = -1
            self._version += 1

    def warm(self, repo: MatchRepository) -> int:
        """Load (or catch up) now, e.g. at start-up, rather than in the first request."""
        with self._lock:
            self._catch_up(repo)
            return len(self._by_key)

    def version(self, repo: MatchRepository) -> int:
        """After catching up: a number that moves whenever membership may have changed."""
        with self._lock:
            self._catch_up(repo)
            return self._version

    def phonebook(
        self, repo: MatchRepository, user_id: str, derive: Callable[[], Sequence[BookKey]]
    ) -> tuple[BookKey, ...]:
        """The user's phonebook list, ``derive()``, as last derived in the same state: the
        user's change number (every change to a user's books takes one, ``ChangeStamp``)
        and this registry's version. So paging through thousands of phonebook buddies reads
        and looks up the books once, not once per page. The state is read first: a list
        derived from newer books or membership than its state can be served to a reader of
        that state, never an older one."""
        state = (repo.change_seq(user_id), self.version(repo))
        with self._lock:
            kept = self._phonebooks.get(user_id)
        if kept is not None and kept[0] == state:
            PHONEBOOK_LISTS.labels("kept").inc()
            return kept[1]
        PHONEBOOK_LISTS.labels("derived").inc()
        derived = tuple(derive())
        if len(derived) < PHONEBOOK_BUDGET:
            with self._lock:
                self._phonebooks[user_id] = (state, derived)
        return derived

    def lookup(self, repo: MatchRepository, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        """Identity pk for each key (EMPTY_KEY where no member holds it), after catching up."""
        with self._lock:
            self._catch_up(repo)
            return self._by_key.lookup(keys, missing=EMPTY_KEY)

    def lookup_weak(
        self, repo: MatchRepository, weak_keys: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.uint64]:
        """Identity pk of the one member phone number ending in each weak key (the rightmost
        WEAK_DIGITS digits); EMPTY_KEY where none does, or where several do (ambiguous)."""
        with self._lock:
            self._catch_up(repo)
            if self._weak_version != self._version:
                pks, keys = self._by_pk.to_arrays()
                phones = keys < PHONE_KEY_LIMIT
                pks, weak = pks[phones], keys[phones] % np.uint64(10**WEAK_DIGITS)
                unique, first, counts = np.unique(weak, return_index=True, return_counts=True)
                alone = counts == 1
                self._weak = KeyIndex.from_arrays(unique[alone], pks[first[alone]])
                self._weak_version = self._version
            return self._weak.lookup(weak_keys, missing=EMPTY_KEY)

    def __len__(self) -> int:
        return len(self._by_key)
