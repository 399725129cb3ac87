"""Bulk re-matching (seed 001's scheduled refresh, monthly by default).

A job walks every user in id order in small batches, one transaction per batch, and
records its position after each; a crashed process leaves the job "running", and the next
start resumes it from the last committed position. Matching writes only what changed. The
job id of the scheduled run is its period ("monthly-2026-11"), so several workers or
replicas firing the same schedule start it once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from befriend.server.services import matching
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.matching import JOB_DONE, MatchRepository

BATCH = 200


def start(db: Database, job_id: str, now: datetime) -> bool:
    with db.transaction() as s:
        repo = MatchRepository(s)
        return repo.create_job(job_id, repo.user_count(), now)


def run(db: Database, registry: Registry, job_id: str, clock: Callable[[], datetime]) -> int:
    """Run (or resume) a job to the end; returns the users re-matched by this call."""
    total = 0
    while True:
        with db.transaction() as s:
            repo = MatchRepository(s)
            state, last = repo.job_position(job_id)
            if state == JOB_DONE:
                return total
            users = repo.users_after(last, BATCH)
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
