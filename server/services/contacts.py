"""Single contacts as user edits (seed 000: create, modify, delete with field provenance),
the contact change feed (cursors, paging, expiry) and sync settings.

Contacts are handled as plain documents (``befriend.core.merge``'s ``Doc``); the caller
supplies the codec between a document and the stored contact bytes.

Change-feed cursors are opaque to clients: urlsafe base64 (unpadded) of ``"seq.kind.id"``,
the position just after one feed row (kind 0 a contact at its last change, 1 a tombstone),
or ``"seq.2.0"``: after everything of change number ``seq``. The feed is ordered by
(seq, kind, id). Tombstones are pruned a whole change number at a time and the user's
``pruned_through`` records the highest pruned number; a cursor that could have missed a
pruned tombstone (seq below ``pruned_through``, or equal to it and not at the end of that
number) fails with FAILED_PRECONDITION / SYNC_CURSOR_EXPIRED.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from befriend.core import merge
from befriend.server.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from befriend.server.services.addressbooks import doc_keys
from befriend.server.services.merge import book_default, micros
from befriend.server.storage.addressbooks import AddressBookRepository, KeyDelta
from befriend.server.storage.changes import ORIGIN_USER_EDIT
from befriend.server.storage.contacts import (
    KIND_CONTACT,
    ContactRepository,
    ContactRow,
    FeedItem,
    SettingsRow,
)
from befriend.server.storage.repositories import AccountRepository

Doc = dict[str, Any]
END = 2  # cursor kind: after every row of its change number
KEY_FIELDS = frozenset({"mobile_numbers", "fixed_numbers", "email_addresses", "im_ids"})
DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_RETENTION_DAYS = 30

# SyncSettings defaults (sync.proto): no pictures, the network book, into the device book.
NETWORK_SOURCES = frozenset({1, 2})
SYNC_TARGETS = frozenset({1, 2, 3})
SETTINGS_FIELDS = frozenset({"sync_pictures", "default_network_source", "default_target"})
DEFAULT_SETTINGS = SettingsRow(False, 1, 1, 0, None)


@dataclass(frozen=True)
class Codec:
    """Stored contact bytes <-> documents (supplied by the API layer)."""

    to_doc: Callable[[bytes], Doc]
    to_bytes: Callable[[Doc], bytes]


def etag(version: int) -> str:
    return f'W/"{version}"'


def default_prov(row: ContactRow) -> merge.Prov:
    """Provenance of slots the stored map does not name (see ``book_default``)."""
    return book_default(row.book_kind, row.book_device_id, row.updated_at)


def provenance(row: ContactRow, doc: Doc) -> list[tuple[str, merge.Prov]]:
    """Every filled slot of the contact with its provenance."""
    return merge.slots(doc, merge.provs_from_json(row.provenance), default_prov(row))


# -- cursors ----------------------------------------------------------------------------


def encode_cursor(seq: int, kind: int, ident: int) -> str:
    raw = f"{seq}.{kind}.{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def end_cursor(seq: int) -> str:
    return encode_cursor(seq, END, 0)


def decode_cursor(cursor: str, field: str) -> tuple[int, int, int]:
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()).decode()
        seq, kind, ident = (int(p) for p in raw.split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field(field, "malformed cursor") from None
    if seq < 0 or kind not in (0, 1, END) or ident < 0 or (kind == END and ident):
        raise InvalidArgument.field(field, "malformed cursor")
    return seq, kind, ident


def item_cursor(item: FeedItem) -> str:
    return encode_cursor(item.seq, item.kind, item.id)


def check_cursor(position: tuple[int, int, int], pruned_through: int) -> None:
    """SYNC_CURSOR_EXPIRED when tombstones after ``position`` may have been pruned."""
    seq, kind, _ = position
    if seq < pruned_through or (seq == pruned_through and kind != END and seq > 0):
        raise FailedPrecondition(
            f"the cursor is older than the retained change log (changes through "
            f"{pruned_through} were pruned); do a full ListContacts and continue from its "
            "change_cursor",
            reason="SYNC_CURSOR_EXPIRED",
            metadata={"pruned_through": str(pruned_through)},
        )


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


# -- reading ----------------------------------------------------------------------------


def book_pk(repo: ContactRepository, user_id: str, book_id: str, field: str) -> tuple[int, str]:
    found = repo.book(user_id, book_id)
    if found is None:
        raise NotFound(
            f"address book {book_id} does not exist",
            metadata={"field": field, "resource": f"users/{user_id}/addressBooks/{book_id}"},
        )
    return found


@dataclass(frozen=True)
class ContactPage:
    contacts: list[ContactRow]
    total: int
    change_cursor: str
    last_id: int  # id of the last contact returned, 0 if none
    more: bool


def list_contacts(
    repo: ContactRepository,
    user_id: str,
    book_id: str,
    after_id: int,
    size: int,
    change_cursor: str,
) -> ContactPage:
    """One page by id after ``after_id``; on the first page (``change_cursor`` empty) the
    cursor of the change feed at this read."""
    pk = book_pk(repo, user_id, book_id, "address_book")[0] if book_id else None
    if not change_cursor:
        change_cursor = end_cursor(repo.seq(user_id)[0])
    rows = repo.list_contacts(user_id, pk, after_id, size + 1)
    page = rows[:size]
    return ContactPage(
        page,
        repo.count(user_id, pk),
        change_cursor,
        page[-1].id if page else after_id,
        len(rows) > size,
    )


def get_contact(repo: ContactRepository, user_id: str, contact_id: int) -> ContactRow:
    row = repo.get(user_id, contact_id)
    if row is None:
        raise NotFound(
            f"contact users/{user_id}/contacts/{contact_id} does not exist",
            metadata={"resource": f"users/{user_id}/contacts/{contact_id}"},
        )
    return row


@dataclass(frozen=True)
class ChangePage:
    items: list[FeedItem]
    cursor: str  # after the last item, or the end of the feed when caught up
    more: bool


def list_changes(
    repo: ContactRepository,
    user_id: str,
    book_id: str,
    cursor: str,
    field: str,
    size: int,
) -> ChangePage:
    """Feed rows after ``cursor``, oldest first. Reads the change counter first (so the
    rows read are a committed prefix of the feed), the rows, then ``pruned_through``
    again (a pruning committed meanwhile is always noticed)."""
    position = decode_cursor(cursor, field)
    pk = book_pk(repo, user_id, book_id, "address_book")[0] if book_id else None
    through, _ = repo.seq(user_id)
    if position[0] > through:
        raise InvalidArgument.field(field, "cursor is ahead of the change feed")
    items = repo.changes(user_id, pk, position, through, size + 1)
    check_cursor(position, repo.seq(user_id)[1])
    if len(items) > size:
        return ChangePage(items[:size], item_cursor(items[size - 1]), True)
    return ChangePage(items, end_cursor(through), False)


def current_cursor(repo: ContactRepository, user_id: str) -> str:
    return end_cursor(repo.seq(user_id)[0])


# -- user edits -------------------------------------------------------------------------


def _check_etag(given: str, row: ContactRow, field: str) -> None:
    if given != etag(row.version):
        raise Aborted(
            f"{field} {given!r} is stale; the contact is at {etag(row.version)}; re-read it "
            "and apply the change again",
            reason="ETAG_MISMATCH",
            metadata={"field": field, "current_etag": etag(row.version)},
        )


def check_mask(paths: Sequence[str], allowed: frozenset[str], field: str = "update_mask") -> None:
    if not paths:
        raise InvalidArgument.field(field, "required: the fields to change")
    for path in paths:
        if path not in allowed:
            raise InvalidArgument.field(
                field, f"unknown or read-only field {path!r}; allowed: {', '.join(sorted(allowed))}"
            )


def create_contact(
    repo: ContactRepository,
    books: AddressBookRepository,
    accounts: AccountRepository,
    user_id: str,
    book_id: str,
    doc: Doc,
    codec: Codec,
    now: datetime,
    delta: KeyDelta | None = None,
) -> ContactRow:
    """A user-created contact: every slot USER_EDIT, its identities indexed for matching
    (their keys noted in ``delta``)."""
    pk, device_id = book_pk(repo, user_id, book_id, "address_book")
    for key in ("name", "etag", "update_time", "device_contact_id"):
        doc.pop(key, None)
    mine = merge.Prov(merge.Source.USER_EDIT, time=micros(now))
    provs = {slot: mine for slot, _ in merge.slots(doc, {}, mine)}
    stamp = repo.stamp(user_id, ORIGIN_USER_EDIT)
    contact_id = repo.insert(
        user_id,
        pk,
        f"c-{uuid.uuid4().hex[:20]}",
        codec.to_bytes(doc),
        merge.provs_to_json(provs),
        stamp,
        now,
    )
    books.replace_entry_keys(
        user_id, contact_id, doc_keys([doc], accounts.region_of(user_id))[0], delta
    )
    books.touch_book(pk, device_id, now)
    return get_contact(repo, user_id, contact_id)


@dataclass(frozen=True)
class Updated:
    row: ContactRow
    changed: list[str]  # top-level fields that changed (empty: a no-op edit)
    rekeyed: bool  # its identities (numbers, e-mails, IM ids) and so its entry_keys changed


def update_contact(
    repo: ContactRepository,
    books: AddressBookRepository,
    accounts: AccountRepository,
    user_id: str,
    contact_id: int,
    given_etag: str,
    changes: Doc,
    paths: Sequence[str],
    codec: Codec,
    now: datetime,
    delta: KeyDelta | None = None,
) -> Updated:
    """Seed 000 modification: the masked fields take the new values and become owned data
    (USER_EDIT); a no-op edit changes nothing (same etag, no change-feed entry). When the
    contact's identities change, the keys of its old and new entry_keys rows go to
    ``delta``."""
    check_mask(paths, merge.EDITABLE_FIELDS)
    if not given_etag:
        raise InvalidArgument.field("contact.etag", "required: the etag the edit is based on")
    row = get_contact(repo, user_id, contact_id)
    _check_etag(given_etag, row, "contact.etag")
    doc = codec.to_doc(row.contact)
    default = default_prov(row)
    provs = merge.provs_from_json(row.provenance)
    if row.provenance is None:  # make the device's ownership explicit before it changes
        provs = dict(merge.slots(doc, {}, default))
    region = accounts.region_of(user_id)
    try:
        new_doc, new_provs, changed = merge.edit(
            doc, provs, changes, list(paths), time=micros(now), default=default, region=region
        )
    except ValueError as exc:
        raise InvalidArgument.field("update_mask", f"unknown field {exc}") from None
    if not changed:
        return Updated(row, [], False)
    stamp = repo.stamp(user_id, ORIGIN_USER_EDIT)
    if not repo.update(
        contact_id,
        row.version,
        codec.to_bytes(new_doc),
        merge.provs_to_json(new_provs),
        changed,
        stamp,
        now,
    ):
        raise Aborted(
            "the contact changed concurrently; re-read it and apply the change again",
            reason="ETAG_MISMATCH",
            metadata={"field": "contact.etag"},
        )
    rekeyed = bool(KEY_FIELDS.intersection(changed)) and books.replace_entry_keys(
        user_id, contact_id, doc_keys([new_doc], region)[0], delta
    )
    return Updated(get_contact(repo, user_id, contact_id), changed, rekeyed)


def delete_contact(
    repo: ContactRepository,
    books: AddressBookRepository,
    user_id: str,
    contact_id: int,
    given_etag: str,
    now: datetime,
    delta: KeyDelta | None = None,
) -> None:
    """Delete a contact, leaving a tombstone for the change feed (its keys noted in
    ``delta``)."""
    row = get_contact(repo, user_id, contact_id)
    if given_etag:
        _check_etag(given_etag, row, "etag")
    if delta is not None:
        delta.note(books.keys_of_entries([contact_id]))
    stamp = repo.stamp(user_id, ORIGIN_USER_EDIT)
    if not repo.delete(contact_id, row.version, stamp, now):
        raise Aborted(
            "the contact changed concurrently; re-read it and try again",
            reason="ETAG_MISMATCH",
            metadata={"field": "etag"},
        )
    books.touch_book(row.book_pk, row.book_device_id, now)


def is_created(item: FeedItem) -> bool:
    return item.kind == KIND_CONTACT and item.contact is not None and item.contact.version == 1


# -- retention ---------------------------------------------------------------------------


def prune_tombstones(repo: ContactRepository, retention_days: float, now: datetime) -> int:
    """Delete tombstones older than ``retention_days`` (<= 0 keeps them all); cursors that
    could have missed them expire."""
    if retention_days <= 0:
        return 0
    return repo.prune_tombstones(now - timedelta(days=retention_days))


# -- sync settings -----------------------------------------------------------------------


def get_settings(repo: ContactRepository, user_id: str) -> SettingsRow:
    return repo.settings(user_id) or DEFAULT_SETTINGS


def update_settings(
    repo: ContactRepository,
    user_id: str,
    given_etag: str,
    new: SettingsRow,
    paths: Sequence[str],
    now: datetime,
) -> SettingsRow:
    check_mask(paths, SETTINGS_FIELDS)
    if not given_etag:
        raise InvalidArgument.field("settings.etag", "required: the etag the change is based on")
    current = get_settings(repo, user_id)
    if given_etag != etag(current.version):
        raise Aborted(
            f"settings.etag {given_etag!r} is stale; the settings are at {etag(current.version)}",
            reason="ETAG_MISMATCH",
            metadata={"field": "settings.etag", "current_etag": etag(current.version)},
        )
    if "default_network_source" in paths and new.default_network_source not in NETWORK_SOURCES:
        raise InvalidArgument.field(
            "settings.default_network_source", "must be NETWORK_BOOK or ADDRESS_BOOK"
        )
    if "default_target" in paths and new.default_target not in SYNC_TARGETS:
        raise InvalidArgument.field(
            "settings.default_target", "must be DEVICE_BOOK, NETWORK or BOTH"
        )
    merged = SettingsRow(
        new.sync_pictures if "sync_pictures" in paths else current.sync_pictures,
        (
            new.default_network_source
            if "default_network_source" in paths
            else current.default_network_source
        ),
        new.default_target if "default_target" in paths else current.default_target,
        current.version,
        current.updated_at,
    )
    if merged == current:
        return current
    if not repo.save_settings(user_id, current.version, merged, now):
        raise Aborted("the settings changed concurrently; re-read them", reason="ETAG_MISMATCH")
    result = repo.settings(user_id)
    assert result is not None
    return result
