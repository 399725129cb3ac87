"""Snapshot files of the in-memory indexes (``--index-dir``), so the server processes of
one machine read the database once instead of once each, and share the result:

- ``holders``: the reverse index's sorted runs of (book key, entry pk) pairs
  (``befriend.server.services.holders``) as ``N.keys.npy`` / ``N.pks.npy``, mapped read-only
  (16 bytes per stored key: 480 MB at 30M book entries), checked against book_key_log;
- ``registry``: the members' identity keys (``befriend.server.services.registry``) as two
  ``KeyIndex`` snapshot files, mapped copy-on-write, checked against identity_log.

The operating system keeps one copy of the mapped pages for all the processes. A snapshot
is a directory ``<kind>-<seq>-<nonce>`` of those files and ``manifest.json``: the log
position the index is complete up to (as a load from the database would give it) and the
fingerprint of the log row at that position (its creation time and content, SHA-256). A
process uses a snapshot only when its database holds that very row: so never one of another
database, nor one whose position the daily pruning of book_key_log has passed (the log could
not bring it up to date), nor one from before a restore that rewound the log. It then
catches up from the position by the log, as after a load. A snapshot is written to a
temporary directory and renamed into place, so a reader sees it whole or not at all; the
writer of a new one deletes the older ones (a process that mapped them keeps its pages). An
exclusive ``flock`` on ``.<kind>.lock`` makes the processes that start together wait for
the one that reads the database, then map its snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FORMAT = 1

T = TypeVar("T")
Run = tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]  # sorted keys, their entry pks


def fingerprint(created_at: datetime, payload: bytes) -> str:
    """The check of a log row (its creation time and content): what a snapshot at its seq
    must find in the database."""
    stamp = created_at.astimezone(UTC).isoformat().encode()
    return hashlib.sha256(stamp + b"\0" + payload).hexdigest()


class SnapshotStore:
    """Snapshots of one in-memory index (``kind``: "holders", "registry") in ``directory``:
    ``kind-<seq>-<nonce>/`` with the index's files and ``manifest.json``."""

    def __init__(self, directory: str | os.PathLike[str], kind: str = "holders") -> None:
        self.directory = Path(directory)
        self.kind = kind

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (one process at a time checks for and writes a snapshot)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f".{self.kind}.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def snapshots(self) -> list[tuple[int, Path]]:
        """(seq, directory) of the snapshots present, newest position first."""
        found = []
        prefix = f"{self.kind}-"
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                seq = path.name.removeprefix(prefix).split("-")[0]
                if path.name.startswith(prefix) and seq.isdigit():
                    found.append((int(seq), path))
        return sorted(found, reverse=True)

    def newest(
        self,
        check: Callable[[int], str | None],
        open_: Callable[[Path], T],
        written_after: datetime | None = None,
    ) -> tuple[int, T] | None:
        """(seq, ``open_(directory)``) of the snapshot of the highest position whose log row
        ``check(seq)`` (None: no such row) fingerprints as recorded, written after
        ``written_after`` if given. Call it holding ``locked``."""
        for seq, path in self.snapshots():
            try:
                manifest = json.loads((path / "manifest.json").read_text())
                written = datetime.fromisoformat(manifest["written"])
                if manifest["format"] != FORMAT or manifest["seq"] != seq:
                    continue
                if written_after is not None and written <= written_after:
                    continue
                if check(seq) != manifest["check"]:
                    continue
                return seq, open_(path)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a snapshot of this format, or damaged
        return None

    def map_or_read(
        self,
        check: Callable[[int], str | None],
        open_: Callable[[Path], T],
        read: Callable[[], tuple[int, T]],
        save: Callable[[T], Callable[[Path], None]],
        *,
        written_after: datetime | None = None,
        may_store: bool = True,
    ) -> tuple[int, T, bool]:
        """Under the lock: (seq, ``open_(directory)``, True) of the newest usable snapshot
        (``newest``), else (seq, value, False) of ``read()``, which is then stored as the
        snapshot (``save(value)`` fills its directory) if ``may_store`` and the database has
        the log row at ``seq`` to vouch for it."""
        with self.locked():
            found = self.newest(check, open_, written_after)
            if found is not None:
                return found[0], found[1], True
            seq, value = read()
            vouched = check(seq)
            if may_store and vouched is not None:
                self.write(seq, vouched, save(value), datetime.now(UTC))
            return seq, value, False

    def write(self, seq: int, check: str, fill: Callable[[Path], None], now: datetime) -> None:
        """Store the snapshot at ``seq`` (whose log row fingerprints as ``check``): ``fill``
        writes the index's files into the directory it is given. The older snapshots go.
        Call it holding ``locked``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex[:12]
        tmp = self.directory / f".tmp-{self.kind}-{nonce}"
        tmp.mkdir()
        try:
            fill(tmp)
            manifest = {
                "format": FORMAT,
                "seq": seq,
                "check": check,
                "written": now.astimezone(UTC).isoformat(),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            final = self.directory / f"{self.kind}-{seq:020d}-{nonce}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, path in self.snapshots():
            if path != final:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(f".tmp-{self.kind}-*"):  # a writer's that crashed
            shutil.rmtree(path, ignore_errors=True)


def save_runs(runs: Sequence[Run]) -> Callable[[Path], None]:
    """A ``fill`` writing the holder index's runs as ``N.keys.npy`` / ``N.pks.npy``."""

    def fill(path: Path) -> None:
        for i, (keys, pks) in enumerate(runs):
            np.save(path / f"{i}.keys.npy", np.ascontiguousarray(keys, dtype=np.uint64))
            np.save(path / f"{i}.pks.npy", np.ascontiguousarray(pks, dtype=np.int64))

    return fill


def open_runs(path: Path) -> list[Run]:
    """The runs ``save_runs`` wrote, mapped read-only."""
    runs: list[Run] = []
    while (path / f"{len(runs)}.keys.npy").exists():
        i = len(runs)
        keys = np.load(path / f"{i}.keys.npy", mmap_mode="r")
        pks = np.load(path / f"{i}.pks.npy", mmap_mode="r")
        if keys.dtype != np.uint64 or pks.dtype != np.int64 or keys.shape != pks.shape:
            raise ValueError(f"{path}: run {i} is not (uint64 keys, int64 pks)")
        runs.append((keys, pks))
    return runs
