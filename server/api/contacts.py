"""SyncService, contacts half: contacts with provenance, user edits, the change feed and
sync settings."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

from sqlalchemy.orm import Session

from befriend.core import merge
from befriend.server.api import auth, contactdoc, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.status import Context
from befriend.server.api.validate import date_problem, oversized
from befriend.server.errors import InvalidArgument, NotFound
from befriend.server.services import contacts, matching
from befriend.server.services.contacts import Codec
from befriend.server.services.matching import ORIGIN_ADDRESS_BOOK
from befriend.server.storage.addressbooks import AddressBookRepository, KeyDelta
from befriend.server.storage.contacts import ContactRepository, ContactRow, FeedItem, SettingsRow
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import common_pb2, sync_pb2

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
WATCH_BATCH = 500
_SERVICE = "befriend.v1.SyncService"


def _to_doc(data: bytes) -> contacts.Doc:
    return contactdoc.to_doc(common_pb2.Contact.FromString(data))


def _to_bytes(doc: contacts.Doc) -> bytes:
    return contactdoc.from_doc(doc).SerializeToString(deterministic=True)


CODEC = Codec(_to_doc, _to_bytes)


def _when(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def synced(user_id: str, row: ContactRow, with_provenance: bool = True) -> sync_pb2.SyncedContact:
    """A stored contact as SyncedContact (name, etag and update_time set)."""
    contact = common_pb2.Contact.FromString(row.contact)
    contact.name = f"users/{user_id}/contacts/{row.id}"
    contact.device_contact_id = contact.device_contact_id or row.entry_id
    contact.etag = contacts.etag(row.version)
    contact.update_time.CopyFrom(convert.timestamp(row.updated_at))
    out = sync_pb2.SyncedContact(
        contact=contact,
        address_book=f"users/{user_id}/addressBooks/{row.book_id}",
        content_hash=row.content_hash,
        create_time=convert.timestamp(row.created_at),
    )
    if with_provenance:
        for slot, p in contacts.provenance(row, contactdoc.to_doc(contact)):
            fp = out.field_provenance.add(
                field=slot,
                source=cast(sync_pb2.FieldSource.ValueType, int(p.source)),
                merge=f"users/{user_id}/merges/{p.merge}" if p.merge else "",
                device_id=p.device_id,
            )
            if p.time:
                fp.update_time.CopyFrom(convert.timestamp(_when(p.time)))
    return out


def _change(user_id: str, item: FeedItem) -> sync_pb2.ContactChange:
    if item.tombstone is not None:
        t = item.tombstone
        return sync_pb2.ContactChange(
            cursor=contacts.item_cursor(item),
            type=sync_pb2.CONTACT_CHANGE_TYPE_DELETED,
            origin=cast(sync_pb2.ContactChangeOrigin.ValueType, t.change_origin),
            contact_name=f"users/{user_id}/contacts/{t.entry_pk}",
            address_book=f"users/{user_id}/addressBooks/{t.book_id}",
            device_id=t.change_device,
            change_time=convert.timestamp(t.deleted_at),
        )
    row = item.contact
    assert row is not None
    created = contacts.is_created(item)
    change = sync_pb2.ContactChange(
        cursor=contacts.item_cursor(item),
        type=(
            sync_pb2.CONTACT_CHANGE_TYPE_CREATED
            if created
            else sync_pb2.CONTACT_CHANGE_TYPE_UPDATED
        ),
        origin=cast(sync_pb2.ContactChangeOrigin.ValueType, row.change_origin),
        contact_name=f"users/{user_id}/contacts/{row.id}",
        address_book=f"users/{user_id}/addressBooks/{row.book_id}",
        contact=synced(user_id, row),
        device_id=row.change_device,
        change_time=convert.timestamp(row.updated_at),
    )
    if not created and row.changed_fields:
        change.changed_fields.paths.extend(row.changed_fields.split(","))
    return change


def _contact_id(name: str, field: str) -> int:
    ident = auth.resolve_name(name, field, "contacts")
    if not ident.isdigit() or len(ident) > 18:
        raise NotFound(f"{name} does not exist", metadata={"resource": name})
    return int(ident)


def _book_id(name: str, field: str, required: bool = False) -> str:
    if not name:
        if required:
            raise InvalidArgument.field(field, "required: 'users/me/addressBooks/{id}'")
        return ""
    return auth.resolve_name(name, field, "addressBooks")


def _check_contact(contact: common_pb2.Contact, prefix: str) -> None:
    problem = oversized(contact, prefix) or date_problem(
        contact.birthday.year, contact.birthday.month, contact.birthday.day, f"{prefix}.birthday"
    )
    if problem is not None:
        raise InvalidArgument.field(*problem)


def _list_token(after_id: int, change_cursor: str, book_id: str) -> str:
    raw = json.dumps({"a": after_id, "c": change_cursor, "b": book_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_list_token(token: str, book_id: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
        after_id, cursor, token_book = int(data["a"]), str(data["c"]), str(data["b"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument.field("page_token", "malformed page token") from None
    if token_book != book_id or after_id < 0:
        raise InvalidArgument.field("page_token", "page token belongs to another listing")
    return after_id, cursor


def _settings(user_id: str, row: SettingsRow) -> sync_pb2.SyncSettings:
    out = sync_pb2.SyncSettings(
        name=f"users/{user_id}/syncSettings",
        sync_pictures=row.sync_pictures,
        default_network_source=cast(sync_pb2.NetworkSource.ValueType, row.default_network_source),
        default_target=cast(sync_pb2.SyncTarget.ValueType, row.default_target),
        etag=contacts.etag(row.version),
    )
    if row.updated_at is not None:
        out.update_time.CopyFrom(convert.timestamp(row.updated_at))
    return out


def _settings_owner(name: str) -> str:
    prefix, _, last = (name or "users/me/syncSettings").rpartition("/")
    if last != "syncSettings":
        raise InvalidArgument.field("name", "expected 'users/{user}/syncSettings'")
    return auth.resolve_name(prefix, "name")


class ContactsApi:
    """SyncService RPCs on single contacts, the change feed and sync settings; mixed into
    befriend.server.api.sync.SyncServicer."""

    backend: Backend

    # -- contacts ---------------------------------------------------------------------
    async def ListContacts(
        self, request: sync_pb2.ListContactsRequest, context: Context
    ) -> sync_pb2.ListContactsResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        book_id = _book_id(request.address_book, "address_book")
        size = contacts.page_size(request.page_size)
        after_id, cursor = (
            _read_list_token(request.page_token, book_id) if request.page_token else (0, "")
        )
        page = await self.backend.read(
            lambda s: contacts.list_contacts(
                ContactRepository(s), me, book_id, after_id, size, cursor
            )
        )
        return sync_pb2.ListContactsResponse(
            contacts=[synced(me, r, request.include_provenance) for r in page.contacts],
            next_page_token=(
                _list_token(page.last_id, page.change_cursor, book_id) if page.more else ""
            ),
            change_cursor=page.change_cursor,
            total_size=page.total,
        )

    async def GetContact(
        self, request: sync_pb2.GetContactRequest, context: Context
    ) -> sync_pb2.GetContactResponse:
        me = auth.require_user()
        contact_id = _contact_id(request.name, "name")
        row = await self.backend.read(
            lambda s: contacts.get_contact(ContactRepository(s), me, contact_id)
        )
        return sync_pb2.GetContactResponse(contact=synced(me, row))

    def _rematch(self, s: Session, user_id: str, now: datetime, delta: KeyDelta) -> None:
        """Match the keys the edit added or removed (nothing when it changed none)."""
        if delta.changed:
            matching.match_user(
                MatchRepository(s),
                self.backend.registry,
                user_id,
                now,
                ORIGIN_ADDRESS_BOOK,
                keys=delta.keys,
            )

    async def CreateContact(
        self, request: sync_pb2.CreateContactRequest, context: Context
    ) -> sync_pb2.CreateContactResponse:
        me = auth.require_user()
        book_id = _book_id(request.address_book, "address_book", required=True)
        _check_contact(request.contact, "contact")

        def work(s: Session) -> tuple[sync_pb2.CreateContactResponse, str]:
            now = utcnow()
            delta = KeyDelta()
            row = contacts.create_contact(
                ContactRepository(s),
                AddressBookRepository(s),
                AccountRepository(s),
                me,
                book_id,
                contactdoc.to_doc(request.contact),
                CODEC,
                now,
                delta,
            )
            self._rematch(s, me, now, delta)
            return sync_pb2.CreateContactResponse(contact=synced(me, row)), me

        return await self.backend.mutate(
            f"{_SERVICE}/CreateContact", request, sync_pb2.CreateContactResponse, work
        )

    async def UpdateContact(
        self, request: sync_pb2.UpdateContactRequest, context: Context
    ) -> sync_pb2.UpdateContactResponse:
        me = auth.require_user()
        if not request.contact.name:
            raise InvalidArgument.field("contact.name", "required: 'users/me/contacts/{id}'")
        contact_id = _contact_id(request.contact.name, "contact.name")
        paths = list(request.update_mask.paths)
        contacts.check_mask(paths, merge.EDITABLE_FIELDS)
        _check_contact(request.contact, "contact")
        changes = contactdoc.to_doc(request.contact)

        def work(s: Session) -> tuple[sync_pb2.UpdateContactResponse, str]:
            now = utcnow()
            delta = KeyDelta()
            result = contacts.update_contact(
                ContactRepository(s),
                AddressBookRepository(s),
                AccountRepository(s),
                me,
                contact_id,
                request.contact.etag,
                changes,
                paths,
                CODEC,
                now,
                delta,
            )
            self._rematch(s, me, now, delta)
            return sync_pb2.UpdateContactResponse(contact=synced(me, result.row)), me

        return await self.backend.mutate(
            f"{_SERVICE}/UpdateContact", request, sync_pb2.UpdateContactResponse, work
        )

    async def DeleteContact(
        self, request: sync_pb2.DeleteContactRequest, context: Context
    ) -> sync_pb2.DeleteContactResponse:
        me = auth.require_user()
        contact_id = _contact_id(request.name, "name")

        def work(s: Session) -> tuple[sync_pb2.DeleteContactResponse, str]:
            now = utcnow()
            delta = KeyDelta()
            contacts.delete_contact(
                ContactRepository(s),
                AddressBookRepository(s),
                me,
                contact_id,
                request.etag,
                now,
                delta,
            )
            self._rematch(s, me, now, delta)
            return sync_pb2.DeleteContactResponse(), me

        return await self.backend.mutate(
            f"{_SERVICE}/DeleteContact", request, sync_pb2.DeleteContactResponse, work
        )

    # -- change feed ------------------------------------------------------------------
    async def ListChanges(
        self, request: sync_pb2.ListChangesRequest, context: Context
    ) -> sync_pb2.ListChangesResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        book_id = _book_id(request.address_book, "address_book")
        size = contacts.page_size(request.page_size)
        if request.page_token:
            cursor, field = request.page_token, "page_token"
        elif request.cursor:
            cursor, field = request.cursor, "cursor"
        else:
            raise InvalidArgument.field(
                "cursor", "required: from ListContacts.change_cursor or an earlier change"
            )
        page = await self.backend.read(
            lambda s: contacts.list_changes(ContactRepository(s), me, book_id, cursor, field, size)
        )
        return sync_pb2.ListChangesResponse(
            changes=[_change(me, i) for i in page.items],
            next_page_token=page.cursor if page.more else "",
            cursor=page.cursor,
        )

    async def WatchChanges(
        self, request: sync_pb2.WatchChangesRequest, context: Context
    ) -> AsyncIterator[sync_pb2.WatchChangesResponse]:
        """Poll the feed; a batch per change, a heartbeat (with the cursor) when idle."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        book_id = _book_id(request.address_book, "address_book")
        if request.cursor:
            cursor = request.cursor
        else:
            cursor = await self.backend.read(
                lambda s: contacts.current_cursor(ContactRepository(s), me)
            )
        idle = 0.0
        while True:

            def since(s: Session, after: str = cursor) -> contacts.ChangePage:
                return contacts.list_changes(
                    ContactRepository(s), me, book_id, after, "cursor", WATCH_BATCH
                )

            page = await self.backend.read(since)
            cursor = page.cursor
            if page.items or idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield sync_pb2.WatchChangesResponse(
                    changes=[_change(me, i) for i in page.items], cursor=cursor
                )
            if page.more:
                continue
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS

    # -- sync settings ----------------------------------------------------------------
    async def GetSyncSettings(
        self, request: sync_pb2.GetSyncSettingsRequest, context: Context
    ) -> sync_pb2.GetSyncSettingsResponse:
        me = _settings_owner(request.name)
        row = await self.backend.read(lambda s: contacts.get_settings(ContactRepository(s), me))
        return sync_pb2.GetSyncSettingsResponse(settings=_settings(me, row))

    async def UpdateSyncSettings(
        self, request: sync_pb2.UpdateSyncSettingsRequest, context: Context
    ) -> sync_pb2.UpdateSyncSettingsResponse:
        me = _settings_owner(request.settings.name)
        paths = list(request.update_mask.paths)
        given = request.settings
        new = SettingsRow(
            given.sync_pictures,
            int(given.default_network_source),
            int(given.default_target),
            0,
            None,
        )

        def work(s: Session) -> tuple[sync_pb2.UpdateSyncSettingsResponse, str]:
            row = contacts.update_settings(
                ContactRepository(s), me, given.etag, new, paths, utcnow()
            )
            return sync_pb2.UpdateSyncSettingsResponse(settings=_settings(me, row)), me

        return await self.backend.mutate(
            f"{_SERVICE}/UpdateSyncSettings", request, sync_pb2.UpdateSyncSettingsResponse, work
        )
