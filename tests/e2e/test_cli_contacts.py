"""Two members and a real `befriend serve` process, driven only through the `befriend` CLI:
register, import a vCard file, list buddies, answer a one-way request, export the book."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from .test_serve import Served, cli, start

A_PHONE, B_PHONE = "+8613900000001", "+8613900000002"
FULL, ONE_WAY, PHONEBOOK = "BUDDY_KIND_FULL", "BUDDY_KIND_ONE_WAY", "BUDDY_KIND_PHONEBOOK"

# 3 cards: B (national format, as A's phone wrote it), a non-member, and a malformed one.
BOB = (
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bob-1\r\nFN:Bob Li\r\nN:Li;Bob;;;\r\n"
    b"TEL;TYPE=CELL:139 0000 0002\r\nNOTE:met at work\r\nEND:VCARD\r\n"
)
CAROL = (
    "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:carol-1\r\nFN:Carol Zoë 王\r\nN:王;Carol;;;\r\n"
    "TEL;TYPE=cell:+86 139-0000-0077\r\nEMAIL:carol@example.org\r\nEND:VCARD\r\n"
).encode()
BROKEN = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN;;;broken\r\nno colon here\r\nEND:VCARD\r\n"


class Member:
    """One CLI user: their own token file (and device id beside it)."""

    def __init__(self, served: Served, home: Path) -> None:
        home.mkdir()
        self.home = home
        self.env = {**served.env, "BEFRIEND_TOKEN_FILE": str(home / "token")}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = cli(*args, env=self.env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def register(self, name: str, phone: str) -> str:
        user = json.loads(
            self.run(
                "register", "--name", name, "--phone", phone, "--region", "CN", "--json"
            ).stdout
        )
        assert (self.home / "token").exists()
        return str(user["userId"])

    def buddies(self, *options: str) -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]], json.loads(self.run("buddies", "list", "--json", *options).stdout)
        )

    def kinds(self) -> dict[str, set[str]]:
        """Kinds listed per member ("users/{id}") or, for non-members, phonebook name."""
        out: dict[str, set[str]] = {}
        for b in self.buddies():
            out.setdefault(b.get("user") or b["phonebookEntry"]["displayName"], set()).add(
                b["kind"]
            )
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server process for the module; each test registers its own numbers."""
    s = start(tmp_path_factory.mktemp("served"))
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def test_import_match_accept_export(served: Served, tmp_path: Path) -> None:
    assert "BEFRIEND_TOKEN" not in served.env and "BEFRIEND_DEVICE_ID" not in os.environ
    a, b = Member(served, tmp_path / "a"), Member(served, tmp_path / "b")
    a_id = a.register("Ann", A_PHONE)
    b_id = b.register("Bob", B_PHONE)
    assert a_id != b_id

    book = tmp_path / "phone.vcf"
    book.write_bytes(BOB + BROKEN + CAROL)
    imported = a.run("contacts", "import", str(book))
    assert imported.stdout.splitlines()[:2] == [
        f"stored 2 of 2 entries in users/{a_id}/addressBooks/phone",
        "rejected 0",
    ]
    assert "warning: skipped vCard #2 (line 9)" in imported.stderr

    # A holds B's number, B does not hold A's: B is a one-way buddy; Carol is not a member.
    assert a.kinds() == {f"users/{b_id}": {ONE_WAY}, "Carol Zoë 王": {PHONEBOOK}}
    listed = a.buddies()
    bob = next(x for x in listed if x.get("user") == f"users/{b_id}")
    assert bob["match"] == {"key": "BUDDY_MATCH_KEY_EXACT_E164"}
    assert bob["displayName"] == "Bob"  # the member's name ...
    assert bob["phonebookEntry"]["displayName"] == "Bob Li"  # ... and A's original fields
    assert bob["phonebookEntry"]["mobileNumbers"][0]["raw"] == "139 0000 0002"
    carols = [x for x in listed if x["phonebookEntry"]["displayName"] == "Carol Zoë 王"]
    assert carols and all("user" not in x for x in carols)
    assert {x["name"].rpartition("/")[0] for x in carols} == {f"users/{a_id}/buddies"}
    table = a.run("buddies", "list").stdout
    assert "one-way" in table and "phonebook" in table and "Bob Li" in table
    assert b.buddies() == []

    requests = b.run("buddies", "requests")
    assert a_id in requests.stdout and "Ann" in requests.stdout
    as_json = json.loads(b.run("buddies", "requests", "--json").stdout)
    assert [r["requester"] for r in as_json] == [f"users/{a_id}"]
    accepted = b.run("buddies", "accept", a_id)
    assert accepted.stdout.strip() == f"accepted users/{a_id}: now full buddies"
    assert b.run("buddies", "requests", "--json").stdout.strip() == "[]"

    assert a.kinds() == {f"users/{b_id}": {FULL}, "Carol Zoë 王": {PHONEBOOK}}
    assert b.kinds() == {f"users/{a_id}": {FULL}}
    assert [x["user"] for x in a.buddies("--kind", "full")] == [f"users/{b_id}"]

    out = tmp_path / "out.vcf"
    exported = a.run("contacts", "export", "-o", str(out))
    assert "exported 2 entries from phone" in exported.stderr
    assert out.read_bytes() == BOB + CAROL  # the valid cards, byte for byte


def test_a_contact_is_one_buddy_entry(served: Served, tmp_path: Path) -> None:
    a, c = Member(served, tmp_path / "a"), Member(served, tmp_path / "c")
    a_id = a.register("Amy", "+8613900000101")
    c_id = c.register("Cai", "+8613900000102")
    book = tmp_path / "phone.vcf"
    book.write_bytes(
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cai\r\nTEL:13900000102\r\n"
        b"EMAIL:cai@example.org\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Dee\r\nTEL:13900000177\r\n"
        b"EMAIL:dee@example.org\r\nEND:VCARD\r\n"
    )
    a.run("contacts", "import", str(book))
    listed = a.buddies()
    # One entry per contact, not per identity: Cai is a member (one-way, by number; his
    # unmatched e-mail adds no phonebook entry); Dee, with a number and an e-mail, is one
    # phonebook buddy, and a phonebook buddy is not a match.
    assert sorted((x["kind"], x["phonebookEntry"]["displayName"]) for x in listed) == [
        (ONE_WAY, "Cai"),
        (PHONEBOOK, "Dee"),
    ], f"{a_id} sees {listed}"
    assert all("match" not in x for x in listed if x["kind"] == PHONEBOOK)
    assert c_id


def test_workers_map_one_snapshot_of_the_books(tmp_path: Path) -> None:
    """``--index-dir``: of two workers starting together, one reads the books' keys and
    stores them; the other maps its files (its start-up log says so), and both answer."""
    first = start(tmp_path, "--metrics-port", "-1")
    try:
        ann = Member(first, tmp_path / "ann")
        ann.register("Ann", A_PHONE)
        book = tmp_path / "book.vcf"
        book.write_bytes(BOB + CAROL)
        ann.run("contacts", "import", str(book))
    finally:
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
    index = tmp_path / "index"
    both = start(tmp_path, "--metrics-port", "-1", "--workers", "2", "--index-dir", str(index))
    try:
        # Bob registers: whichever worker serves it finds Ann's entry holding his number
        bob_id = Member(both, tmp_path / "bob").register("Bob", B_PHONE)
        ann.env["BEFRIEND_TARGET"] = both.target
        assert ann.kinds()[f"users/{bob_id}"] == {ONE_WAY}
    finally:
        both.proc.send_signal(signal.SIGTERM)
        code = both.proc.wait(timeout=30)
    err = both.proc.stderr.read()  # type: ignore[union-attr]
    assert code == 0, err
    started = [json.loads(x) for x in err.splitlines() if '"server.started"' in x]
    assert sorted(s["book_keys_mapped"] for s in started) == [False, True]
    assert len([p for p in index.iterdir() if p.name.startswith("holders-")]) == 1
