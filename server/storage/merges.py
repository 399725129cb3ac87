"""Repository of seed-000 merges: network-book cards, book keys, merge plans and merges."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from befriend.server.records import EntryKeyRecord, IdentityKind, IdentityRecord, UserRecord
from befriend.server.storage import models
from befriend.server.storage.addressbooks import insert_key_rows, key_rows_of
from befriend.server.storage.bulk import bulk_insert, bulk_update
from befriend.server.storage.changes import ChangeStamp
from befriend.server.storage.repositories import key_from_db, key_to_db

_BATCH = 500
FULL = 1  # buddy kind


@dataclass(frozen=True)
class StoredContact:
    pk: int
    book_pk: int
    entry_id: str
    contact: bytes
    provenance: Any
    updated_at: datetime


@dataclass(frozen=True)
class PlanRow:
    pk: int
    plan_id: str
    device_book_pk: int
    network_source: int
    source_book_pk: int
    target: int
    include_pictures: bool
    inputs_seq: int
    matched_count: int
    addition_count: int
    unmatched_device_count: int
    unmatched_network_count: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class PlanItemRow:
    item_no: int
    kind: int
    device_entry_pk: int | None
    network_entry_pk: int | None
    basis: int
    matched_kind: int
    matched_value: str
    additions: Any


@dataclass(frozen=True)
class MergeRecord:
    pk: int
    merge_id: str
    plan_id: str
    contacts_updated: int
    field_additions: int
    contacts_created: int
    applied_at: datetime
    undone_at: datetime | None


def _plan(r: models.MergePlanRow) -> PlanRow:
    return PlanRow(
        r.id,
        r.plan_id,
        r.device_book_pk,
        r.network_source,
        r.source_book_pk,
        r.target,
        r.include_pictures,
        r.inputs_seq,
        r.matched_count,
        r.addition_count,
        r.unmatched_device_count,
        r.unmatched_network_count,
        r.created_at,
        r.expires_at,
    )


def _merge(r: models.MergeRow) -> MergeRecord:
    return MergeRecord(
        r.id,
        r.merge_id,
        r.plan_id,
        r.contacts_updated,
        r.field_additions,
        r.contacts_created,
        r.applied_at,
        r.undone_at,
    )


class MergeRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- inputs --------------------------------------------------------------------------
    def member_buddies(self, user_id: str) -> list[UserRecord]:
        """The user's full buddies (each holds the other's number), with their profiles: a
        one-way holder has not been accepted, so sees no profile."""
        b, u, i = models.BuddyRow, models.User, models.Identity
        ids = (
            select(b.other_id)
            .where(b.owner_id == user_id, b.other_id.is_not(None), b.kind == FULL)
            .distinct()
        )
        identities: dict[str, list[IdentityRecord]] = {}
        for owner, kind, value, key, raw in self.s.execute(
            select(i.user_id, i.kind, i.value, i.key, i.raw)
            .where(i.user_id.in_(ids))
            .order_by(i.user_id, i.id)
        ):
            identities.setdefault(owner, []).append(
                IdentityRecord(IdentityKind(kind), value, key_from_db(key), raw)
            )
        return [
            UserRecord(
                id=uid,
                display_name=name,
                region_code=region,
                time_zone=zone,
                profile=dict(profile or {}),
                version=version,
                created_at=created,
                updated_at=updated,
                identities=tuple(identities.get(uid, ())),
            )
            for uid, name, region, zone, profile, version, created, updated in self.s.execute(
                select(
                    u.id,
                    u.display_name,
                    u.region_code,
                    u.time_zone,
                    u.profile,
                    u.version,
                    u.created_at,
                    u.updated_at,
                )
                .where(u.id.in_(ids))
                .order_by(u.id)
            )
        ]

    def sync_pictures(self, user_id: str) -> bool:
        value = self.s.execute(
            select(models.SyncSettingsRow.sync_pictures).where(
                models.SyncSettingsRow.user_id == user_id
            )
        ).scalar_one_or_none()
        return bool(value)

    def book_keys(
        self,
        book_pk: int,
        kinds: Sequence[int],
        only: tuple[str, Collection[int]] | None = None,
    ) -> list[tuple[int, int, int, str]]:
        """(entry pk, kind, key, value) of the book's normalised identities, by entry; with
        ``only`` = (the book's owner, keys), just those keys, looked up through the owner's
        (user, key) index (there is no index on the key alone: migration 0013)."""
        k, e = models.EntryKey, models.ContactEntry
        query = (
            select(k.entry_pk, k.ordinal, k.kind, k.key, k.value)
            .join(e, e.id == k.entry_pk)
            .where(e.book_pk == book_pk, k.key.is_not(None), k.kind.in_(list(kinds)))
        )
        if only is None:
            batches = [query]
        else:
            owner, keys = only
            wanted = [key_to_db(x) for x in sorted(keys)]
            batches = [
                query.where(k.user_id == owner, k.key.in_(wanted[i : i + _BATCH]))
                for i in range(0, len(wanted), _BATCH)
            ]
        found = sorted(  # by entry, each entry's keys in their order
            (pk, ordinal, kind, key_from_db(key), value)
            for batch in batches
            for pk, ordinal, kind, key, value in self.s.execute(batch)
            if key is not None
        )
        return [(pk, kind, key, value) for pk, _, kind, key, value in found]

    def entry_count(self, book_pk: int) -> int:
        e = models.ContactEntry
        return int(self.s.execute(select(func.count()).where(e.book_pk == book_pk)).scalar_one())

    def book_kind(self, book_pk: int) -> int:
        return int(
            self.s.execute(
                select(models.AddressBook.kind).where(models.AddressBook.id == book_pk)
            ).scalar_one()
        )

    def entry_pks(self, book_pk: int) -> list[int]:
        e = models.ContactEntry
        return list(self.s.scalars(select(e.id).where(e.book_pk == book_pk).order_by(e.id)))

    def contacts(self, pks: Sequence[int]) -> dict[int, StoredContact]:
        e = models.ContactEntry
        out: dict[int, StoredContact] = {}
        wanted = list(pks)
        for i in range(0, len(wanted), _BATCH):
            for pk, book_pk, entry_id, contact, provenance, updated_at in self.s.execute(
                select(e.id, e.book_pk, e.entry_id, e.contact, e.provenance, e.updated_at).where(
                    e.id.in_(wanted[i : i + _BATCH])
                )
            ):
                out[pk] = StoredContact(pk, book_pk, entry_id, contact, provenance, updated_at)
        return out

    def book_contacts(self, book_pk: int) -> list[StoredContact]:
        e = models.ContactEntry
        return [
            StoredContact(pk, book_pk, entry_id, contact, provenance, updated_at)
            for pk, book_pk, entry_id, contact, provenance, updated_at in self.s.execute(
                select(e.id, e.book_pk, e.entry_id, e.contact, e.provenance, e.updated_at)
                .where(e.book_pk == book_pk)
                .order_by(e.id)
            )
        ]

    # -- contact writes ------------------------------------------------------------------
    def insert_contacts(
        self,
        user_id: str,
        book_pk: int,
        rows: Sequence[tuple[str, bytes, Any]],
        stamp: ChangeStamp,
        now: datetime,
    ) -> dict[str, int]:
        """Insert (entry_id, contact, provenance) rows without an as-is copy; returns the
        new primary keys by entry_id."""
        if not rows:
            return {}
        e = models.ContactEntry
        empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        bulk_insert(
            self.s,
            models.table(e),
            [
                {
                    "book_pk": book_pk,
                    "user_id": user_id,
                    "entry_id": entry_id,
                    "raw": b"",
                    "raw_media_type": "",
                    "content_hash": empty_hash,
                    "contact": contact,
                    "provenance": provenance,
                    "upload_pk": None,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                    **stamp.values(),
                }
                for entry_id, contact, provenance in rows
            ],
        )
        ids = [entry_id for entry_id, _, _ in rows]
        out: dict[str, int] = {}
        for i in range(0, len(ids), _BATCH):
            out.update(
                (entry_id, pk)
                for entry_id, pk in self.s.execute(
                    select(e.entry_id, e.id).where(
                        e.book_pk == book_pk, e.entry_id.in_(ids[i : i + _BATCH])
                    )
                )
            )
        return out

    def update_contacts(
        self,
        rows: Sequence[tuple[int, bytes, Any, Sequence[str]]],
        stamp: ChangeStamp,
        now: datetime,
    ) -> None:
        """Write (pk, contact, provenance, changed fields) in place, with a new etag."""
        if not rows:
            return
        bulk_update(
            self.s,
            models.table(models.ContactEntry),
            [
                {
                    "id": pk,
                    "contact": contact,
                    "provenance": provenance,
                    "updated_at": now,
                    **stamp.values(",".join(fields)),
                }
                for pk, contact, provenance, fields in rows
            ],
            bump="version",
        )

    def keys_of(self, pks: Sequence[int]) -> set[int]:
        """The identity keys these contacts hold."""
        k = models.EntryKey
        out: set[int] = set()
        wanted = list(pks)
        for i in range(0, len(wanted), _BATCH):
            out.update(
                key_from_db(key)
                for key in self.s.scalars(
                    select(k.key).where(k.entry_pk.in_(wanted[i : i + _BATCH]), k.key.is_not(None))
                )
                if key is not None
            )
        return out

    def replace_keys(
        self, user_id: str, keyed: Sequence[tuple[int, Sequence[EntryKeyRecord]]]
    ) -> set[int]:
        """Replace the normalised identities of these contacts (the buddy-matching index);
        returns the keys removed or added."""
        pks = [pk for pk, _ in keyed]
        changed = self.keys_of(pks)
        for i in range(0, len(pks), _BATCH):
            self.s.execute(
                delete(models.EntryKey).where(models.EntryKey.entry_pk.in_(pks[i : i + _BATCH]))
            )
        insert_key_rows(self.s, key_rows_of(user_id, keyed))
        return changed | {k.key for _, keys in keyed for k in keys if k.key is not None}

    def delete_contacts(self, pks: Sequence[int], stamp: ChangeStamp, now: datetime) -> int:
        removed = 0
        wanted = list(pks)
        for i in range(0, len(wanted), _BATCH):
            removed += stamp.delete_entries(models.ContactEntry.id.in_(wanted[i : i + _BATCH]), now)
        return removed

    # -- plans ---------------------------------------------------------------------------
    def create_plan(self, user_id: str, **values: Any) -> int:
        row = models.MergePlanRow(user_id=user_id, **values)
        self.s.add(row)
        self.s.flush()
        return row.id

    def add_plan_items(self, plan_pk: int, items: Sequence[PlanItemRow]) -> None:
        bulk_insert(
            self.s,
            models.table(models.MergePlanItemRow),
            [
                {
                    "plan_pk": plan_pk,
                    "item_no": it.item_no,
                    "kind": it.kind,
                    "device_entry_pk": it.device_entry_pk,
                    "network_entry_pk": it.network_entry_pk,
                    "basis": it.basis,
                    "matched_kind": it.matched_kind,
                    "matched_value": it.matched_value,
                    "additions": it.additions,
                }
                for it in items
            ],
        )

    def plan(self, user_id: str, plan_id: str) -> PlanRow | None:
        row = self.s.scalars(
            select(models.MergePlanRow).where(
                models.MergePlanRow.user_id == user_id, models.MergePlanRow.plan_id == plan_id
            )
        ).one_or_none()
        return _plan(row) if row is not None else None

    def plan_items(
        self,
        plan_pk: int,
        *,
        kinds: Sequence[int] = (),
        after: int = -1,
        limit: int | None = None,
        item_nos: Sequence[int] | None = None,
    ) -> list[PlanItemRow]:
        i = models.MergePlanItemRow
        query = select(i).where(i.plan_pk == plan_pk, i.item_no > after).order_by(i.item_no)
        if kinds:
            query = query.where(i.kind.in_(list(kinds)))
        if item_nos is not None:
            query = query.where(i.item_no.in_(list(item_nos)))
        if limit is not None:
            query = query.limit(limit)
        return [
            PlanItemRow(
                r.item_no,
                r.kind,
                r.device_entry_pk,
                r.network_entry_pk,
                r.basis,
                r.matched_kind,
                r.matched_value,
                r.additions,
            )
            for r in self.s.scalars(query)
        ]

    def unmatched_device(
        self,
        plan_pk: int,
        book_pk: int,
        after: int = -1,
        limit: int | None = None,
        *,
        pks: Collection[int] | None = None,
    ) -> list[int]:
        """Ids of the device book's contacts the plan did not match, ascending."""
        e, i = models.ContactEntry, models.MergePlanItemRow
        matched = select(i.device_entry_pk).where(
            i.plan_pk == plan_pk, i.kind == 1, i.device_entry_pk.is_not(None)
        )
        query = (
            select(e.id)
            .where(e.book_pk == book_pk, e.id > after, e.id.not_in(matched))
            .order_by(e.id)
        )
        if pks is not None:
            query = query.where(e.id.in_(list(pks)))
        if limit is not None:
            query = query.limit(limit)
        return list(self.s.scalars(query))

    def purge_plans(self, before: datetime, user_id: str | None = None) -> int:
        """Delete plans that expired before ``before`` (of one user, or everyone's)."""
        p = models.MergePlanRow
        query = delete(p).where(p.expires_at < before)
        if user_id is not None:
            query = query.where(p.user_id == user_id)
        return int(getattr(self.s.execute(query), "rowcount", 0))

    # -- merges --------------------------------------------------------------------------
    def create_merge(self, user_id: str, **values: Any) -> MergeRecord:
        row = models.MergeRow(user_id=user_id, **values)
        self.s.add(row)
        self.s.flush()
        return _merge(row)

    def add_merge_contacts(self, merge_pk: int, rows: Sequence[tuple[int, bool]]) -> None:
        if rows:
            bulk_insert(
                self.s,
                models.table(models.MergeContact),
                [{"merge_pk": merge_pk, "entry_pk": pk, "created": c} for pk, c in rows],
            )

    def merge(self, user_id: str, merge_id: str) -> MergeRecord | None:
        row = self.s.scalars(
            select(models.MergeRow).where(
                models.MergeRow.user_id == user_id, models.MergeRow.merge_id == merge_id
            )
        ).one_or_none()
        return _merge(row) if row is not None else None

    def merge_contacts(self, merge_pk: int) -> list[tuple[int, bool]]:
        c = models.MergeContact
        return [
            (pk, created)
            for pk, created in self.s.execute(
                select(c.entry_pk, c.created).where(c.merge_pk == merge_pk).order_by(c.id)
            )
        ]

    def set_undone(self, merge_pk: int, now: datetime) -> MergeRecord:
        row = self.s.get_one(models.MergeRow, merge_pk)
        row.undone_at = now
        self.s.flush()
        return _merge(row)
