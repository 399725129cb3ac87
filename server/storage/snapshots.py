"""Files of the holder index's pairs (``befriend.server.services.holders``), so the server
processes of one machine read every book's keys once instead of once each, and share the
result: each process maps the files read-only, and the operating system keeps one copy of
their pages for all of them (16 bytes per stored key: 480 MB at 30M book entries).

A snapshot is a directory ``holders-<seq>-<nonce>`` of sorted runs (``N.keys.npy``,
``N.pks.npy``) and ``manifest.json``: the book_key_log position the pairs are complete up to
(as a load from the database would give it) and the fingerprint of the log row at that
position (its ranges and creation time, SHA-256). A process uses a snapshot only when its
database holds that very row: so never one of another database, nor one whose position the
daily pruning has passed (the log could not bring it up to date), nor one from before a
restore that rewound the log. It then catches up from the position by the log, as after a
load. A snapshot is written to a temporary directory and renamed into place, so a reader
sees it whole or not at all; the writer of a new one deletes the older ones (a process that
mapped them keeps its pages). An exclusive ``flock`` on ``.lock`` makes the processes that
start together wait for the one that reads the books, then map its snapshot.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

FORMAT = 1
_PREFIX = "holders-"

Run = tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]  # sorted keys, their entry pks


def fingerprint(created_at: datetime, entry_ranges: bytes) -> str:
    """The check of a log row: what a snapshot at its seq must find in the database."""
    stamp = created_at.astimezone(UTC).isoformat().encode()
    return hashlib.sha256(stamp + b"\0" + entry_ranges).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    seq: int
    written: datetime
    runs: list[Run]  # mapped read-only


class SnapshotStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (one process at a time checks for and writes a snapshot)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _snapshots(self) -> list[tuple[int, Path]]:
        """(seq, directory) of the snapshots present, newest position first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                seq = path.name.removeprefix(_PREFIX).split("-")[0]
                if path.name.startswith(_PREFIX) and seq.isdigit():
                    found.append((int(seq), path))
        return sorted(found, reverse=True)

    def newest(
        self, check: Callable[[int], str | None], written_after: datetime | None = None
    ) -> Snapshot | None:
        """The snapshot of the highest position whose log row ``check(seq)`` (None: no such
        row) fingerprints as recorded, written after ``written_after`` if given; mapped."""
        for seq, path in self._snapshots():
            try:
                manifest = json.loads((path / "manifest.json").read_text())
                written = datetime.fromisoformat(manifest["written"])
                if manifest["format"] != FORMAT or manifest["seq"] != seq:
                    continue
                if written_after is not None and written <= written_after:
                    continue
                if check(seq) != manifest["check"]:
                    continue
                runs: list[Run] = [
                    (
                        np.load(path / f"{i}.keys.npy", mmap_mode="r"),
                        np.load(path / f"{i}.pks.npy", mmap_mode="r"),
                    )
                    for i in range(manifest["runs"])
                ]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not a snapshot of this format
            if any(k.dtype != np.uint64 or p.dtype != np.int64 for k, p in runs):
                continue
            return Snapshot(seq, written, runs)
        return None

    def write(self, seq: int, check: str, runs: Sequence[Run], now: datetime) -> None:
        """Store ``runs`` as the snapshot at ``seq`` (whose log row fingerprints as
        ``check``); the older snapshots go. Call it holding ``locked``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex[:12]
        tmp = self.directory / f".tmp-{nonce}"
        tmp.mkdir()
        try:
            for i, (keys, pks) in enumerate(runs):
                np.save(tmp / f"{i}.keys.npy", np.ascontiguousarray(keys, dtype=np.uint64))
                np.save(tmp / f"{i}.pks.npy", np.ascontiguousarray(pks, dtype=np.int64))
            manifest = {
                "format": FORMAT,
                "seq": seq,
                "check": check,
                "runs": len(runs),
                "pairs": int(sum(k.size for k, _ in runs)),
                "written": now.astimezone(UTC).isoformat(),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            final = self.directory / f"{_PREFIX}{seq:020d}-{nonce}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, path in self._snapshots():
            if path != final:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".tmp-*"):  # a writer's that crashed (writes are locked)
            shutil.rmtree(path, ignore_errors=True)
