"""Process entry points behind ``befriend serve`` and ``befriend migrate``."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence

from befriend.server import config
from befriend.server.config import Settings
from befriend.server.observability import configure_logging, log, start_metrics_server
from befriend.server.storage.db import Database


def _run_one(settings: Settings, worker: int = 0) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_port >= 0:
        port = settings.metrics_port + worker if settings.metrics_port else 0
        bound = start_metrics_server(settings.metrics_host, port)
        log.info("metrics.started", port=bound, worker=worker)
    from befriend.server.app import BefriendServer

    async def main() -> None:
        # The grpc.aio server must be created inside the running loop.
        await BefriendServer(settings).run()

    asyncio.run(main())


def _supervise(settings: Settings) -> int:
    """Run ``settings.workers`` processes on one port (SO_REUSEPORT); forward SIGTERM."""
    if settings.port == 0:
        log.error("serve.workers_need_fixed_port")
        return 2
    if settings.migrate:
        Database(settings.database_url).migrate()
    child_settings = config.replace(settings, migrate=False, workers=1)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_run_one, args=(child_settings, i), name=f"befriend-worker-{i}")
        for i in range(settings.workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)


def serve_main(argv: Sequence[str]) -> int:
    try:
        settings = config.from_args(argv)
    except ValueError as exc:
        print(f"befriend serve: {exc}", file=sys.stderr)
        return 2
    if settings.workers < 1:
        print("befriend serve: --workers must be >= 1", file=sys.stderr)
        return 2
    if settings.workers > 1:
        configure_logging(settings.log_level, settings.log_format)
        return _supervise(settings)
    _run_one(settings)
    return 0


def migrate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="befriend migrate", description="apply migrations")
    parser.add_argument("--database-url", help="default: BEFRIEND_DATABASE_URL or ./var")
    ns = parser.parse_args(list(argv))
    settings = config.from_env()
    url = ns.database_url or settings.database_url
    Database(url).migrate()
    print(f"migrated {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main(sys.argv[1:]))
