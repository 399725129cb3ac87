"""Retention of the buddy event log (WatchEvents).

Events older than the retention period are deleted by a daily job, always as a prefix of
the log: the job finds the newest event created before the cutoff and deletes every event
up to it, then records that position as the feed's watermark (``feed_watermarks``, name
``buddy_events``). A WatchEvents cursor below the watermark may have missed pruned events,
so it fails with FAILED_PRECONDITION / SYNC_CURSOR_EXPIRED and the client starts over
(an empty cursor); a cursor at the watermark or after it lost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from befriend.server.errors import FailedPrecondition
from befriend.server.services import contacts
from befriend.server.storage.contacts import ContactRepository
from befriend.server.storage.db import Database
from befriend.server.storage.merges import MergeRepository
from befriend.server.storage.retention import BOOK_KEY_LOG, BUDDY_EVENTS, RetentionRepository

DEFAULT_RETENTION_DAYS = 30
# book_key_log rows are kept this long: a holder index that has not caught up for longer
# (an idle process) finds the log pruned past its position and reloads (services.holders)
BOOK_KEY_LOG_KEEP = timedelta(days=1)


@dataclass(frozen=True)
class PruneResult:
    deleted: int  # events deleted by this run
    pruned_through: int  # the watermark after the run (0: nothing ever pruned)


def prune_buddy_events(db: Database, retention_days: float, now: datetime) -> PruneResult:
    """Delete buddy events older than ``retention_days`` and raise the watermark.

    Safe to run concurrently from several workers or replicas (the watermark only moves up;
    deleting an already-deleted prefix deletes nothing). ``retention_days`` <= 0 keeps
    everything. Contact tombstones (the contact change feed) and expired merge plans are
    pruned by the same job.
    """
    prune_contact_tombstones(db, retention_days, now)
    prune_book_key_log(db, now)
    with db.transaction() as s:
        MergeRepository(s).purge_plans(now)
    if retention_days <= 0:
        with db.transaction(readonly=True) as s:
            return PruneResult(0, RetentionRepository(s).watermark(BUDDY_EVENTS))
    return _prune_prefix(db, BUDDY_EVENTS, now - timedelta(days=retention_days), now)


def prune_book_key_log(db: Database, now: datetime) -> int:
    """Delete book_key_log rows older than ``BOOK_KEY_LOG_KEEP`` (a prefix) and raise its
    watermark first; returns how many were deleted."""
    return _prune_prefix(db, BOOK_KEY_LOG, now - BOOK_KEY_LOG_KEEP, now).deleted


def _prune_prefix(db: Database, name: str, cutoff: datetime, now: datetime) -> PruneResult:
    """Delete the rows of the log ``name`` up to the newest one created before ``cutoff``,
    after raising its watermark to it: the lock on the watermark row serialises concurrent
    runs."""
    with db.transaction() as s:
        repo = RetentionRepository(s)
        current = repo.watermark(name)
        through = repo.last_before(name, cutoff)
        if through <= current:
            return PruneResult(0, current)
        mark = repo.raise_watermark(name, through, now)
        return PruneResult(repo.delete_through(name, through), mark)


def prune_contact_tombstones(db: Database, retention_days: float, now: datetime) -> int:
    """Delete contact tombstones older than ``retention_days``; contact change-feed cursors
    that could have missed them expire (befriend.server.services.contacts)."""
    with db.transaction() as s:
        return contacts.prune_tombstones(ContactRepository(s), retention_days, now)


def check_cursor(cursor: int, watermark: int) -> None:
    """A cursor below the watermark may have missed pruned events: SYNC_CURSOR_EXPIRED.

    Read the events after the cursor *before* the watermark, so an expiry committed in
    between is always noticed.
    """
    if cursor < watermark:
        raise FailedPrecondition(
            f"cursor {cursor} has expired: buddy events through {watermark} were pruned "
            "(retention); start again with an empty cursor",
            reason="SYNC_CURSOR_EXPIRED",
            metadata={"cursor": str(cursor), "pruned_through": str(watermark)},
        )
