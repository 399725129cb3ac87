"""Shared helpers of the service tests: members with their own clients, address books."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from befriend.clients import AsyncClient
from befriend.v1 import common_pb2, friendship_pb2, friendship_pb2_grpc, sync_pb2, sync_pb2_grpc
from tests.conftest import RunningServer

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
