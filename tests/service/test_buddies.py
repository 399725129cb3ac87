"""Buddy matching scenarios (seed 001), one per rule, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from befriend.clients import AsyncClient
from befriend.v1 import common_pb2, friendship_pb2, friendship_pb2_grpc, sync_pb2, sync_pb2_grpc
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio
FULL = friendship_pb2.BUDDY_KIND_FULL
ONE_WAY = friendship_pb2.BUDDY_KIND_ONE_WAY
PHONEBOOK = friendship_pb2.BUDDY_KIND_PHONEBOOK


class Member:
    def __init__(self, server: RunningServer, name: str) -> None:
        self.server, self.name = server, name
        self.client = AsyncClient(server.target, retries=0)
        self.uploads = 0

    async def register(
        self, *phones: str, emails: Sequence[str] = (), ims: Sequence[tuple[str, str]] = ()
    ) -> Member:
        resp = await self.client.account.register(
            display_name=self.name,
            phone_numbers=list(phones),
            email_addresses=list(emails),
            im_ids=list(ims),
            region_code="CN",
        )
        self.id = resp.user.user_id
        self.md = (("authorization", f"Bearer {self.client.token}"),)
        self.sync = sync_pb2_grpc.SyncServiceStub(self.client.channel)
        self.friends = friendship_pb2_grpc.FriendshipServiceStub(self.client.channel)
        return self

    async def upload(self, *contacts: common_pb2.Contact) -> None:
        self.uploads += 1
        entries = [
            sync_pb2.AddressBookEntry(entry_id=f"c{i}", raw=c.SerializeToString(), contact=c)
            for i, c in enumerate(contacts)
        ]
        req = sync_pb2.UploadContactsRequest(
            address_book_id="phone",
            address_book_kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
            device_id="d",
            upload_id=f"{self.name}-{self.uploads}",
            sequence_number=1,
            entries=entries,
            final=True,
            mode=sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT,
        )

        async def one() -> AsyncIterator[sync_pb2.UploadContactsRequest]:
            yield req

        acks = [a async for a in self.sync.UploadContacts(one(), metadata=self.md)]
        assert acks[-1].committed

    async def buddies(self, kind: int = 0) -> dict[str, friendship_pb2.Buddy]:
        resp = await self.friends.ListBuddies(
            friendship_pb2.ListBuddiesRequest(kind=kind),  # type: ignore[arg-type]
            metadata=self.md,
        )
        return {b.user or b.name: b for b in resp.buddies}

    async def kinds(self) -> dict[str, int]:
        return {k: b.kind for k, b in (await self.buddies()).items()}

    async def requests(self) -> list[str]:
        resp = await self.friends.ListOneWayRequests(
            friendship_pb2.ListOneWayRequestsRequest(), metadata=self.md
        )
        return [r.requester for r in resp.one_way_requests]

    async def close(self) -> None:
        await self.client.close()


def card(
    name: str, *phones: str, emails: Sequence[str] = (), ims: Sequence[tuple[str, str]] = ()
) -> common_pb2.Contact:
    c = common_pb2.Contact(display_name=name, given_name=name)
    for p in phones:
        c.mobile_numbers.add(raw=p)
    for e in emails:
        c.email_addresses.add(raw=e)
    for kind, ident in ims:
        c.im_ids.add(kind=kind, id=ident)
    return c


People = dict[str, Member]
ImIds = Sequence[tuple[str, str]]


@pytest.fixture
async def people(running_server: RunningServer) -> AsyncIterator[People]:
    made: People = {}
    yield made
    for m in made.values():
        await m.close()


async def member(
    people: People,
    server: RunningServer,
    name: str,
    *phones: str,
    emails: Sequence[str] = (),
    ims: ImIds = (),
) -> Member:
    m = await Member(server, name).register(*phones, emails=emails, ims=ims)
    people[name] = m
    return m


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
    await b.friends.AcceptOneWayRequest(
        friendship_pb2.AcceptOneWayRequestRequest(name=f"users/me/oneWayRequests/{a.id}"),
        metadata=b.md,
    )
    assert await a.kinds() == {f"users/{b.id}": FULL}
    assert await b.kinds() == {f"users/{a.id}": FULL}
    assert await b.requests() == []
    # Accepting twice: the request is gone.
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
        await a.friends.SetPresence(
            friendship_pb2.SetPresenceRequest(
                presence=friendship_pb2.Presence(status_message="x" * 281)
            ),
            metadata=a.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
