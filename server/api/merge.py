"""SyncService, merge half: seed 000's two-way merge between a device book and a network
source (preview, plan items, apply, undo)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from befriend.core import merge as engine
from befriend.server.api import auth, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.contactdoc import CODEC, from_doc
from befriend.server.api.status import Context
from befriend.server.errors import InvalidArgument
from befriend.server.services import matching, merge
from befriend.server.services.matching import ORIGIN_ADDRESS_BOOK
from befriend.server.services.merge import ItemView
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.merges import MergeRecord, MergeRepository, PlanRow, StoredContact
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import common_pb2, sync_pb2

DEFAULT_PAGE, MAX_PAGE = 100, 1000


def _merge_pb(me: str, m: MergeRecord) -> sync_pb2.Merge:
    out = sync_pb2.Merge(
        name=f"users/{me}/merges/{m.merge_id}",
        merge_plan=f"users/{me}/mergePlans/{m.plan_id}",
        contacts_updated_count=m.contacts_updated,
        field_addition_count=m.field_additions,
        contacts_created_count=m.contacts_created,
        apply_time=convert.timestamp(m.applied_at),
    )
    if m.undone_at is not None:
        out.undo_time.CopyFrom(convert.timestamp(m.undone_at))
    return out


def _snapshot(me: str, c: StoredContact | None) -> common_pb2.Contact | None:
    if c is None:
        return None
    contact = common_pb2.Contact.FromString(c.contact)
    contact.name = f"users/{me}/contacts/{c.pk}"
    contact.update_time.CopyFrom(convert.timestamp(c.updated_at))
    return contact


def _addition_value(a: engine.Addition) -> common_pb2.Contact:
    """A Contact with only the addition's field set to the value it writes."""
    if a.op == engine.Op.REMOVE:
        return common_pb2.Contact()
    value: Any = a.value
    if a.slot.endswith(".job_title"):
        value = [{**(a.old or {}), "job_title": a.value}]
    elif a.field in engine.LIST_FIELDS:
        value = [a.value]
    return from_doc({a.field: value})


def _item_pb(me: str, view: ItemView) -> sync_pb2.MergePlanItem:
    r = view.item
    out = sync_pb2.MergePlanItem(
        item_id=merge.item_id(r),
        kind=r.kind,  # type: ignore[arg-type]
        match_basis=r.basis,  # type: ignore[arg-type]
    )
    if r.device_entry_pk is not None:
        out.device_contact = f"users/{me}/contacts/{r.device_entry_pk}"
    if r.network_entry_pk is not None:
        out.network_contact = f"users/{me}/contacts/{r.network_entry_pk}"
    for snap, target in (
        (_snapshot(me, view.device), out.device_snapshot),
        (_snapshot(me, view.network), out.network_snapshot),
    ):
        if snap is not None:
            target.CopyFrom(snap)
    if r.matched_kind == merge.BASIS_PHONE:
        out.matched_identity.phone.e164 = r.matched_value
    elif r.matched_kind == merge.BASIS_EMAIL:
        out.matched_identity.email.normalized = r.matched_value
    for side, target_side in (("device", merge.SIDE_DEVICE), ("network", merge.SIDE_NETWORK)):
        for obj in (r.additions or {}).get(side, []):
            a = engine.Addition.from_json(obj)
            out.additions.append(
                sync_pb2.FieldAddition(
                    field=a.slot,
                    value=_addition_value(a),
                    target_side=target_side,  # type: ignore[arg-type]
                )
            )
    return out


def _plan_pb(me: str, plan: PlanRow, device_book: str, source_book: str) -> sync_pb2.MergePlan:
    out = sync_pb2.MergePlan(
        name=f"users/{me}/mergePlans/{plan.plan_id}",
        device_address_book=f"users/{me}/addressBooks/{device_book}",
        network_source=plan.network_source,  # type: ignore[arg-type]
        target=plan.target,  # type: ignore[arg-type]
        matched_count=plan.matched_count,
        field_addition_count=plan.addition_count,
        unmatched_device_count=plan.unmatched_device_count,
        unmatched_network_count=plan.unmatched_network_count,
        includes_pictures=plan.include_pictures,
        create_time=convert.timestamp(plan.created_at),
        expire_time=convert.timestamp(plan.expires_at),
        etag=merge.plan_etag(plan),
    )
    if plan.network_source == merge.SOURCE_ADDRESS_BOOK:
        out.source_address_book = f"users/{me}/addressBooks/{source_book}"
    return out


def _rematch(s: Session, backend: Backend, me: str, now: datetime, keys: set[int]) -> None:
    """Identities in the user's books changed: buddy matching runs for those keys."""
    matching.match_user(
        MatchRepository(s), backend.registry, me, now, ORIGIN_ADDRESS_BOOK, keys=keys
    )


class MergeApi:
    """SyncService merge RPCs; mixed into befriend.server.api.sync.SyncServicer."""

    backend: Backend

    async def PreviewMerge(
        self, request: sync_pb2.PreviewMergeRequest, context: Context
    ) -> sync_pb2.PreviewMergeResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        device_book = auth.resolve_name(
            request.device_address_book, "device_address_book", "addressBooks"
        )
        source_book = ""
        if request.source_address_book:
            source_book = auth.resolve_name(
                request.source_address_book, "source_address_book", "addressBooks"
            )

        def work(s: Session) -> PlanRow:
            return merge.preview(
                MergeRepository(s),
                AddressBookRepository(s),
                CODEC,
                me,
                AccountRepository(s).region_of(me),
                device_book_id=device_book,
                network_source=int(request.network_source),
                source_book_id=source_book,
                target=int(request.target),
                now=utcnow(),
            )

        plan = await self.backend.write(work)
        return sync_pb2.PreviewMergeResponse(
            merge_plan=_plan_pb(me, plan, device_book, source_book)
        )

    async def ListMergePlanItems(
        self, request: sync_pb2.ListMergePlanItemsRequest, context: Context
    ) -> sync_pb2.ListMergePlanItemsResponse:
        me = auth.require_user()
        plan_id = auth.resolve_name(request.parent, "parent", "mergePlans")
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        position = (0, -1)
        if request.page_token:
            try:
                token_plan, phase, after = request.page_token.split(":")
                position = (int(phase), int(after))
            except ValueError:
                raise InvalidArgument.field("page_token", "malformed") from None
            if token_plan != plan_id:
                raise InvalidArgument.field("page_token", "belongs to another plan")

        def work(s: Session) -> sync_pb2.ListMergePlanItemsResponse:
            repo = MergeRepository(s)
            plan = merge.get_plan(repo, me, plan_id, utcnow())
            views, nxt = merge.list_items(repo, plan, int(request.kind), position, size)
            return sync_pb2.ListMergePlanItemsResponse(
                items=[_item_pb(me, v) for v in views],
                next_page_token=f"{plan_id}:{nxt[0]}:{nxt[1]}" if nxt else "",
            )

        return await self.backend.read(work)

    async def ApplyMerge(
        self, request: sync_pb2.ApplyMergeRequest, context: Context
    ) -> sync_pb2.ApplyMergeResponse:
        me = auth.require_user()
        plan_id = auth.resolve_name(request.merge_plan, "merge_plan", "mergePlans")
        backend = self.backend

        def work(s: Session) -> tuple[sync_pb2.ApplyMergeResponse, str]:
            now = utcnow()
            repo = MergeRepository(s)
            record, changed_keys = merge.apply_plan(
                repo,
                CODEC,
                me,
                AccountRepository(s).region_of(me),
                plan=merge.get_plan(repo, me, plan_id, now),
                etag=request.etag,
                excluded_ids=list(request.excluded_item_ids),
                added_ids=list(request.added_item_ids),
                now=now,
            )
            if changed_keys:
                _rematch(s, backend, me, now, changed_keys)
            return sync_pb2.ApplyMergeResponse(merge=_merge_pb(me, record)), me

        return await self.backend.mutate(
            "befriend.v1.SyncService/ApplyMerge", request, sync_pb2.ApplyMergeResponse, work
        )

    async def UndoMerge(
        self, request: sync_pb2.UndoMergeRequest, context: Context
    ) -> sync_pb2.UndoMergeResponse:
        me = auth.require_user()
        merge_id = auth.resolve_name(request.merge, "merge", "merges")
        pks: list[int] = []
        for name in request.contacts:
            contact_id = auth.resolve_name(name, "contacts", "contacts")
            if not contact_id.isdigit():
                raise InvalidArgument.field("contacts", f"{name} is not a contact name")
            pks.append(int(contact_id))
        backend = self.backend

        def work(s: Session) -> tuple[sync_pb2.UndoMergeResponse, str]:
            now = utcnow()
            result, changed_keys = merge.undo_merge(
                MergeRepository(s),
                CODEC,
                me,
                AccountRepository(s).region_of(me),
                merge_id=merge_id,
                contact_pks=pks,
                now=now,
            )
            if changed_keys:
                _rematch(s, backend, me, now, changed_keys)
            return (
                sync_pb2.UndoMergeResponse(
                    merge=_merge_pb(me, result.merge),
                    removed_field_count=result.removed_fields,
                    kept_modified_field_count=result.kept_modified,
                    removed_contact_count=result.removed_contacts,
                ),
                me,
            )

        return await self.backend.mutate(
            "befriend.v1.SyncService/UndoMerge", request, sync_pb2.UndoMergeResponse, work
        )
