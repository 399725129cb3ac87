from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
from typer.testing import CliRunner, Result

from befriend.clients.cli import app

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


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CLI token file with a fake token; no BEFRIEND_* client variables leak in."""
    path = tmp_path / "cfg" / "token"
    path.parent.mkdir()
    path.write_text("tok-cli\n")
    monkeypatch.setenv("BEFRIEND_TOKEN_FILE", str(path))
    for name in ("BEFRIEND_TOKEN", "BEFRIEND_TARGET", "BEFRIEND_DEVICE_ID"):
        monkeypatch.delenv(name, raising=False)
    return path


def run_cli(server: ThreadedServer, *args: str) -> Result:
    """Run the `befriend` CLI in-process against ``server``."""
    return CliRunner().invoke(app, ["--target", server.target, *args])
