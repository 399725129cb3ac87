"""The `befriend` CLI through typer's CliRunner against the fake server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from typer.testing import CliRunner, Result

from befriend.clients.cli import app, token_file_path

from .fakes import UNKNOWN_SERVICE, ThreadedServer


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "token"
    monkeypatch.setenv("BEFRIEND_TOKEN_FILE", str(path))
    monkeypatch.delenv("BEFRIEND_TOKEN", raising=False)
    monkeypatch.delenv("BEFRIEND_TARGET", raising=False)
    return path


def run(*args: str, target: str | None = None) -> Result:
    env = {"BEFRIEND_TARGET": target} if target else {}
    return CliRunner().invoke(app, list(args), env=env)


def test_health_serving(threaded_server: ThreadedServer, token_file: Path) -> None:
    result = run("health", target=threaded_server.target)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "SERVING"
    result = run("--target", threaded_server.target, "health", "--service", UNKNOWN_SERVICE)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: NOT_FOUND")


@pytest.fixture
def not_serving() -> Iterator[ThreadedServer]:
    with ThreadedServer(health_status=health_pb2.HealthCheckResponse.NOT_SERVING) as server:
        yield server


def test_health_not_serving(not_serving: ThreadedServer, token_file: Path) -> None:
    result = run("health", target=not_serving.target)
    assert result.exit_code == 1
    assert result.stdout.strip() == "NOT_SERVING"
    ok = run("health", "--service", "befriend.v1.AccountService", target=not_serving.target)
    assert ok.exit_code == 0


def test_health_unreachable(unused_target: str, token_file: Path) -> None:
    result = run("--timeout", "1", "health", target=unused_target)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAVAILABLE: ")
    assert f"is a befriend server running at {unused_target}?" in result.stderr
    assert "Traceback" not in result.output


def test_register_saves_token_and_whoami_uses_it(
    threaded_server: ThreadedServer, token_file: Path
) -> None:
    result = run(
        "register", "--name", "Ann", "--phone", "13912345678", "--phone", "+85291234567",
        "--email", "Ann@Example.com", "--region", "CN", "--timezone", "Asia/Shanghai",
        "--device-id", "dev-a",
        target=threaded_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "users/u1" in result.stdout
    assert "+8613912345678" in result.stdout and "+85291234567" in result.stdout
    assert token_file.read_text().strip() == "tok-u1"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file_path() == token_file
    request = threaded_server.recorder.requests("Register")[0]
    assert (request.region_code, request.time_zone) == ("CN", "Asia/Shanghai")
    assert request.device.device_id == "dev-a"

    who = run("whoami", target=threaded_server.target)
    assert who.exit_code == 0, who.output
    assert "users/u1  Ann" in who.stdout
    assert threaded_server.recorder.metadata("GetMe")[0]["authorization"] == "Bearer tok-u1"

    as_json = json.loads(run("whoami", "--json", target=threaded_server.target).stdout)
    assert as_json["name"] == "users/u1"
    assert as_json["phoneNumbers"][0]["e164"] == "+8613912345678"


def test_register_json(threaded_server: ThreadedServer, token_file: Path) -> None:
    result = run(
        "register", "--name", "Bo", "--email", "bo@x.org", "--json",
        target=threaded_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["emailAddresses"][0]["normalized"] == "bo@x.org"


def test_server_error_is_printed_without_traceback(
    threaded_server: ThreadedServer, token_file: Path
) -> None:
    result = run(
        "register", "--name", "Ann", "--phone", "call me", "--phone", "1", "--phone", "x",
        target=threaded_server.target,
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: INVALID_ARGUMENT INVALID_PHONE_NUMBER: invalid phone number",
        "  phone_numbers[0]: 'call me' is not a phone number",
        "  phone_numbers[2]: 'x' is not a phone number",
    ]
    assert not token_file.exists()
    assert isinstance(result.exception, SystemExit)


def test_whoami_token_errors(threaded_server: ThreadedServer, token_file: Path) -> None:
    missing = run("whoami", target=threaded_server.target)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: UNAUTHENTICATED: no token")
    bad = run("--token", "nope", "whoami", target=threaded_server.target)
    assert bad.exit_code == 1
    assert bad.stderr.strip() == (
        "error: UNAUTHENTICATED UNAUTHENTICATED: missing or unknown token"
    )
    assert threaded_server.recorder.metadata("GetMe")[0]["authorization"] == "Bearer nope"


def test_serve_and_migrate_pass_every_argument_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, list[str]]] = []
    fake = types.ModuleType("befriend.server.main")

    def serve_main(argv: list[str]) -> int:
        seen.append(("serve", argv))
        return 0

    def migrate_main(argv: list[str]) -> int:
        seen.append(("migrate", argv))
        return 3

    fake.serve_main = serve_main  # type: ignore[attr-defined]
    fake.migrate_main = migrate_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "befriend.server.main", fake)
    served = run("serve", "--port", "0", "--workers", "2", "--help", "extra")
    migrated = run("migrate", "upgrade", "head", "-x", "y")
    assert served.exit_code == 0, served.output
    assert migrated.exit_code == 3
    assert seen == [
        ("serve", ["--port", "0", "--workers", "2", "--help", "extra"]),
        ("migrate", ["upgrade", "head", "-x", "y"]),
    ]


def test_cli_does_not_import_the_server() -> None:
    code = (
        "import sys, befriend.clients.cli, befriend.clients.sdk\n"
        "assert not [m for m in sys.modules if m.startswith('befriend.server')]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEFRIEND_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
