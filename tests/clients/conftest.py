from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc.aio
import pytest

from .fakes import Recorder, ThreadedServer, start_server


@dataclass
class AioServer:
    target: str
    recorder: Recorder


@pytest.fixture
async def aio_server() -> AsyncIterator[AioServer]:
    """The fake server on the test's own event loop (for AsyncClient tests)."""
    recorder = Recorder()
    server: grpc.aio.Server
    server, port = await start_server(recorder)
    try:
        yield AioServer(f"127.0.0.1:{port}", recorder)
    finally:
        await server.stop(None)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedServer]:
    """The fake server on a background loop thread (for Client and CLI tests)."""
    with ThreadedServer() as server:
        yield server


@pytest.fixture
def unused_target() -> str:
    """An address nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
