"""Active contacts, buddy events and the bulk refresh, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import delete, select, update

from befriend.server.records import IdentityKind, IdentityRecord
from befriend.server.services import matching, refresh
from befriend.server.services.registry import Registry
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.server.storage.matching import FULL as ROW_FULL
from befriend.server.storage.matching import ONE_WAY as ROW_ONE_WAY
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.repositories import AccountRepository, key_from_db, key_to_db
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
    assert [bd.origin for bd in phonebook.values()] == [friendship_pb2.BUDDY_ORIGIN_ACTIVE_CONTACT]
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
    # Zed's contact is no phonebook buddy any more (derived from the registry), but no
    # match was made for him either until the refresh.
    assert await a.buddies(PHONEBOOK) == {}
    assert "users/zed0000000000000000000000000000z" not in await a.kinds()
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
    real = matching.match_users

    def flaky(repo, reg, user_ids, now, origin):
        if len(seen) == 2:
            raise RuntimeError("process killed")
        seen.extend(user_ids)
        return real(repo, reg, user_ids, now, origin)

    monkeypatch.setattr(refresh, "BATCH", 1)
    monkeypatch.setattr(matching, "match_users", flaky)
    with pytest.raises(RuntimeError):
        refresh.run(db, registry, "crashy", lambda: datetime.now(UTC))
    monkeypatch.setattr(matching, "match_users", real)
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


Edges = dict[tuple[str, str], int]


def _reference(db: Database) -> tuple[list[str], Edges]:
    """``refresh.changed_users`` the straightforward way, whole tables as Python objects;
    with the rows it wants ((owner, other) -> kind)."""
    with db.transaction(readonly=True) as s:
        users = set(s.scalars(select(models.User.id)))
        member = {key_from_db(i.key): i.user_id for i in s.scalars(select(models.Identity))}
        books: dict[str, dict[int, list[int]]] = {}
        for k in s.scalars(
            select(models.EntryKey)
            .where(models.EntryKey.key.is_not(None))
            .order_by(models.EntryKey.entry_pk, models.EntryKey.ordinal)
        ):
            assert k.key is not None
            books.setdefault(k.user_id, {}).setdefault(k.entry_pk, []).append(key_from_db(k.key))
        stored = list(s.scalars(select(models.BuddyRow)))
        decided = {
            u
            for d in s.scalars(select(models.BuddyDecision))
            for u in (d.decider_id, d.requester_id)
        }
    edges: set[tuple[str, str]] = set()
    for owner, entries in books.items():
        for keys in entries.values():
            edges |= {(owner, member[k]) for k in keys if k in member and member[k] != owner}
    want = {(o, t): ROW_FULL if (t, o) in edges else ROW_ONE_WAY for o, t in edges}
    have = {(r.owner_id, r.other_id or ""): r.kind for r in stored}  # member rows only
    dirty = {u for pair in set(want.items()) ^ set(have.items()) for u in pair[0]}
    return sorted((dirty | decided) & users), want


def _scan(db: Database) -> list[str]:
    with db.transaction(readonly=True) as s:
        return refresh.changed_users(MatchRepository(s))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_refresh_scan_equals_a_python_reference(db: Database, seed: int) -> None:
    """A random population: several keys per contact, duplicates within and across
    contacts, e-mail keys (>= 2**63, stored signed), keys that could not be normalised
    (NULL), members without books, books of users without identities, ids in scrambled
    order; then stored rows right, missing, extra, of the other kind or another key."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(40)]
    phone = {u: 8613900000000 + i for i, u in enumerate(ids)}
    email = {u: (1 << 63) + rng.getrandbits(62) for u in ids[::3]}
    registered = ids[:30]  # the last ten hold books but own no identity
    pool = [phone[u] for u in registered] + [email[u] for u in registered if u in email]
    pool += [8613800000000 + i for i in range(15)] + [(1 << 63) + i for i in range(5)]
    ts = {"created_at": now, "updated_at": now}
    with db.transaction() as s:
        s.add_all(models.User(id=u, display_name=u[:6], **ts) for u in ids)
        s.flush()
        s.add_all(
            models.Identity(
                user_id=u,
                kind=int(kind),
                value=f"{int(kind)}:{key}",
                key=key_to_db(key),
                raw="",
                created_at=now,
            )
            for u in registered
            for kind, key in [(IdentityKind.PHONE, phone[u])]
            + ([(IdentityKind.EMAIL, email[u])] if u in email else [])
        )
        owners = [u for u in ids if rng.random() < 0.7]
        s.add_all(
            models.AddressBook(id=b + 1, user_id=u, book_id="phone", kind=1, **ts)
            for b, u in enumerate(owners)
        )
        s.flush()
        entries = [(b, u) for b, u in enumerate(owners) for _ in range(rng.randint(0, 12))]
        entry_pks = rng.sample(range(1, 10_000), len(entries))
        s.add_all(
            models.ContactEntry(
                id=pk,
                book_pk=b + 1,
                user_id=u,
                entry_id=f"e{pk}",
                raw=b"",
                content_hash="",
                contact=b"",
                **ts,
            )
            for pk, (b, u) in zip(entry_pks, entries, strict=True)
        )
        s.flush()
        key_rows = [
            (pk, n, u, None if rng.random() < 0.1 else rng.choice(pool))
            for pk, (_, u) in zip(entry_pks, entries, strict=True)
            for n in range(rng.randint(1, 4))
        ]
        rng.shuffle(key_rows)  # insertion order unrelated to entry order
        s.add_all(
            models.EntryKey(
                entry_pk=pk,
                ordinal=n,
                user_id=u,
                kind=1,
                key=None if k is None else key_to_db(k),
                weak_key=1234567,
                value=str(k),
            )
            for pk, n, u, k in key_rows
        )
    dirty, want = _reference(db)
    assert _scan(db) == dirty == sorted({o for o, _ in want} | {t for _, t in want})

    # The rows the rules give, then drift.
    def row(o: str, t: str, kind: int, key: int) -> models.BuddyRow:
        return models.BuddyRow(
            owner_id=o, other_id=t, kind=kind, key=key_to_db(key), key_kind=1, origin=1, **ts
        )

    with db.transaction() as s:
        s.add_all(row(o, t, kind, phone[t]) for (o, t), kind in want.items())
    assert _scan(db) == _reference(db)[0] == []
    with db.transaction() as s:
        s.add(
            models.BuddyDecision(
                decider_id=ids[0], requester_id=ids[35], decision=1, created_at=now
            )
        )
    assert _scan(db) == _reference(db)[0] == sorted([ids[0], ids[35]])
    member_rows = sorted(want)
    with db.transaction() as s:
        for o, t in rng.sample(member_rows, 3):  # missing
            s.execute(
                delete(models.BuddyRow).where(
                    models.BuddyRow.owner_id == o, models.BuddyRow.other_id == t
                )
            )
        for o, t in rng.sample(member_rows, 3):  # the other kind
            s.execute(
                update(models.BuddyRow)
                .where(models.BuddyRow.owner_id == o, models.BuddyRow.other_id == t)
                .values(kind=ROW_FULL + ROW_ONE_WAY - want[o, t])
            )
        extra = [(a, b) for a in ids for b in ids if a != b and (a, b) not in want]
        s.add_all(row(a, b, ROW_ONE_WAY, phone[b]) for a, b in rng.sample(extra, 3))
    got = _scan(db)
    assert got == _reference(db)[0]
    assert 6 <= len(got) < len(ids)


async def test_refresh_scan_starts_its_snapshot(db: Database) -> None:
    """The scan numbers users in every statement, so all must read one snapshot: on
    PostgreSQL it sets REPEATABLE READ, which only a transaction's first statement may."""
    with db.transaction(readonly=True) as s:
        repo = MatchRepository(s)
        repo.user_count()
        if db.is_sqlite:
            repo.begin_refresh_scan()  # a SQLite read transaction is one snapshot already
        else:
            with pytest.raises(RuntimeError):
                repo.begin_refresh_scan()
    with db.transaction(readonly=True) as s:
        assert refresh.changed_users(MatchRepository(s)) == []
