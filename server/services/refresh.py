"""Bulk re-matching (seed 001's scheduled refresh, monthly by default).

The whole population is matched at once by the compiled kernel
(``befriend.core.match.bulk_match``: every book against every member key) and compared with
the stored buddy rows; only the users whose rows differ (plus those with answered one-way
requests, whose rows depend on the answer) are re-matched by the rules of an upload's
whole-book match (``matching.match_users``, a batch of users at a time, each read one
statement for the batch), so only what changed is written. A job walks those users in id
order in small batches, one transaction per batch, and records its position after each; a
crashed process leaves the job "running", and the next start resumes it after the last
committed user. The id of a scheduled run is its date ("scheduled-2026-12-01"), so several
workers or replicas firing the same schedule run it once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from befriend.core.index import KeyIndex
from befriend.core.match import bulk_match
from befriend.server.services import matching
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.matching import FULL, JOB_DONE, ONE_WAY, MatchRepository
from befriend.server.storage.pending import PendingMatchRepository

# Users re-matched per transaction (one ``match_users``). Each holds the matching lock until
# it commits, so uploads' matching waits for at most one batch.
BATCH = 50
# Users the pending-match job matches per run (the next run takes the rest).
PENDING_BATCH = 100


def start(db: Database, job_id: str, now: datetime) -> bool:
    with db.transaction() as s:
        repo = MatchRepository(s)
        return repo.create_job(job_id, repo.user_count(), now)


U64 = np.uint64
_LOW = U64(0xFFFFFFFF)


def _sorted_unique(a: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The distinct values of ``a``, ascending (a plain sort: numpy's own ``np.unique``
    hashes, several times slower on tens of millions of integers)."""
    s = np.sort(a)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=np.bool_)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _xor(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Values in exactly one of the sorted, distinct ``a`` and ``b``."""
    s = np.sort(np.concatenate([a, b]))
    alone = np.ones(len(s), dtype=np.bool_)
    same = s[1:] == s[:-1]
    alone[1:] &= ~same
    alone[:-1] &= ~same
    return s[alone]


def changed_users(repo: MatchRepository) -> list[str]:
    """Users whose stored buddy rows differ from a fresh bulk match of everyone: both users
    of a member row (full or one-way) missing, extra or of the other kind, and both users
    of every answered one-way request (phonebook buddies are derived, never stored: they
    cannot drift). All in one snapshot, as arrays: user ``u`` is number ``ids.index(u)``,
    pairs are packed into uint64 codes ``owner << 32 | other``."""
    repo.begin_refresh_scan()
    ids = repo.refresh_user_ids()
    n = len(ids)
    if not n:
        return []
    if n >= 1 << 32:
        raise ValueError("more users than 32-bit numbers")
    id_owner, id_key = repo.refresh_identity_keys()
    members = KeyIndex.from_arrays(id_key, id_owner.astype(U64))
    del id_owner, id_key

    # Every book key, by owner (CSR for the kernel; which of a member's keys names them
    # does not matter here, so the order within a book does not either).
    b_owner, b_key = repo.refresh_book_keys()
    order = np.argsort(b_owner, kind="stable")
    owner, keys = b_owner[order], b_key[order]
    del order, b_owner, b_key
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=indptr[1:])
    del owner
    result = bulk_match(indptr, keys, members)
    del keys, indptr, members
    dirty = np.zeros(n, dtype=np.bool_)

    # Per kind, the codes in exactly one of wanted and stored.
    s_owner, s_other, s_kind = repo.refresh_buddy_rows()
    want = (result.owner.astype(U64) << U64(32)) | result.other.astype(U64)
    want_kind = np.where(result.mutual, FULL, ONE_WAY)
    del result
    have = (s_owner.astype(U64) << U64(32)) | s_other.astype(U64)
    del s_owner, s_other
    for kind in np.union1d([FULL, ONE_WAY], s_kind).tolist():
        codes = _xor(_sorted_unique(want[want_kind == kind]), _sorted_unique(have[s_kind == kind]))
        dirty[(codes >> U64(32)).astype(np.int64)] = True
        dirty[(codes & _LOW).astype(np.int64)] = True
    del want, want_kind, have, s_kind

    out = {ids[i] for i in np.flatnonzero(dirty).tolist()}
    decided = repo.decision_users()
    if decided:
        out |= decided & set(ids)
    return sorted(out)


def run(db: Database, registry: Registry, job_id: str, clock: Callable[[], datetime]) -> int:
    """Run (or resume) a job to the end; returns the users re-matched by this call."""
    with db.transaction(readonly=True) as s:
        todo = changed_users(MatchRepository(s))
    total = 0
    while True:
        with db.transaction() as s:
            repo = MatchRepository(s)
            state, last = repo.job_position(job_id)
            if state == JOB_DONE:
                return total
            users = [u for u in todo if u > last][:BATCH]
            now = clock()
            matching.match_users(repo, registry, users, now, matching.ORIGIN_REFRESH)
            repo.advance_job(job_id, users[-1] if users else last, len(users), now)
            total += len(users)


def resume_all(db: Database, registry: Registry, clock: Callable[[], datetime]) -> list[str]:
    """Finish every job a previous process left running."""
    with db.transaction(readonly=True) as s:
        jobs = MatchRepository(s).running_jobs()
    for job_id in jobs:
        run(db, registry, job_id, clock)
    return jobs


def rematch_users(db: Database, registry: Registry, user_ids: list[str], now: datetime) -> int:
    with db.transaction() as s:
        matching.match_users(MatchRepository(s), registry, user_ids, now, matching.ORIGIN_REFRESH)
    return len(user_ids)


def match_due_uploads(
    db: Database, registry: Registry, clock: Callable[[], datetime], grace: timedelta
) -> int:
    """The pending-match job: match the keys of uploads that stopped before their final
    chunk (a dropped stream, a crashed process, a client that never commits) once their
    oldest pending row is older than ``grace``, one user per transaction. Several processes
    running it at once is harmless: each user's rows are taken by one transaction, and a
    match repeated changes nothing. Returns the users matched."""
    with db.transaction(readonly=True) as s:
        users = PendingMatchRepository(s).due(clock() - grace, PENDING_BATCH)
    for user_id in users:
        with db.transaction() as s:
            matching.match_pending(
                MatchRepository(s), PendingMatchRepository(s), registry, user_id, clock()
            )
    return len(users)
