"""Seed 000's two-way sync between a device address book and a network source.

The network source is either the user's *network book* — one card per full buddy, filled
from the member's own profile (provenance PROFILE) and refreshed at every preview, so a
buddy's profile change reaches the next sync — or another of the user's books. Contacts
match by phone key or e-mail key (one-to-one, phone first); for each matched pair
befriend.core.merge plans the Table 2 new additions for the target side(s). A plan is
stored and applied later only if none of the user's contacts changed in between (the
per-user change number is the plan's input version). Applying writes the additions with
provenance NETWORK_MERGE under a merge id; undoing removes exactly the unmodified ones.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from befriend.core import merge as engine
from befriend.server.errors import Aborted, InvalidArgument, NotFound
from befriend.server.records import IdentityKind, UserRecord
from befriend.server.services.addressbooks import doc_keys
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.changes import (
    ORIGIN_MERGE,
    ORIGIN_MERGE_UNDO,
    ChangeStamp,
    current_seq,
)
from befriend.server.storage.merges import (
    MergeRecord,
    MergeRepository,
    PlanItemRow,
    PlanRow,
    StoredContact,
)

PLAN_TTL = timedelta(hours=1)
NETWORK_BOOK_ID = "network"
NETWORK_BOOK_KIND = 4  # AddressBookKind
# NetworkSource, SyncTarget, MergePlanItemKind, MergeMatchBasis, MergeSide (sync.proto)
SOURCE_NETWORK_BOOK, SOURCE_ADDRESS_BOOK = 1, 2
TARGET_DEVICE, TARGET_NETWORK, TARGET_BOTH = 1, 2, 3
MATCHED, UNMATCHED_DEVICE, UNMATCHED_NETWORK = 1, 2, 3
BASIS_PHONE, BASIS_EMAIL = 1, 2
SIDE_DEVICE, SIDE_NETWORK = 1, 2
_BASIS = {int(IdentityKind.PHONE): BASIS_PHONE, int(IdentityKind.EMAIL): BASIS_EMAIL}
_MATCH_KINDS = (int(IdentityKind.PHONE), int(IdentityKind.EMAIL))
_SELECTIVE_KEYS = 20_000  # network keys up to which the device book is read by key


class Codec(Protocol):
    """Stored contact bytes <-> engine documents (implemented beside the protobuf types)."""

    def decode(self, data: bytes) -> engine.Doc: ...

    def encode(self, doc: engine.Doc) -> bytes: ...


@dataclass(frozen=True)
class Book:
    pk: int
    book_id: str
    kind: int
    device_id: str


@dataclass(frozen=True)
class UndoResult:
    merge: MergeRecord
    removed_fields: int
    kept_modified: int
    removed_contacts: int


@dataclass
class _Pairing:
    pairs: list[tuple[int, int, int, str]] = field(default_factory=list)  # dev, net, kind, value
    network_unmatched: list[int] = field(default_factory=list)


def micros(now: datetime) -> int:
    return int(now.timestamp() * 1_000_000)


def book_default(kind: int, device_id: str, updated_at: datetime) -> engine.Prov:
    """Provenance of the slots a stored contact does not list: its book's owner — the
    member's own profile in the network book, the uploading device elsewhere."""
    if kind == NETWORK_BOOK_KIND:
        return engine.Prov(engine.Source.PROFILE, time=micros(updated_at))
    return engine.Prov(engine.Source.DEVICE, device_id=device_id, time=micros(updated_at))


def plan_etag(plan: PlanRow) -> str:
    return f'W/"{plan.plan_id}.{plan.inputs_seq}"'


# -- the network book ---------------------------------------------------------------------
def member_card(user: UserRecord) -> engine.Doc:
    """A member's card in a buddy's network book: what they share (Table 2's network side)."""
    doc: engine.Doc = {}
    if user.display_name:
        doc["display_name"] = user.display_name
    profile = user.profile or {}
    for key in ("picture_uri", "address", "organizations", "birthday"):
        if profile.get(key):
            doc[key] = profile[key]
    if profile.get("homepage_url"):
        doc["homepage_urls"] = [profile["homepage_url"]]
    phones = [
        {"raw": i.raw or i.value, "e164": i.value, "type": "PHONE_NUMBER_TYPE_MOBILE"}
        for i in user.of_kind(IdentityKind.PHONE)
    ]
    if phones:
        doc["mobile_numbers"] = phones
    emails = [
        {"raw": i.raw or i.value, "normalized": i.value} for i in user.of_kind(IdentityKind.EMAIL)
    ]
    if emails:
        doc["email_addresses"] = emails
    ims = []
    for i in user.of_kind(IdentityKind.IM):
        kind, _, ident = i.value.partition(":")
        ims.append({"kind": kind, "id": ident})
    if ims:
        doc["im_ids"] = ims
    return doc


def _card_id(user_id: str) -> str:
    return f"member-{user_id}"


def refresh_network_book(
    repo: MergeRepository,
    books: AddressBookRepository,
    codec: Codec,
    user_id: str,
    now: datetime,
) -> Book:
    """Bring the user's network book in line with their full buddies' profiles: new
    buddies get a card, changed profiles replace the PROFILE slots (merge additions and user
    edits stay), cards of former buddies that hold no user edit are removed."""
    book_pk, _ = books.ensure_book(user_id, NETWORK_BOOK_ID, NETWORK_BOOK_KIND, "", now)
    book = Book(book_pk, NETWORK_BOOK_ID, NETWORK_BOOK_KIND, "")
    stamp = ChangeStamp(repo.s, user_id, ORIGIN_MERGE)
    members = {_card_id(u.id): u for u in repo.member_buddies(user_id)}
    cards = {c.entry_id: c for c in repo.book_contacts(book_pk)}
    t = micros(now)
    updates: list[tuple[int, bytes, Any, Sequence[str]]] = []
    for entry_id, card in cards.items():
        if not entry_id.startswith("member-"):
            continue  # a contact a merge or the user added to the network book
        provs = engine.provs_from_json(card.provenance)
        member = members.get(entry_id)
        if member is None:
            if not any(p.source == engine.Source.USER_EDIT for p in provs.values()):
                repo.delete_contacts([card.pk], stamp, now)
            continue
        doc, new_provs, changed = engine.replace_owned(
            codec.decode(card.contact),
            provs,
            member_card(member),
            source=engine.Source.PROFILE,
            default=book_default(NETWORK_BOOK_KIND, "", card.updated_at),
            time=t,
        )
        if changed:
            updates.append(
                (card.pk, codec.encode(doc), engine.provs_to_json(new_provs) or None, changed)
            )
    repo.update_contacts(updates, stamp, now)
    fresh = [
        (entry_id, codec.encode(member_card(u)), None)
        for entry_id, u in members.items()
        if entry_id not in cards
    ]
    repo.insert_contacts(user_id, book_pk, fresh, stamp, now)
    if updates or fresh:
        books.touch_book(book_pk, "", now)
    return book


# -- preview --------------------------------------------------------------------------------
def _user_book(books: AddressBookRepository, user_id: str, book_id: str, field_name: str) -> Book:
    found = books.book(user_id, book_id)
    if found is None:
        raise NotFound(f"address book {book_id} not found", metadata={"field": field_name})
    pk, rec = found
    return Book(pk, rec.book_id, rec.kind, rec.device_id)


def _pair(
    device_keys: Sequence[tuple[int, int, int, str]],
    device_pks: Sequence[int],
    network_keys: Sequence[tuple[int, int, int, str]],
    network_pks: Sequence[int],
) -> _Pairing:
    """One-to-one pairs: each device contact (in book order) takes the first network
    contact not yet taken that shares its phone key, else its e-mail key."""
    by_key: dict[tuple[int, int], list[int]] = {}
    for pk, kind, key, _ in network_keys:
        holders = by_key.setdefault((kind, key), [])
        if not holders or holders[-1] != pk:
            holders.append(pk)
    keys_of: dict[int, list[tuple[int, int, str]]] = {}
    for pk, kind, key, value in device_keys:
        keys_of.setdefault(pk, []).append((kind, key, value))
    taken: set[int] = set()
    out = _Pairing()
    for dev in device_pks:
        found: tuple[int, int, str] | None = None
        for want in _MATCH_KINDS:
            for kind, key, value in keys_of.get(dev, ()):
                if kind != want:
                    continue
                for net in by_key.get((kind, key), ()):
                    if net not in taken:
                        found = (net, kind, value)
                        break
                if found:
                    break
            if found:
                break
        if found is not None:
            taken.add(found[0])
            out.pairs.append((dev, found[0], found[1], found[2]))
    out.network_unmatched = [pk for pk in network_pks if pk not in taken]
    return out


def preview(
    repo: MergeRepository,
    books: AddressBookRepository,
    codec: Codec,
    user_id: str,
    region: str,
    *,
    device_book_id: str,
    network_source: int,
    source_book_id: str,
    target: int,
    now: datetime,
) -> PlanRow:
    if target not in (TARGET_DEVICE, TARGET_NETWORK, TARGET_BOTH):
        raise InvalidArgument.field("target", "unknown sync target")
    if network_source not in (SOURCE_NETWORK_BOOK, SOURCE_ADDRESS_BOOK):
        raise InvalidArgument.field("network_source", "unknown network source")
    device = _user_book(books, user_id, device_book_id, "device_address_book")
    if device.kind == NETWORK_BOOK_KIND:
        raise InvalidArgument.field(
            "device_address_book", "must be an uploaded book, not the network book"
        )
    if network_source == SOURCE_NETWORK_BOOK:
        network = refresh_network_book(repo, books, codec, user_id, now)
        cards = repo.book_contacts(network.pk)
        network_keys = [
            (c.pk, kind, key, value)
            for c in cards
            for kind, key, value in engine.keys(codec.decode(c.contact), region)
            if kind in _MATCH_KINDS
        ]
        network_pks = [c.pk for c in cards]
    elif network_source == SOURCE_ADDRESS_BOOK:
        if not source_book_id:
            raise InvalidArgument.field(
                "source_address_book", "required with NETWORK_SOURCE_ADDRESS_BOOK"
            )
        network = _user_book(books, user_id, source_book_id, "source_address_book")
        if network.pk == device.pk:
            raise InvalidArgument.field("source_address_book", "must differ from the device book")
        network_keys = repo.book_keys(network.pk, _MATCH_KINDS)
        network_pks = repo.entry_pks(network.pk)
    else:
        raise InvalidArgument.field("network_source", "unknown network source")

    # Only device contacts sharing a key with the network side can match: with a small
    # network side, read just those through the user's key index instead of the whole book.
    wanted = {key for _, _, key, _ in network_keys}
    if len(wanted) <= _SELECTIVE_KEYS:
        device_keys = repo.book_keys(device.pk, _MATCH_KINDS, only=(user_id, wanted))
        candidates = sorted({pk for pk, _, _, _ in device_keys})
    else:
        device_keys = repo.book_keys(device.pk, _MATCH_KINDS)
        candidates = repo.entry_pks(device.pk)
    pairing = _pair(device_keys, candidates, network_keys, network_pks)
    unmatched_device = repo.entry_count(device.pk) - len(pairing.pairs)
    include_pictures = repo.sync_pictures(user_id)
    loaded = repo.contacts([pk for d, n, _, _ in pairing.pairs for pk in (d, n)])
    items: list[PlanItemRow] = []
    additions_total = 0
    # (receiving side, giving side) per target
    sides = {
        TARGET_DEVICE: [("device", "network")],
        TARGET_NETWORK: [("network", "device")],
        TARGET_BOTH: [("device", "network"), ("network", "device")],
    }[target]
    for dev_pk, net_pk, kind, value in pairing.pairs:
        dev, net = loaded[dev_pk], loaded[net_pk]
        docs = {"device": codec.decode(dev.contact), "network": codec.decode(net.contact)}
        provs = {"device": dev.provenance, "network": net.provenance}
        adds: dict[str, list[dict[str, Any]]] = {}
        for side, other in sides:
            planned = engine.plan(
                docs[other],
                docs[side],
                engine.provs_from_json(provs[side]),
                region=region,
                include_picture=include_pictures,
            )
            if planned:
                adds[side] = [a.to_json() for a in planned]
        additions_total += sum(len(v) for v in adds.values())
        items.append(
            PlanItemRow(
                len(items), MATCHED, dev_pk, net_pk, _BASIS[kind], kind, value, adds or None
            )
        )
    # Unmatched device contacts are not stored: they are the book's other contacts, listed
    # from the book itself (a 100,000-contact book would otherwise write 100,000 rows).
    items += [
        PlanItemRow(len(items) + i, UNMATCHED_NETWORK, None, pk, 0, 0, "", None)
        for i, pk in enumerate(pairing.network_unmatched)
    ]
    seq, _ = current_seq(repo.s, user_id)
    plan_id = secrets.token_hex(8)
    values: dict[str, Any] = dict(
        plan_id=plan_id,
        device_book_pk=device.pk,
        network_source=network_source,
        source_book_pk=network.pk,
        target=target,
        include_pictures=include_pictures,
        inputs_seq=seq,
        matched_count=len(pairing.pairs),
        addition_count=additions_total,
        unmatched_device_count=unmatched_device,
        unmatched_network_count=len(pairing.network_unmatched),
        created_at=now,
        expires_at=now + PLAN_TTL,
    )
    repo.purge_plans(now, user_id)  # everyone's: the daily retention job
    plan_pk = repo.create_plan(user_id, **values)
    repo.add_plan_items(plan_pk, items)
    found = repo.plan(user_id, plan_id)
    assert found is not None
    return found


# -- plan items -----------------------------------------------------------------------------
def get_plan(repo: MergeRepository, user_id: str, plan_id: str, now: datetime) -> PlanRow:
    plan = repo.plan(user_id, plan_id)
    if plan is None or plan.expires_at < now:
        raise NotFound(
            f"merge plan {plan_id} not found or expired; preview again",
            metadata={"field": "merge_plan"},
        )
    return plan


@dataclass(frozen=True)
class ItemView:
    item: PlanItemRow
    device: StoredContact | None
    network: StoredContact | None


def item_id(row: PlanItemRow) -> str:
    """Stored items are numbered; an unmatched device contact is named by its contact id."""
    return f"d{row.device_entry_pk}" if row.kind == UNMATCHED_DEVICE else str(row.item_no)


# Listing order: matched items, then the device book's unmatched contacts, then the network
# side's unmatched contacts. A position is (phase, last item number or contact id).
_PHASES = (MATCHED, UNMATCHED_DEVICE, UNMATCHED_NETWORK)


def list_items(
    repo: MergeRepository, plan: PlanRow, kind: int, position: tuple[int, int], limit: int
) -> tuple[list[ItemView], tuple[int, int] | None]:
    """Up to ``limit`` items after ``position`` (of ``kind``, 0 for all), and the position
    after the last one, or None at the end."""
    phase, after = position
    rows: list[PlanItemRow] = []
    while phase < len(_PHASES) and len(rows) < limit:
        wanted = _PHASES[phase]
        if kind and kind != wanted:
            phase, after = phase + 1, -1
            continue
        want = limit - len(rows)
        if wanted == UNMATCHED_DEVICE:
            got = [
                PlanItemRow(-1, UNMATCHED_DEVICE, pk, None, 0, 0, "", None)
                for pk in repo.unmatched_device(plan.pk, plan.device_book_pk, after, want)
            ]
        else:
            got = repo.plan_items(plan.pk, kinds=[wanted], after=after, limit=want)
        rows += got
        if len(got) < want:
            phase, after = phase + 1, -1
        else:
            last = got[-1]
            after = (last.device_entry_pk or 0) if wanted == UNMATCHED_DEVICE else last.item_no
    loaded = repo.contacts(
        [pk for r in rows for pk in (r.device_entry_pk, r.network_entry_pk) if pk is not None]
    )
    views = [
        ItemView(
            r,
            loaded.get(r.device_entry_pk) if r.device_entry_pk is not None else None,
            loaded.get(r.network_entry_pk) if r.network_entry_pk is not None else None,
        )
        for r in rows
    ]
    return views, ((phase, after) if phase < len(_PHASES) else None)


# -- apply / undo ---------------------------------------------------------------------------
_KEYED_FIELDS = frozenset({"mobile_numbers", "fixed_numbers", "email_addresses", "im_ids"})


def _items_named(
    repo: MergeRepository, plan: PlanRow, ids: Sequence[str], kinds: set[int], field_name: str
) -> list[PlanItemRow]:
    """The plan's items with these item ids, which must be of ``kinds``."""
    nos: set[int] = set()
    device_pks: set[int] = set()
    for i in ids:
        digits = i[1:] if i.startswith("d") else i
        if not digits.isdigit():
            raise InvalidArgument.field(field_name, f"{i!r} is not an item id of the plan")
        (device_pks if i.startswith("d") else nos).add(int(digits))
    rows = repo.plan_items(plan.pk, item_nos=sorted(nos)) if nos else []
    bad = {str(n) for n in nos - {r.item_no for r in rows}}
    bad |= {item_id(r) for r in rows if r.kind not in kinds}
    if device_pks:
        unmatched = set(repo.unmatched_device(plan.pk, plan.device_book_pk, pks=device_pks))
        bad |= {f"d{pk}" for pk in device_pks - unmatched}
        if UNMATCHED_DEVICE in kinds:
            rows += [
                PlanItemRow(-1, UNMATCHED_DEVICE, pk, None, 0, 0, "", None)
                for pk in sorted(unmatched)
            ]
        else:
            bad |= {f"d{pk}" for pk in unmatched}
    if bad:
        what = "MATCHED" if MATCHED in kinds else "UNMATCHED"
        raise InvalidArgument.field(
            field_name, f"items {sorted(bad)} are not {what} items of the plan"
        )
    return rows


@dataclass
class _Writes:
    updates: list[tuple[int, bytes, Any, Sequence[str]]] = field(default_factory=list)
    rekey: list[tuple[int, engine.Doc]] = field(default_factory=list)
    touched: list[tuple[int, bool]] = field(default_factory=list)
    written: int = 0


def apply_plan(
    repo: MergeRepository,
    codec: Codec,
    user_id: str,
    region: str,
    *,
    plan: PlanRow,
    etag: str,
    excluded_ids: Sequence[str],
    added_ids: Sequence[str],
    now: datetime,
) -> tuple[MergeRecord, set[int]]:
    """Apply a previewed plan; returns the merge and the identity keys added to or removed
    from the user's books (buddy matching then runs for them)."""
    if etag != plan_etag(plan):
        raise Aborted(
            "etag does not match the merge plan", reason="ETAG_MISMATCH", metadata={"field": "etag"}
        )
    if current_seq(repo.s, user_id)[0] != plan.inputs_seq:
        raise Aborted(
            "contacts changed since the preview; preview the merge again",
            reason="ETAG_MISMATCH",
            metadata={"field": "etag"},
        )
    excluded = {
        r.item_no for r in _items_named(repo, plan, excluded_ids, {MATCHED}, "excluded_item_ids")
    }
    creations = _items_named(
        repo, plan, added_ids, {UNMATCHED_DEVICE, UNMATCHED_NETWORK}, "added_item_ids"
    )
    merge_id = secrets.token_hex(8)
    t = micros(now)
    stamp = ChangeStamp(repo.s, user_id, ORIGIN_MERGE)
    matched = [
        r
        for r in repo.plan_items(plan.pk, kinds=[MATCHED])
        if r.item_no not in excluded and r.additions
    ]
    loaded = repo.contacts(
        [
            pk
            for r in [*matched, *creations]
            for pk in (r.device_entry_pk, r.network_entry_pk)
            if pk is not None
        ]
    )
    w = _Writes()
    for r in matched:
        for side, pk in (("device", r.device_entry_pk), ("network", r.network_entry_pk)):
            adds = (r.additions or {}).get(side)
            if not adds or pk is None or pk not in loaded:
                continue
            c = loaded[pk]
            doc = codec.decode(c.contact)
            new_doc, provs = engine.apply(
                doc,
                engine.provs_from_json(c.provenance),
                [engine.Addition.from_json(a) for a in adds],
                merge=merge_id,
                time=t,
            )
            changed = engine.changed_fields(doc, new_doc)
            if not changed:
                continue
            w.written += sum(1 for p in provs.values() if p.merge == merge_id)
            w.updates.append(
                (pk, codec.encode(new_doc), engine.provs_to_json(provs) or None, changed)
            )
            w.touched.append((pk, False))
            if side == "device" and _KEYED_FIELDS.intersection(changed):
                w.rekey.append((pk, new_doc))
    repo.update_contacts(w.updates, stamp, now)
    # Unmatched contacts the user picked join the other side as new contacts.
    by_book: dict[int, list[tuple[str, bytes, Any]]] = {}
    created_docs: dict[str, tuple[engine.Doc, bool]] = {}
    for r in creations:
        into_device = r.kind == UNMATCHED_NETWORK
        from_pk = r.network_entry_pk if into_device else r.device_entry_pk
        if from_pk is None or from_pk not in loaded:
            continue
        adds = engine.plan(
            codec.decode(loaded[from_pk].contact),
            {},
            None,
            region=region,
            include_picture=plan.include_pictures,
            new_contact=True,
        )
        doc, provs = engine.apply({}, None, adds, merge=merge_id, time=t)
        entry_id = f"merge-{merge_id}-{item_id(r)}"
        book_pk = plan.device_book_pk if into_device else plan.source_book_pk
        by_book.setdefault(book_pk, []).append(
            (entry_id, codec.encode(doc), engine.provs_to_json(provs) or None)
        )
        # Identities are indexed for matching in every book but the network book.
        created_docs[entry_id] = (doc, into_device or plan.network_source == SOURCE_ADDRESS_BOOK)
        w.written += len(provs)
    for book_pk, new_rows in by_book.items():
        for entry_id, pk in repo.insert_contacts(user_id, book_pk, new_rows, stamp, now).items():
            w.touched.append((pk, True))
            doc, keyed = created_docs[entry_id]
            if keyed:
                w.rekey.append((pk, doc))
    changed_keys: set[int] = set()
    if w.rekey:
        keys = doc_keys([d for _, d in w.rekey], region)
        changed_keys = repo.replace_keys(
            user_id, [(pk, k) for (pk, _), k in zip(w.rekey, keys, strict=True)]
        )
    record = repo.create_merge(
        user_id,
        merge_id=merge_id,
        plan_id=plan.plan_id,
        contacts_updated=len(w.updates),
        field_additions=w.written,
        contacts_created=len(w.touched) - len(w.updates),
        applied_at=now,
        undone_at=None,
    )
    repo.add_merge_contacts(record.pk, w.touched)
    return record, changed_keys


def undo_merge(
    repo: MergeRepository,
    codec: Codec,
    user_id: str,
    region: str,
    *,
    merge_id: str,
    contact_pks: Sequence[int],
    now: datetime,
) -> tuple[UndoResult, set[int]]:
    """Seed 000 deletion of a merge's new additions (all, or those of some contacts)."""
    record = repo.merge(user_id, merge_id)
    if record is None:
        raise NotFound(f"merge {merge_id} not found", metadata={"field": "merge"})
    rows = repo.merge_contacts(record.pk)
    if contact_pks:
        touched = {pk for pk, _ in rows}
        unknown = sorted(set(contact_pks) - touched)
        if unknown:
            raise InvalidArgument.field(
                "contacts", f"contacts {unknown} were not changed by this merge"
            )
        rows = [(pk, c) for pk, c in rows if pk in set(contact_pks)]
    loaded = repo.contacts([pk for pk, _ in rows])
    device_books = {
        pk for pk in {c.book_pk for c in loaded.values()} if repo.book_kind(pk) != NETWORK_BOOK_KIND
    }
    stamp = ChangeStamp(repo.s, user_id, ORIGIN_MERGE_UNDO)
    updates: list[tuple[int, bytes, Any, Sequence[str]]] = []
    rekey: list[tuple[int, engine.Doc]] = []
    doomed: list[int] = []
    removed = kept = 0
    for pk, created in rows:
        c = loaded.get(pk)
        if c is None:
            continue  # deleted since
        doc = codec.decode(c.contact)
        new_doc, provs, counts = engine.undo(
            doc, engine.provs_from_json(c.provenance), merge=merge_id
        )
        removed += counts.removed
        kept += counts.kept_modified
        if created and engine.is_empty(new_doc):
            doomed.append(pk)
            continue
        changed = engine.changed_fields(doc, new_doc)
        if changed:
            updates.append(
                (pk, codec.encode(new_doc), engine.provs_to_json(provs) or None, changed)
            )
            if c.book_pk in device_books and _KEYED_FIELDS.intersection(changed):
                rekey.append((pk, new_doc))
    repo.update_contacts(updates, stamp, now)
    changed_keys = repo.keys_of(doomed)
    removed_contacts = repo.delete_contacts(doomed, stamp, now)
    if rekey:
        keys = doc_keys([d for _, d in rekey], region)
        changed_keys |= repo.replace_keys(
            user_id, [(pk, k) for (pk, _), k in zip(rekey, keys, strict=True)]
        )
    if not contact_pks and record.undone_at is None:
        record = repo.set_undone(record.pk, now)
    return UndoResult(record, removed, kept, removed_contacts), changed_keys
