"""Repository of pending matches: keys an upload stored and has not matched yet."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from befriend.server.storage import models

_P = models.PendingMatch


class PendingMatchRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, user_id: str, keys: Collection[int], now: datetime) -> None:
        """Record that the user's books changed and ``keys`` (unsigned 64-bit; none for a
        change of weak keys only) are not matched yet."""
        packed = np.fromiter(keys, dtype="<u8", count=len(keys)).tobytes()
        self.s.execute(insert(_P).values(user_id=user_id, keys=packed, created_at=now))

    def take(self, user_id: str) -> set[int] | None:
        """Remove and return the user's pending keys; None when nothing was pending."""
        rows = self.s.execute(delete(_P).where(_P.user_id == user_id).returning(_P.keys))
        blobs = [blob for (blob,) in rows]
        if not blobs:
            return None
        return set(np.frombuffer(b"".join(blobs), dtype="<u8").tolist())

    def due(self, before: datetime, limit: int) -> list[str]:
        """Users whose oldest pending row was written before ``before``, oldest first."""
        oldest = func.min(_P.created_at)
        rows = self.s.execute(
            select(_P.user_id)
            .group_by(_P.user_id)
            .having(oldest < before)
            .order_by(oldest)
            .limit(limit)
        )
        return [user for (user,) in rows]
