"""The server as a process, driven through the `befriend` CLI: start-up, health, reflection,
metrics, register/whoami, graceful SIGTERM, and --workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from befriend.clients import Client, Unavailable

BEFRIEND = str(Path(sys.executable).parent / "befriend")
SERVICES = {
    "befriend.v1.AccountService",
    "befriend.v1.SyncService",
    "befriend.v1.FriendshipService",
    "befriend.v1.RecommendationService",
    "befriend.v1.InvitationService",
    "befriend.v1.PaymentInsightService",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEFRIEND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int, metrics: int, env: dict[str, str]):
        self.proc, self.port, self.metrics, self.env = proc, port, metrics, env
        self.target = f"127.0.0.1:{port}"


def start(tmp_path: Path, *extra: str) -> Served:
    """``befriend serve`` on free ports, SERVING. A port free_port() released can be taken
    before the server binds it (by another process, or by the server's own ephemeral
    sockets): a server that exits failing to bind is started again on other ports."""
    for attempt in range(3):
        served = _launch(tmp_path, *extra)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if served.proc.poll() is not None:
                err = served.proc.stderr.read()  # type: ignore[union-attr]
                if attempt < 2 and "serve.bind_failed" in err:
                    break
                raise AssertionError(f"server exited {served.proc.returncode}: {err}")
            if cli("health", env=served.env).returncode == 0:
                return served
            time.sleep(0.2)
        else:
            served.proc.kill()
            raise AssertionError("server did not become SERVING within 60 s")
    raise AssertionError("unreachable")


def _launch(tmp_path: Path, *extra: str) -> Served:
    port, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "BEFRIEND_DATABASE_URL": f"sqlite:///{tmp_path / 'befriend.db'}",
        "BEFRIEND_TARGET": f"127.0.0.1:{port}",
        "BEFRIEND_TOKEN_FILE": str(tmp_path / "token"),
        "BEFRIEND_LOG_FORMAT": "json",
    }
    env.pop("BEFRIEND_TOKEN", None)
    proc = subprocess.Popen(
        [BEFRIEND, "serve", "--port", str(port), "--metrics-port", str(metrics), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Served(proc, port, metrics, env)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def test_health_reflection_metrics_and_cli_round_trip(served: Served) -> None:
    health = cli("health", env=served.env)
    assert health.returncode == 0 and "SERVING" in health.stdout

    with grpc.insecure_channel(served.target) as channel:
        names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert names >= SERVICES
    assert "grpc.health.v1.Health" in names

    reg = cli(
        "register",
        "--name",
        "Ann",
        "--phone",
        "+852 9123 4567",
        "--region",
        "HK",
        "--json",
        env=served.env,
    )
    assert reg.returncode == 0, reg.stderr
    assert json.loads(reg.stdout)["phoneNumbers"][0]["e164"] == "+85291234567"
    who = cli("whoami", "--json", env=served.env)
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["displayName"] == "Ann"
    bad = cli("register", "--name", "Bob", "--phone", "not a number", env=served.env)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr

    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'befriend_rpc_total{code="OK",method="/befriend.v1.AccountService/Register"}' in text
    assert "befriend_rpc_duration_seconds_bucket" in text
    assert 'befriend_rpc_errors_total{code="INVALID_ARGUMENT"' in text

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0


def test_sigterm_lets_a_slow_call_finish_and_refuses_new_ones(
    served: Served, tmp_path: Path
) -> None:
    # A slow call, made slow for real: another process holds SQLite's write lock, so the
    # server's Register waits (busy timeout 10 s) until the lock is released.
    locker = sqlite3.connect(tmp_path / "befriend.db", isolation_level=None, timeout=10)
    locker.execute("BEGIN EXCLUSIVE")
    outcome: dict[str, object] = {}

    def slow_register() -> None:
        with Client(served.target, retries=0, timeout=30) as client:
            try:
                outcome["user"] = client.account.register(
                    display_name="Slow", phone_numbers=["+8613900000009"]
                ).user.user_id
            except Exception as exc:
                outcome["error"] = exc

    worker = threading.Thread(target=slow_register)
    worker.start()
    time.sleep(1.0)  # the call is in flight, waiting for the lock
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    with Client(served.target, retries=0, timeout=5) as late, pytest.raises(Unavailable):
        late.health()
    locker.execute("COMMIT")
    locker.close()
    worker.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome.get("user")
    assert served.proc.wait(timeout=30) == 0


def test_workers_share_the_port(tmp_path: Path) -> None:
    # No metrics: worker i's port + i may be taken, and an ephemeral one can be the gRPC
    # port free_port() just released (seen in CI: worker 0 failed to bind it).
    s = start(tmp_path, "--workers", "2", "--metrics-port", "-1")
    try:
        with Client(s.target) as client:
            for i in range(6):
                client.account.register(display_name=f"W{i}", phone_numbers=[f"+861390000100{i}"])
            assert client.health() == "SERVING"
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(timeout=30)
        assert code == 0, s.proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def _serve_on_taken_port(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run ``befriend serve`` with ``args`` while a port is taken, until it exits; ``args``
    name that port as ``{taken}``, the one below it as ``{below}``. Returns the port and the
    process's stderr."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        env = {**os.environ, "BEFRIEND_DATABASE_URL": f"sqlite:///{tmp_path / 'befriend.db'}"}
        proc = subprocess.run(
            [
                BEFRIEND,
                "serve",
                "--log-format",
                "json",
                *(a.format(taken=port, below=port - 1) for a in args),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    return port, proc.stderr


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    port, err = _serve_on_taken_port(tmp_path, "--port", "{taken}", "--metrics-port", "-1")
    assert "Traceback" not in err
    (line,) = [json.loads(x) for x in err.splitlines() if "bind_failed" in x]
    assert (line["listener"], line["address"]) == ("gRPC", f"127.0.0.1:{port}")


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    # worker 1's metrics port (--metrics-port + 1) is taken: the server must not limp on
    _, err = _serve_on_taken_port(
        tmp_path, "--port", str(free_port()), "--metrics-port", "{below}", "--workers", "2"
    )
    failed = [json.loads(line) for line in err.splitlines() if "worker_failed" in line]
    assert [(f["worker"], f["exitcode"]) for f in failed] == [("befriend-worker-1", 1)]
