"""Assembling and running the gRPC server: services, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import gc
import importlib
import pkgutil
import signal
from datetime import UTC, timedelta
from types import ModuleType

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import befriend.v1
from befriend.server.api import auth
from befriend.server.api.account import AccountServicer
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.calls import CallLayer
from befriend.server.api.friendship import FriendshipServicer
from befriend.server.api.handlers import service_handler
from befriend.server.api.sync import SyncServicer
from befriend.server.config import Settings
from befriend.server.observability import INDEX_ENTRIES, BindError, log
from befriend.server.services import refresh, retention
from befriend.server.storage.db import Database
from befriend.server.storage.matching import MatchRepository

CHECKPOINT_SECONDS = 0.5  # SQLite: how often the write-ahead log is checkpointed
# How often each process's holder index catches up with book_key_log when no lookup did: far
# below the day the log's rows are kept, so the pruning never passes an idle index.
HOLDER_TAIL_SECONDS = 300.0
GC_THRESHOLDS = (50_000, 20, 20)  # Python's default: (700, 10, 10)


def settle_collector() -> None:
    """Python's collector once the server has started. What it holds by then lives as long
    as the process (modules, schema, handlers: ~124k tracked objects): frozen, they are
    left out of every full collection, which would otherwise walk them all (60-70 ms, an
    event-loop pause). And the youngest generation is collected every 50,000 allocations,
    not 700: a refresh batch or an upload keeps ~10^5 rows alive for a while (named tuples
    stay tracked), which the default promoted into full collections (reduced-scale refresh
    on PostgreSQL: 2.7-2.8 s of the collector in 17-20 s of ``match_users``; with these
    thresholds 0.06 s, and 1.8 ms per user instead of 2.2-2.5). Memory is still freed by
    reference counting; only cycles wait longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _proto_modules() -> list[ModuleType]:
    names = sorted(
        m.name for m in pkgutil.iter_modules(befriend.v1.__path__) if m.name.endswith("_pb2")
    )
    return [importlib.import_module(f"befriend.v1.{name}") for name in names]


def service_names() -> list[str]:
    """Full names of every befriend.v1 service, in proto order."""
    return [
        service.full_name
        for module in _proto_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
    ]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000)),
    ]


class BefriendServer:
    """One server process: ``await start()``, then ``await stop()`` (or ``run()``)."""

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.db = database or Database(settings.database_url)
        self.backend = Backend(
            self.db,
            threads=settings.db_threads,
            idempotency_ttl_hours=settings.idempotency_ttl_hours,
            weak_key_matching=settings.weak_key_matching,
            index_dir=settings.index_dir,
        )
        self.services = service_names()
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.calls = CallLayer(
            self.backend,
            service_token=settings.service_token,
            internal=auth.internal_methods(self.services),
            default_deadline=settings.default_deadline_seconds,
        )
        self.server = aio.server(
            interceptors=[self.calls],
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        servicers: dict[str, object] = {
            "befriend.v1.AccountService": AccountServicer(self.backend),
            "befriend.v1.SyncService": SyncServicer(
                self.backend, daily_key_quota=settings.daily_key_quota
            ),
            "befriend.v1.FriendshipService": FriendshipServicer(self.backend),
        }
        self.server.add_generic_rpc_handlers(
            [service_handler(name, servicers.get(name)) for name in self.services]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.port = 0

    async def start(self) -> int:
        if self.settings.migrate:
            await self.backend.run(self.db.migrate)
        purged = await self.backend.purge_idempotency()
        registry = self.backend.registry
        members = await self.backend.read(lambda s: registry.warm(MatchRepository(s)))
        book_keys = await self.backend.run(self.catch_up_holders)  # (the first: a load)
        INDEX_ENTRIES.labels("registry").set_function(lambda: len(registry))
        INDEX_ENTRIES.labels("holders").set_function(lambda: len(registry.holders))
        settle_collector()
        try:
            self.port = self.server.add_insecure_port(self.settings.address)
        except RuntimeError as exc:  # grpc's "Failed to bind to address …"
            raise BindError("gRPC", self.settings.address) from exc
        if self.port == 0:
            raise BindError("gRPC", self.settings.address)
        await self.server.start()
        self._schedule()
        for name in ["", *self.services]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.started",
            address=f"{self.settings.host}:{self.port}",
            purged=purged,
            registry_keys=members,
            book_keys=book_keys,
            book_keys_mapped=registry.holders.mapped > 0,  # from another process's snapshot
        )
        return self.port

    def _schedule(self) -> None:
        """Resume refresh jobs a previous process left running; schedule the next ones."""
        db, registry = self.db, self.backend.registry
        self.backend.spawn(lambda: refresh.resume_all(db, registry, utcnow))

        def scheduled() -> None:
            now = utcnow()
            job_id = f"scheduled-{now:%Y-%m-%d}"
            if refresh.start(db, job_id, now):  # once per period across workers
                refresh.run(db, registry, job_id, utcnow)

        async def fire() -> None:
            self.backend.spawn(scheduled)

        if self.settings.refresh_cron:
            self.scheduler.add_job(
                fire, CronTrigger.from_crontab(self.settings.refresh_cron, timezone=UTC)
            )
        # The daily pruning runs even when events are kept for good (retention 0): it also
        # prunes book_key_log and expired merge plans, which no setting keeps.
        if self.settings.retention_cron:
            self.scheduler.add_job(
                self._fire_retention,
                CronTrigger.from_crontab(self.settings.retention_cron, timezone=UTC),
            )
        # Every process: its holder index keeps up with the log while idle, so the daily
        # pruning never passes its position (which would make a lookup load it whole).
        self.scheduler.add_job(self._fire_holder_tail, IntervalTrigger(seconds=HOLDER_TAIL_SECONDS))
        if self.settings.holder_rebuild_cron:
            self.scheduler.add_job(
                self._fire_holder_rebuild,
                CronTrigger.from_crontab(self.settings.holder_rebuild_cron, timezone=UTC),
            )
        if self.settings.pending_match_seconds > 0:
            # a quarter of the grace period apart: matched at most 1.25 grace periods late
            self.scheduler.add_job(
                self._fire_pending_matches,
                IntervalTrigger(seconds=self.settings.pending_match_seconds / 4),
            )
        if self.db.is_sqlite:
            self.scheduler.add_job(
                self._fire_checkpoint, IntervalTrigger(seconds=CHECKPOINT_SECONDS)
            )
        if self.scheduler.get_jobs():
            self.scheduler.start()

    def prune_events(self) -> retention.PruneResult:
        """The daily retention job: delete buddy events and contact tombstones older than
        ``event_retention_days`` (0: none), book_key_log rows older than a day and expired
        merge plans (several workers running it at once is harmless)."""
        result = retention.prune_buddy_events(self.db, self.settings.event_retention_days, utcnow())
        log.info("retention.pruned", deleted=result.deleted, pruned_through=result.pruned_through)
        return result

    def rebuild_holders(self) -> int:
        """The daily job of each process: its holder index read again from the books
        (``HolderIndex.rebuild``); returns the pairs held."""
        with self.db.transaction(readonly=True) as s:
            held = self.backend.registry.holders.rebuild(MatchRepository(s))
        log.info("holders.rebuilt", book_keys=held)
        return held

    def catch_up_holders(self) -> int:
        """At start-up and every HOLDER_TAIL_SECONDS: the holder index loads, or reads the
        log rows new since its position (nothing when there are none); returns the pairs
        held."""
        with self.db.transaction(readonly=True) as s:
            return self.backend.registry.holders.warm(MatchRepository(s))

    async def _fire_holder_tail(self) -> None:
        self.backend.spawn(self.catch_up_holders)

    async def _fire_holder_rebuild(self) -> None:
        self.backend.spawn(self.rebuild_holders)

    async def _fire_checkpoint(self) -> None:
        self.backend.spawn(self.db.checkpoint)

    async def _fire_pending_matches(self) -> None:
        grace = timedelta(seconds=self.settings.pending_match_seconds)
        db, registry = self.db, self.backend.registry
        self.backend.spawn(lambda: refresh.match_due_uploads(db, registry, utcnow, grace))

    async def _fire_retention(self) -> None:
        self.backend.spawn(self.prune_events)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period, close."""
        grace = self.settings.grace_seconds if grace is None else grace
        self.calls.draining = True
        await self.health.enter_graceful_shutdown()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.server.stop(grace)
        self.backend.close()
        log.info("server.stopped")

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then shut down gracefully. The handlers go in before
        start-up, so a signal during it stops the server once it has started."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("server.draining", grace_seconds=self.settings.grace_seconds)
        await self.stop()


__all__ = ["BefriendServer", "service_names"]
