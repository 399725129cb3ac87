"""Process entry points behind ``befriend serve`` and ``befriend migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Sequence
from typing import cast

from befriend.server import config
from befriend.server.config import Settings
from befriend.server.observability import BindError, configure_logging, log, start_metrics_server
from befriend.server.storage.db import Database


def _run_one(settings: Settings, worker: int = 0) -> None:
    """Serve in this process; a port that cannot be bound ends it with exit code 1 and one
    ``serve.bind_failed`` log line (no traceback)."""
    configure_logging(settings.log_level, settings.log_format)
    from befriend.server.app import BefriendServer

    async def main() -> None:
        # The grpc.aio server must be created inside the running loop.
        await BefriendServer(settings).run()

    try:
        if settings.metrics_port >= 0:
            port = settings.metrics_port + worker if settings.metrics_port else 0
            bound = start_metrics_server(settings.metrics_host, port)
            log.info("metrics.started", port=bound, worker=worker)
        asyncio.run(main())
    except BindError as exc:
        log.error("serve.bind_failed", listener=exc.what, address=exc.address, worker=worker)
        raise SystemExit(1) from None


def _supervise(settings: Settings) -> int:
    """Run ``settings.workers`` processes on one port (SO_REUSEPORT) and forward SIGTERM and
    SIGINT to them. A worker that exits on its own (a port taken, a crash) stops the rest:
    the server runs with all its workers or not at all. Returns 0 when every worker ended
    cleanly after a forwarded signal (one killed by that signal before it could install its
    handler counts as clean), else 1."""
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
    forwarded: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        forwarded.add(signum)
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)  # type: ignore[arg-type]

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    running = {p.sentinel: p for p in procs}
    while running:
        for ended in multiprocessing.connection.wait(list(running)):
            p = running.pop(cast(int, ended))  # the sentinels given
            p.join()
            clean = p.exitcode == 0 or (forwarded and -(p.exitcode or 0) in forwarded)
            if not clean:
                failed = True
                log.error("serve.worker_failed", worker=p.name, exitcode=p.exitcode)
            if not forwarded:  # a worker ended on its own: stop the others
                failed = True
                forward(signal.SIGTERM, None)
    return 1 if failed else 0


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
