"""Bulk re-matching (seed 001's scheduled refresh, monthly by default).

The whole population is matched at once by the compiled kernel
(``befriend.core.match.bulk_match``: every book against every member key) and compared with
the stored buddy rows; only the users whose rows differ (plus those with answered one-way
requests, whose rows depend on the answer) are re-matched, through the same per-user path as
an upload, so only what changed is written. A job walks those users in id order in small
batches, one transaction per batch, and records its position after each; a crashed process
leaves the job "running", and the next start resumes it after the last committed user. The
id of a scheduled run is its date ("scheduled-2026-12-01"), so several workers or replicas
firing the same schedule run it once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import numpy.typing as npt

from befriend.core.index import EMPTY_KEY, KeyIndex
from befriend.core.match import bulk_match
from befriend.server.services import matching
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.matching import FULL, JOB_DONE, ONE_WAY, MatchRepository

BATCH = 200


def start(db: Database, job_id: str, now: datetime) -> bool:
    with db.transaction() as s:
        repo = MatchRepository(s)
        return repo.create_job(job_id, repo.user_count(), now)


def _pairs(owner: npt.NDArray[np.int64], key: npt.NDArray[np.uint64]) -> npt.NDArray[np.void]:
    out = np.empty(len(owner), dtype=[("owner", np.int64), ("key", np.uint64)])
    out["owner"], out["key"] = owner, key
    return np.unique(out)


def changed_users(repo: MatchRepository) -> list[str]:
    """Users whose stored buddy rows differ from a fresh bulk match of everyone."""
    ids = repo.all_user_ids()
    if not ids:
        return []
    index = {u: i for i, u in enumerate(ids)}
    idents = repo.all_identity_keys()
    members = KeyIndex.from_arrays(
        np.fromiter((k for _, k in idents), dtype=np.uint64, count=len(idents)),
        np.fromiter((index[u] for u, _ in idents), dtype=np.uint64, count=len(idents)),
    )
    book = repo.all_book_keys()
    owner = np.fromiter((index[u] for u, _, _ in book), dtype=np.int64, count=len(book))
    entry = np.fromiter((e for _, e, _ in book), dtype=np.int64, count=len(book))
    keys = np.fromiter((k for _, _, k in book), dtype=np.uint64, count=len(book))
    indptr = np.searchsorted(owner, np.arange(len(ids) + 1)).astype(np.int64)
    result = bulk_match(indptr, keys, members)

    # Member edges: code owner << 32 | other, with the kind (1 full, 2 one-way).
    want = (result.owner.astype(np.uint64) << np.uint64(32)) | result.other.astype(np.uint64)
    want_kind = np.where(result.mutual, FULL, ONE_WAY)
    stored = repo.all_buddy_rows()
    member_rows = [(o, t, kind) for o, t, kind, _ in stored if t is not None]
    have = np.fromiter(
        ((index[o] << 32) | index[t] for o, t, _ in member_rows if t is not None),
        dtype=np.uint64,
        count=len(member_rows),
    )
    have_kind = np.fromiter((kind for _, _, kind in member_rows), dtype=np.int64)
    order = np.argsort(have)
    have, have_kind = have[order], have_kind[order]
    dirty_codes = np.setxor1d(want, have, assume_unique=True)
    common, wi, hi = np.intersect1d(want, have, assume_unique=True, return_indices=True)
    dirty_codes = np.concatenate([dirty_codes, common[want_kind[wi] != have_kind[hi]]])
    dirty = set((dirty_codes >> np.uint64(32)).tolist()) | set(
        (dirty_codes & np.uint64(0xFFFFFFFF)).tolist()
    )

    # Phonebook buddies: the first key of each contact none of whose keys is a member's.
    hit = members.lookup(keys) != EMPTY_KEY
    if len(keys):
        starts = np.flatnonzero(np.r_[True, (entry[1:] != entry[:-1]) | (owner[1:] != owner[:-1])])
        lone = np.maximum.reduceat(hit, starts) == 0
        want_pb = _pairs(owner[starts[lone]], keys[starts[lone]])
    else:
        want_pb = _pairs(owner, keys)
    pb_rows = [(index[o], k) for o, t, _, k in stored if t is None]
    have_pb = _pairs(
        np.fromiter((o for o, _ in pb_rows), dtype=np.int64, count=len(pb_rows)),
        np.fromiter((k for _, k in pb_rows), dtype=np.uint64, count=len(pb_rows)),
    )
    dirty.update(np.setxor1d(want_pb, have_pb)["owner"].tolist())
    dirty.update(index[u] for u in repo.decision_users() if u in index)
    return sorted(ids[i] for i in dirty)


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
            for user_id in users:
                matching.match_user(repo, registry, user_id, now, matching.ORIGIN_REFRESH)
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
        repo = MatchRepository(s)
        for user_id in user_ids:
            matching.match_user(repo, registry, user_id, now, matching.ORIGIN_REFRESH)
    return len(user_ids)
