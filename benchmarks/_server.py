"""A real befriend server in the benchmark's process, on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from befriend.server.app import BefriendServer


@asynccontextmanager
async def served(url: str, **overrides: object) -> AsyncIterator[tuple[BefriendServer, int]]:
    """(server, port) of a server over the database at ``url``; ``overrides`` change its
    settings. Stopped on exit."""
    from befriend.server import config
    from befriend.server.app import BefriendServer
    from befriend.server.storage.db import Database

    settings = config.from_env(
        {},
        **{
            "host": "127.0.0.1",
            "port": 0,
            "database_url": url,
            "metrics_port": -1,
            "service_token": "bench-service-token",
            "grace_seconds": 2.0,
            **overrides,
        },
    )
    server = BefriendServer(settings, Database(url))
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop(grace=1.0)
