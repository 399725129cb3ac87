"""Differential property test of the restricted buddy match (SQLite and PostgreSQL, real
repositories and registry, a small seeded population).

Random sequences of book edits (incremental and full-snapshot uploads adding, changing and
removing contacts' numbers and e-mails, renames; CreateContact / UpdateContact /
DeleteContact), members registering or changing their number, and one-way requests accepted,
blocked or unblocked. After every book edit, inside one transaction:

- in a savepoint, the whole-book recompute ``match_user(...)`` runs, the buddies and
  buddy-event tables are snapshotted, and the savepoint is rolled back;
- then the write path's own call runs: ``match_user(..., keys=<the keys the edit inserted or
  deleted>)``, or nothing when the edit changed no key row;
- both snapshots (every column but the ids, timestamps included, so a spurious rewrite
  shows) and both returned event lists must be equal.

A final check: the whole-book recompute of every member writes nothing (the state the
restricted path left is the fixpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from befriend.server.api import contactdoc
from befriend.server.api.contacts import CODEC
from befriend.server.api.sync import chunk_from
from befriend.server.services import accounts, addressbooks, contacts, matching
from befriend.server.services.accounts import RegisterCommand
from befriend.server.services.matching import ORIGIN_ADDRESS_BOOK, ORIGIN_REGISTRATION
from befriend.server.services.registry import Registry
from befriend.server.storage import models
from befriend.server.storage.addressbooks import AddressBookRepository, KeyDelta
from befriend.server.storage.contacts import ContactRepository
from befriend.server.storage.db import Database
from befriend.server.storage.matching import ACCEPTED, BLOCKED, MatchRepository
from befriend.server.storage.models import Base
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import common_pb2, sync_pb2

PHONES = [f"+861390000{i:04d}" for i in range(8)]
EMAILS = [f"p{i}@example.com" for i in range(4)]
BAD = "12"  # unnormalisable: a weak-key-only row
ENTRY_IDS = [f"e{i}" for i in range(5)]
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def database(database_url: str) -> Iterator[Database]:
    """The session database of the backend (SQLite, PostgreSQL), one engine per module."""
    db = Database(database_url)
    yield db
    db.dispose()


@dataclass
class World:
    db: Database
    registry: Registry
    users: list[str]
    now: datetime = T0
    uploads: int = 0

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _snapshot(s: Session) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    b, ev = models.BuddyRow, models.BuddyEvent
    rows = s.execute(
        select(
            b.owner_id,
            b.other_id,
            b.kind,
            b.key,
            b.key_kind,
            b.entry_pk,
            b.origin,
            b.created_at,
            b.updated_at,
        )
    ).all()
    events = s.execute(select(ev.user_id, ev.type, ev.other_id, ev.created_at)).all()
    key = repr
    return sorted((tuple(r) for r in rows), key=key), sorted((tuple(e) for e in events), key=key)


def _differential(w: World, s: Session, user: str, delta: KeyDelta, now: datetime) -> None:
    """Whole-book recompute (in a rolled-back savepoint) vs the write path's own call."""
    repo = MatchRepository(s)
    nested = s.begin_nested()
    full_events = matching.match_user(repo, w.registry, user, now, ORIGIN_ADDRESS_BOOK)
    full = _snapshot(s)
    nested.rollback()
    ours: list[tuple[str, int, str]] = []
    if delta.changed:
        ours = matching.match_user(
            repo, w.registry, user, now, ORIGIN_ADDRESS_BOOK, keys=delta.keys
        )
    assert _snapshot(s) == full
    assert sorted(ours) == sorted(full_events)


def _contact(name: str, phones: list[str], emails: list[str]) -> common_pb2.Contact:
    return common_pb2.Contact(
        display_name=name,
        mobile_numbers=[common_pb2.PhoneNumber(raw=p) for p in phones],
        email_addresses=[common_pb2.EmailAddress(raw=e) for e in emails],
    )


# -- operations --------------------------------------------------------------------------

identities = st.tuples(
    st.lists(st.sampled_from([*PHONES, BAD]), max_size=3),
    st.lists(st.sampled_from(EMAILS), max_size=2),
)
upload_op = st.tuples(
    st.just("upload"),
    st.integers(0, 3),
    st.booleans(),  # full snapshot
    st.lists(
        st.tuples(
            st.sampled_from(ENTRY_IDS), identities, st.sampled_from(["A", "B"]), st.booleans()
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda e: e[0],
    ),
)
create_op = st.tuples(st.just("create"), st.integers(0, 3), identities)
update_op = st.tuples(st.just("update"), st.integers(0, 3), st.integers(0, 9), identities)
rename_op = st.tuples(st.just("rename"), st.integers(0, 3), st.integers(0, 9))
delete_op = st.tuples(st.just("delete"), st.integers(0, 3), st.integers(0, 9))
register_op = st.tuples(st.just("register"), st.integers(0, 7), st.booleans())
change_op = st.tuples(st.just("change"), st.integers(0, 3), st.integers(0, 7))
decide_op = st.tuples(st.just("decide"), st.integers(0, 3), st.integers(0, 9), st.booleans())
unblock_op = st.tuples(st.just("unblock"), st.integers(0, 3), st.integers(0, 9))
operations = st.lists(
    st.one_of(
        upload_op,
        upload_op,
        create_op,
        update_op,
        rename_op,
        delete_op,
        register_op,
        change_op,
        decide_op,
        unblock_op,
    ),
    min_size=1,
    max_size=10,
)


def _upload(w: World, op: tuple[Any, ...]) -> None:
    _, who, snapshot, entries = op
    user = w.users[who % len(w.users)]
    w.uploads += 1
    request = sync_pb2.UploadContactsRequest(
        upload_id=f"up-{w.uploads}",
        sequence_number=1,
        final=True,
        address_book_id="phone",
        address_book_kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
        device_id="d",
        mode=sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT if snapshot else sync_pb2.UPLOAD_MODE_INCREMENTAL,
        entries=[
            sync_pb2.AddressBookEntry(
                entry_id=eid,
                raw=_contact(name, phones, emails).SerializeToString(),
                contact=_contact(name, phones, emails),
                deleted=deleted,
            )
            for eid, (phones, emails), name, deleted in entries
        ],
    )
    now = w.tick()
    with w.db.transaction() as s:
        result = addressbooks.apply_chunks(
            AddressBookRepository(s),
            AccountRepository(s),
            user,
            [chunk_from(request)],
            now,
            contactdoc.remerge,
        )
        delta = KeyDelta(set(result.keys), result.rekeyed)
        _differential(w, s, user, delta, now)


def _contact_ids(s: Session, user: str) -> list[tuple[int, int]]:
    e = models.ContactEntry
    return [
        (pk, version)
        for pk, version in s.execute(
            select(e.id, e.version).where(e.user_id == user).order_by(e.id)
        )
    ]


def _edit(w: World, op: tuple[Any, ...]) -> None:
    kind, who = op[0], op[1]
    user = w.users[who % len(w.users)]
    now = w.tick()
    with w.db.transaction() as s:
        repo, books = ContactRepository(s), AddressBookRepository(s)
        delta = KeyDelta()
        if kind == "create":
            phones, emails = op[2]
            book = books.book(user, "phone")
            if book is None:
                return
            doc = contactdoc.to_doc(_contact("C", phones, emails))
            contacts.create_contact(
                repo, books, AccountRepository(s), user, "phone", doc, CODEC, now, delta
            )
        else:
            ids = _contact_ids(s, user)
            if not ids:
                return
            pk, version = ids[op[2] % len(ids)]
            if kind == "delete":
                contacts.delete_contact(repo, books, user, pk, "", now, delta)
            else:
                if kind == "rename":
                    changes = contactdoc.to_doc(common_pb2.Contact(remark=f"r{now.second}"))
                    paths = ["remark"]
                else:
                    phones, emails = op[3]
                    changes = contactdoc.to_doc(_contact("C", phones, emails))
                    paths = ["mobile_numbers", "email_addresses"]
                contacts.update_contact(
                    repo,
                    books,
                    AccountRepository(s),
                    user,
                    pk,
                    contacts.etag(version),
                    changes,
                    paths,
                    CODEC,
                    now,
                    delta,
                )
                if kind == "rename":
                    assert not delta.changed
        _differential(w, s, user, delta, now)


def _register(w: World, op: tuple[Any, ...]) -> None:
    _, phone, with_email = op
    now = w.tick()
    with w.db.transaction() as s:
        repo = AccountRepository(s)
        owned = {v for u in w.users for v in _identity_values(s, u)}
        if PHONES[phone] in owned or (with_email and EMAILS[phone % 4] in owned):
            return
        user, _ = accounts.register(
            repo,
            RegisterCommand(
                display_name=f"M{len(w.users)}",
                phone_numbers=[PHONES[phone]],
                email_addresses=[EMAILS[phone % 4]] if with_email else [],
                region_code="CN",
            ),
            now,
        )
        matching.match_user(MatchRepository(s), w.registry, user.id, now, ORIGIN_REGISTRATION)
        w.users.append(user.id)


def _identity_values(s: Session, user: str) -> list[str]:
    i = models.Identity
    return list(s.execute(select(i.value).where(i.user_id == user)).scalars())


def _change(w: World, op: tuple[Any, ...]) -> None:
    _, who, phone = op
    user = w.users[who % len(w.users)]
    now = w.tick()
    with w.db.transaction() as s:
        repo = AccountRepository(s)
        owned = {v for u in w.users for v in _identity_values(s, u)}
        mine = [v for v in _identity_values(s, user) if v.startswith("+")]
        if PHONES[phone] in owned or not mine:
            return
        _, released = accounts.change_phone_number(repo, user, mine[0], PHONES[phone], "", now)
        m = MatchRepository(s)
        matching.match_user(m, w.registry, user, now, ORIGIN_REGISTRATION)
        matching.rematch_holders(m, w.registry, [released.key], now, ORIGIN_REGISTRATION)


def _decide(w: World, op: tuple[Any, ...]) -> None:
    kind, who, pick = op[0], op[1], op[2]
    user = w.users[who % len(w.users)]
    now = w.tick()
    with w.db.transaction() as s:
        m = MatchRepository(s)
        if kind == "decide":
            pending = [r for r, _, _ in m.one_way_requests_to(user)]
            if not pending:
                return
            decision = ACCEPTED if op[3] else BLOCKED
            matching.answer_one_way(
                m, w.registry, user, pending[pick % len(pending)], decision, now
            )
        else:
            blocked, _ = m.blocked_by(user, 0, 100)
            if not blocked:
                return
            matching.unblock(m, w.registry, user, blocked[pick % len(blocked)].user_id, now)


HANDLERS = {
    "upload": _upload,
    "create": _edit,
    "update": _edit,
    "rename": _edit,
    "delete": _edit,
    "register": _register,
    "change": _change,
    "decide": _decide,
    "unblock": _decide,
}


@contextmanager
def _world(db: Database) -> Iterator[World]:
    """The emptied database: four members (phones 0-3, the first also with e-mail 0), each
    with a seeded book."""
    with db.transaction() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())
    w = World(db, Registry(), [])
    for i in range(4):
        _register(w, ("register", i, i == 0))
    assert len(w.users) == 4
    seed = [
        (0, [("e0", ([PHONES[1]], []), "A", False), ("e1", ([PHONES[4]], []), "A", False)]),
        (1, [("e0", ([PHONES[0]], [EMAILS[2]]), "A", False)]),
        (2, [("e0", ([PHONES[0], PHONES[5]], []), "A", False)]),
        (3, [("e0", ([PHONES[4]], []), "A", False)]),
    ]
    for who, entries in seed:
        _upload(w, ("upload", who, False, entries))
    yield w


def _whole_books_write_nothing(w: World) -> None:
    now = w.tick()
    with w.db.transaction() as s:
        before = _snapshot(s)
        for user in w.users:
            assert (
                matching.match_user(MatchRepository(s), w.registry, user, now, ORIGIN_ADDRESS_BOOK)
                == []
            )
        assert _snapshot(s) == before


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_restricted_match_equals_whole_book_match(database: Database, ops: list[Any]) -> None:
    with _world(database) as w:
        for op in ops:
            HANDLERS[op[0]](w, op)
        _whole_books_write_nothing(w)


def test_seeded_world_has_every_kind_of_row(database: Database) -> None:
    """The seed gives the property test full and one-way rows to start from (phonebook
    buddies are derived, never stored)."""
    with _world(database) as w, w.db.transaction() as s:
        kinds = set(s.execute(select(models.BuddyRow.kind)).scalars())
        assert kinds == {1, 2}
