"""Concurrent writers on one server (SQLite and PostgreSQL): uploads, registrations and
number changes racing each other end in the same buddy lists as one after another.

Each pair's two matches read the other's book; if both ran before either committed, each
would see only its own side and the pair would end as two one-way rows instead of full."""

from __future__ import annotations

import asyncio

import pytest

from befriend.server.storage.db import Database
from befriend.v1 import common_pb2
from tests.conftest import serve
from tests.service.conftest import FULL, PHONEBOOK, People, card, member

pytestmark = pytest.mark.asyncio

PAIRS = 12
FILLER = 40  # non-member contacts per book: each upload's transaction lasts a while


def _number(i: int) -> str:
    return f"1390000{i:04d}"


def _book(other: int, owner: int) -> list[common_pb2.Contact]:
    filler = [card(f"x{owner}-{j}", f"1370{owner:03d}{j:04d}") for j in range(FILLER)]
    return [*filler, card(f"buddy {other}", _number(other))]


async def test_concurrent_uploads_of_mutual_books_end_full(people: People, db: Database) -> None:
    async with serve(db, db_threads=8) as server:
        members = [await member(people, server, f"m{i}", _number(i)) for i in range(2 * PAIRS)]
        # m(2k) and m(2k+1) hold each other; every upload starts at once
        await asyncio.gather(*(m.upload(*_book(i ^ 1, i)) for i, m in enumerate(members)))
        for i, m in enumerate(members):
            kinds = await m.kinds()
            other = members[i ^ 1]
            assert kinds[f"users/{other.id}"] == FULL, (i, kinds)
            assert sum(1 for k in kinds.values() if k == PHONEBOOK) == FILLER
        for m in people.values():
            await m.close()
        people.clear()


async def test_registrations_racing_uploads_convert_phonebook_buddies(
    people: People, db: Database
) -> None:
    async with serve(db, db_threads=8) as server:
        holders = [await member(people, server, f"h{i}", _number(100 + i)) for i in range(PAIRS)]

        async def join(i: int) -> str:
            await asyncio.sleep(0.01 * i)  # spread over the uploads' transactions
            m = await member(people, server, f"n{i}", _number(i))
            return m.id

        # each holder uploads the number of someone registering at the same moment
        uploads = [h.upload(*_book(i, 100 + i)) for i, h in enumerate(holders)]
        joined = await asyncio.gather(*(join(i) for i in range(PAIRS)), *uploads)
        for i, h in enumerate(holders):
            kinds = await h.kinds()
            assert f"users/{joined[i]}" in kinds, (i, kinds)
            assert sum(1 for k in kinds.values() if k == PHONEBOOK) == FILLER
        for m in people.values():
            await m.close()
        people.clear()
