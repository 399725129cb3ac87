"""client.friendship against the fake FriendshipService: names, request ids, paging, watch."""

from __future__ import annotations

import uuid
from typing import TypedDict

import grpc
import pytest

from befriend.clients.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from befriend.clients.sdk import (
    MAX_COMMUNICATION_LOG_ENTRIES,
    AsyncClient,
    AsyncFriendshipClient,
    Client,
    FriendshipClient,
)
from befriend.v1 import friendship_pb2

from .conftest import AioServer
from .fakes import SERVICE_TOKEN, StreamFault, ThreadedServer

FULL = friendship_pb2.BUDDY_KIND_FULL
ONE_WAY = friendship_pb2.BUDDY_KIND_ONE_WAY
PHONEBOOK = friendship_pb2.BUDDY_KIND_PHONEBOOK
NEW_MATCH = friendship_pb2.BUDDY_EVENT_TYPE_NEW_MATCH
ACCEPTED = friendship_pb2.BUDDY_EVENT_TYPE_ACCEPTED


class _Backoff(TypedDict):
    initial_backoff: float
    max_backoff: float


FAST: _Backoff = {"initial_backoff": 0.001, "max_backoff": 0.01}


async def test_list_and_iter_buddies(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        assert isinstance(client.friendship, AsyncFriendshipClient)
        page = await client.friendship.list_buddies(kind=ONE_WAY)
        every = [b.name async for b in client.friendship.iter_buddies(page_size=2)]
        phonebook = [b async for b in client.friendship.iter_buddies(kind=PHONEBOOK)]
    assert [b.user for b in page.buddies] == ["users/u3"] and page.total_size == 1
    assert every == [
        "users/u1/buddies/u2",
        "users/u1/buddies/u3",
        "users/u1/buddies/k8613900000009",
    ]
    assert [b.phonebook_entry.display_name for b in phonebook] == ["Dan"]
    rec = aio_server.recorder
    requests = rec.requests("ListBuddies")
    assert [(r.parent, r.kind, r.page_size, r.page_token) for r in requests] == [
        ("users/me", ONE_WAY, 0, ""),
        ("users/me", 0, 2, ""),
        ("users/me", 0, 2, "2"),
        ("users/me", PHONEBOOK, 0, ""),
    ]
    assert {md["authorization"] for md in rec.metadata("ListBuddies")} == {"Bearer t"}


@pytest.mark.parametrize(
    "given",
    ["u4", "users/u4", "users/me/oneWayRequests/u4", "users/u1/oneWayRequests/u4"],
)
async def test_accept_takes_an_id_a_member_or_a_request_name(
    aio_server: AioServer, given: str
) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        pending = await client.friendship.list_one_way_requests()
        answer = await client.friendship.accept_one_way_request(given)
    assert [r.requester for r in pending.one_way_requests] == ["users/u4", "users/u5"]
    assert answer.buddy.kind == FULL and answer.buddy.user == "users/u4"
    request = aio_server.recorder.requests("AcceptOneWayRequest")[0]
    expected = given if given.count("/") == 3 else "users/me/oneWayRequests/u4"
    assert request.name == expected
    uuid.UUID(request.request_id)
    assert request.etag == ""


async def test_accept_and_block_retry_with_one_request_id(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        await client.friendship.accept_one_way_request("flaky")
        blocked = await client.friendship.block_one_way_request(
            "flaky", request_id="rid-b", etag="e7"
        )
        with pytest.raises(NotFound) as missing:
            await client.friendship.block_one_way_request("u9")
        with pytest.raises(ValueError):
            await client.friendship.accept_one_way_request("")
    rec = aio_server.recorder
    accepts = rec.requests("AcceptOneWayRequest")
    assert len(accepts) == 2 and len({r.request_id for r in accepts}) == 1
    blocks = rec.requests("BlockOneWayRequest")
    assert [(r.request_id, r.etag) for r in blocks] == [("rid-b", "e7")] * 2 + [
        (blocks[2].request_id, "")
    ]
    assert blocked.blocked_user.name == "users/u1/blockedUsers/flaky"
    assert missing.value.reason == "NOT_FOUND"


async def test_presence_logs_and_active_contacts(aio_server: AioServer) -> None:
    log = friendship_pb2.CommunicationLogEntry(
        phone_number="13900000007", source=friendship_pb2.COMMUNICATION_LOG_SOURCE_SMS_INBOX
    )
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        presence = await client.friendship.set_presence(
            friendship_pb2.PRESENCE_STATE_BUSY, "in a meeting", "https://x/p.png"
        )
        await client.friendship.get_buddy_presence(["u2", "users/me/buddies/u3"])
        await client.friendship.get_buddy_presence()
        submitted = await client.friendship.submit_communication_logs(
            [log, log], device_id="dev-1", request_id="rid-l"
        )
        proposals = await client.friendship.list_active_contact_proposals()
        await client.friendship.confirm_active_contacts(excluded=["p2", "users/u1/x/y"])
        with pytest.raises(ValueError, match="at most 5000"):
            await client.friendship.submit_communication_logs(
                [log] * (MAX_COMMUNICATION_LOG_ENTRIES + 1)
            )
        with pytest.raises(TypeError):
            await client.friendship.get_buddy_presence("u2")
    rec = aio_server.recorder
    assert presence.presence.status_message == "in a meeting"
    set_request = rec.requests("SetPresence")[0]
    assert set_request.presence.state == friendship_pb2.PRESENCE_STATE_BUSY
    assert set_request.presence.picture_uri == "https://x/p.png"
    uuid.UUID(set_request.request_id)
    asked = rec.requests("GetBuddyPresence")
    assert [list(r.buddies) for r in asked] == [
        ["users/me/buddies/u2", "users/me/buddies/u3"],
        [],
    ]
    assert {r.parent for r in asked} == {"users/me"}
    assert (submitted.accepted_count, submitted.distinct_number_count) == (2, 1)
    logs = rec.requests("SubmitCommunicationLogs")
    assert len(logs) == 1  # the oversized call never left the client
    assert (logs[0].device_id, logs[0].request_id, len(logs[0].entries)) == ("dev-1", "rid-l", 2)
    assert proposals.proposals[0].selected
    confirm = rec.requests("ConfirmActiveContacts")[0]
    assert confirm.parent == "users/me"
    assert list(confirm.excluded_proposals) == [
        "users/me/activeContactProposals/p2",
        "users/u1/x/y",  # a full name is sent as given
    ]
    uuid.UUID(confirm.request_id)


async def test_refresh_matches_needs_the_service_token(aio_server: AioServer) -> None:
    async with AsyncClient(aio_server.target, token=SERVICE_TOKEN, **FAST) as service:
        answer = await service.friendship.refresh_matches(["u1", "users/u2"], validate_only=True)
        everyone = await service.friendship.refresh_matches()
    async with AsyncClient(aio_server.target, token="user-token", **FAST) as user:
        with pytest.raises(PermissionDenied):
            await user.friendship.refresh_matches()
    assert (answer.job_id, answer.user_count, everyone.user_count) == ("job-1", 2, 42)
    first = aio_server.recorder.requests("RefreshMatches")[0]
    assert list(first.users) == ["users/u1", "users/u2"] and first.validate_only
    uuid.UUID(first.request_id)


async def test_watch_events_resumes_after_the_last_cursor(aio_server: AioServer) -> None:
    state = aio_server.recorder.friendship
    state.add_events(NEW_MATCH, ACCEPTED, NEW_MATCH, NEW_MATCH, ACCEPTED)
    # Stream 1 breaks after 2 events, stream 2 before any, stream 3 runs to the end.
    state.watch_faults.extend([StreamFault(2), StreamFault(0)])
    async with AsyncClient(aio_server.target, token="t", **FAST) as client:
        events = [e async for e in client.friendship.watch_events(cursor="0")]
        filtered = [
            e.cursor async for e in client.friendship.watch_events(cursor="1", types=[ACCEPTED])
        ]
    assert [e.cursor for e in events] == ["1", "2", "3", "4", "5"]  # none twice, none lost
    assert filtered == ["2", "5"]
    requests = aio_server.recorder.requests("WatchEvents")
    assert [r.cursor for r in requests] == ["0", "2", "2", "1"]
    assert {r.parent for r in requests} == {"users/me"}
    assert list(requests[-1].types) == [ACCEPTED]
    assert state.watch_streams == 4


async def test_watch_events_gives_up_and_reports_an_expired_cursor(
    aio_server: AioServer,
) -> None:
    state = aio_server.recorder.friendship
    state.add_events(NEW_MATCH, NEW_MATCH)
    state.watch_faults.extend([StreamFault(0)] * 3)
    async with AsyncClient(aio_server.target, token="t", retries=2, **FAST) as client:
        with pytest.raises(Unavailable):
            [e async for e in client.friendship.watch_events(cursor="0")]
        state.trimmed_before = 2
        with pytest.raises(FailedPrecondition) as expired:
            [e async for e in client.friendship.watch_events(cursor="1")]
    assert expired.value.reason == "SYNC_CURSOR_EXPIRED"
    assert state.watch_streams == 4  # 1 + 2 retries, then the expired one is not retried


def test_blocking_client_friendship(threaded_server: ThreadedServer) -> None:
    state = threaded_server.recorder.friendship
    state.add_events(NEW_MATCH, ACCEPTED, NEW_MATCH)
    state.watch_faults.append(StreamFault(1, code=grpc.StatusCode.UNAVAILABLE))
    with Client(threaded_server.target, token="t", **FAST) as client:
        assert isinstance(client.friendship, FriendshipClient)
        kinds = [b.kind for b in client.friendship.iter_buddies(page_size=1)]
        requests = list(client.friendship.iter_one_way_requests(page_size=1))
        accepted = client.friendship.accept_one_way_request("u5")
        blocked = client.friendship.block_one_way_request("users/u4")
        events = [e.cursor for e in client.friendship.watch_events(cursor="0")]
        client.friendship.set_presence(friendship_pb2.PRESENCE_STATE_AWAY)
        client.friendship.get_buddy_presence(["u2"])
        client.friendship.submit_communication_logs([])
        client.friendship.list_active_contact_proposals(page_size=5, page_token="x")
        client.friendship.confirm_active_contacts()
        client.token = SERVICE_TOKEN
        assert client.friendship.refresh_matches(["u2"]).user_count == 1
    assert kinds == [FULL, ONE_WAY, PHONEBOOK]
    assert [r.requester_display_name for r in requests] == ["Eve", "Frank"]
    assert accepted.one_way_request.state == friendship_pb2.ONE_WAY_REQUEST_STATE_ACCEPTED
    assert blocked.one_way_request.name == "users/me/oneWayRequests/u4"
    assert events == ["1", "2", "3"]
    rec = threaded_server.recorder
    assert [r.cursor for r in rec.requests("WatchEvents")] == ["0", "1"]
    assert [r.page_token for r in rec.requests("ListOneWayRequests")] == ["", "1"]
    listed = rec.requests("ListActiveContactProposals")[0]
    assert (listed.parent, listed.page_size, listed.page_token) == ("users/me", 5, "x")
    assert state.requests == {}
