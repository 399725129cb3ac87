"""GetBuddy, ListBlockedUsers / UnblockUser and ListCommonContacts through the SDK, on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

from befriend.clients import InvalidArgument, NotFound, PermissionDenied
from befriend.clients.errors import BefriendError, from_grpc_error
from befriend.v1 import friendship_pb2
from tests.conftest import RunningServer
from tests.service.conftest import FULL, ONE_WAY, PHONEBOOK, Member, People, card, member

pytestmark = pytest.mark.asyncio


async def _raw_error(call: Awaitable[object]) -> BefriendError:
    """The SDK's exception for a call made through the raw stub."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return from_grpc_error(err.value)


# -- GetBuddy ----------------------------------------------------------------------------


async def test_get_buddy_returns_the_entry_as_listed(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    bob = card("Bob", "139-0000-0002")
    bob.remark = "from work"
    await a.upload(bob, card("Carol", "13900000003"))
    listed = await a.buddies()
    got = await a.client.friendship.get_buddy(b.id)
    assert got == listed[f"users/{b.id}"]
    assert got.kind == ONE_WAY and got.name == f"users/{a.id}/buddies/{b.id}"
    assert got.phonebook_entry.remark == "from work"  # the original phonebook fields
    assert got.phonebook_entry.mobile_numbers[0].raw == "139-0000-0002"
    assert got.match.key == friendship_pb2.BUDDY_MATCH_KEY_EXACT_E164
    # A phonebook buddy, by the name ListBuddies gave it.
    (carol,) = [x for x in listed.values() if x.kind == PHONEBOOK]
    same = await a.client.friendship.get_buddy(carol.name)
    assert same == carol and same.phonebook_entry.display_name == "Carol"
    assert not same.user and not same.HasField("match")


async def test_get_buddy_full_buddy_carries_presence(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(card("Bob", "13900000002"), card("Carol", "13900000003"))
    await b.upload(card("Alice", "13900000001"))
    for m in (b, c):
        await m.client.friendship.set_presence(
            friendship_pb2.PRESENCE_STATE_AWAY, status_message=f"{m.name} away"
        )
    full = await a.client.friendship.get_buddy(f"users/{b.id}")
    assert full.kind == FULL
    assert full.presence.state == friendship_pb2.PRESENCE_STATE_AWAY
    assert full.presence.status_message == "bob away"
    one_way = await a.client.friendship.get_buddy(c.id)
    assert one_way.kind == ONE_WAY and not one_way.HasField("presence")
    listed = await a.buddies()
    assert listed[f"users/{b.id}"].presence.status_message == "bob away"
    assert not listed[f"users/{c.id}"].HasField("presence")


async def test_get_buddy_errors(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    with pytest.raises(InvalidArgument) as err:
        await a.client.friendship.get_buddy("users/me/oneWayRequests/x")
    assert [v.field for v in err.value.field_violations] == ["name"]
    with pytest.raises(NotFound):
        await a.client.friendship.get_buddy("0123456789abcdef0123456789abcdef")
    with pytest.raises(NotFound):
        await a.client.friendship.get_buddy("k8613999999999")  # no such phonebook buddy
    # Bob holds no one: alice is not on his list although he is on hers.
    with pytest.raises(NotFound):
        await b.client.friendship.get_buddy(a.id)
    with pytest.raises(PermissionDenied):
        await b.client.friendship.get_buddy(f"users/{a.id}/buddies/{b.id}")


# -- ListBlockedUsers / UnblockUser -----------------------------------------------------------


async def _blocked_by(m: Member) -> list[str]:
    return [x.user async for x in m.client.friendship.iter_blocked_users()]


async def test_list_blocked_users_newest_first_and_paginated(
    people: People, running_server: RunningServer
) -> None:
    b = await member(people, running_server, "bob", "13900000002")
    requesters = []
    for i in range(3):
        r = await member(people, running_server, f"req{i}", f"1390000001{i}")
        await r.upload(card("Bob", "13900000002"))
        requesters.append(r)
    assert await _blocked_by(b) == []
    for r in requesters:
        answer = await b.client.friendship.block_one_way_request(r.id)
        assert answer.blocked_user.user == f"users/{r.id}"
    first = await b.client.friendship.list_blocked_users(page_size=2)
    assert [x.user for x in first.blocked_users] == [
        f"users/{requesters[2].id}",
        f"users/{requesters[1].id}",
    ]
    assert first.blocked_users[0].name == f"users/{b.id}/blockedUsers/{requesters[2].id}"
    assert first.blocked_users[0].display_name == "req2"
    assert first.blocked_users[0].block_time.seconds > 0
    assert first.next_page_token
    second = await b.client.friendship.list_blocked_users(
        page_size=2, page_token=first.next_page_token
    )
    assert [x.user for x in second.blocked_users] == [f"users/{requesters[0].id}"]
    assert not second.next_page_token
    # The requesters blocked no one; an accepted request is not a block.
    assert await _blocked_by(requesters[0]) == []
    with pytest.raises(InvalidArgument) as err:
        await b.client.friendship.list_blocked_users(page_token="garbage!")
    assert [v.field for v in err.value.field_violations] == ["page_token"]


async def test_unblock_brings_the_one_way_request_back(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    await b.client.friendship.block_one_way_request(a.id)
    assert await a.kinds() == {} and await b.requests() == []
    assert await _blocked_by(b) == [f"users/{a.id}"]
    await b.client.friendship.unblock_user(a.id, request_id="unblock-1")
    # Re-matched at once: alice holds bob's number again, bob sees her request again.
    assert await _blocked_by(b) == []
    assert await a.kinds() == {f"users/{b.id}": ONE_WAY}
    assert await b.requests() == [f"users/{a.id}"]
    # A retry with the same request_id gets the first answer; a new unblock is NOT_FOUND.
    await b.client.friendship.unblock_user(f"users/me/blockedUsers/{a.id}", request_id="unblock-1")
    with pytest.raises(NotFound):
        await b.client.friendship.unblock_user(a.id)
    # And the request can be answered again.
    await b.client.friendship.accept_one_way_request(a.id)
    assert await b.kinds() == {f"users/{a.id}": FULL}


async def test_unblock_with_both_books_gives_full_buddies(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"))
    await b.client.friendship.block_one_way_request(a.id)
    await b.upload(card("Alice", "13900000001"))  # the block still hides the pair
    assert await a.kinds() == {} and await b.kinds() == {}
    await b.client.friendship.unblock_user(a.id)
    assert await a.kinds() == {f"users/{b.id}": FULL}
    assert await b.kinds() == {f"users/{a.id}": FULL}


async def test_unblock_errors(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(card("Bob", "13900000002"))
    await b.client.friendship.block_one_way_request(a.id)
    with pytest.raises(InvalidArgument) as err:
        await b.client.friendship.unblock_user(f"users/me/buddies/{a.id}")
    assert [v.field for v in err.value.field_violations] == ["name"]
    with pytest.raises(PermissionDenied):  # someone else's block list
        await c.client.friendship.unblock_user(f"users/{b.id}/blockedUsers/{a.id}")
    with pytest.raises(NotFound):  # carol blocked no one
        await c.client.friendship.unblock_user(a.id)
    with pytest.raises(NotFound):  # alice did not block bob (bob blocked her)
        await a.client.friendship.unblock_user(b.id)
    assert await _blocked_by(b) == [f"users/{a.id}"]  # nothing changed


# -- ListCommonContacts ------------------------------------------------------------------


async def _full_pair(people: People, server: RunningServer) -> tuple[Member, Member]:
    a = await member(people, server, "alice", "13900000001")
    b = await member(people, server, "bob", "13900000002")
    return a, b


async def test_common_contacts_from_the_callers_book(
    people: People, running_server: RunningServer
) -> None:
    a, b = await _full_pair(people, running_server)
    e = await member(people, running_server, "eve", "13900000005")
    await a.upload(
        card("Bob", "13900000002"),
        card("Carol (mine)", "139 0000 0003"),
        card("Dan", "13900000004"),
        card("Eve", "+86 139-0000-0005"),
        card("Zoe", "13900000009"),
    )
    await b.upload(
        card("Alice", "13900000001"),
        card("Me", "13900000002"),  # bob's own number: not a common contact
        card("Carol (his)", "+8613900000003"),
        card("Eve", "13900000005"),
        card("Frank", "13900000006"),
    )
    answer = await a.client.friendship.list_common_contacts(b.id)
    assert answer.total_size == 2
    got = [
        (c.display_name, c.phone_number.raw, c.phone_number.e164, c.user)
        for c in answer.common_contacts
    ]
    assert got == [
        ("Carol (mine)", "139 0000 0003", "+8613900000003", ""),
        ("Eve", "+86 139-0000-0005", "+8613900000005", f"users/{e.id}"),
    ]
    assert all(c.contact.startswith(f"users/{a.id}/contacts/") for c in answer.common_contacts)
    # The other side sees the same numbers, from its own book.
    theirs = await b.client.friendship.list_common_contacts(f"users/{a.id}")
    assert [c.display_name for c in theirs.common_contacts] == ["Carol (his)", "Eve"]
    # Pages of one.
    first = await a.client.friendship.list_common_contacts(b.id, page_size=1)
    assert [c.display_name for c in first.common_contacts] == ["Carol (mine)"]
    assert first.total_size == 2 and first.next_page_token
    second = await a.client.friendship.list_common_contacts(
        b.id, page_size=1, page_token=first.next_page_token
    )
    assert [c.display_name for c in second.common_contacts] == ["Eve"]
    assert not second.next_page_token
    # A token of another listing is refused.
    with pytest.raises(InvalidArgument) as err:
        await a.client.friendship.list_common_contacts(e.id, page_token=first.next_page_token)
    assert [v.field for v in err.value.field_violations] == ["page_token"]


async def test_common_contacts_only_for_full_buddies(
    people: People, running_server: RunningServer
) -> None:
    a, b = await _full_pair(people, running_server)
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(
        card("Bob", "13900000002"), card("Carol", "13900000003"), card("X", "13900000008")
    )
    await c.upload(card("X", "13900000008"))
    # alice -> carol is one-way, alice -> bob one-way too (bob holds no one yet).
    with pytest.raises(PermissionDenied):
        await a.client.friendship.list_common_contacts(c.id)
    with pytest.raises(PermissionDenied):
        await c.client.friendship.list_common_contacts(a.id)
    with pytest.raises(PermissionDenied):
        await a.client.friendship.list_common_contacts(b.id)
    with pytest.raises(PermissionDenied):  # no such member: the same answer
        await a.client.friendship.list_common_contacts("0123456789abcdef0123456789abcdef")
    await b.upload(card("Alice", "13900000001"))  # now full buddies
    assert (await a.client.friendship.list_common_contacts(b.id)).total_size == 0


async def test_common_contacts_bad_arguments(people: People, running_server: RunningServer) -> None:
    a, b = await _full_pair(people, running_server)
    await a.upload(card("Bob", "13900000002"))
    await b.upload(card("Alice", "13900000001"))
    missing = await _raw_error(
        a.friends.ListCommonContacts(friendship_pb2.ListCommonContactsRequest(), metadata=a.md)
    )
    assert isinstance(missing, InvalidArgument)
    assert [v.field for v in missing.field_violations] == ["other_user"]
    for other in ("users/me", f"users/{a.id}", "people/x", "users/x/buddies/y"):
        with pytest.raises(InvalidArgument) as err:
            await a.client.friendship.list_common_contacts(other)
        assert [v.field for v in err.value.field_violations] == ["other_user"], other
    with pytest.raises(InvalidArgument) as err:
        await a.client.friendship.list_common_contacts(b.id, page_size=-1)
    assert [v.field for v in err.value.field_violations] == ["page_size"]
    foreign = await _raw_error(
        a.friends.ListCommonContacts(
            friendship_pb2.ListCommonContactsRequest(
                parent=f"users/{b.id}", other_user=f"users/{a.id}"
            ),
            metadata=a.md,
        )
    )
    assert isinstance(foreign, PermissionDenied)  # someone else's parent
