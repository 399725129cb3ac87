"""Retention of the buddy event log: the daily pruning job, the watermark, and WatchEvents
cursors that fall behind it (SYNC_CURSOR_EXPIRED), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from befriend.clients import FailedPrecondition, errors
from befriend.server.api.backend import utcnow
from befriend.server.app import BefriendServer
from befriend.server.services import retention
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.server.storage.matching import MatchRepository
from befriend.v1 import friendship_pb2
from tests.conftest import RunningServer, serve
from tests.service.conftest import ONE_WAY, People, card, member

pytestmark = pytest.mark.asyncio

ONE_WAY_REQUEST = friendship_pb2.BUDDY_EVENT_TYPE_ONE_WAY_REQUEST
NEW_MATCH = friendship_pb2.BUDDY_EVENT_TYPE_NEW_MATCH


def _events(db: Database) -> list[tuple[int, str, int]]:
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            select(
                models.BuddyEvent.seq, models.BuddyEvent.user_id, models.BuddyEvent.type
            ).order_by(models.BuddyEvent.seq)
        )
        return [(q, u, t) for q, u, t in rows]


def _age_all_events(db: Database, days: int) -> None:
    with db.transaction() as s:
        s.execute(update(models.BuddyEvent).values(created_at=utcnow() - timedelta(days=days)))


def _watermark(db: Database) -> int | None:
    with db.transaction(readonly=True) as s:
        row = s.get(models.FeedWatermark, "buddy_events")
        return None if row is None else row.pruned_through


async def _first(events: AsyncIterator[friendship_pb2.BuddyEvent]) -> friendship_pb2.BuddyEvent:
    try:
        return await asyncio.wait_for(anext(events), 10)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _prune(server: RunningServer) -> retention.PruneResult:
    app = server.server
    assert isinstance(app, BefriendServer)
    return await asyncio.to_thread(app.prune_events)


async def test_old_events_pruned_and_stale_cursor_expires(
    people: People, running_server: RunningServer, db: Database
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(card("Bob", "13900000002"))  # bob: a one-way request
    await a.upload(card("Bob", "13900000002"), card("Carol", "13900000003"))  # carol: one
    old = _events(db)
    assert [(u, t) for _, u, t in old] == [(b.id, ONE_WAY_REQUEST), (c.id, ONE_WAY_REQUEST)]
    _age_all_events(db, 31)  # older than the 30-day default
    await b.upload(card("Alice", "13900000001"))  # fresh: alice and bob become full buddies
    fresh = [e for e in _events(db) if e not in old]
    assert {(u, t) for _, u, t in fresh} == {(a.id, NEW_MATCH), (b.id, NEW_MATCH)}
    assert _watermark(db) is None

    result = await _prune(running_server)
    through = old[-1][0]
    assert result == retention.PruneResult(deleted=2, pruned_through=through)
    assert _events(db) == fresh  # only the old ones went
    assert _watermark(db) == through
    # Again: nothing more to delete, the watermark stays.
    assert await _prune(running_server) == retention.PruneResult(0, through)
    assert _watermark(db) == through

    # A cursor below the watermark may have missed pruned events: SYNC_CURSOR_EXPIRED.
    for stale in ("0", str(old[0][0])):
        with pytest.raises(FailedPrecondition) as err:
            await _first(b.client.friendship.watch_events(cursor=stale))
        assert err.value.reason == "SYNC_CURSOR_EXPIRED"
        assert err.value.metadata["pruned_through"] == str(through)
    # A cursor at the watermark lost nothing: the fresh event streams.
    event = await _first(b.client.friendship.watch_events(cursor=str(through)))
    assert event.type == NEW_MATCH and event.buddy.user == f"users/{a.id}"
    # An empty cursor starts from now on, never before the watermark.
    live = b.client.friendship.watch_events()
    waiting = asyncio.ensure_future(_first(live))
    await asyncio.sleep(0.5)
    await c.upload(card("Bob", "13900000002"))  # carol holds bob: a request to bob
    got = await waiting
    assert got.type == ONE_WAY_REQUEST
    assert got.one_way_request.requester == f"users/{c.id}"
    assert int(got.cursor) > through


async def test_recent_events_kept_and_zero_keeps_everything(
    people: People, running_server: RunningServer, db: Database
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    before = _events(db)
    assert len(before) == 1
    _age_all_events(db, 29)  # within the 30 days
    assert await _prune(running_server) == retention.PruneResult(0, 0)
    assert retention.prune_buddy_events(db, 0, utcnow() + timedelta(days=400)).deleted == 0
    assert _events(db) == before and _watermark(db) is None
    # Nothing pruned: even cursor "0" streams everything.
    event = await _first(b.client.friendship.watch_events(cursor="0"))
    assert event.type == ONE_WAY_REQUEST and event.one_way_request.requester == f"users/{a.id}"
    # A shorter retention (the setting) prunes it.
    assert retention.prune_buddy_events(db, 7, utcnow()) == retention.PruneResult(1, before[0][0])
    # The watermark never moves down.
    assert retention.prune_buddy_events(db, 365, utcnow()).pruned_through == before[0][0]


async def test_retention_job_is_scheduled_daily(db: Database) -> None:
    async with serve(db) as server:
        app = server.server
        assert isinstance(app, BefriendServer)
        jobs = {job.name: job for job in app.scheduler.get_jobs()}
        assert "BefriendServer._fire_retention" in jobs
        trigger = str(jobs["BefriendServer._fire_retention"].trigger)
        assert "hour='4'" in trigger and "minute='30'" in trigger
    # Keeping events for good still prunes the internal logs daily.
    async with serve(db, event_retention_days=0) as server:
        app = server.server
        assert isinstance(app, BefriendServer)
        assert "BefriendServer._fire_retention" in {j.name for j in app.scheduler.get_jobs()}
    async with serve(db, retention_cron="") as server:
        app = server.server
        assert isinstance(app, BefriendServer)
        assert all("retention" not in job.name for job in app.scheduler.get_jobs())


async def test_keeping_events_for_good_still_prunes_the_book_key_log(
    people: People, db: Database
) -> None:
    """Retention 0 keeps every event, but the daily job still prunes the holder indexes'
    log (ids only, read by processes within a day): it would otherwise grow by a row per
    upload chunk for ever."""
    async with serve(db, event_retention_days=0) as server:
        a = await member(people, server, "alice", "13900000001")
        await member(people, server, "bob", "13900000002")
        await a.upload(card("Bob", "13900000002"))
        events = _events(db)
        assert len(events) == 1
        _age_all_events(db, 400)
        with db.transaction() as s:
            logged = s.scalar(select(func.count()).select_from(models.BookKeyLog))
            s.execute(update(models.BookKeyLog).values(created_at=utcnow() - timedelta(days=2)))
        assert logged
        assert await _prune(server) == retention.PruneResult(0, 0)
        assert _events(db) == events
        with db.transaction(readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(models.BookKeyLog)) == 0


async def test_daily_job_removes_expired_merge_plans(
    running_server: RunningServer, db: Database, people: People
) -> None:
    a = await member(people, running_server, "Ann", "+8613900000001")
    await a.upload(card("Bo", "+8613900000002"))
    plan = await a.client.sync.preview_merge("phone")
    await _prune(running_server)
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(models.MergePlanRow)) == 1  # live
    with db.transaction() as s:
        s.execute(update(models.MergePlanRow).values(expires_at=utcnow() - timedelta(minutes=1)))
    await _prune(running_server)
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(models.MergePlanRow)) == 0
        assert s.scalar(select(func.count()).select_from(models.MergePlanItemRow)) == 0
    with pytest.raises(errors.NotFound):
        await a.client.sync.apply_merge(plan.name, plan.etag)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _app(server: RunningServer) -> BefriendServer:
    assert isinstance(server.server, BefriendServer)
    return server.server


async def test_each_process_keeps_its_holder_index_current_and_rebuilds_it(
    people: People, db: Database
) -> None:
    """Two server processes on one database. The idle one's index catches up with the log
    by its periodic job, so the daily pruning of the log does not make its next reverse
    lookup load every book again; its daily rebuild drops the number a book no longer
    holds."""
    async with serve(db) as busy, serve(db) as idle:
        jobs = {job.name: job for job in _app(idle).scheduler.get_jobs()}
        assert str(jobs["BefriendServer._fire_holder_tail"].trigger) == "interval[0:05:00]"
        rebuild = str(jobs["BefriendServer._fire_holder_rebuild"].trigger)
        assert "hour='4'" in rebuild and "minute='0'" in rebuild
        holders = _app(idle).backend.registry.holders
        loads = holders.loads
        a = await member(people, busy, "alice", "13900000001")
        await a.upload(card("Bob", "13900000002"), card("Cy", "13900000003"))
        await asyncio.to_thread(_app(idle).catch_up_holders)  # the periodic job
        with db.transaction() as s:
            s.execute(update(models.BookKeyLog).values(created_at=utcnow() - timedelta(days=2)))
        await _prune(idle)
        with db.transaction(readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(models.BookKeyLog)) == 0
        # Bob registers through the idle process: its reverse lookup finds alice's entry
        # without loading the books again.
        await member(people, idle, "bob", "13900000002")
        assert (await a.kinds()).get(f"users/{people['bob'].id}") == ONE_WAY
        assert holders.loads == loads

        def candidates(number: int) -> list[int]:
            with db.transaction(readonly=True) as s:
                return holders.entries(MatchRepository(s), [number])

        assert len(candidates(8613900000003)) == 1
        await a.upload(card("Bob", "13900000002"))  # Cy's entry is deleted
        assert len(candidates(8613900000003)) == 1  # a stale candidate, until the rebuild
        rebuilds = _sample("befriend_index_loads_total", index="holders", kind="rebuild")
        await asyncio.to_thread(_app(idle).rebuild_holders)
        assert candidates(8613900000003) == []
        assert len(candidates(8613900000002)) == 1
        assert holders.loads == loads
        assert _sample("befriend_index_loads_total", index="holders", kind="rebuild") == (
            rebuilds + 1
        )
        # the gauge follows the last server started in this test process: ``idle``
        assert _sample("befriend_index_entries", index="holders") == len(holders) > 0
    async with serve(db, holder_rebuild_cron="") as server:
        names = {job.name for job in _app(server).scheduler.get_jobs()}
        assert "BefriendServer._fire_holder_rebuild" not in names
        assert "BefriendServer._fire_holder_tail" in names
