"""Active contacts, buddy events and the bulk refresh, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import delete

from befriend.server.records import IdentityKind, IdentityRecord
from befriend.server.services import matching, refresh
from befriend.server.services.registry import Registry
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import friendship_pb2
from tests.conftest import RunningServer
from tests.service.conftest import FULL, ONE_WAY, PHONEBOOK, People, card, member

pytestmark = pytest.mark.asyncio
SMS_IN = friendship_pb2.COMMUNICATION_LOG_SOURCE_SMS_INBOX
CALL_OUT = friendship_pb2.COMMUNICATION_LOG_SOURCE_CALL_OUTGOING


def log(number: str, source: int, name: str = "") -> friendship_pb2.CommunicationLogEntry:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    return friendship_pb2.CommunicationLogEntry(
        phone_number=number,
        source=source,  # type: ignore[arg-type]
        event_time=ts,
        display_name=name,
    )


async def test_active_contacts_flow(people: People, running_server: RunningServer) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    c = await member(people, running_server, "carol", "13900000003")
    await a.upload(card("Bob", "13900000002"))  # bob is already a buddy
    logs = [
        log("139 0000 0002", SMS_IN),  # existing buddy: dropped
        log("13900000001", SMS_IN),  # own number: dropped
        log("13900000003", SMS_IN, "Carol"),  # member
        log("+86 139 0000 0003", CALL_OUT),  # same number again
        log("13900000044", CALL_OUT, "Dan"),  # non-member
        log("13900000055", SMS_IN, "Eve"),  # non-member, will be unticked
        log("not a number", SMS_IN),
    ]
    resp = await a.friends.SubmitCommunicationLogs(
        friendship_pb2.SubmitCommunicationLogsRequest(entries=logs), metadata=a.md
    )
    assert resp.accepted_count == 6
    assert resp.distinct_number_count == 5
    assert resp.proposal_count == 3
    assert [(r.entry_index, r.field) for r in resp.rejections] == [(6, "phone_number")]
    listed = await a.friends.ListActiveContactProposals(
        friendship_pb2.ListActiveContactProposalsRequest(), metadata=a.md
    )
    by_number = {p.phone_number.e164: p for p in listed.proposals}
    assert set(by_number) == {"+8613900000003", "+8613900000044", "+8613900000055"}
    assert all(p.selected for p in listed.proposals)  # all ticked by default
    assert listed.proposals[0].phone_number.e164 == "+8613900000003"  # most frequent first
    assert by_number["+8613900000003"].interaction_count == 2
    assert by_number["+8613900000003"].is_member
    assert set(by_number["+8613900000003"].sources) == {SMS_IN, CALL_OUT}
    confirmed = await a.friends.ConfirmActiveContacts(
        friendship_pb2.ConfirmActiveContactsRequest(
            excluded_proposals=[by_number["+8613900000055"].name]
        ),
        metadata=a.md,
    )
    assert [n.e164 for n in confirmed.invitable_numbers] == ["+8613900000044"]
    kinds = await a.kinds()
    assert kinds[f"users/{b.id}"] == ONE_WAY
    assert kinds[f"users/{c.id}"] == ONE_WAY
    phonebook = await a.buddies(PHONEBOOK)
    assert [bd.phonebook_entry.display_name for bd in phonebook.values()] == ["Dan"]
    # Nothing is proposed twice.
    again = await a.friends.SubmitCommunicationLogs(
        friendship_pb2.SubmitCommunicationLogsRequest(entries=logs), metadata=a.md
    )
    assert again.proposal_count == 0


async def test_watch_events_streams_and_resumes(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    stream = b.friends.WatchEvents(friendship_pb2.WatchEventsRequest(), metadata=b.md)
    reader = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.3)
    await a.upload(card("Bob", "13900000002"))  # bob gets a one-way request
    first = await asyncio.wait_for(reader, 10)
    assert isinstance(first, friendship_pb2.WatchEventsResponse)
    assert [e.type for e in first.events] == [friendship_pb2.BUDDY_EVENT_TYPE_ONE_WAY_REQUEST]
    assert first.events[0].one_way_request.requester == f"users/{a.id}"
    stream.cancel()
    # Meanwhile bob adds alice: both become full buddies; resume from the cursor.
    await b.upload(card("Alice", "13900000001"))
    resumed = b.friends.WatchEvents(
        friendship_pb2.WatchEventsRequest(cursor=first.cursor), metadata=b.md
    )
    nxt = await asyncio.wait_for(resumed.read(), 10)
    assert isinstance(nxt, friendship_pb2.WatchEventsResponse)
    assert [e.type for e in nxt.events] == [friendship_pb2.BUDDY_EVENT_TYPE_NEW_MATCH]
    assert nxt.events[0].buddy.user == f"users/{a.id}"
    resumed.cancel()


async def test_refresh_finds_what_changed(
    people: People, running_server: RunningServer, db: Database
) -> None:
    a = await member(people, running_server, "alice", "13900000001")
    b = await member(people, running_server, "bob", "13900000002")
    await a.upload(card("Bob", "13900000002"), card("Zed", "13900000026"))
    await b.upload(card("Alice", "13900000001"))
    assert (await a.kinds())[f"users/{b.id}"] == FULL
    with db.transaction(readonly=True) as s:
        before = {
            (r.owner_id, r.other_id): (r.id, r.updated_at)
            for r in s.query(models.BuddyRow).filter(models.BuddyRow.other_id.is_not(None))
        }
    # A member arrives without going through registration (a bulk import): only the
    # refresh can find him.
    now = datetime.now(UTC)
    with db.transaction() as s:
        AccountRepository(s).add_user(
            "zed0000000000000000000000000000z",
            display_name="Zed",
            region_code="CN",
            time_zone="UTC",
            profile={},
            identities=[IdentityRecord(IdentityKind.PHONE, "+8613900000026", 8613900000026, "")],
            now=now,
        )
    (zed,) = (await a.buddies(PHONEBOOK)).values()
    assert zed.phonebook_entry.display_name == "Zed"
    stub = a.friends
    answer = await stub.RefreshMatches(
        friendship_pb2.RefreshMatchesRequest(request_id="refresh-test"),
        metadata=(("authorization", f"Bearer {running_server.service_token}"),),
    )
    assert answer.job_id == "refresh-test" and answer.user_count == 3
    for _ in range(100):
        with db.transaction(readonly=True) as s:
            if s.get_one(models.RefreshJob, "refresh-test").state == 2:
                break
        await asyncio.sleep(0.1)
    kinds = await a.kinds()
    assert kinds["users/zed0000000000000000000000000000z"] == ONE_WAY
    assert PHONEBOOK not in kinds.values()
    with db.transaction(readonly=True) as s:
        after = {
            (r.owner_id, r.other_id): (r.id, r.updated_at)
            for r in s.query(models.BuddyRow).filter(models.BuddyRow.other_id.is_not(None))
        }
    for pair, row in before.items():
        assert after[pair] == row  # unchanged rows were not rewritten


async def test_refresh_resumes_after_a_crash(
    people: People, running_server: RunningServer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [await member(people, running_server, f"user{i}", f"1390000001{i}") for i in range(4)]
    for i, m in enumerate(users):  # each holds the next one's number
        await m.upload(card("next", f"1390000001{(i + 1) % 4}"))
    with db.transaction() as s:  # drift: the rows are lost; only a refresh restores them
        s.execute(delete(models.BuddyRow))
    registry = Registry()
    refresh.start(db, "crashy", datetime.now(UTC))
    seen: list[str] = []
    real = matching.match_user

    def flaky(repo, reg, user_id, now, origin):
        if len(seen) == 2:
            raise RuntimeError("process killed")
        seen.append(user_id)
        return real(repo, reg, user_id, now, origin)

    monkeypatch.setattr(refresh, "BATCH", 1)
    monkeypatch.setattr(matching, "match_user", flaky)
    with pytest.raises(RuntimeError):
        refresh.run(db, registry, "crashy", lambda: datetime.now(UTC))
    monkeypatch.setattr(matching, "match_user", real)
    with db.transaction(readonly=True) as s:
        job = s.get_one(models.RefreshJob, "crashy")
        assert (job.state, job.done_count) == (1, 2)
    assert refresh.resume_all(db, registry, lambda: datetime.now(UTC)) == ["crashy"]
    with db.transaction(readonly=True) as s:
        job = s.get_one(models.RefreshJob, "crashy")
        # Resumed after the two committed users; the bulk comparison then re-matches only
        # the users whose rows are still wrong (those two fixed their neighbours' rows too).
        assert job.state == 2 and 2 <= job.done_count <= 4
    assert [await m.kinds() for m in users] == [
        {f"users/{users[(i + 1) % 4].id}": ONE_WAY} for i in range(4)
    ]
    # Nothing differs now: a new job re-matches nobody.
    refresh.start(db, "again", datetime.now(UTC))
    assert refresh.run(db, registry, "again", lambda: datetime.now(UTC)) == 0
