"""Differential property test of the batched whole-book match (SQLite and PostgreSQL).

``matching.match_users(users)`` (the refresh job's batches, the holders of a number that
registers) must write exactly the rows and events of ``match_user`` called for each user in
turn. A random world is built by the operations of ``test_incremental_match_props`` (uploads,
contact edits, registrations, number changes, accepted and blocked requests), then its
stored buddy rows are damaged at random, as drift would leave them: rows deleted, kinds
flipped, the naming key or contact changed, rows added for pairs that had none.
Then, in one transaction:

- in a savepoint, ``match_user`` of each of a random ordered list of users (repeats
  allowed), with the exact or the weak-key registry; the buddies and buddy-event tables are
  snapshotted (every column but the ids) and the savepoint is rolled back;
- ``match_users`` of the same list; the tables and the events returned must be equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from befriend.server.services import matching
from befriend.server.services.matching import ORIGIN_REFRESH
from befriend.server.services.registry import Registry
from befriend.server.storage import models
from befriend.server.storage.bulk import insert_tuples
from befriend.server.storage.db import Database
from befriend.server.storage.matching import BUDDY_COLUMNS, FULL, ONE_WAY, MatchRepository
from tests.service.test_incremental_match_props import (
    HANDLERS,
    T0,
    _snapshot,
    _world,
    database,
    operations,
)

__all__ = ["database"]  # the module-scoped fixture, shared with the restricted-match test

damage = st.lists(
    st.tuples(
        st.sampled_from(["delete", "flip", "rekey", "unname", "add"]),
        st.integers(0, 63),
        st.integers(0, 63),
    ),
    max_size=6,
)


def _damage(w: Any, harm: list[tuple[str, int, int]]) -> None:
    """Drift in the stored rows, which only a whole-book match repairs."""
    b = models.BuddyRow
    with w.db.transaction() as s:
        for how, i, j in harm:
            rows = s.execute(select(b.id, b.owner_id, b.other_id, b.kind).order_by(b.id)).all()
            if how == "add":
                owner, other = w.users[i % len(w.users)], w.users[j % len(w.users)]
                if owner == other or any((o, t) == (owner, other) for _, o, t, _ in rows):
                    continue
                at = w.tick()
                row = (owner, other, FULL if i % 2 else ONE_WAY, 0, 1, None, 1, at, at)
                insert_tuples(s, models.table(b), BUDDY_COLUMNS, [row])
                continue
            if not rows:
                continue
            pk, _, _, kind = rows[i % len(rows)]
            if how == "delete":
                s.execute(delete(b).where(b.id == pk))
            elif how == "flip":
                s.execute(update(b).where(b.id == pk).values(kind=FULL + ONE_WAY - kind))
            elif how == "rekey":
                s.execute(update(b).where(b.id == pk).values(key=j + 1))
            else:
                s.execute(update(b).where(b.id == pk).values(entry_pk=None))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=operations,
    harm=damage,
    picks=st.lists(st.integers(0, 63), min_size=1, max_size=8),
    weak=st.booleans(),
)
def test_batched_match_equals_one_user_at_a_time(
    database: Database,
    ops: list[Any],
    harm: list[tuple[str, int, int]],
    picks: list[int],
    weak: bool,
) -> None:
    with _world(database) as w:
        for op in ops:
            HANDLERS[op[0]](w, op)
        _damage(w, harm)
        users = [w.users[p % len(w.users)] for p in picks]
        now = w.tick()
        registry = Registry(weak=weak)
        with w.db.transaction() as s:
            repo = MatchRepository(s)
            nested = s.begin_nested()
            one_by_one = [
                e
                for u in users
                for e in matching.match_user(repo, registry, u, now, ORIGIN_REFRESH)
            ]
            expected = _snapshot(s)
            nested.rollback()
            batched = matching.match_users(MatchRepository(s), registry, users, now, ORIGIN_REFRESH)
            assert _snapshot(s) == expected
            assert batched == one_by_one


def test_damage_reaches_the_rows(database: Database) -> None:
    """The damage step really changes what is stored, so the property compares repairs."""
    with _world(database) as w:
        with w.db.transaction() as s:
            before = _snapshot(s)
        _damage(w, [("flip", 0, 0), ("add", 0, 3)])
        with w.db.transaction() as s:
            after = _snapshot(s)
        assert after != before
        assert w.now > T0
