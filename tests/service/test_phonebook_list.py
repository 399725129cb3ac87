"""The derived phonebook list is derived once per state of the books and of membership, and
never served from an older state (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from befriend.server.storage.db import Database
from befriend.server.storage.matching import BookKey, MatchRepository
from tests.conftest import serve
from tests.service.conftest import ONE_WAY, PHONEBOOK, Member, People, card, member

pytestmark = pytest.mark.asyncio


@pytest.fixture
def book_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The users whose whole books were read, one per read."""
    reads: list[str] = []
    real = MatchRepository.book_keys_of

    def counted(self: MatchRepository, users: Sequence[str]) -> dict[str, list[BookKey]]:
        reads.extend(users)
        return real(self, users)

    monkeypatch.setattr(MatchRepository, "book_keys_of", counted)
    return reads


def _lists(result: str) -> float:
    return REGISTRY.get_sample_value("befriend_phonebook_lists_total", {"result": result}) or 0.0


async def _phonebook_names(m: Member) -> list[str]:
    listed = [x async for x in m.client.friendship.iter_buddies(page_size=2)]
    return [x.phonebook_entry.display_name for x in listed if x.kind == PHONEBOOK]


async def test_paging_reads_the_books_once_until_they_change(
    people: People, db: Database, book_reads: list[str]
) -> None:
    async with serve(db) as server:
        a = await member(people, server, "alice", "13900000001")
        contacts = [card(f"P{i}", f"1390000010{i}") for i in range(5)]
        await a.upload(*contacts)
        book_reads.clear()
        kept, derived = _lists("kept"), _lists("derived")
        assert await _phonebook_names(a) == ["P0", "P1", "P2", "P3", "P4"]  # 3 pages
        assert await _phonebook_names(a) == ["P0", "P1", "P2", "P3", "P4"]
        assert book_reads == [a.id]
        assert (_lists("kept") - kept, _lists("derived") - derived) == (5, 1)  # the metric

        # A new contact (an upload takes a change number): read again, at once.
        await a.upload(*contacts, card("P5", "13900000105"))
        book_reads.clear()
        assert await _phonebook_names(a) == ["P0", "P1", "P2", "P3", "P4", "P5"]
        assert book_reads == [a.id]
        # A full snapshot without P1 deletes it.
        await a.upload(*contacts[:1], *contacts[2:])
        assert await _phonebook_names(a) == ["P0", "P2", "P3", "P4"]

        # Membership changes with the books untouched: P3 registers.
        book_reads.clear()
        p3 = await member(people, server, "p3", "13900000103")
        assert await _phonebook_names(a) == ["P0", "P2", "P4"]
        assert (await a.kinds())[f"users/{p3.id}"] == ONE_WAY
        assert a.id in book_reads

        # Another server process registers P4; this one learns it from the identity log.
        async with serve(db) as other:
            await member(people, other, "p4", "13900000104")
        assert await _phonebook_names(a) == ["P0", "P2"]
        for m in list(people.values()):
            await m.close()
        people.clear()
