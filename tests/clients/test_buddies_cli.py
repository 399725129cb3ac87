"""`befriend buddies list/requests/accept/block` against the fake server."""

from __future__ import annotations

import json
from pathlib import Path

from befriend.v1 import friendship_pb2

from .conftest import run_cli as run
from .fakes import ThreadedServer


def rows(output: str) -> list[list[str]]:
    """The table's rows, cells split on runs of 2+ spaces (header and rule excluded)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[2:]]


def test_list_table_and_kind_filter(threaded_server: ThreadedServer, token_file: Path) -> None:
    # A phonebook buddy is not a match, whatever key the server sends with it.
    threaded_server.recorder.friendship.buddies[
        2
    ].match.key = friendship_pb2.BUDDY_MATCH_KEY_EXACT_E164
    result = run(threaded_server, "buddies", "list")
    assert result.exit_code == 0, result.output
    header = result.stdout.strip().splitlines()[0].split()
    assert header == ["name", "kind", "matched", "by", "phonebook", "name"]
    assert rows(result.stdout) == [
        ["Bob", "full", "number", "Bobby"],
        ["Carol", "one-way", "number suffix (7 digits)", "Carol W"],
        ["Dan", "phonebook", "-", "Dan"],
    ]
    rec = threaded_server.recorder
    assert rec.metadata("ListBuddies")[0]["authorization"] == "Bearer tok-cli"

    one_way = run(threaded_server, "buddies", "list", "--kind", "one-way")
    assert one_way.exit_code == 0, one_way.output
    assert [r[0] for r in rows(one_way.stdout)] == ["Carol"]
    assert rec.requests("ListBuddies")[-1].kind == friendship_pb2.BUDDY_KIND_ONE_WAY

    bad = run(threaded_server, "buddies", "list", "--kind", "mutual")
    assert bad.exit_code == 2


def test_list_json_walks_every_page(threaded_server: ThreadedServer, token_file: Path) -> None:
    rec = threaded_server.recorder
    rec.friendship.buddies = rec.friendship.buddies * 50  # 150 buddies: two pages of 100
    result = run(threaded_server, "buddies", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert len(listed) == 150
    assert listed[0]["kind"] == "BUDDY_KIND_FULL"
    assert listed[0]["phonebookEntry"]["displayName"] == "Bobby"
    assert listed[0]["match"]["key"] == "BUDDY_MATCH_KEY_EXACT_E164"
    assert [r.page_token for r in rec.requests("ListBuddies")] == ["", "100"]

    phonebook = run(threaded_server, "buddies", "list", "--kind", "phonebook", "--json")
    assert {b["kind"] for b in json.loads(phonebook.stdout)} == {"BUDDY_KIND_PHONEBOOK"}


def test_requests_accept_block(threaded_server: ThreadedServer, token_file: Path) -> None:
    listed = run(threaded_server, "buddies", "requests")
    assert listed.exit_code == 0, listed.output
    assert [r[:2] for r in rows(listed.stdout)] == [["u4", "Eve"], ["u5", "Frank"]]
    assert "befriend buddies accept USER_ID" in listed.stderr

    as_json = json.loads(run(threaded_server, "buddies", "requests", "--json").stdout)
    assert [r["requester"] for r in as_json] == ["users/u4", "users/u5"]

    accepted = run(threaded_server, "buddies", "accept", "u4")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.strip() == "accepted users/u4: now full buddies"
    blocked = run(threaded_server, "buddies", "block", "u5", "--request-id", "rid-1")
    assert blocked.exit_code == 0, blocked.output
    assert blocked.stdout.strip() == "blocked users/u5"
    rec = threaded_server.recorder
    assert rec.requests("AcceptOneWayRequest")[0].name == "users/me/oneWayRequests/u4"
    block = rec.requests("BlockOneWayRequest")[0]
    assert (block.name, block.request_id) == ("users/me/oneWayRequests/u5", "rid-1")

    none_left = run(threaded_server, "buddies", "requests")
    assert none_left.exit_code == 0 and none_left.stdout == ""
    assert "no pending one-way requests" in none_left.stderr

    again = run(threaded_server, "buddies", "accept", "u4")
    assert again.exit_code == 1
    assert again.stderr.startswith(
        "error: NOT_FOUND NOT_FOUND: no pending one-way request from users/u4"
    )
    assert "Traceback" not in again.output


def test_buddies_need_a_token(threaded_server: ThreadedServer, token_file: Path) -> None:
    token_file.unlink()
    for args in (("list",), ("requests",), ("accept", "u4"), ("block", "u4")):
        result = run(threaded_server, "buddies", *args)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: UNAUTHENTICATED: no token")
    threaded_server.recorder.friendship.buddies.clear()
    token_file.write_text("tok-cli\n")
    empty = run(threaded_server, "buddies", "list")
    assert empty.exit_code == 0 and empty.stdout == "" and "no buddies" in empty.stderr
