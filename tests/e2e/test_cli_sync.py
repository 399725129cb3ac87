"""`befriend sync` against a real `befriend serve` process: two full buddies, the merge plan
table, a declined and an applied merge, and `befriend sync undo`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli_contacts import Member
from .test_serve import BEFRIEND, Served, cli, start

A_PHONE, B_PHONE = "+8613900000301", "+8613900000302"
ANN_CARD = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann\r\nTEL:13900000301\r\nEND:VCARD\r\n"
BOB_CARD = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bobby\r\nTEL:13900000302\r\nEND:VCARD\r\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start(tmp_path / "served")
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _sync(m: Member, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEFRIEND, "sync", *args],
        env=m.env,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sync_preview_apply_undo(served: Served, tmp_path: Path) -> None:
    a, b = Member(served, tmp_path / "a"), Member(served, tmp_path / "b")
    a.register("Ann", A_PHONE)
    b.register("Bob Li", B_PHONE)
    (tmp_path / "a.vcf").write_bytes(BOB_CARD)
    (tmp_path / "b.vcf").write_bytes(ANN_CARD)
    a.run("contacts", "import", str(tmp_path / "a.vcf"))
    b.run("contacts", "import", str(tmp_path / "b.vcf"))

    declined = _sync(a, answer="n\n")
    assert declined.returncode == 1, declined.stderr
    assert "Traceback" not in declined.stderr
    out = declined.stdout
    assert re.search(r"matched\s+1", out) and re.search(r"new additions\s+[1-9]", out)
    assert "Bob" in out and "remark" in out and "Bob Li" in out
    assert "not applied" in out

    applied = a.run("sync", "--yes")
    found = re.search(r"applied users/\w+/merges/(\w+)", applied.stdout)
    assert found, applied.stdout
    undone = a.run("sync", "undo", found.group(1))
    assert re.search(r"removed [1-9]\d* additions, kept 0 modified", undone.stdout), undone.stdout

    unknown = cli("sync", "undo", "nope", env=a.env)
    assert unknown.returncode == 1 and "error: NOT_FOUND" in unknown.stderr
