"""Repository of log retention: pruning ``buddy_events`` and ``book_key_log`` as prefixes, and
the feed watermarks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from befriend.server.storage import models

BUDDY_EVENTS = "buddy_events"
BOOK_KEY_LOG = "book_key_log"
# The logs pruned as a prefix, by their feed_watermarks name
_LOGS: dict[str, type[models.BuddyEvent] | type[models.BookKeyLog]] = {
    BUDDY_EVENTS: models.BuddyEvent,
    BOOK_KEY_LOG: models.BookKeyLog,
}


class RetentionRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def watermark(self, name: str) -> int:
        """Highest pruned position of the feed ``name`` (0: nothing pruned yet)."""
        value = self.s.execute(
            select(models.FeedWatermark.pruned_through).where(models.FeedWatermark.name == name)
        ).scalar_one_or_none()
        return int(value or 0)

    def last_before(self, name: str, cutoff: datetime) -> int:
        """The highest seq of a row of the log ``name`` created before ``cutoff`` (0 when
        there is none)."""
        log = _LOGS[name]
        return int(
            self.s.execute(
                select(func.coalesce(func.max(log.seq), 0)).where(log.created_at < cutoff)
            ).scalar_one()
        )

    def delete_through(self, name: str, seq: int) -> int:
        """Delete the rows of the log ``name`` at or below ``seq`` (a prefix of the log)."""
        log = _LOGS[name]
        result = self.s.execute(delete(log).where(log.seq <= seq))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def raise_watermark(self, name: str, pruned_through: int, now: datetime) -> int:
        """Move the watermark of ``name`` up to ``pruned_through`` (never down); return it."""
        row = self.s.get(models.FeedWatermark, name, with_for_update=True)
        if row is None:
            try:
                with self.s.begin_nested():
                    self.s.add(
                        models.FeedWatermark(
                            name=name, pruned_through=pruned_through, updated_at=now
                        )
                    )
                return pruned_through
            except IntegrityError:  # another worker created it first: update theirs
                row = self.s.get_one(
                    models.FeedWatermark, name, with_for_update=True, populate_existing=True
                )
        if pruned_through > row.pruned_through:
            row.pruned_through = pruned_through
            row.updated_at = now
            self.s.flush()
        return int(row.pruned_through)
