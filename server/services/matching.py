"""Buddy matching (seed 001): full buddies, one-way buddies and phonebook buddies.

For a user U, the pairs involving U are recomputed from both sides' books:
- U's book holds a key of member B, and B's book holds a key of U -> full buddies both ways;
- only U holds B -> B is on U's list as a one-way buddy (no presence) and B is told;
  B may accept (-> full both ways) or block (the pair never shows again);
- a contact of U's book none of whose keys a member owns -> a phonebook buddy, which
  becomes a member match the moment someone registers with (or changes to) its key.
Member keys are looked up in the compiled KeyIndex registry; "who holds U's keys" comes
from the reverse index of entry keys. Member matches are stored (only what changed is
written); phonebook buddies are derived from the books when listed (``phonebook_buddies``),
so a registration, a number change or an edited contact can never leave a stale one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from befriend.core import sets
from befriend.core.index import EMPTY_KEY
from befriend.core.normalize import Status, normalize_many
from befriend.server.errors import NotFound, PermissionDenied
from befriend.server.records import WEAK_DIGITS, IdentityKind
from befriend.server.services.registry import Registry
from befriend.server.storage.matching import (
    ACCEPTED,
    BLOCKED,
    FULL,
    ONE_WAY,
    PHONEBOOK,
    BookKey,
    BuddyState,
    BuddyView,
    MatchRepository,
)
from befriend.server.storage.pending import PendingMatchRepository
from befriend.server.storage.repositories import key_from_db, key_to_db

# BuddyOrigin / BuddyEventType values of the contract
ORIGIN_ADDRESS_BOOK, ORIGIN_REGISTRATION, ORIGIN_REFRESH = 1, 2, 3
ORIGIN_ACTIVE_CONTACT, ORIGIN_ACCEPTED = 4, 5
ACTIVE_BOOK = "active-contacts"  # the server-side book of confirmed active contacts
EVENT_NEW_MATCH, EVENT_ONE_WAY_REQUEST, EVENT_ACCEPTED = 1, 2, 3


def _row(owner: str, other: str, kind: int, bk: BookKey | None, origin: int) -> BuddyState:
    return BuddyState(
        owner,
        other,
        kind,
        bk.key if bk else 0,
        bk.kind if bk else 0,
        bk.entry_pk if bk else None,
        origin,
    )


# -- the rules, shared by the whole-book and the restricted match ---------------------------


def _lookup(
    repo: MatchRepository, registry: Registry, keys: Iterable[int] | npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], list[int]]:
    """(distinct keys, the registry's identity pk of each or EMPTY_KEY, the pks found)."""
    arr = np.unique(keys if isinstance(keys, np.ndarray) else np.fromiter(keys, dtype=np.uint64))
    hits = registry.lookup(repo, arr) if arr.size else arr
    return arr, hits, hits[hits != EMPTY_KEY].tolist()


def holders_of(
    repo: MatchRepository, registry: Registry, keys: list[int]
) -> list[tuple[str, BookKey]]:
    """Who holds any of ``keys`` in a book, (holder, the entry key) in entry order: the
    in-memory holder index's candidates, confirmed by the database."""
    return repo.holders(keys, registry.holders.entries(repo, keys))


def _owners(
    repo: MatchRepository, registry: Registry, keys: Iterable[int] | npt.NDArray[np.uint64]
) -> dict[int, str]:
    """key -> the member owning it (the compiled registry, each hit confirmed by the
    database)."""
    arr, hits, pks = _lookup(repo, registry, keys)
    return _confirmed(arr, hits, repo.identity_keys_by_pk(pks)) if pks else {}


def _confirmed(
    arr: npt.NDArray[np.uint64], hits: npt.NDArray[np.uint64], found: dict[int, tuple[str, int]]
) -> dict[int, str]:
    """key -> owner of the registry's hits that the database confirms (``found``: identity
    pk -> (user, key) as stored now)."""
    out: dict[int, str] = {}
    hit = hits != EMPTY_KEY  # (most of a book's keys are no member's)
    for key, pk in zip(arr[hit].tolist(), hits[hit].tolist(), strict=True):
        # A hit counts only while the identity still carries that key: a cached entry can
        # outlive its identity (SQLite reuses a deleted row's pk for the next identity).
        owner = found.get(pk)
        if owner is not None and owner[1] == key:
            out[key] = owner[0]
    return out


def _first_naming(
    rows: Iterable[BookKey], owner_of: dict[int, str], user_id: str
) -> dict[str, BookKey]:
    """member -> the first of ``rows`` (in entry order) holding one of their keys."""
    first: dict[str, BookKey] = {}
    for bk in rows:
        owner = owner_of.get(bk.key)
        if owner is not None and owner != user_id:
            first.setdefault(owner, bk)
    return first


def _first_holding(holders: Iterable[tuple[str, BookKey]], user_id: str) -> dict[str, BookKey]:
    """holder -> their first entry key holding one of the user's own keys."""
    first: dict[str, BookKey] = {}
    for holder, bk in holders:
        if holder != user_id:
            first.setdefault(holder, bk)
    return first


def _phonebook_keys(rows: Sequence[BookKey], members: Container[int]) -> dict[int, BookKey]:
    """One phonebook buddy per contact none of whose keys belongs to a member (its first
    key), and one per number when several contacts share it (the first contact holding
    it). ``rows`` are whole entries' key rows in entry order; ``members``: member keys."""
    member_entries = {bk.entry_pk for bk in rows if bk.key in members}
    unmatched: dict[int, BookKey] = {}
    first_of_entry: set[int] = set()
    for bk in rows:
        if bk.entry_pk in member_entries or bk.entry_pk in first_of_entry:
            continue
        first_of_entry.add(bk.entry_pk)
        unmatched.setdefault(bk.key, bk)
    return unmatched


def _pair_rows(
    user_id: str,
    others: Iterable[str],
    a_has: dict[str, BookKey],
    b_has: dict[str, BookKey],
    decisions: dict[tuple[str, str], int],
    origin: int,
) -> list[BuddyState]:
    """The rows user -> other and other -> user each pair should have."""
    desired: list[BuddyState] = []
    for other in sorted(others):
        pair = (decisions.get((other, user_id)), decisions.get((user_id, other)))
        if BLOCKED in pair:
            continue  # a blocked requester never sees the blocker again (nor vice versa)
        accepted = ACCEPTED in pair
        a, b = other in a_has, other in b_has
        if a or (accepted and b):
            kind = FULL if (b or accepted) else ONE_WAY
            how = origin if a else ORIGIN_ACCEPTED
            desired.append(_row(user_id, other, kind, a_has.get(other), how))
        if b or (accepted and a):
            kind = FULL if (a or accepted) else ONE_WAY
            how = origin if b else ORIGIN_ACCEPTED
            desired.append(_row(other, user_id, kind, b_has.get(other), how))
    return desired


Slot = tuple[str, str]  # (owner, other) of a buddy row
Event = tuple[str, int, str]  # (user told, event type, other user)


@dataclass
class _Diff:
    """What to write to bring the stored rows of some pairs to what they should be."""

    delete: list[BuddyState]
    insert: list[BuddyState]
    update: list[BuddyState]  # the new row of each slot whose match changed
    events: list[Event]


def _diff(existing: Iterable[BuddyState], desired: Iterable[BuddyState]) -> _Diff:
    """The differences between the stored rows of some pairs and what they should be
    (every (owner, other) of ``desired`` must be among those ``existing`` was read for),
    and the events they make: a new row or a changed kind tells its side."""
    before = {(r.owner_id, r.other_id): r for r in existing}
    after = {(r.owner_id, r.other_id): r for r in desired}
    out = _Diff(
        [r for s, r in before.items() if s not in after],
        [r for s, r in after.items() if s not in before],
        [],
        [],
    )
    for slot, row in after.items():
        old = before.get(slot)
        if old is not None and (old.kind, old.key, old.entry_pk) != (
            row.kind,
            row.key,
            row.entry_pk,
        ):
            out.update.append(row)
        if old is not None and old.kind == row.kind:
            continue
        if row.kind == FULL:
            out.events.append((row.owner_id, EVENT_NEW_MATCH, row.other_id))
        elif row.kind == ONE_WAY:
            out.events.append((row.other_id, EVENT_ONE_WAY_REQUEST, row.owner_id))
    return out


def _write(repo: MatchRepository, diff: _Diff, now: datetime) -> list[Event]:
    repo.delete_rows(diff.delete)
    repo.insert_rows(diff.insert, now)
    repo.update_rows(diff.update, now)
    repo.add_events(diff.events, now)
    return diff.events


# -- entry point -------------------------------------------------------------------------


def match_user(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    now: datetime,
    origin: int,
    *,
    keys: Collection[int] | None = None,
    book_rows: dict[str, list[tuple[Any, ...]]] | None = None,
) -> list[tuple[str, int, str]]:
    """Bring the buddy rows involving ``user_id`` up to date; return the events written.

    ``keys=None`` recomputes every row from the user's whole books (registration, number
    change, decisions, refresh). ``keys`` = the exact keys of the entry_keys rows this
    transaction inserted into or deleted from the user's books (old and new keys of the
    contacts it changed) recomputes only what those keys can affect, with the same result:
    the rows between the user and the members owning one of them. Empty ``keys``: nothing
    to do. With the weak-key fallback on, the whole books are matched (weak keys
    are not tracked per change). ``book_rows``: for ``keys=None``, the user's
    ``repo.book_key_rows`` as the caller read them, holding the matching lock already.

    Matches run one at a time (``serialize_matching``, until the transaction ends): two
    users adding each other at the same moment would otherwise each read the other's book
    before it commits and leave the pair one-way; the later match sees the earlier's
    commit and writes both directions."""
    if keys is not None and not keys and not registry.weak:
        return []
    if keys is None or registry.weak:
        return match_users(repo, registry, [user_id], now, origin, book_rows=book_rows)
    repo.serialize_matching()
    # The restricted match never grows with the size of the books. The callers whose keys
    # can be most of the books (an upload's final match, ``match_pending``) choose the
    # whole-book pass themselves by passing keys=None.
    return _match_keys(repo, registry, user_id, {int(k) for k in keys}, now, origin)


# An upload's keys are matched once, when its final chunk commits (``match_upload``): by
# one pass over the whole books when they are at least this share of the user's exact key
# rows (three range reads and one probe per member, against ~5 index probes per key for
# the restricted match), by the restricted match otherwise; up to RESTRICTED_KEYS keys
# always take the restricted match without reading the books.
WHOLE_BOOK_SHARE = 0.25
RESTRICTED_KEYS = 1_000


def match_upload(
    repo: MatchRepository,
    pending: PendingMatchRepository,
    registry: Registry,
    user_id: str,
    keys: Collection[int],
    now: datetime,
    *,
    final: bool,
    changed: bool,
) -> list[tuple[str, int, str]]:
    """Matching for an upload batch (in its transaction): a non-final batch that
    ``changed`` the user's key rows records its ``keys`` as pending; the final chunk's
    batch matches them with every earlier batch's (``match_pending``). Returns the events
    written."""
    if not final:
        if changed:
            pending.add(user_id, keys, now)
        return []
    return match_pending(repo, pending, registry, user_id, now, keys, changed=changed)


def match_pending(
    repo: MatchRepository,
    pending: PendingMatchRepository,
    registry: Registry,
    user_id: str,
    now: datetime,
    keys: Collection[int] = (),
    *,
    changed: bool = False,
) -> list[tuple[str, int, str]]:
    """Match the user's pending keys, and ``keys`` when this transaction ``changed`` the
    books too, then forget them."""
    taken = pending.take(user_id)
    if taken is None and not changed:
        return []
    todo = (taken or set()) | {int(k) for k in keys}
    if len(todo) > RESTRICTED_KEYS and not registry.weak:
        # The whole-book pass reads the books' rows anyway: read first, they decide (a count
        # of them before cost a range scan of its own, 7 ms for a 10,000-contact book).
        repo.serialize_matching()
        rows = repo.book_key_rows([user_id])
        if len(todo) >= WHOLE_BOOK_SHARE * len(rows[user_id]):
            return match_user(
                repo, registry, user_id, now, ORIGIN_ADDRESS_BOOK, keys=None, book_rows=rows
            )
    return match_user(repo, registry, user_id, now, ORIGIN_ADDRESS_BOOK, keys=todo)


def match_users(
    repo: MatchRepository,
    registry: Registry,
    user_ids: Sequence[str],
    now: datetime,
    origin: int,
    *,
    book_rows: dict[str, list[tuple[Any, ...]]] | None = None,
) -> list[Event]:
    """``match_user(keys=None)`` of each of ``user_ids`` in turn, with the same rows and
    events as those calls made one after the other, but one statement per read for all of
    them and one per kind of write: the refresh job's batches, the holders of a released
    number. ``book_rows``: ``repo.book_key_rows(user_ids)``, read by a caller that holds
    the matching lock already.

    The rules run user by user, in order, on a copy of the rows read (the books,
    identities and decisions they read are never written by matching); each user's
    changes go into the copy before the next user's turn, as the next call would read
    them from the database. What differs at the end is written (a row one user's match
    deleted and a later one's created again would be an update of the stored row, keeping
    its id and creation time)."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return []
    if book_rows is None:
        repo.serialize_matching()
    # Only the rows naming a member matter to the rules (``_first_naming``): book keys are
    # made of those alone, found by their key as stored (signed).
    key_rows = book_rows if book_rows is not None else repo.book_key_rows(users)
    owner_of = _owners(
        repo,
        registry,
        np.fromiter((r[3] for rows in key_rows.values() for r in rows), dtype=np.int64).view(
            np.uint64
        ),
    )
    named = {key_to_db(k) for k in owner_of}
    books = {
        u: [BookKey(r[0], r[2], key_from_db(r[3])) for r in rows if r[3] in named]
        for u, rows in key_rows.items()
    }
    del key_rows
    own = repo.own_keys_of(users)
    holding: dict[int, list[str]] = {}
    for u in users:
        for k in own[u]:
            holding.setdefault(k, []).append(u)
    held: dict[str, list[tuple[str, BookKey]]] = {u: [] for u in users}
    for holder, bk in holders_of(repo, registry, list(holding)):
        for u in holding[bk.key]:
            held[u].append((holder, bk))
    stored = repo.rows_involving(users)
    decisions = repo.decisions_involving(users)

    def turn(u: str, existing: list[BuddyState]) -> _Diff:
        """User ``u``'s match, against ``existing``: the rows involving ``u`` now."""
        a_has = _first_naming(books[u], owner_of, u)
        b_has = _first_holding(held[u], u)
        if registry.weak:
            _weak_matches(repo, registry, u, own[u], a_has, b_has)
        others = set(a_has) | set(b_has)
        others |= {r.other_id if r.owner_id == u else r.owner_id for r in existing}
        return _diff(existing, _pair_rows(u, others, a_has, b_has, decisions, origin))

    if len(users) == 1:
        return _write(repo, turn(users[0], stored), now)

    rows: dict[Slot, BuddyState] = {}  # the copy: every row involving one of the users
    involving: dict[str, set[Slot]] = {u: set() for u in users}

    def put(slot: Slot, row: BuddyState | None) -> None:
        if row is None:
            del rows[slot]
        else:
            rows[slot] = row
        for side in slot:
            if side in involving:
                (involving[side].discard if row is None else involving[side].add)(slot)

    for r in stored:
        put((r.owner_id, r.other_id), r)
    before = dict(rows)
    events: list[Event] = []
    for u in users:
        diff = turn(u, [rows[slot] for slot in involving[u]])
        for r in diff.delete:
            put((r.owner_id, r.other_id), None)
        for r in (*diff.insert, *diff.update):
            put((r.owner_id, r.other_id), r)
        events += diff.events
    return _write(
        repo,
        _Diff(
            [r for slot, r in before.items() if slot not in rows],
            [r for slot, r in rows.items() if slot not in before],
            [r for slot, r in rows.items() if slot in before and before[slot] != r],
            events,
        ),
        now,
    )


def _match_keys(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    keys: set[int],
    now: datetime,
    origin: int,
) -> list[tuple[str, int, str]]:
    """``match_user`` for the keys added to or removed from the user's books: only rows
    those keys can change are read and rewritten.

    A key row names a member M (or not) by its key alone, so only the members owning one
    of ``keys`` can see their pair with the user change: for each, whether the user still
    holds one of M's keys (the first such row), whether M holds one of the user's own
    keys, the decisions and the stored rows of the pair."""
    arr, hits, pks = _lookup(repo, registry, keys)
    # every identity of the members owning a hit: confirms the hits and gives each member's
    # other keys, which the user's books may hold too (one query for both)
    identities = repo.identities_of_owners(pks) if pks else []
    member_of = _confirmed(arr, hits, {pk: (u, k) for pk, u, k in identities})
    members = sorted({m for m in member_of.values() if m != user_id})
    if not members:
        return []
    chosen = set(members)
    theirs = {k: u for _, u, k in identities if u in chosen}
    a_has = _first_naming(repo.book_rows_with_keys(user_id, list(theirs)), theirs, user_id)
    own = [k for _, k in repo.own_keys(user_id)]
    b_has = _first_holding(repo.holders_among(own, members), user_id)
    existing = repo.member_rows_between(user_id, members)
    desired = _pair_rows(
        user_id, members, a_has, b_has, repo.decisions_involving([user_id]), origin
    )
    return _write(repo, _diff(existing, desired), now)


def _weak_matches(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    own: list[int],
    a_has: dict[str, BookKey],
    b_has: dict[str, BookKey],
) -> None:
    """The optional weak-key fallback, for numbers that could not be normalised only: the
    rightmost digits must name exactly one member's phone number. Exact matches win."""
    weak_book = repo.book_weak_keys(user_id)
    if weak_book:
        keys = np.unique(np.fromiter((bk.key for bk in weak_book), dtype=np.uint64))
        hits = registry.lookup_weak(repo, keys)
        owners = repo.owners_of_identities([int(p) for p in hits[hits != EMPTY_KEY]])
        owner_of = {
            k: owners[p][0]
            for k, p in zip(keys.tolist(), hits.tolist(), strict=True)
            if p in owners
        }
        for bk in weak_book:
            owner = owner_of.get(bk.key)
            if owner is not None and owner != user_id:
                a_has.setdefault(owner, bk)
    suffixes = [k % 10**WEAK_DIGITS for k in own if k < 1 << 50]
    for holder, bk in repo.weak_holders(suffixes):
        if holder != user_id:
            b_has.setdefault(holder, bk)


# -- the buddy list ----------------------------------------------------------------------


def phonebook_buddies(
    repo: MatchRepository, registry: Registry, user_id: str
) -> tuple[BookKey, ...]:
    """The user's phonebook buddies, in entry order: one per contact none of whose exact
    keys belongs to a member (its first key), and one per key when several contacts share
    it (the first contact holding it). Derived from the books and the registry, never
    stored: always current with registrations and number changes. Membership is the
    registry's, caught up with the identity log (the database check of each hit, which
    names a match's member, decides nothing here). The registry keeps the last list of
    each user while neither the books nor membership change (``Registry.phonebook``)."""

    def derive() -> list[BookKey]:
        book = repo.book_keys(user_id)
        keys, hits, _ = _lookup(repo, registry, (bk.key for bk in book))
        members = set(keys[hits != EMPTY_KEY].tolist())
        return list(_phonebook_keys(book, members).values())

    return registry.phonebook(repo, user_id, derive)


def _phonebook_views(repo: MatchRepository, rows: Sequence[BookKey]) -> list[BuddyView]:
    cards = repo.entry_cards([bk.entry_pk for bk in rows])
    return [
        BuddyView(
            None,
            "",
            PHONEBOOK,
            bk.key,
            bk.kind,
            card.contact,
            ORIGIN_ACTIVE_CONTACT if card.book_id == ACTIVE_BOOK else ORIGIN_ADDRESS_BOOK,
            card.created_at,
            card.updated_at,
        )
        for bk in rows
        if (card := cards.get(bk.entry_pk)) is not None
    ]


def buddy_list(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    kind: int | None,
    offset: int,
    limit: int,
) -> tuple[list[BuddyView], int]:
    """A page of the user's buddy list (full, one-way, then phonebook buddies; or one kind)
    and its length."""
    views, total = ([], 0) if kind == PHONEBOOK else repo.list_buddies(user_id, kind, offset, limit)
    if kind in (None, PHONEBOOK):
        phonebook = phonebook_buddies(repo, registry, user_id)
        start = max(0, offset - total)
        views += _phonebook_views(repo, phonebook[start : start + limit - len(views)])
        total += len(phonebook)
    return views, total


def get_buddy(
    repo: MatchRepository, registry: Registry, user_id: str, other_id: str | None, key: int
) -> BuddyView | None:
    """One entry of the user's list: the member ``other_id``, or (``other_id`` None) the
    phonebook buddy of ``key``."""
    if other_id is not None:
        return repo.get_buddy(user_id, other_id)
    found = [bk for bk in phonebook_buddies(repo, registry, user_id) if bk.key == key]
    return next(iter(_phonebook_views(repo, found)), None)


def buddy_keys(repo: MatchRepository, registry: Registry, user_id: str) -> set[int]:
    """Keys of everyone on the user's list: every identity key of its members and the key
    of each phonebook buddy."""
    keys = repo.member_buddy_keys(user_id)
    keys.update(bk.key for bk in phonebook_buddies(repo, registry, user_id))
    return keys


def rematch_holders(
    repo: MatchRepository, registry: Registry, keys: list[int], now: datetime, origin: int
) -> None:
    """Re-match every user whose book holds one of ``keys`` (e.g. a released number)."""
    holders = sorted({h for h, _ in holders_of(repo, registry, keys)})
    match_users(repo, registry, holders, now, origin)


def answer_one_way(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    requester: str,
    decision: int,
    now: datetime,
) -> None:
    """``user_id`` accepts (-> full buddies) or blocks a pending one-way request."""
    if requester not in {r for r, _, _ in repo.one_way_requests_to(user_id)}:
        raise NotFound(
            f"no pending one-way request from users/{requester}", metadata={"field": "name"}
        )
    repo.decide(user_id, requester, decision, now)
    match_user(repo, registry, user_id, now, ORIGIN_ACCEPTED)
    if decision == ACCEPTED:
        repo.add_events([(requester, EVENT_ACCEPTED, user_id)], now)


def unblock(
    repo: MatchRepository, registry: Registry, user_id: str, blocked: str, now: datetime
) -> None:
    """``user_id`` lifts the block of ``blocked``; the pair is re-matched at once, so it is
    what the books (and the other side's own answers) give without the block: typically
    ``blocked`` holds the user's number again and their one-way request reappears."""
    if repo.decision(user_id, blocked) != BLOCKED:
        raise NotFound(
            f"users/{blocked} is not blocked", metadata={"field": "name", "user": blocked}
        )
    repo.undecide(user_id, blocked)
    # match_user recomputes every row involving the user, both directions of this pair
    # included; the other side is re-matched too so its own list is complete at once.
    match_user(repo, registry, user_id, now, ORIGIN_ADDRESS_BOOK)
    match_user(repo, registry, blocked, now, ORIGIN_ADDRESS_BOOK)


def common_keys(repo: MatchRepository, user_id: str, other_id: str) -> npt.NDArray[np.uint64]:
    """Phone keys both users' books hold, sorted: the compiled sorted-array intersection of
    the two books' unique keys, minus the two users' own numbers (a "me" card in a book is
    not a common contact)."""
    mine = np.unique(np.asarray(repo.book_phone_keys(user_id), dtype=np.uint64))
    theirs = np.unique(np.asarray(repo.book_phone_keys(other_id), dtype=np.uint64))
    common = sets.intersect(mine, theirs)
    own = np.unique(
        np.asarray(
            [
                k
                for who in (user_id, other_id)
                for kind, k in repo.own_keys(who)
                if kind == IdentityKind.PHONE
            ],
            dtype=np.uint64,
        )
    )
    return sets.difference(common, own) if own.size else common


@dataclass(frozen=True)
class CommonContact:
    """A number both users' books hold, as the caller's own book has it."""

    entry_pk: int  # the caller's contact holding the number (the first one)
    contact: bytes | None  # that contact, serialised (the caller's own data only)
    raw: str  # the number as written in the caller's contact
    e164: str
    member: str | None  # the member whose number it is, if any


def common_contacts(
    repo: MatchRepository,
    registry: Registry,
    user_id: str,
    other_id: str,
    region: str,
    raws_of: Callable[[bytes], list[str]],
    offset: int,
    limit: int,
) -> tuple[list[CommonContact], int]:
    """One page (by key) of the contacts ``user_id`` and the full buddy ``other_id`` both
    hold, and how many there are. Anyone else: PERMISSION_DENIED, whether or not they exist
    (the answer never tells who is a member)."""
    if other_id not in repo.full_buddies(user_id):
        raise PermissionDenied(
            f"users/{other_id} is not a full buddy; common contacts are shown for full "
            "buddies only",
            metadata={"field": "other_user", "other_user": f"users/{other_id}"},
        )
    keys = common_keys(repo, user_id, other_id)
    page = keys[offset : offset + limit]
    held = repo.held_numbers(user_id, page.tolist())
    hits = registry.lookup(repo, page)
    owners = repo.owners_of_identities([int(p) for p in hits[hits != EMPTY_KEY]])
    out: list[CommonContact] = []
    for key, pk in zip(page.tolist(), hits.tolist(), strict=True):
        h = held.get(key)
        if h is None:  # the book changed since the intersection; skip it
            continue
        raws = raws_of(h.contact) if h.contact is not None else []
        out.append(
            CommonContact(
                h.entry_pk,
                h.contact,
                _raw_of(raws, h.e164, region),
                h.e164,
                owners[pk][0] if pk in owners else None,
            )
        )
    return out, int(keys.shape[0])


def _raw_of(raws: list[str], e164: str, region: str) -> str:
    """The contact's number that normalises to ``e164`` (as the book wrote it)."""
    if raws:
        batch = normalize_many(raws, region, weak_digits=WEAK_DIGITS)
        for j, raw in enumerate(raws):
            if batch.status[j] == Status.OK and batch.e164[j] == e164:
                return raw
    return e164
