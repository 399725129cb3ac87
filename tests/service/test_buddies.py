"""Buddy matching scenarios (seed 001), one per rule, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from befriend.server.storage.db import Database
from befriend.server.storage.models import Base
from befriend.v1 import friendship_pb2
from tests.conftest import RunningServer, serve
from tests.service.conftest import FULL, ONE_WAY, PHONEBOOK, People, card, member

pytestmark = pytest.mark.asyncio


async def test_mutual_books_make_full_buddies(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "139-0000-0002"))
    assert await a.kinds() == {f"users/{b.id}": ONE_WAY}
    await b.upload(card("Alice", "+86 139 0000 0001"))
    assert await a.kinds() == {f"users/{b.id}": FULL}
    assert await b.kinds() == {f"users/{a.id}": FULL}
    entry = (await a.buddies())[f"users/{b.id}"]
    assert entry.phonebook_entry.display_name == "Bob"  # original phonebook fields travel
    assert entry.match.key == friendship_pb2.BUDDY_MATCH_KEY_EXACT_E164


async def test_one_way_then_accept(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    assert await a.kinds() == {f"users/{b.id}": ONE_WAY}
    assert await b.kinds() == {}
    assert await b.requests() == [f"users/{a.id}"]
    first = await b.friends.AcceptOneWayRequest(
        friendship_pb2.AcceptOneWayRequestRequest(
            name=f"users/me/oneWayRequests/{a.id}", request_id="accept-1"
        ),
        metadata=b.md,
    )
    assert first.one_way_request.answer_time.seconds > 0
    assert await a.kinds() == {f"users/{b.id}": FULL}
    assert await b.kinds() == {f"users/{a.id}": FULL}
    assert await b.requests() == []
    # A retry with the same request_id gets the first answer.
    retry = await b.friends.AcceptOneWayRequest(
        friendship_pb2.AcceptOneWayRequestRequest(
            name=f"users/me/oneWayRequests/{a.id}", request_id="accept-1"
        ),
        metadata=b.md,
    )
    assert retry.one_way_request.state == friendship_pb2.ONE_WAY_REQUEST_STATE_ACCEPTED
    # A new accept: the request is gone.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await b.friends.AcceptOneWayRequest(
            friendship_pb2.AcceptOneWayRequestRequest(name=f"users/me/oneWayRequests/{a.id}"),
            metadata=b.md,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_one_way_then_block(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    await b.friends.BlockOneWayRequest(
        friendship_pb2.BlockOneWayRequestRequest(name=f"users/me/oneWayRequests/{a.id}"),
        metadata=b.md,
    )
    assert await a.kinds() == {}
    assert await b.requests() == []
    # A re-upload and even B adding A never bring the pair back.
    await a.upload(card("Bob", "13900000002"), card("Other", "13900000099"))
    await b.upload(card("Alice", "13900000001"))
    assert f"users/{b.id}" not in await a.kinds()
    assert f"users/{a.id}" not in await b.kinds()


async def test_phonebook_buddy_converted_on_registration(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    await a.upload(card("Carol", "13900000003"))
    pb = await a.buddies(PHONEBOOK)
    assert len(pb) == 1
    only = next(iter(pb.values()))
    assert only.kind == PHONEBOOK and only.phonebook_entry.display_name == "Carol"
    c = await member(people, running_server, "carol", "+8613900000003")
    assert await a.kinds() == {f"users/{c.id}": ONE_WAY}
    assert await c.requests() == [f"users/{a.id}"]


async def test_number_change_moves_matches(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    h = await member(people, running_server, "holder", "13900000009")
    await a.upload(card("Bob old", "13900000002"))
    await h.upload(card("Bob new", "13900000077"))
    assert await a.kinds() == {f"users/{b.id}": ONE_WAY}
    assert (await h.kinds()) and all(k == PHONEBOOK for k in (await h.kinds()).values())
    me = (await b.client.account.get_me()).user
    await b.client.account.change_phone_number("13900000002", "13900000077", me.etag)
    # The old number's match is dropped (it is a phonebook buddy again) and the new one found.
    assert list((await a.kinds()).values()) == [PHONEBOOK]
    assert await h.kinds() == {f"users/{b.id}": ONE_WAY}


async def test_email_and_im_matches(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002", emails=["Bob@Example.com"])
    q = await member(people, running_server, "qq", "13900000003", ims=[("QQ", "10001")])
    await a.upload(card("Bob", emails=["Bob@EXAMPLE.com"]), card("Q", ims=[("qq", "10001")]))
    found = await a.buddies()
    assert found[f"users/{b.id}"].match.key == friendship_pb2.BUDDY_MATCH_KEY_EMAIL
    assert found[f"users/{q.id}"].match.key == friendship_pb2.BUDDY_MATCH_KEY_IM_ID


async def test_presence_only_for_full_buddies(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(card("Bob", "13900000002"), card("Carol", "13900000003"))
    await b.upload(card("Alice", "13900000001"))  # a-b full; a-c one-way
    for m in (b, c):
        await m.friends.SetPresence(
            friendship_pb2.SetPresenceRequest(
                presence=friendship_pb2.Presence(
                    state=friendship_pb2.PRESENCE_STATE_BUSY, status_message=f"{m.name} here"
                )
            ),
            metadata=m.md,
        )
    seen = await a.friends.GetBuddyPresence(friendship_pb2.GetBuddyPresenceRequest(), metadata=a.md)
    assert [(p.user, p.presence.status_message) for p in seen.presences] == [
        (f"users/{b.id}", "bob here")
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await a.friends.GetBuddyPresence(
            friendship_pb2.GetBuddyPresenceRequest(buddies=[f"users/me/buddies/{c.id}"]),
            metadata=a.md,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # one-way: no presence
    named = await a.friends.GetBuddyPresence(
        friendship_pb2.GetBuddyPresenceRequest(buddies=[f"users/me/buddies/{b.id}"]),
        metadata=a.md,
    )
    assert [p.user for p in named.presences] == [f"users/{b.id}"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await a.friends.SetPresence(
            friendship_pb2.SetPresenceRequest(
                presence=friendship_pb2.Presence(status_message="x" * 281)
            ),
            metadata=a.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_weak_suffix_key_is_an_opt_in_fallback(db: Database) -> None:
    people: People = {}
    for weak in (False, True):
        with db.transaction() as s:  # a fresh population per setting
            for table in reversed(Base.metadata.sorted_tables):
                s.execute(table.delete())
        async with serve(db, weak_key_matching=weak) as server:
            a = await member(people, server, f"alice{weak}", "13900000001")
            b = await member(people, server, f"bob{weak}", "13912345678")
            c = await member(people, server, f"carol{weak}", "13800000004")
            d = await member(people, server, f"dan{weak}", "13700000004")
            # A number missing a digit cannot be normalised; its last 7 digits name bob
            # alone, but carol and dan share theirs (ambiguous: never matched).
            await a.upload(card("Bob?", "912345678"), card("C or D", "90000004"))
            found = await a.buddies()
            if not weak:
                assert found == {}
            else:
                assert set(found) == {f"users/{b.id}"}
                match = found[f"users/{b.id}"].match
                assert match.key == friendship_pb2.BUDDY_MATCH_KEY_WEAK_SUFFIX
                assert match.weak_suffix_digits == 7
            assert c.id and d.id
            for m in list(people.values()):
                await m.close()
            people.clear()


async def test_phonebook_buddies_are_derived_from_the_books(
    people: People, running_server: RunningServer
) -> None:
    """One phonebook buddy per contact none of whose keys is a member's (its first key),
    one per number when contacts share it; paged after the member matches, by name too."""
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(
        card("Dan", "13900000004", "13900000005"),  # first key ...04
        card("Bob at home", "13900000006", "13900000002"),  # holds a member's key: no
        card("Dan again", "13900000004"),  # the same number: the first contact keeps it
        card("Eve", "13900000007"),
        card("Fay", "13900000005"),  # Dan's second number, but Fay's first
    )
    listed = [x async for x in a.client.friendship.iter_buddies(page_size=2)]
    assert [x.kind for x in listed] == [ONE_WAY, PHONEBOOK, PHONEBOOK, PHONEBOOK]
    assert listed[0].user == f"users/{b.id}"
    assert [x.phonebook_entry.display_name for x in listed[1:]] == ["Dan", "Eve", "Fay"]
    assert [x.name.rsplit("/", 1)[1] for x in listed[1:]] == [
        "k8613900000004",
        "k8613900000007",
        "k8613900000005",
    ]
    assert all(
        x.origin == friendship_pb2.BUDDY_ORIGIN_ADDRESS_BOOK and x.create_time.seconds > 0
        for x in listed
    )
    page = await a.client.friendship.list_buddies(kind=PHONEBOOK, page_size=2)
    assert page.total_size == 3 and len(page.buddies) == 2 and page.next_page_token
    assert (await a.client.friendship.list_buddies(page_size=1)).total_size == 4
    again = await a.client.friendship.get_buddy(listed[3].name)
    assert again == listed[3]
    # Eve joins: her contact leaves the phonebook part at once and she is matched.
    eve = await member(people, running_server, "eve", "13900000007")
    kinds = await a.kinds()
    assert kinds[f"users/{eve.id}"] == ONE_WAY
    assert [k for k, v in kinds.items() if v == PHONEBOOK] == [
        f"users/{a.id}/buddies/k8613900000004",
        f"users/{a.id}/buddies/k8613900000005",
    ]
