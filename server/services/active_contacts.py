"""Active contacts (seed 001): numbers from the user's SMS inbox/outbox and call logs,
deduplicated, minus the user's own numbers and existing buddies, proposed (all ticked by
default); the confirmed ones join a server-side "active-contacts" book and are matched
like any phonebook entry (phonebook buddies, or member matches)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from befriend.core.normalize import Status, normalize_many
from befriend.server.errors import InvalidArgument
from befriend.server.records import EntryInput, Rejection
from befriend.server.services import matching
from befriend.server.services.accounts import get_user
from befriend.server.services.addressbooks import entry_keys
from befriend.server.services.registry import Registry
from befriend.server.storage.addressbooks import AddressBookRepository, KeyDelta
from befriend.server.storage.changes import ORIGIN_USER_EDIT
from befriend.server.storage.matching import (
    ACTIVE_CONFIRMED,
    ACTIVE_EXCLUDED,
    ACTIVE_OPEN,
    ActiveProposal,
    MatchRepository,
)
from befriend.server.storage.repositories import AccountRepository

MAX_LOG_ENTRIES = 5000


@dataclass(frozen=True)
class LogRecord:
    phone_number: str
    source: int  # CommunicationLogSource, 1-5
    event_time: datetime
    display_name: str = ""


@dataclass
class _Seen:
    raw: str
    name: str
    key: int
    last: datetime
    count: int = 0
    sources: int = 0


@dataclass(frozen=True)
class SubmitResult:
    accepted: int
    distinct: int
    proposals: int
    rejections: list[Rejection]


def submit_logs(
    accounts: AccountRepository,
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    records: Sequence[LogRecord],
    now: datetime,
) -> SubmitResult:
    if len(records) > MAX_LOG_ENTRIES:
        raise InvalidArgument.field("entries", f"at most {MAX_LOG_ENTRIES} records per call")
    user = get_user(accounts, user_id)
    batch = normalize_many([r.phone_number for r in records], user.region_code)
    rejections: list[Rejection] = []
    seen: dict[str, _Seen] = {}
    for i, r in enumerate(records):
        if not 1 <= r.source <= 5:
            rejections.append(Rejection(i, "", "source", "unknown log source"))
            continue
        if batch.status[i] != Status.OK:
            rejections.append(
                Rejection(i, "", "phone_number", "not a valid phone number", "INVALID_PHONE_NUMBER")
            )
            continue
        item = seen.setdefault(
            batch.e164[i], _Seen(r.phone_number, r.display_name, int(batch.key[i]), r.event_time)
        )
        item.count += 1
        item.sources |= 1 << r.source
        item.last = max(item.last, r.event_time)
        item.name = item.name or r.display_name
    excluded = matching.buddy_keys(repo, registry, user_id) | {i.key for i in user.identities}
    fresh = [
        (e164, v.raw, v.name, v.count, v.sources, v.last)
        for e164, v in seen.items()
        if v.key not in excluded
    ]
    repo.upsert_active(user_id, fresh)
    open_count = len(repo.active_proposals(user_id, ACTIVE_OPEN))
    return SubmitResult(len(records) - len(rejections), len(seen), open_count, rejections)


def proposals(repo: MatchRepository, user_id: str) -> tuple[list[ActiveProposal], set[str]]:
    """Open proposals, most frequent first, and which of their numbers belong to members."""
    open_ = repo.active_proposals(user_id, ACTIVE_OPEN)
    return open_, repo.members_by_e164([p.e164 for p in open_])


def confirm(
    accounts: AccountRepository,
    books: AddressBookRepository,
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    excluded_ids: set[int],
    contact_bytes: Callable[[str, str], bytes],
    now: datetime,
) -> tuple[list[ActiveProposal], set[str]]:
    """Confirm every open proposal but the excluded; return the confirmed ones and which
    of them are members."""
    open_ = repo.active_proposals(user_id, ACTIVE_OPEN)
    chosen = [p for p in open_ if p.id not in excluded_ids]
    repo.set_active_state(user_id, [p.id for p in open_ if p.id in excluded_ids], ACTIVE_EXCLUDED)
    repo.set_active_state(user_id, [p.id for p in chosen], ACTIVE_CONFIRMED)
    if chosen:
        book_pk, _ = books.ensure_book(user_id, matching.ACTIVE_BOOK, 1, "", now)
        entries = [
            EntryInput(
                entry_id=f"ac-{p.e164}",
                raw=p.e164.encode(),
                media_type="text/plain",
                content_hash=hashlib.sha256(p.e164.encode()).hexdigest(),
                contact=contact_bytes(p.display_name, p.e164),
                phones=(p.e164,),
            )
            for p in chosen
        ]
        keys = entry_keys(entries, get_user(accounts, user_id).region_code)
        stamp = books.stamp(user_id, ORIGIN_USER_EDIT)
        delta = KeyDelta()  # the confirmed numbers' keys, where their contacts are new
        books.upsert_entries(
            user_id, book_pk, 0, list(zip(entries, keys, strict=True)), now, stamp, delta=delta
        )
        books.touch_book(book_pk, "", now)
        if delta.changed:
            matching.match_user(
                repo, registry, user_id, now, matching.ORIGIN_ACTIVE_CONTACT, keys=delta.keys
            )
    return chosen, repo.members_by_e164([p.e164 for p in chosen])
