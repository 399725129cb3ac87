"""befriend Python SDK: typed sync and asyncio clients.

::

    async with AsyncClient("127.0.0.1:50051") as client:
        answer = await client.account.register(display_name="Ann", phone_numbers=["+85291234567"])
        me = await client.account.get_me()          # token was taken from the register answer

    with Client("127.0.0.1:50051", token=token) as client:
        for device in client.account.iter_devices():
            print(device.device_id)

    with Client("127.0.0.1:50051", token=token) as client:      # address-book sync
        result = client.sync.upload_contacts(
            address_book_id="phone", kind=sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
            device_id="dev-1", entries=read_contacts("phone.vcf").entries)
        entries = client.sync.restore_contacts("phone", held_entry_ids=ids_on_device)

    with Client("127.0.0.1:50051", token=token) as client:      # buddies
        for buddy in client.friendship.iter_buddies(kind=friendship_pb2.BUDDY_KIND_FULL):
            print(buddy.display_name)
        client.friendship.accept_one_way_request("u42")     # users/me/oneWayRequests/u42
        for event in client.friendship.watch_events(cursor=saved_cursor):
            saved_cursor = event.cursor

Behaviour shared by both clients (one code path builds every request, see ``_AccountCalls``,
``_SyncCalls`` and ``_FriendshipCalls``):

* Every RPC except ``Register`` and health checks sends ``authorization: Bearer <token>``.
* Every attempt has a deadline of ``timeout`` seconds.
* Mutations carry a ``request_id``; when none is given a uuid4 is generated once per call, so
  every retry of that call carries the same id and the server answers it idempotently.
* Retries (at most ``retries`` after the first attempt, exponential backoff with full
  jitter) happen only on ``UNAVAILABLE``, and on ``RESOURCE_EXHAUSTED`` when the server
  sent a ``RetryInfo`` (its delay is honoured). Every other failure is raised at once.
* Every failure is raised as a :class:`befriend.clients.errors.BefriendError` subclass.
* Streams: ``sync.upload_contacts`` resumes a broken upload from the server's last
  acknowledged chunk (``GetUploadStatus``) on a new stream, and ``sync.iter_restore_contacts``
  reopens a broken restore holding what it already received; both at most ``retries``
  times, with the same backoff. An upload stream's deadline is ``timeout`` per chunk.
  ``friendship.watch_events`` has no deadline and reopens a broken stream after the last
  cursor it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar, cast

import grpc
import grpc.aio
import tenacity
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from befriend.v1 import account_pb2, common_pb2, friendship_pb2, sync_pb2

from .errors import (
    BefriendError,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    from_grpc_error,
)

__all__ = [
    "DEFAULT_TARGET",
    "MAX_CHUNK_ENTRIES",
    "MAX_COMMUNICATION_LOG_ENTRIES",
    "AccountClient",
    "AsyncAccountClient",
    "AsyncClient",
    "AsyncFriendshipClient",
    "AsyncSyncClient",
    "Client",
    "FriendshipClient",
    "ImIdLike",
    "ProgressCallback",
    "SyncClient",
    "UploadResult",
]

DEFAULT_TARGET = "127.0.0.1:50051"

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)

#: An IM id as a message or as a ``(kind, id)`` pair, e.g. ``("qq", "12345")``.
ImIdLike: TypeAlias = common_pb2.ImId | tuple[str, str]
ChannelOptions: TypeAlias = Sequence[tuple[str, Any]]

_ACCOUNT_SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name
_SYNC_SERVICE = sync_pb2.DESCRIPTOR.services_by_name["SyncService"].full_name
_FRIENDSHIP_SERVICE = friendship_pb2.DESCRIPTOR.services_by_name["FriendshipService"].full_name
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _account_method(name: str) -> str:
    # KeyError at import time if the contract and the SDK ever disagree on a method name.
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].methods_by_name[name]
    return f"/{_ACCOUNT_SERVICE}/{name}"


def _sync_method(name: str) -> str:
    sync_pb2.DESCRIPTOR.services_by_name["SyncService"].methods_by_name[name]
    return f"/{_SYNC_SERVICE}/{name}"


def _friendship_method(name: str) -> str:
    friendship_pb2.DESCRIPTOR.services_by_name["FriendshipService"].methods_by_name[name]
    return f"/{_FRIENDSHIP_SERVICE}/{name}"


# --------------------------------------------------------------------------------------
# Call descriptions and request building (shared by the sync and async clients)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[ReqT, RespT]):
    """One unary RPC to make: full method path, request, response type."""

    method: str
    request: ReqT
    response_type: type[RespT]
    authenticated: bool = True


def _request_id(request_id: str | None) -> str:
    return request_id if request_id else str(uuid.uuid4())


def _im_id(value: ImIdLike) -> common_pb2.ImId:
    if isinstance(value, common_pb2.ImId):
        return value
    kind, ident = value
    return common_pb2.ImId(kind=kind, id=ident)


class _AccountCalls:
    """Builds the ``_Call`` of each AccountService RPC; no I/O here."""

    REGISTER = _account_method("Register")
    GET_ME = _account_method("GetMe")
    GET_USER = _account_method("GetUser")
    UPDATE_PROFILE = _account_method("UpdateProfile")
    CHANGE_PHONE_NUMBER = _account_method("ChangePhoneNumber")
    REGISTER_DEVICE = _account_method("RegisterDevice")
    LIST_DEVICES = _account_method("ListDevices")
    DELETE_ACCOUNT = _account_method("DeleteAccount")

    @staticmethod
    def register(
        *,
        display_name: str,
        phone_numbers: Iterable[str],
        email_addresses: Iterable[str],
        im_ids: Iterable[ImIdLike],
        region_code: str,
        time_zone: str,
        device: account_pb2.Device | None,
        request_id: str | None,
    ) -> _Call[account_pb2.RegisterRequest, account_pb2.RegisterResponse]:
        request = account_pb2.RegisterRequest(
            display_name=display_name,
            phone_numbers=list(phone_numbers),
            email_addresses=list(email_addresses),
            im_ids=[_im_id(i) for i in im_ids],
            region_code=region_code,
            time_zone=time_zone,
            request_id=_request_id(request_id),
        )
        if device is not None:
            request.device.CopyFrom(device)
        return _Call(
            _AccountCalls.REGISTER, request, account_pb2.RegisterResponse, authenticated=False
        )

    @staticmethod
    def get_me() -> _Call[account_pb2.GetMeRequest, account_pb2.GetMeResponse]:
        return _Call(_AccountCalls.GET_ME, account_pb2.GetMeRequest(), account_pb2.GetMeResponse)

    @staticmethod
    def get_user(name: str) -> _Call[account_pb2.GetUserRequest, account_pb2.GetUserResponse]:
        return _Call(
            _AccountCalls.GET_USER,
            account_pb2.GetUserRequest(name=name),
            account_pb2.GetUserResponse,
        )

    @staticmethod
    def update_profile(
        user: common_pb2.User, update_mask: Sequence[str], request_id: str | None
    ) -> _Call[account_pb2.UpdateProfileRequest, account_pb2.UpdateProfileResponse]:
        if isinstance(update_mask, str):
            raise TypeError("update_mask must be a sequence of field paths, not a str")
        request = account_pb2.UpdateProfileRequest(
            user=user,
            update_mask=FieldMask(paths=list(update_mask)),
            request_id=_request_id(request_id),
        )
        return _Call(_AccountCalls.UPDATE_PROFILE, request, account_pb2.UpdateProfileResponse)

    @staticmethod
    def change_phone_number(
        old: str, new: str, etag: str, request_id: str | None
    ) -> _Call[account_pb2.ChangePhoneNumberRequest, account_pb2.ChangePhoneNumberResponse]:
        request = account_pb2.ChangePhoneNumberRequest(
            old_phone_number=old,
            new_phone_number=new,
            etag=etag,
            request_id=_request_id(request_id),
        )
        return _Call(
            _AccountCalls.CHANGE_PHONE_NUMBER, request, account_pb2.ChangePhoneNumberResponse
        )

    @staticmethod
    def register_device(
        device_id: str, sim_id: str, platform: str, request_id: str | None
    ) -> _Call[account_pb2.RegisterDeviceRequest, account_pb2.RegisterDeviceResponse]:
        request = account_pb2.RegisterDeviceRequest(
            device=account_pb2.Device(device_id=device_id, sim_id=sim_id, platform=platform),
            request_id=_request_id(request_id),
        )
        return _Call(_AccountCalls.REGISTER_DEVICE, request, account_pb2.RegisterDeviceResponse)

    @staticmethod
    def list_devices(
        page_size: int, page_token: str
    ) -> _Call[account_pb2.ListDevicesRequest, account_pb2.ListDevicesResponse]:
        request = account_pb2.ListDevicesRequest(page_size=page_size, page_token=page_token)
        return _Call(_AccountCalls.LIST_DEVICES, request, account_pb2.ListDevicesResponse)

    @staticmethod
    def delete_account(
        etag: str, request_id: str | None
    ) -> _Call[account_pb2.DeleteAccountRequest, account_pb2.DeleteAccountResponse]:
        request = account_pb2.DeleteAccountRequest(etag=etag, request_id=_request_id(request_id))
        return _Call(_AccountCalls.DELETE_ACCOUNT, request, account_pb2.DeleteAccountResponse)


# --------------------------------------------------------------------------------------
# SyncService: request building, the upload plan (chunks, acks, resume point)
# --------------------------------------------------------------------------------------

#: Most entries one UploadContacts chunk may carry (sync.proto).
MAX_CHUNK_ENTRIES = 500
# Chunks sent ahead of the last ack on one stream (bounds what a broken stream must resend).
# Twice the server's batch (it applies up to 8 received chunks per transaction), so the next
# batch is on the wire while one is applied.
_UPLOAD_WINDOW = 16

#: ``progress(acknowledged_entries, total_entries)``; called after each ack that advances.
ProgressCallback: TypeAlias = Callable[[int, int], None]


def _address_book_name(address_book: str) -> str:
    """A resource name, or a bare id of one of the caller's books (``"phone"``)."""
    return address_book if "/" in address_book else f"users/me/addressBooks/{address_book}"


class _SyncCalls:
    """Builds the requests of SyncService RPCs; no I/O here."""

    UPLOAD_CONTACTS = _sync_method("UploadContacts")
    GET_UPLOAD_STATUS = _sync_method("GetUploadStatus")
    LIST_ADDRESS_BOOKS = _sync_method("ListAddressBooks")
    RESTORE_CONTACTS = _sync_method("RestoreContacts")
    LIST_CONTACTS = _sync_method("ListContacts")
    GET_CONTACT = _sync_method("GetContact")
    CREATE_CONTACT = _sync_method("CreateContact")
    UPDATE_CONTACT = _sync_method("UpdateContact")
    DELETE_CONTACT = _sync_method("DeleteContact")
    LIST_CHANGES = _sync_method("ListChanges")
    WATCH_CHANGES = _sync_method("WatchChanges")
    GET_SYNC_SETTINGS = _sync_method("GetSyncSettings")
    UPDATE_SYNC_SETTINGS = _sync_method("UpdateSyncSettings")
    PREVIEW_MERGE = _sync_method("PreviewMerge")
    LIST_MERGE_PLAN_ITEMS = _sync_method("ListMergePlanItems")
    APPLY_MERGE = _sync_method("ApplyMerge")
    UNDO_MERGE = _sync_method("UndoMerge")

    @staticmethod
    def get_upload_status(
        upload_id: str,
    ) -> _Call[sync_pb2.GetUploadStatusRequest, sync_pb2.GetUploadStatusResponse]:
        return _Call(
            _SyncCalls.GET_UPLOAD_STATUS,
            sync_pb2.GetUploadStatusRequest(upload_id=upload_id),
            sync_pb2.GetUploadStatusResponse,
        )

    @staticmethod
    def list_address_books(
        page_size: int, page_token: str
    ) -> _Call[sync_pb2.ListAddressBooksRequest, sync_pb2.ListAddressBooksResponse]:
        request = sync_pb2.ListAddressBooksRequest(
            parent="users/me", page_size=page_size, page_token=page_token
        )
        return _Call(_SyncCalls.LIST_ADDRESS_BOOKS, request, sync_pb2.ListAddressBooksResponse)

    @staticmethod
    def restore_contacts(
        address_book: str,
        device_id: str,
        held_entry_ids: Iterable[str],
        held_content_hashes: Iterable[str],
        batch_size: int,
    ) -> _Call[sync_pb2.RestoreContactsRequest, sync_pb2.RestoreContactsResponse]:
        request = sync_pb2.RestoreContactsRequest(
            address_book=_address_book_name(address_book),
            device_id=device_id,
            held_entry_ids=list(held_entry_ids),
            held_content_hashes=list(held_content_hashes),
            batch_size=batch_size,
        )
        return _Call(_SyncCalls.RESTORE_CONTACTS, request, sync_pb2.RestoreContactsResponse)

    @staticmethod
    def list_contacts(
        address_book: str, page_size: int, page_token: str, include_provenance: bool
    ) -> _Call[sync_pb2.ListContactsRequest, sync_pb2.ListContactsResponse]:
        request = sync_pb2.ListContactsRequest(
            parent="users/me",
            address_book=_address_book_name(address_book) if address_book else "",
            page_size=page_size,
            page_token=page_token,
            include_provenance=include_provenance,
        )
        return _Call(_SyncCalls.LIST_CONTACTS, request, sync_pb2.ListContactsResponse)

    @staticmethod
    def get_contact(
        name_or_id: str,
    ) -> _Call[sync_pb2.GetContactRequest, sync_pb2.GetContactResponse]:
        request = sync_pb2.GetContactRequest(name=_child_name(name_or_id, "contacts"))
        return _Call(_SyncCalls.GET_CONTACT, request, sync_pb2.GetContactResponse)

    @staticmethod
    def create_contact(
        address_book: str, contact: common_pb2.Contact, request_id: str | None
    ) -> _Call[sync_pb2.CreateContactRequest, sync_pb2.CreateContactResponse]:
        request = sync_pb2.CreateContactRequest(
            address_book=_address_book_name(address_book),
            contact=contact,
            request_id=_request_id(request_id),
        )
        return _Call(_SyncCalls.CREATE_CONTACT, request, sync_pb2.CreateContactResponse)

    @staticmethod
    def update_contact(
        contact: common_pb2.Contact, update_mask: Sequence[str], request_id: str | None
    ) -> _Call[sync_pb2.UpdateContactRequest, sync_pb2.UpdateContactResponse]:
        if isinstance(update_mask, str):
            raise TypeError("update_mask must be a sequence of field paths, not a str")
        request = sync_pb2.UpdateContactRequest(
            contact=contact,
            update_mask=FieldMask(paths=list(update_mask)),
            request_id=_request_id(request_id),
        )
        if contact.name and "/" not in contact.name:
            request.contact.name = _child_name(contact.name, "contacts")
        return _Call(_SyncCalls.UPDATE_CONTACT, request, sync_pb2.UpdateContactResponse)

    @staticmethod
    def delete_contact(
        name_or_id: str, etag: str, request_id: str | None
    ) -> _Call[sync_pb2.DeleteContactRequest, sync_pb2.DeleteContactResponse]:
        request = sync_pb2.DeleteContactRequest(
            name=_child_name(name_or_id, "contacts"), etag=etag, request_id=_request_id(request_id)
        )
        return _Call(_SyncCalls.DELETE_CONTACT, request, sync_pb2.DeleteContactResponse)

    @staticmethod
    def list_changes(
        cursor: str, address_book: str, page_size: int, page_token: str
    ) -> _Call[sync_pb2.ListChangesRequest, sync_pb2.ListChangesResponse]:
        request = sync_pb2.ListChangesRequest(
            parent="users/me",
            cursor=cursor,
            address_book=_address_book_name(address_book) if address_book else "",
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(_SyncCalls.LIST_CHANGES, request, sync_pb2.ListChangesResponse)

    @staticmethod
    def watch_changes(
        cursor: str, address_book: str
    ) -> _Call[sync_pb2.WatchChangesRequest, sync_pb2.WatchChangesResponse]:
        request = sync_pb2.WatchChangesRequest(
            parent="users/me",
            cursor=cursor,
            address_book=_address_book_name(address_book) if address_book else "",
        )
        return _Call(_SyncCalls.WATCH_CHANGES, request, sync_pb2.WatchChangesResponse)

    @staticmethod
    def get_sync_settings() -> _Call[
        sync_pb2.GetSyncSettingsRequest, sync_pb2.GetSyncSettingsResponse
    ]:
        request = sync_pb2.GetSyncSettingsRequest(name="users/me/syncSettings")
        return _Call(_SyncCalls.GET_SYNC_SETTINGS, request, sync_pb2.GetSyncSettingsResponse)

    @staticmethod
    def update_sync_settings(
        settings: sync_pb2.SyncSettings, update_mask: Sequence[str], request_id: str | None
    ) -> _Call[sync_pb2.UpdateSyncSettingsRequest, sync_pb2.UpdateSyncSettingsResponse]:
        if isinstance(update_mask, str):
            raise TypeError("update_mask must be a sequence of field paths, not a str")
        request = sync_pb2.UpdateSyncSettingsRequest(
            settings=settings,
            update_mask=FieldMask(paths=list(update_mask)),
            request_id=_request_id(request_id),
        )
        if not request.settings.name:
            request.settings.name = "users/me/syncSettings"
        return _Call(_SyncCalls.UPDATE_SYNC_SETTINGS, request, sync_pb2.UpdateSyncSettingsResponse)

    @staticmethod
    def preview_merge(
        device_address_book: str, network_source: int, source_address_book: str, target: int
    ) -> _Call[sync_pb2.PreviewMergeRequest, sync_pb2.PreviewMergeResponse]:
        request = sync_pb2.PreviewMergeRequest(
            parent="users/me",
            device_address_book=_address_book_name(device_address_book),
            network_source=cast(sync_pb2.NetworkSource.ValueType, network_source),
            source_address_book=(
                _address_book_name(source_address_book) if source_address_book else ""
            ),
            target=cast(sync_pb2.SyncTarget.ValueType, target),
        )
        return _Call(_SyncCalls.PREVIEW_MERGE, request, sync_pb2.PreviewMergeResponse)

    @staticmethod
    def list_merge_plan_items(
        merge_plan: str, kind: int, page_size: int, page_token: str
    ) -> _Call[sync_pb2.ListMergePlanItemsRequest, sync_pb2.ListMergePlanItemsResponse]:
        request = sync_pb2.ListMergePlanItemsRequest(
            parent=_child_name(merge_plan, "mergePlans"),
            kind=cast(sync_pb2.MergePlanItemKind.ValueType, kind),
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(_SyncCalls.LIST_MERGE_PLAN_ITEMS, request, sync_pb2.ListMergePlanItemsResponse)

    @staticmethod
    def apply_merge(
        merge_plan: str,
        etag: str,
        excluded_item_ids: Iterable[str],
        added_item_ids: Iterable[str],
        request_id: str | None,
    ) -> _Call[sync_pb2.ApplyMergeRequest, sync_pb2.ApplyMergeResponse]:
        for ids in (excluded_item_ids, added_item_ids):
            if isinstance(ids, str):
                raise TypeError("item ids must be a sequence of item ids, not a str")
        request = sync_pb2.ApplyMergeRequest(
            merge_plan=_child_name(merge_plan, "mergePlans"),
            etag=etag,
            excluded_item_ids=list(excluded_item_ids),
            added_item_ids=list(added_item_ids),
            request_id=_request_id(request_id),
        )
        return _Call(_SyncCalls.APPLY_MERGE, request, sync_pb2.ApplyMergeResponse)

    @staticmethod
    def undo_merge(
        merge: str, contacts: Iterable[str], request_id: str | None
    ) -> _Call[sync_pb2.UndoMergeRequest, sync_pb2.UndoMergeResponse]:
        if isinstance(contacts, str):
            raise TypeError("contacts must be a sequence of contact names or ids, not a str")
        request = sync_pb2.UndoMergeRequest(
            merge=_child_name(merge, "merges"),
            contacts=[_child_name(c, "contacts") for c in contacts],
            request_id=_request_id(request_id),
        )
        return _Call(_SyncCalls.UNDO_MERGE, request, sync_pb2.UndoMergeResponse)


class _ChangeWatch:
    """Where a WatchChanges watch stands across streams; no I/O here (see ``_WatchState``)."""

    def __init__(self, cursor: str, address_book: str) -> None:
        self.cursor = cursor
        self.address_book = address_book
        self.failures = 0

    def call(self) -> _Call[sync_pb2.WatchChangesRequest, sync_pb2.WatchChangesResponse]:
        return _SyncCalls.watch_changes(self.cursor, self.address_book)

    def on_response(self, response: sync_pb2.WatchChangesResponse) -> None:
        self.failures = 0
        if response.cursor:
            self.cursor = response.cursor

    def on_change(self, change: sync_pb2.ContactChange) -> None:
        if change.cursor:
            self.cursor = change.cursor

    def should_resume(self, settings: _Settings, error: BefriendError) -> bool:
        if self.failures >= settings.retries or not settings.is_retryable(error):
            return False
        self.failures += 1
        return True


@dataclass(frozen=True)
class UploadResult:
    """The outcome of ``upload_contacts``.

    Attributes:
        upload_id: the upload's id (pass it to ``get_upload_status``).
        address_book: resource name of the uploaded book.
        acknowledged_entry_count: entries the server stored (rejected ones excluded).
        rejections: entries the server did not store, each with field and reason, in
            (sequence number, entry index) order, each reported once.
        committed: True once the final chunk was acknowledged as committed (always True
            when ``upload_contacts`` returns normally).
        resumed_streams: how many times the upload resumed on a new stream.
    """

    upload_id: str
    address_book: str
    acknowledged_entry_count: int
    rejections: list[sync_pb2.EntryRejection]
    committed: bool
    resumed_streams: int = 0


def _with_hash(entry: sync_pb2.AddressBookEntry) -> sync_pb2.AddressBookEntry:
    copy = sync_pb2.AddressBookEntry()
    copy.CopyFrom(entry)
    if not copy.content_hash and not copy.deleted:
        copy.content_hash = hashlib.sha256(copy.raw).hexdigest()
    return copy


class _UploadPlan:
    """The chunks of one upload and what the server acknowledged; no I/O here.

    Entries are materialised up front (a phone book fits in memory), so any chunk can be
    resent after a broken stream.
    """

    def __init__(
        self,
        *,
        address_book_id: str,
        kind: int,
        device_id: str,
        entries: Iterable[sync_pb2.AddressBookEntry],
        mode: int,
        chunk_size: int,
        upload_id: str | None,
        progress: ProgressCallback | None,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_ENTRIES:
            raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_ENTRIES}")
        self.upload_id = upload_id or str(uuid.uuid4())
        materialised = [_with_hash(e) for e in entries]
        self.total = len(materialised)
        groups = [
            materialised[i : i + chunk_size] for i in range(0, len(materialised), chunk_size)
        ] or [[]]  # an empty upload still commits (a full snapshot of nothing empties a book)
        self.chunks: list[sync_pb2.UploadContactsRequest] = []
        # entries in chunks 1..n, for progress
        self._entries_through = [0]
        for seq, group in enumerate(groups, start=1):
            # Every chunk repeats the book, kind, device and mode: whichever chunk opens a
            # resumed stream is self-describing.
            self.chunks.append(
                sync_pb2.UploadContactsRequest(
                    address_book_id=address_book_id,
                    address_book_kind=cast(sync_pb2.AddressBookKind.ValueType, kind),
                    device_id=device_id,
                    upload_id=self.upload_id,
                    sequence_number=seq,
                    entries=group,
                    final=seq == len(groups),
                    mode=cast(sync_pb2.UploadMode.ValueType, mode),
                    expected_entry_count=self.total,
                )
            )
            self._entries_through.append(self._entries_through[-1] + len(group))
        self._progress = progress
        self.acknowledged = 0
        self.acknowledged_entry_count = 0
        self.address_book = ""
        self.committed = False
        self.resumes = 0
        self._rejections: dict[tuple[int, int], sync_pb2.EntryRejection] = {}

    @property
    def last_sequence_number(self) -> int:
        return len(self.chunks)

    def after(self, sequence_number: int) -> list[sync_pb2.UploadContactsRequest]:
        """The chunks to send on a stream that starts after ``sequence_number``."""
        return self.chunks[max(0, sequence_number) :]

    def _advance(self, sequence_number: int, entry_count: int) -> None:
        sequence_number = min(sequence_number, self.last_sequence_number)
        if sequence_number > self.acknowledged:
            self.acknowledged = sequence_number
            self.acknowledged_entry_count = entry_count
            if self._progress is not None:
                self._progress(self._entries_through[sequence_number], self.total)
        elif sequence_number == self.acknowledged:
            self.acknowledged_entry_count = max(self.acknowledged_entry_count, entry_count)

    def on_ack(self, ack: sync_pb2.UploadContactsResponse) -> None:
        self.address_book = ack.address_book or self.address_book
        for rejection in ack.rejections:
            key = (rejection.sequence_number, rejection.entry_index)
            self._rejections.setdefault(key, rejection)
        self._advance(ack.acknowledged_sequence_number, ack.acknowledged_entry_count)
        if ack.committed:
            self.committed = True
            self.acknowledged_entry_count = ack.acknowledged_entry_count

    def resume_after_status(self, status: sync_pb2.GetUploadStatusResponse) -> int:
        """Where to resume, from GetUploadStatus: the last chunk the server holds."""
        self.address_book = status.address_book or self.address_book
        if status.state == sync_pb2.UPLOAD_STATE_COMMITTED:
            self._advance(self.last_sequence_number, status.acknowledged_entry_count)
            self.acknowledged_entry_count = status.acknowledged_entry_count
            self.committed = True
            return self.last_sequence_number
        if status.state == sync_pb2.UPLOAD_STATE_EXPIRED:
            raise FailedPrecondition(
                f"upload {self.upload_id} expired before it was committed; start a new upload"
            )
        self._advance(status.last_acknowledged_sequence_number, status.acknowledged_entry_count)
        # The final chunk is always (re)sent while the upload is not committed.
        return min(status.last_acknowledged_sequence_number, self.last_sequence_number - 1)

    def resume_after_not_found(self, error: NotFound) -> int:
        """GetUploadStatus does not know the upload: start over unless it was acked before."""
        if self.acknowledged:
            raise error  # it existed: it expired
        return 0

    def result(self) -> UploadResult:
        return UploadResult(
            upload_id=self.upload_id,
            address_book=self.address_book,
            acknowledged_entry_count=self.acknowledged_entry_count,
            rejections=[self._rejections[k] for k in sorted(self._rejections)],
            committed=self.committed,
            resumed_streams=self.resumes,
        )

    def stream_ended_early(self) -> Unavailable:
        return Unavailable(
            f"upload {self.upload_id}: the stream ended before the final chunk was committed"
        )


# Stands for an UploadContacts stream where a _Call is expected (metadata).
_UPLOAD_CALL: _Call[Message, Message] = _Call(
    _SyncCalls.UPLOAD_CONTACTS, sync_pb2.UploadContactsRequest(), sync_pb2.UploadContactsResponse
)


def _restore_resumable(settings: _Settings, error: BefriendError, progressed: bool) -> bool:
    # A restore resumes (holding what it already received) on UNAVAILABLE-like failures, and
    # on a deadline that cut a stream which was delivering entries.
    return settings.is_retryable(error) or (progressed and isinstance(error, DeadlineExceeded))


def _health_call(service: str) -> _Call[Message, Message]:
    return _Call(
        _HEALTH_CHECK,
        health_pb2.HealthCheckRequest(service=service),
        health_pb2.HealthCheckResponse,
        authenticated=False,
    )


def _health_status_name(response: Message) -> str:
    status = cast(int, response.status)  # type: ignore[attr-defined]
    return cast(str, health_pb2.HealthCheckResponse.ServingStatus.Name(status))


# --------------------------------------------------------------------------------------
# FriendshipService: request building, resource names, the WatchEvents resume point
# --------------------------------------------------------------------------------------

#: Most records one SubmitCommunicationLogs call may carry (friendship.proto).
MAX_COMMUNICATION_LOG_ENTRIES = 5000


def _child_name(value: str, collection: str) -> str:
    """``users/me/{collection}/{id}`` for a bare id or a ``users/{id}`` member name.

    A full resource name (``users/{user}/{collection}/{id}``) is returned unchanged, so
    ``one_way_request.name``, ``one_way_request.requester`` and a bare requester id all
    name the same request.
    """
    if not value:
        raise ValueError(f"a {collection} id or resource name is required")
    parts = value.split("/")
    if len(parts) == 1:
        return f"users/me/{collection}/{value}"
    if len(parts) == 2 and parts[0] == "users":
        return f"users/me/{collection}/{parts[1]}"
    return value


def _user_name(value: str) -> str:
    """``users/{id}`` for a bare user id; a resource name is returned unchanged."""
    return value if "/" in value else f"users/{value}"


class _FriendshipCalls:
    """Builds the requests of FriendshipService RPCs; no I/O here."""

    LIST_BUDDIES = _friendship_method("ListBuddies")
    GET_BUDDY = _friendship_method("GetBuddy")
    LIST_BLOCKED_USERS = _friendship_method("ListBlockedUsers")
    UNBLOCK_USER = _friendship_method("UnblockUser")
    LIST_COMMON_CONTACTS = _friendship_method("ListCommonContacts")
    LIST_ONE_WAY_REQUESTS = _friendship_method("ListOneWayRequests")
    ACCEPT_ONE_WAY_REQUEST = _friendship_method("AcceptOneWayRequest")
    BLOCK_ONE_WAY_REQUEST = _friendship_method("BlockOneWayRequest")
    SET_PRESENCE = _friendship_method("SetPresence")
    GET_BUDDY_PRESENCE = _friendship_method("GetBuddyPresence")
    SUBMIT_COMMUNICATION_LOGS = _friendship_method("SubmitCommunicationLogs")
    LIST_ACTIVE_CONTACT_PROPOSALS = _friendship_method("ListActiveContactProposals")
    CONFIRM_ACTIVE_CONTACTS = _friendship_method("ConfirmActiveContacts")
    WATCH_EVENTS = _friendship_method("WatchEvents")
    REFRESH_MATCHES = _friendship_method("RefreshMatches")

    @staticmethod
    def list_buddies(
        kind: int, page_size: int, page_token: str
    ) -> _Call[friendship_pb2.ListBuddiesRequest, friendship_pb2.ListBuddiesResponse]:
        request = friendship_pb2.ListBuddiesRequest(
            parent="users/me",
            kind=cast(friendship_pb2.BuddyKind.ValueType, kind),
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(_FriendshipCalls.LIST_BUDDIES, request, friendship_pb2.ListBuddiesResponse)

    @staticmethod
    def get_buddy(
        name_or_id: str,
    ) -> _Call[friendship_pb2.GetBuddyRequest, friendship_pb2.GetBuddyResponse]:
        request = friendship_pb2.GetBuddyRequest(name=_child_name(name_or_id, "buddies"))
        return _Call(_FriendshipCalls.GET_BUDDY, request, friendship_pb2.GetBuddyResponse)

    @staticmethod
    def list_blocked_users(
        page_size: int, page_token: str
    ) -> _Call[friendship_pb2.ListBlockedUsersRequest, friendship_pb2.ListBlockedUsersResponse]:
        request = friendship_pb2.ListBlockedUsersRequest(
            parent="users/me", page_size=page_size, page_token=page_token
        )
        return _Call(
            _FriendshipCalls.LIST_BLOCKED_USERS, request, friendship_pb2.ListBlockedUsersResponse
        )

    @staticmethod
    def unblock_user(
        name_or_user_id: str, request_id: str | None
    ) -> _Call[friendship_pb2.UnblockUserRequest, friendship_pb2.UnblockUserResponse]:
        request = friendship_pb2.UnblockUserRequest(
            name=_child_name(name_or_user_id, "blockedUsers"), request_id=_request_id(request_id)
        )
        return _Call(_FriendshipCalls.UNBLOCK_USER, request, friendship_pb2.UnblockUserResponse)

    @staticmethod
    def list_common_contacts(
        other_user: str, page_size: int, page_token: str
    ) -> _Call[friendship_pb2.ListCommonContactsRequest, friendship_pb2.ListCommonContactsResponse]:
        if not other_user:
            raise ValueError("other_user (a user id or users/{id}) is required")
        request = friendship_pb2.ListCommonContactsRequest(
            parent="users/me",
            other_user=_user_name(other_user),
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(
            _FriendshipCalls.LIST_COMMON_CONTACTS,
            request,
            friendship_pb2.ListCommonContactsResponse,
        )

    @staticmethod
    def list_one_way_requests(
        state: int, page_size: int, page_token: str
    ) -> _Call[friendship_pb2.ListOneWayRequestsRequest, friendship_pb2.ListOneWayRequestsResponse]:
        request = friendship_pb2.ListOneWayRequestsRequest(
            parent="users/me",
            state=cast(friendship_pb2.OneWayRequestState.ValueType, state),
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(
            _FriendshipCalls.LIST_ONE_WAY_REQUESTS,
            request,
            friendship_pb2.ListOneWayRequestsResponse,
        )

    @staticmethod
    def accept_one_way_request(
        name_or_user_id: str, etag: str, request_id: str | None
    ) -> _Call[
        friendship_pb2.AcceptOneWayRequestRequest, friendship_pb2.AcceptOneWayRequestResponse
    ]:
        request = friendship_pb2.AcceptOneWayRequestRequest(
            name=_child_name(name_or_user_id, "oneWayRequests"),
            etag=etag,
            request_id=_request_id(request_id),
        )
        return _Call(
            _FriendshipCalls.ACCEPT_ONE_WAY_REQUEST,
            request,
            friendship_pb2.AcceptOneWayRequestResponse,
        )

    @staticmethod
    def block_one_way_request(
        name_or_user_id: str, etag: str, request_id: str | None
    ) -> _Call[friendship_pb2.BlockOneWayRequestRequest, friendship_pb2.BlockOneWayRequestResponse]:
        request = friendship_pb2.BlockOneWayRequestRequest(
            name=_child_name(name_or_user_id, "oneWayRequests"),
            etag=etag,
            request_id=_request_id(request_id),
        )
        return _Call(
            _FriendshipCalls.BLOCK_ONE_WAY_REQUEST,
            request,
            friendship_pb2.BlockOneWayRequestResponse,
        )

    @staticmethod
    def set_presence(
        state: int, status_message: str, picture_uri: str, request_id: str | None
    ) -> _Call[friendship_pb2.SetPresenceRequest, friendship_pb2.SetPresenceResponse]:
        request = friendship_pb2.SetPresenceRequest(
            presence=friendship_pb2.Presence(
                state=cast(friendship_pb2.PresenceState.ValueType, state),
                status_message=status_message,
                picture_uri=picture_uri,
            ),
            request_id=_request_id(request_id),
        )
        return _Call(_FriendshipCalls.SET_PRESENCE, request, friendship_pb2.SetPresenceResponse)

    @staticmethod
    def get_buddy_presence(
        buddies: Iterable[str], page_size: int, page_token: str
    ) -> _Call[friendship_pb2.GetBuddyPresenceRequest, friendship_pb2.GetBuddyPresenceResponse]:
        if isinstance(buddies, str):
            raise TypeError("buddies must be a sequence of buddy names or ids, not a str")
        request = friendship_pb2.GetBuddyPresenceRequest(
            parent="users/me",
            buddies=[_child_name(b, "buddies") for b in buddies],
            page_size=page_size,
            page_token=page_token,
        )
        return _Call(
            _FriendshipCalls.GET_BUDDY_PRESENCE, request, friendship_pb2.GetBuddyPresenceResponse
        )

    @staticmethod
    def submit_communication_logs(
        entries: Iterable[friendship_pb2.CommunicationLogEntry],
        device_id: str,
        request_id: str | None,
    ) -> _Call[
        friendship_pb2.SubmitCommunicationLogsRequest,
        friendship_pb2.SubmitCommunicationLogsResponse,
    ]:
        materialised = list(entries)
        if len(materialised) > MAX_COMMUNICATION_LOG_ENTRIES:
            raise ValueError(
                f"at most {MAX_COMMUNICATION_LOG_ENTRIES} log entries per call "
                f"(got {len(materialised)}); split them over several calls"
            )
        request = friendship_pb2.SubmitCommunicationLogsRequest(
            device_id=device_id, entries=materialised, request_id=_request_id(request_id)
        )
        return _Call(
            _FriendshipCalls.SUBMIT_COMMUNICATION_LOGS,
            request,
            friendship_pb2.SubmitCommunicationLogsResponse,
        )

    @staticmethod
    def list_active_contact_proposals(
        page_size: int, page_token: str
    ) -> _Call[
        friendship_pb2.ListActiveContactProposalsRequest,
        friendship_pb2.ListActiveContactProposalsResponse,
    ]:
        request = friendship_pb2.ListActiveContactProposalsRequest(
            parent="users/me", page_size=page_size, page_token=page_token
        )
        return _Call(
            _FriendshipCalls.LIST_ACTIVE_CONTACT_PROPOSALS,
            request,
            friendship_pb2.ListActiveContactProposalsResponse,
        )

    @staticmethod
    def confirm_active_contacts(
        excluded: Iterable[str], request_id: str | None
    ) -> _Call[
        friendship_pb2.ConfirmActiveContactsRequest,
        friendship_pb2.ConfirmActiveContactsResponse,
    ]:
        if isinstance(excluded, str):
            raise TypeError("excluded must be a sequence of proposal names or ids, not a str")
        request = friendship_pb2.ConfirmActiveContactsRequest(
            parent="users/me",
            excluded_proposals=[_child_name(p, "activeContactProposals") for p in excluded],
            request_id=_request_id(request_id),
        )
        return _Call(
            _FriendshipCalls.CONFIRM_ACTIVE_CONTACTS,
            request,
            friendship_pb2.ConfirmActiveContactsResponse,
        )

    @staticmethod
    def watch_events(
        cursor: str, types: Sequence[int]
    ) -> _Call[friendship_pb2.WatchEventsRequest, friendship_pb2.WatchEventsResponse]:
        request = friendship_pb2.WatchEventsRequest(
            parent="users/me",
            cursor=cursor,
            types=[cast(friendship_pb2.BuddyEventType.ValueType, t) for t in types],
        )
        return _Call(_FriendshipCalls.WATCH_EVENTS, request, friendship_pb2.WatchEventsResponse)

    @staticmethod
    def refresh_matches(
        users: Iterable[str], validate_only: bool, request_id: str | None
    ) -> _Call[friendship_pb2.RefreshMatchesRequest, friendship_pb2.RefreshMatchesResponse]:
        if isinstance(users, str):
            raise TypeError("users must be a sequence of user names or ids, not a str")
        request = friendship_pb2.RefreshMatchesRequest(
            users=[_user_name(u) for u in users],
            validate_only=validate_only,
            request_id=_request_id(request_id),
        )
        return _Call(
            _FriendshipCalls.REFRESH_MATCHES, request, friendship_pb2.RefreshMatchesResponse
        )


class _WatchState:
    """Where a WatchEvents watch stands across streams; no I/O here.

    ``cursor`` advances with every response (heartbeats included), so a reopened stream
    starts after the last event delivered and nothing is yielded twice.
    """

    def __init__(self, cursor: str, types: Iterable[int]) -> None:
        self.cursor = cursor
        self.types = [int(t) for t in types]
        self.failures = 0

    def call(self) -> _Call[friendship_pb2.WatchEventsRequest, friendship_pb2.WatchEventsResponse]:
        return _FriendshipCalls.watch_events(self.cursor, self.types)

    def on_response(self, response: friendship_pb2.WatchEventsResponse) -> None:
        self.failures = 0
        if response.cursor:
            self.cursor = response.cursor
        elif response.events and response.events[-1].cursor:
            self.cursor = response.events[-1].cursor

    def on_event(self, event: friendship_pb2.BuddyEvent) -> None:
        if event.cursor:
            self.cursor = event.cursor

    def should_resume(self, settings: _Settings, error: BefriendError) -> bool:
        """Reopen after ``error``? Only a retryable one, ``retries`` times in a row."""
        if self.failures >= settings.retries or not settings.is_retryable(error):
            return False
        self.failures += 1
        return True


# --------------------------------------------------------------------------------------
# Connection settings, retry policy and transports
# --------------------------------------------------------------------------------------


class _RetryWait(tenacity.wait.wait_base):
    """Honour the server's RetryInfo delay; otherwise exponential backoff, full jitter."""

    def __init__(self, initial: float, maximum: float, max_retry_delay: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=initial, max=maximum)
        self._max_retry_delay = max_retry_delay

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, BefriendError) and exc.retry_delay is not None:
            return max(0.0, min(exc.retry_delay, self._max_retry_delay))
        return float(self._jitter(retry_state))


@dataclass
class _Settings:
    """Everything a transport needs; the token is mutable (Register may set it)."""

    target: str
    token: str | None
    timeout: float
    retries: int
    initial_backoff: float
    max_backoff: float
    max_retry_delay: float
    channel_options: ChannelOptions
    credentials: grpc.ChannelCredentials | None

    def metadata(self, call: _Call[Any, Any]) -> tuple[tuple[str, str], ...]:
        if call.authenticated and self.token:
            return (("authorization", f"Bearer {self.token}"),)
        return ()

    def stream_timeout(self, messages: int) -> float:
        """Deadline of a stream attempt: ``timeout`` per message it must carry."""
        return self.timeout * max(1, messages)

    def backoff(self, attempt: int, error: BefriendError) -> float:
        """Delay before retry ``attempt`` (1-based) of a stream: as for unary calls."""
        if error.retry_delay is not None:
            return max(0.0, min(error.retry_delay, self.max_retry_delay))
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, Unavailable):
            return True
        return (
            isinstance(exc, ResourceExhausted)
            and exc.retry_delay is not None
            and exc.retry_delay <= self.max_retry_delay
        )

    def retry_arguments(self) -> dict[str, Any]:
        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": _RetryWait(self.initial_backoff, self.max_backoff, self.max_retry_delay),
            "retry": tenacity.retry_if_exception(self.is_retryable),
            "reraise": True,
        }

    def after_register(self, response: account_pb2.RegisterResponse) -> None:
        if self.token is None and response.access_token:
            self.token = response.access_token


def _settings(
    target: str,
    token: str | None,
    timeout: float,
    retries: int,
    initial_backoff: float,
    max_backoff: float,
    max_retry_delay: float,
    channel_options: ChannelOptions,
    credentials: grpc.ChannelCredentials | None,
) -> _Settings:
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return _Settings(
        target=target,
        token=token,
        timeout=timeout,
        retries=retries,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_retry_delay=max_retry_delay,
        channel_options=tuple(channel_options),
        credentials=credentials,
    )


class _SyncTransport:
    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._channel: grpc.Channel | None = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            s = self.settings
            options = list(s.channel_options)
            self._channel = (
                grpc.secure_channel(s.target, s.credentials, options=options)
                if s.credentials is not None
                else grpc.insecure_channel(s.target, options=options)
            )
        return self._channel

    def _once(self, call: _Call[ReqT, RespT]) -> RespT:
        callable_ = cast(
            "grpc.UnaryUnaryMultiCallable[ReqT, RespT]",
            self.channel.unary_unary(
                call.method,
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            ),
        )
        try:
            response = callable_(
                call.request,
                timeout=self.settings.timeout,
                metadata=self.settings.metadata(call),
            )
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err
        return response

    def invoke(self, call: _Call[ReqT, RespT]) -> RespT:
        retrying = tenacity.Retrying(**self.settings.retry_arguments())
        response: RespT = retrying(self._once, call)
        return response

    def upload(self, plan: _UploadPlan, start_after: int) -> None:
        """One UploadContacts stream: send the chunks after ``start_after``, read acks."""
        chunks = plan.after(start_after)
        window = threading.Semaphore(_UPLOAD_WINDOW)
        stop = threading.Event()

        def requests() -> Iterator[sync_pb2.UploadContactsRequest]:
            # Runs on gRPC's request-consumer thread; never blocks past the stream's end.
            for chunk in chunks:
                while not window.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                yield chunk

        callable_ = self.channel.stream_stream(
            _SyncCalls.UPLOAD_CONTACTS,
            request_serializer=sync_pb2.UploadContactsRequest.SerializeToString,
            response_deserializer=sync_pb2.UploadContactsResponse.FromString,
        )
        call = callable_(
            requests(),
            timeout=self.settings.stream_timeout(len(chunks)),
            metadata=self.settings.metadata(_UPLOAD_CALL),
        )
        released = start_after
        try:
            for ack in call:
                plan.on_ack(ack)
                acked = min(ack.acknowledged_sequence_number, start_after + len(chunks))
                while released < acked:
                    window.release()
                    released += 1
        except grpc.RpcError as err:
            if not plan.committed:
                raise from_grpc_error(err) from err
        finally:
            stop.set()
            call.cancel()  # type: ignore[no-untyped-call]  # no-op once the call has ended

    def server_stream(
        self, call: _Call[ReqT, RespT], *, deadline: bool = True
    ) -> Generator[RespT, None, None]:
        """One server-streaming attempt; errors are raised as BefriendError.

        ``deadline=False`` leaves the stream open until the server or the caller ends it
        (``WatchEvents``); otherwise it is cut after ``timeout`` seconds.
        """
        callable_ = self.channel.unary_stream(
            call.method,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response_type.FromString,
        )
        responses = callable_(
            call.request,
            timeout=self.settings.timeout if deadline else None,
            metadata=self.settings.metadata(call),
        )
        try:
            yield from cast(Iterator[RespT], responses)
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err
        finally:
            responses.cancel()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _is_aio_failed_write(err: grpc.RpcError) -> bool:
    """grpc.aio's report of a write that failed because the stream had already ended.

    When a server ends a client-streaming call (abort, shutdown, dropped connection) while
    the client is still writing, grpc.aio replaces the server's status with ``INTERNAL:
    Internal error from Core`` (grpc/grpc#36066). The real status is lost; the stream is
    broken, so the upload treats it as UNAVAILABLE and resumes: GetUploadStatus then
    surfaces any non-retryable cause (bad token, unknown upload, ...).
    """
    if not isinstance(err, grpc.aio.AioRpcError) or err.code() != grpc.StatusCode.INTERNAL:
        return False
    return 'Failed "execute_batch"' in (err.debug_error_string() or "") and (
        "SendMessageOperation" in (err.debug_error_string() or "")
    )


class _AsyncTransport:
    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created lazily so that the channel binds to the event loop that uses it.
        if self._channel is None:
            s = self.settings
            options = list(s.channel_options)
            self._channel = (
                grpc.aio.secure_channel(s.target, s.credentials, options=options)
                if s.credentials is not None
                else grpc.aio.insecure_channel(s.target, options=options)
            )
        return self._channel

    async def _once(self, call: _Call[ReqT, RespT]) -> RespT:
        callable_ = cast(
            "grpc.aio.UnaryUnaryMultiCallable[ReqT, RespT]",
            self.channel.unary_unary(
                call.method,
                request_serializer=type(call.request).SerializeToString,
                response_deserializer=call.response_type.FromString,
            ),
        )
        try:
            return await callable_(
                call.request,
                timeout=self.settings.timeout,
                metadata=self.settings.metadata(call),
            )
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err

    async def invoke(self, call: _Call[ReqT, RespT]) -> RespT:
        retrying = tenacity.AsyncRetrying(**self.settings.retry_arguments())
        return await retrying(self._once, call)

    async def upload(self, plan: _UploadPlan, start_after: int) -> None:
        """One UploadContacts stream: send the chunks after ``start_after``, read acks."""
        chunks = plan.after(start_after)
        window = asyncio.Semaphore(_UPLOAD_WINDOW)

        async def requests() -> AsyncIterator[sync_pb2.UploadContactsRequest]:
            for chunk in chunks:
                await window.acquire()
                yield chunk

        callable_ = self.channel.stream_stream(
            _SyncCalls.UPLOAD_CONTACTS,
            request_serializer=sync_pb2.UploadContactsRequest.SerializeToString,
            response_deserializer=sync_pb2.UploadContactsResponse.FromString,
        )
        call = callable_(
            requests(),
            timeout=self.settings.stream_timeout(len(chunks)),
            metadata=self.settings.metadata(_UPLOAD_CALL),
        )
        released = start_after
        try:
            async for ack in call:
                plan.on_ack(ack)
                acked = min(ack.acknowledged_sequence_number, start_after + len(chunks))
                while released < acked:
                    window.release()
                    released += 1
        except grpc.RpcError as err:
            if plan.committed:
                return
            if _is_aio_failed_write(err):
                raise Unavailable(
                    f"upload {plan.upload_id}: the stream ended while a chunk was being sent"
                ) from err
            raise from_grpc_error(err) from err
        finally:
            call.cancel()

    async def server_stream(
        self, call: _Call[ReqT, RespT], *, deadline: bool = True
    ) -> AsyncGenerator[RespT, None]:
        """One server-streaming attempt; errors are raised as BefriendError.

        ``deadline=False`` leaves the stream open until the server or the caller ends it.
        """
        callable_ = self.channel.unary_stream(
            call.method,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response_type.FromString,
        )
        responses = callable_(
            call.request,
            timeout=self.settings.timeout if deadline else None,
            metadata=self.settings.metadata(call),
        )
        try:
            async for response in responses:
                yield cast(RespT, response)
        except grpc.RpcError as err:
            raise from_grpc_error(err) from err
        finally:
            responses.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


# --------------------------------------------------------------------------------------
# Public clients
# --------------------------------------------------------------------------------------


class AsyncAccountClient:
    """AccountService methods of :class:`AsyncClient` (``client.account``)."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def register(
        self,
        *,
        display_name: str,
        phone_numbers: Iterable[str] = (),
        email_addresses: Iterable[str] = (),
        im_ids: Iterable[ImIdLike] = (),
        region_code: str = "",
        time_zone: str = "",
        device: account_pb2.Device | None = None,
        request_id: str | None = None,
    ) -> account_pb2.RegisterResponse:
        """Create a user. If the client has no token yet, it adopts ``access_token``."""
        response = await self._t.invoke(
            _AccountCalls.register(
                display_name=display_name,
                phone_numbers=phone_numbers,
                email_addresses=email_addresses,
                im_ids=im_ids,
                region_code=region_code,
                time_zone=time_zone,
                device=device,
                request_id=request_id,
            )
        )
        self._t.settings.after_register(response)
        return response

    async def get_me(self) -> account_pb2.GetMeResponse:
        """The caller's own user."""
        return await self._t.invoke(_AccountCalls.get_me())

    async def get_user(self, name: str) -> account_pb2.GetUserResponse:
        """A user by resource name (``"users/{id}"`` or ``"users/me"``)."""
        return await self._t.invoke(_AccountCalls.get_user(name))

    async def update_profile(
        self, user: common_pb2.User, update_mask: Sequence[str], request_id: str | None = None
    ) -> account_pb2.UpdateProfileResponse:
        """Update the fields named in ``update_mask``; ``user.etag`` must be current."""
        return await self._t.invoke(_AccountCalls.update_profile(user, update_mask, request_id))

    async def change_phone_number(
        self, old: str, new: str, etag: str, request_id: str | None = None
    ) -> account_pb2.ChangePhoneNumberResponse:
        """Replace the caller's number ``old`` by ``new``."""
        return await self._t.invoke(_AccountCalls.change_phone_number(old, new, etag, request_id))

    async def register_device(
        self, device_id: str, sim_id: str = "", platform: str = "", request_id: str | None = None
    ) -> account_pb2.RegisterDeviceResponse:
        """Record a device/SIM of the caller or refresh its last-seen time."""
        return await self._t.invoke(
            _AccountCalls.register_device(device_id, sim_id, platform, request_id)
        )

    async def list_devices(
        self, page_size: int = 0, page_token: str = ""
    ) -> account_pb2.ListDevicesResponse:
        """One page of the caller's devices."""
        return await self._t.invoke(_AccountCalls.list_devices(page_size, page_token))

    async def iter_devices(self, page_size: int = 0) -> AsyncIterator[account_pb2.Device]:
        """Every device of the caller, walking all pages."""
        page_token = ""
        while True:
            page = await self.list_devices(page_size=page_size, page_token=page_token)
            for device in page.devices:
                yield device
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def delete_account(
        self, etag: str = "", request_id: str | None = None
    ) -> account_pb2.DeleteAccountResponse:
        """Delete the caller's account and data; the token stops working."""
        return await self._t.invoke(_AccountCalls.delete_account(etag, request_id))


class AccountClient:
    """AccountService methods of :class:`Client` (``client.account``)."""

    def __init__(self, transport: _SyncTransport) -> None:
        self._t = transport

    def register(
        self,
        *,
        display_name: str,
        phone_numbers: Iterable[str] = (),
        email_addresses: Iterable[str] = (),
        im_ids: Iterable[ImIdLike] = (),
        region_code: str = "",
        time_zone: str = "",
        device: account_pb2.Device | None = None,
        request_id: str | None = None,
    ) -> account_pb2.RegisterResponse:
        """Create a user. If the client has no token yet, it adopts ``access_token``."""
        response = self._t.invoke(
            _AccountCalls.register(
                display_name=display_name,
                phone_numbers=phone_numbers,
                email_addresses=email_addresses,
                im_ids=im_ids,
                region_code=region_code,
                time_zone=time_zone,
                device=device,
                request_id=request_id,
            )
        )
        self._t.settings.after_register(response)
        return response

    def get_me(self) -> account_pb2.GetMeResponse:
        """The caller's own user."""
        return self._t.invoke(_AccountCalls.get_me())

    def get_user(self, name: str) -> account_pb2.GetUserResponse:
        """A user by resource name (``"users/{id}"`` or ``"users/me"``)."""
        return self._t.invoke(_AccountCalls.get_user(name))

    def update_profile(
        self, user: common_pb2.User, update_mask: Sequence[str], request_id: str | None = None
    ) -> account_pb2.UpdateProfileResponse:
        """Update the fields named in ``update_mask``; ``user.etag`` must be current."""
        return self._t.invoke(_AccountCalls.update_profile(user, update_mask, request_id))

    def change_phone_number(
        self, old: str, new: str, etag: str, request_id: str | None = None
    ) -> account_pb2.ChangePhoneNumberResponse:
        """Replace the caller's number ``old`` by ``new``."""
        return self._t.invoke(_AccountCalls.change_phone_number(old, new, etag, request_id))

    def register_device(
        self, device_id: str, sim_id: str = "", platform: str = "", request_id: str | None = None
    ) -> account_pb2.RegisterDeviceResponse:
        """Record a device/SIM of the caller or refresh its last-seen time."""
        return self._t.invoke(
            _AccountCalls.register_device(device_id, sim_id, platform, request_id)
        )

    def list_devices(
        self, page_size: int = 0, page_token: str = ""
    ) -> account_pb2.ListDevicesResponse:
        """One page of the caller's devices."""
        return self._t.invoke(_AccountCalls.list_devices(page_size, page_token))

    def iter_devices(self, page_size: int = 0) -> Iterator[account_pb2.Device]:
        """Every device of the caller, walking all pages."""
        page_token = ""
        while True:
            page = self.list_devices(page_size=page_size, page_token=page_token)
            yield from page.devices
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def delete_account(
        self, etag: str = "", request_id: str | None = None
    ) -> account_pb2.DeleteAccountResponse:
        """Delete the caller's account and data; the token stops working."""
        return self._t.invoke(_AccountCalls.delete_account(etag, request_id))


class AsyncSyncClient:
    """SyncService methods of :class:`AsyncClient` (``client.sync``)."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def upload_contacts(
        self,
        *,
        address_book_id: str,
        kind: int,
        device_id: str,
        entries: Iterable[sync_pb2.AddressBookEntry],
        mode: int = sync_pb2.UPLOAD_MODE_INCREMENTAL,
        chunk_size: int = MAX_CHUNK_ENTRIES,
        upload_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload an address book in chunks of ``chunk_size`` entries, resuming on failure.

        ``entries`` are materialised up front; an entry without ``content_hash`` gets the
        SHA-256 of its ``raw`` (the caller's messages are not modified). Chunks are numbered
        from 1 under ``upload_id`` (a uuid4 when not given); the last one is ``final``. At
        most a few chunks travel ahead of the server's acks. When the stream breaks with a
        retryable status (UNAVAILABLE: a dropped connection, a restarting server), the
        client asks ``GetUploadStatus`` and resends from the chunk after the last one the
        server holds, on a new stream, up to ``retries`` times with backoff; the server
        acknowledges a resent chunk it already holds without applying it again, so no
        entry is lost or applied twice. Every other failure raises its BefriendError.

        ``progress(acknowledged_entries, total_entries)`` is called after each ack that
        advances (acknowledged = in an acknowledged chunk, stored or rejected).
        """
        plan = _UploadPlan(
            address_book_id=address_book_id,
            kind=kind,
            device_id=device_id,
            entries=entries,
            mode=mode,
            chunk_size=chunk_size,
            upload_id=upload_id,
            progress=progress,
        )
        settings = self._t.settings
        while True:
            try:
                start_after = await self._resume_point(plan) if plan.resumes else 0
                if not plan.committed:
                    await self._t.upload(plan, start_after)
                if plan.committed:
                    return plan.result()
                raise plan.stream_ended_early()
            except BefriendError as error:
                if plan.resumes >= settings.retries or not settings.is_retryable(error):
                    raise
                plan.resumes += 1
                await asyncio.sleep(settings.backoff(plan.resumes, error))

    async def _resume_point(self, plan: _UploadPlan) -> int:
        try:
            status = await self._t._once(_SyncCalls.get_upload_status(plan.upload_id))
        except NotFound as error:
            return plan.resume_after_not_found(error)
        return plan.resume_after_status(status)

    async def get_upload_status(self, upload_id: str) -> sync_pb2.GetUploadStatusResponse:
        """State of an upload: its last acknowledged chunk and entry (NOT_FOUND if unknown)."""
        return await self._t.invoke(_SyncCalls.get_upload_status(upload_id))

    async def list_address_books(
        self, page_size: int = 0, page_token: str = ""
    ) -> sync_pb2.ListAddressBooksResponse:
        """One page of the caller's address books, most recently updated first."""
        return await self._t.invoke(_SyncCalls.list_address_books(page_size, page_token))

    async def iter_address_books(self, page_size: int = 0) -> AsyncIterator[sync_pb2.AddressBook]:
        """Every address book of the caller, walking all pages."""
        page_token = ""
        while True:
            page = await self.list_address_books(page_size=page_size, page_token=page_token)
            for book in page.address_books:
                yield book
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def iter_restore_contacts(
        self,
        address_book: str,
        *,
        device_id: str = "",
        held_entry_ids: Iterable[str] = (),
        held_content_hashes: Iterable[str] = (),
        batch_size: int = 0,
    ) -> AsyncIterator[sync_pb2.AddressBookEntry]:
        """The entries of ``address_book`` the device lacks, as the server streams them.

        ``address_book`` is a resource name or a bare book id (``"phone"`` stands for
        ``users/me/addressBooks/phone``). If the stream breaks (UNAVAILABLE, or a deadline
        while entries were arriving), a new stream is opened holding every entry already
        received, so nothing is yielded twice; ``retries`` bounds consecutive attempts
        without progress.
        """
        held_ids = list(held_entry_ids)
        held_hashes = list(held_content_hashes)
        settings = self._t.settings
        failures = 0
        while True:
            call = _SyncCalls.restore_contacts(
                address_book, device_id, held_ids, held_hashes, batch_size
            )
            progressed = False
            try:
                async with contextlib.aclosing(self._t.server_stream(call)) as stream:
                    async for response in stream:
                        for entry in response.entries:
                            held_ids.append(entry.entry_id)
                            progressed = True
                            yield entry
                return
            except BefriendError as error:
                if progressed:
                    failures = 0
                if failures >= settings.retries or not _restore_resumable(
                    settings, error, progressed
                ):
                    raise
                failures += 1
                await asyncio.sleep(settings.backoff(failures, error))

    async def restore_contacts(
        self,
        address_book: str,
        *,
        device_id: str = "",
        held_entry_ids: Iterable[str] = (),
        held_content_hashes: Iterable[str] = (),
        batch_size: int = 0,
    ) -> list[sync_pb2.AddressBookEntry]:
        """Every entry :meth:`iter_restore_contacts` yields, as a list."""
        return [
            entry
            async for entry in self.iter_restore_contacts(
                address_book,
                device_id=device_id,
                held_entry_ids=held_entry_ids,
                held_content_hashes=held_content_hashes,
                batch_size=batch_size,
            )
        ]

    # -- contacts, the change feed, sync settings ------------------------------------

    async def list_contacts(
        self,
        address_book: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        include_provenance: bool = False,
    ) -> sync_pb2.ListContactsResponse:
        """One page of the caller's contacts (of ``address_book``, a name or bare id; empty:
        every book). The first page's ``change_cursor`` is where to follow the change feed
        from once every page is read."""
        return await self._t.invoke(
            _SyncCalls.list_contacts(address_book, page_size, page_token, include_provenance)
        )

    async def iter_contacts(
        self, address_book: str = "", *, page_size: int = 0, include_provenance: bool = False
    ) -> AsyncIterator[sync_pb2.SyncedContact]:
        """Every contact (of ``address_book``), walking all pages."""
        page_token = ""
        while True:
            page = await self.list_contacts(
                address_book,
                page_size=page_size,
                page_token=page_token,
                include_provenance=include_provenance,
            )
            for contact in page.contacts:
                yield contact
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def get_contact(self, name_or_id: str) -> sync_pb2.SyncedContact:
        """One contact with its field provenance (``users/me/contacts/{id}`` or the id)."""
        return (await self._t.invoke(_SyncCalls.get_contact(name_or_id))).contact

    async def create_contact(
        self, address_book: str, contact: common_pb2.Contact, request_id: str | None = None
    ) -> sync_pb2.SyncedContact:
        """Add a contact to one of the caller's books (every field a USER_EDIT)."""
        return (
            await self._t.invoke(_SyncCalls.create_contact(address_book, contact, request_id))
        ).contact

    async def update_contact(
        self,
        contact: common_pb2.Contact,
        update_mask: Sequence[str],
        request_id: str | None = None,
    ) -> sync_pb2.SyncedContact:
        """Change the fields named in ``update_mask``; ``contact.name`` and ``contact.etag``
        are required (a stale etag raises :class:`Aborted`, reason ``ETAG_MISMATCH``)."""
        return (
            await self._t.invoke(_SyncCalls.update_contact(contact, update_mask, request_id))
        ).contact

    async def delete_contact(
        self, name_or_id: str, etag: str = "", request_id: str | None = None
    ) -> sync_pb2.DeleteContactResponse:
        """Delete a contact (``etag`` empty skips the concurrency check)."""
        return await self._t.invoke(_SyncCalls.delete_contact(name_or_id, etag, request_id))

    async def list_changes(
        self,
        cursor: str = "",
        *,
        address_book: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> sync_pb2.ListChangesResponse:
        """One page of contact changes after ``cursor``, oldest first. An expired cursor
        raises :class:`FailedPrecondition` (reason ``SYNC_CURSOR_EXPIRED``): do a full
        ``list_contacts`` and continue from its ``change_cursor``."""
        return await self._t.invoke(
            _SyncCalls.list_changes(cursor, address_book, page_size, page_token)
        )

    async def iter_changes(
        self, cursor: str, *, address_book: str = "", page_size: int = 0
    ) -> AsyncIterator[sync_pb2.ContactChange]:
        """Every change after ``cursor`` up to now, walking all pages (each change carries
        the cursor to resume after it)."""
        page_token = ""
        while True:
            page = await self.list_changes(
                cursor, address_book=address_book, page_size=page_size, page_token=page_token
            )
            for change in page.changes:
                yield change
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def watch_changes(
        self, cursor: str = "", *, address_book: str = ""
    ) -> AsyncIterator[sync_pb2.ContactChange]:
        """Contact changes after ``cursor`` (empty: from now) as they happen.

        The stream has no deadline. A stream broken with a retryable status is reopened
        after the last cursor received (heartbeats advance it), so nothing is yielded twice;
        ``retries`` bounds consecutive failures. An expired cursor raises
        :class:`FailedPrecondition` (reason ``SYNC_CURSOR_EXPIRED``).
        """
        watch = _ChangeWatch(cursor, address_book)
        while True:
            try:
                stream = self._t.server_stream(watch.call(), deadline=False)
                async with contextlib.aclosing(stream):
                    async for response in stream:
                        for change in response.changes:
                            watch.on_change(change)
                            yield change
                        watch.on_response(response)
                return
            except BefriendError as error:
                if not watch.should_resume(self._t.settings, error):
                    raise
                await asyncio.sleep(self._t.settings.backoff(watch.failures, error))

    async def get_sync_settings(self) -> sync_pb2.SyncSettings:
        """The caller's sync settings (defaults until first changed)."""
        return (await self._t.invoke(_SyncCalls.get_sync_settings())).settings

    async def update_sync_settings(
        self,
        settings: sync_pb2.SyncSettings,
        update_mask: Sequence[str],
        request_id: str | None = None,
    ) -> sync_pb2.SyncSettings:
        """Change the settings named in ``update_mask``; ``settings.etag`` must be current."""
        return (
            await self._t.invoke(_SyncCalls.update_sync_settings(settings, update_mask, request_id))
        ).settings

    # -- two-way merge --------------------------------------------------------------------

    async def preview_merge(
        self,
        device_address_book: str = "phone",
        *,
        network_source: int = sync_pb2.NETWORK_SOURCE_NETWORK_BOOK,
        source_address_book: str = "",
        target: int = sync_pb2.SYNC_TARGET_DEVICE_BOOK,
    ) -> sync_pb2.MergePlan:
        """Compute (without applying) a merge plan between a device book and a network
        source; list its items with :meth:`iter_merge_plan_items`."""
        return (
            await self._t.invoke(
                _SyncCalls.preview_merge(
                    device_address_book, network_source, source_address_book, target
                )
            )
        ).merge_plan

    async def list_merge_plan_items(
        self, merge_plan: str, *, kind: int = 0, page_size: int = 0, page_token: str = ""
    ) -> sync_pb2.ListMergePlanItemsResponse:
        """One page of a plan's items (``kind`` 0: every kind)."""
        return await self._t.invoke(
            _SyncCalls.list_merge_plan_items(merge_plan, kind, page_size, page_token)
        )

    async def iter_merge_plan_items(
        self, merge_plan: str, *, kind: int = 0, page_size: int = 0
    ) -> AsyncIterator[sync_pb2.MergePlanItem]:
        """Every item of a plan (of ``kind``), walking all pages."""
        page_token = ""
        while True:
            page = await self.list_merge_plan_items(
                merge_plan, kind=kind, page_size=page_size, page_token=page_token
            )
            for item in page.items:
                yield item
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def apply_merge(
        self,
        merge_plan: str,
        etag: str,
        *,
        excluded_item_ids: Iterable[str] = (),
        added_item_ids: Iterable[str] = (),
        request_id: str | None = None,
    ) -> sync_pb2.Merge:
        """Apply a previewed plan (stale inputs raise :class:`Aborted`)."""
        return (
            await self._t.invoke(
                _SyncCalls.apply_merge(
                    merge_plan, etag, excluded_item_ids, added_item_ids, request_id
                )
            )
        ).merge

    async def undo_merge(
        self, merge: str, *, contacts: Iterable[str] = (), request_id: str | None = None
    ) -> sync_pb2.UndoMergeResponse:
        """Remove a merge's unmodified new additions (of ``contacts`` only, if given)."""
        return await self._t.invoke(_SyncCalls.undo_merge(merge, contacts, request_id))


class SyncClient:
    """SyncService methods of :class:`Client` (``client.sync``); see :class:`AsyncSyncClient`."""

    def __init__(self, transport: _SyncTransport) -> None:
        self._t = transport

    def upload_contacts(
        self,
        *,
        address_book_id: str,
        kind: int,
        device_id: str,
        entries: Iterable[sync_pb2.AddressBookEntry],
        mode: int = sync_pb2.UPLOAD_MODE_INCREMENTAL,
        chunk_size: int = MAX_CHUNK_ENTRIES,
        upload_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload an address book in chunks, resuming on failure (see the async client)."""
        plan = _UploadPlan(
            address_book_id=address_book_id,
            kind=kind,
            device_id=device_id,
            entries=entries,
            mode=mode,
            chunk_size=chunk_size,
            upload_id=upload_id,
            progress=progress,
        )
        settings = self._t.settings
        while True:
            try:
                start_after = self._resume_point(plan) if plan.resumes else 0
                if not plan.committed:
                    self._t.upload(plan, start_after)
                if plan.committed:
                    return plan.result()
                raise plan.stream_ended_early()
            except BefriendError as error:
                if plan.resumes >= settings.retries or not settings.is_retryable(error):
                    raise
                plan.resumes += 1
                time.sleep(settings.backoff(plan.resumes, error))

    def _resume_point(self, plan: _UploadPlan) -> int:
        try:
            status = self._t._once(_SyncCalls.get_upload_status(plan.upload_id))
        except NotFound as error:
            return plan.resume_after_not_found(error)
        return plan.resume_after_status(status)

    def get_upload_status(self, upload_id: str) -> sync_pb2.GetUploadStatusResponse:
        """State of an upload: its last acknowledged chunk and entry (NOT_FOUND if unknown)."""
        return self._t.invoke(_SyncCalls.get_upload_status(upload_id))

    def list_address_books(
        self, page_size: int = 0, page_token: str = ""
    ) -> sync_pb2.ListAddressBooksResponse:
        """One page of the caller's address books, most recently updated first."""
        return self._t.invoke(_SyncCalls.list_address_books(page_size, page_token))

    def iter_address_books(self, page_size: int = 0) -> Iterator[sync_pb2.AddressBook]:
        """Every address book of the caller, walking all pages."""
        page_token = ""
        while True:
            page = self.list_address_books(page_size=page_size, page_token=page_token)
            yield from page.address_books
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def iter_restore_contacts(
        self,
        address_book: str,
        *,
        device_id: str = "",
        held_entry_ids: Iterable[str] = (),
        held_content_hashes: Iterable[str] = (),
        batch_size: int = 0,
    ) -> Iterator[sync_pb2.AddressBookEntry]:
        """The entries the device lacks, resuming a broken stream (see the async client)."""
        held_ids = list(held_entry_ids)
        held_hashes = list(held_content_hashes)
        settings = self._t.settings
        failures = 0
        while True:
            call = _SyncCalls.restore_contacts(
                address_book, device_id, held_ids, held_hashes, batch_size
            )
            progressed = False
            try:
                with contextlib.closing(self._t.server_stream(call)) as stream:
                    for response in stream:
                        for entry in response.entries:
                            held_ids.append(entry.entry_id)
                            progressed = True
                            yield entry
                return
            except BefriendError as error:
                if progressed:
                    failures = 0
                if failures >= settings.retries or not _restore_resumable(
                    settings, error, progressed
                ):
                    raise
                failures += 1
                time.sleep(settings.backoff(failures, error))

    def restore_contacts(
        self,
        address_book: str,
        *,
        device_id: str = "",
        held_entry_ids: Iterable[str] = (),
        held_content_hashes: Iterable[str] = (),
        batch_size: int = 0,
    ) -> list[sync_pb2.AddressBookEntry]:
        """Every entry :meth:`iter_restore_contacts` yields, as a list."""
        return list(
            self.iter_restore_contacts(
                address_book,
                device_id=device_id,
                held_entry_ids=held_entry_ids,
                held_content_hashes=held_content_hashes,
                batch_size=batch_size,
            )
        )

    # -- contacts, the change feed, sync settings ------------------------------------

    def list_contacts(
        self,
        address_book: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        include_provenance: bool = False,
    ) -> sync_pb2.ListContactsResponse:
        """One page of the caller's contacts (of ``address_book``, a name or bare id; empty:
        every book). The first page's ``change_cursor`` is where to follow the change feed
        from once every page is read."""
        return self._t.invoke(
            _SyncCalls.list_contacts(address_book, page_size, page_token, include_provenance)
        )

    def iter_contacts(
        self, address_book: str = "", *, page_size: int = 0, include_provenance: bool = False
    ) -> Iterator[sync_pb2.SyncedContact]:
        """Every contact (of ``address_book``), walking all pages."""
        page_token = ""
        while True:
            page = self.list_contacts(
                address_book,
                page_size=page_size,
                page_token=page_token,
                include_provenance=include_provenance,
            )
            yield from page.contacts
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def get_contact(self, name_or_id: str) -> sync_pb2.SyncedContact:
        """One contact with its field provenance (``users/me/contacts/{id}`` or the id)."""
        return (self._t.invoke(_SyncCalls.get_contact(name_or_id))).contact

    def create_contact(
        self, address_book: str, contact: common_pb2.Contact, request_id: str | None = None
    ) -> sync_pb2.SyncedContact:
        """Add a contact to one of the caller's books (every field a USER_EDIT)."""
        return (
            self._t.invoke(_SyncCalls.create_contact(address_book, contact, request_id))
        ).contact

    def update_contact(
        self,
        contact: common_pb2.Contact,
        update_mask: Sequence[str],
        request_id: str | None = None,
    ) -> sync_pb2.SyncedContact:
        """Change the fields named in ``update_mask``; ``contact.name`` and ``contact.etag``
        are required (a stale etag raises :class:`Aborted`, reason ``ETAG_MISMATCH``)."""
        return (self._t.invoke(_SyncCalls.update_contact(contact, update_mask, request_id))).contact

    def delete_contact(
        self, name_or_id: str, etag: str = "", request_id: str | None = None
    ) -> sync_pb2.DeleteContactResponse:
        """Delete a contact (``etag`` empty skips the concurrency check)."""
        return self._t.invoke(_SyncCalls.delete_contact(name_or_id, etag, request_id))

    def list_changes(
        self,
        cursor: str = "",
        *,
        address_book: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> sync_pb2.ListChangesResponse:
        """One page of contact changes after ``cursor``, oldest first. An expired cursor
        raises :class:`FailedPrecondition` (reason ``SYNC_CURSOR_EXPIRED``): do a full
        ``list_contacts`` and continue from its ``change_cursor``."""
        return self._t.invoke(_SyncCalls.list_changes(cursor, address_book, page_size, page_token))

    def iter_changes(
        self, cursor: str, *, address_book: str = "", page_size: int = 0
    ) -> Iterator[sync_pb2.ContactChange]:
        """Every change after ``cursor`` up to now, walking all pages (each change carries
        the cursor to resume after it)."""
        page_token = ""
        while True:
            page = self.list_changes(
                cursor, address_book=address_book, page_size=page_size, page_token=page_token
            )
            yield from page.changes
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def watch_changes(
        self, cursor: str = "", *, address_book: str = ""
    ) -> Iterator[sync_pb2.ContactChange]:
        """Contact changes after ``cursor`` (empty: from now) as they happen.

        The stream has no deadline. A stream broken with a retryable status is reopened
        after the last cursor received (heartbeats advance it), so nothing is yielded twice;
        ``retries`` bounds consecutive failures. An expired cursor raises
        :class:`FailedPrecondition` (reason ``SYNC_CURSOR_EXPIRED``).
        """
        watch = _ChangeWatch(cursor, address_book)
        while True:
            try:
                with contextlib.closing(
                    self._t.server_stream(watch.call(), deadline=False)
                ) as stream:
                    for response in stream:
                        for change in response.changes:
                            watch.on_change(change)
                            yield change
                        watch.on_response(response)
                return
            except BefriendError as error:
                if not watch.should_resume(self._t.settings, error):
                    raise
                time.sleep(self._t.settings.backoff(watch.failures, error))

    def get_sync_settings(self) -> sync_pb2.SyncSettings:
        """The caller's sync settings (defaults until first changed)."""
        return (self._t.invoke(_SyncCalls.get_sync_settings())).settings

    def update_sync_settings(
        self,
        settings: sync_pb2.SyncSettings,
        update_mask: Sequence[str],
        request_id: str | None = None,
    ) -> sync_pb2.SyncSettings:
        """Change the settings named in ``update_mask``; ``settings.etag`` must be current."""
        return (
            self._t.invoke(_SyncCalls.update_sync_settings(settings, update_mask, request_id))
        ).settings

    # -- two-way merge --------------------------------------------------------------------

    def preview_merge(
        self,
        device_address_book: str = "phone",
        *,
        network_source: int = sync_pb2.NETWORK_SOURCE_NETWORK_BOOK,
        source_address_book: str = "",
        target: int = sync_pb2.SYNC_TARGET_DEVICE_BOOK,
    ) -> sync_pb2.MergePlan:
        """Compute (without applying) a merge plan between a device book and a network
        source; list its items with :meth:`iter_merge_plan_items`."""
        return (
            self._t.invoke(
                _SyncCalls.preview_merge(
                    device_address_book, network_source, source_address_book, target
                )
            )
        ).merge_plan

    def list_merge_plan_items(
        self, merge_plan: str, *, kind: int = 0, page_size: int = 0, page_token: str = ""
    ) -> sync_pb2.ListMergePlanItemsResponse:
        """One page of a plan's items (``kind`` 0: every kind)."""
        return self._t.invoke(
            _SyncCalls.list_merge_plan_items(merge_plan, kind, page_size, page_token)
        )

    def iter_merge_plan_items(
        self, merge_plan: str, *, kind: int = 0, page_size: int = 0
    ) -> Iterator[sync_pb2.MergePlanItem]:
        """Every item of a plan (of ``kind``), walking all pages."""
        page_token = ""
        while True:
            page = self.list_merge_plan_items(
                merge_plan, kind=kind, page_size=page_size, page_token=page_token
            )
            yield from page.items
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def apply_merge(
        self,
        merge_plan: str,
        etag: str,
        *,
        excluded_item_ids: Iterable[str] = (),
        added_item_ids: Iterable[str] = (),
        request_id: str | None = None,
    ) -> sync_pb2.Merge:
        """Apply a previewed plan (stale inputs raise :class:`Aborted`)."""
        return (
            self._t.invoke(
                _SyncCalls.apply_merge(
                    merge_plan, etag, excluded_item_ids, added_item_ids, request_id
                )
            )
        ).merge

    def undo_merge(
        self, merge: str, *, contacts: Iterable[str] = (), request_id: str | None = None
    ) -> sync_pb2.UndoMergeResponse:
        """Remove a merge's unmodified new additions (of ``contacts`` only, if given)."""
        return self._t.invoke(_SyncCalls.undo_merge(merge, contacts, request_id))


class AsyncFriendshipClient:
    """FriendshipService methods of :class:`AsyncClient` (``client.friendship``).

    Names: ``"me"`` always stands for the caller. Wherever a method takes a one-way
    request, buddy or proposal, a bare id (``"u2"``), a member name (``"users/u2"``) and the
    full resource name (``"users/me/oneWayRequests/u2"``) are all accepted.
    """

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def list_buddies(
        self, kind: int = 0, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListBuddiesResponse:
        """One page of the caller's buddies; ``kind`` (``BUDDY_KIND_*``) 0 lists every kind."""
        return await self._t.invoke(_FriendshipCalls.list_buddies(kind, page_size, page_token))

    async def iter_buddies(
        self, kind: int = 0, page_size: int = 0
    ) -> AsyncIterator[friendship_pb2.Buddy]:
        """Every buddy of the caller (of ``kind``, 0 for all), walking all pages."""
        page_token = ""
        while True:
            page = await self.list_buddies(kind=kind, page_size=page_size, page_token=page_token)
            for buddy in page.buddies:
                yield buddy
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def get_buddy(self, name_or_id: str) -> friendship_pb2.Buddy:
        """One buddy of the caller (buddy id, member name ``users/{id}`` or buddy name)."""
        return (await self._t.invoke(_FriendshipCalls.get_buddy(name_or_id))).buddy

    async def list_blocked_users(
        self, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListBlockedUsersResponse:
        """One page of the members the caller blocked, most recent first."""
        return await self._t.invoke(_FriendshipCalls.list_blocked_users(page_size, page_token))

    async def iter_blocked_users(
        self, page_size: int = 0
    ) -> AsyncIterator[friendship_pb2.BlockedUser]:
        """Every member the caller blocked, walking all pages."""
        page_token = ""
        while True:
            page = await self.list_blocked_users(page_size, page_token)
            for blocked in page.blocked_users:
                yield blocked
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def unblock_user(
        self, name_or_user_id: str, request_id: str | None = None
    ) -> friendship_pb2.UnblockUserResponse:
        """Lift a block (by user id or ``users/me/blockedUsers/{id}``); the two are
        re-matched at once. Not blocked: :class:`NotFound`."""
        return await self._t.invoke(_FriendshipCalls.unblock_user(name_or_user_id, request_id))

    async def list_common_contacts(
        self, other_user: str, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListCommonContactsResponse:
        """One page of the contacts the caller and the full buddy ``other_user`` (id or
        ``users/{id}``) both hold, from the caller's own book. Anyone who is not a full
        buddy: :class:`PermissionDenied`."""
        return await self._t.invoke(
            _FriendshipCalls.list_common_contacts(other_user, page_size, page_token)
        )

    async def iter_common_contacts(
        self, other_user: str, page_size: int = 0
    ) -> AsyncIterator[friendship_pb2.CommonContact]:
        """Every contact the caller and ``other_user`` both hold, walking all pages."""
        page_token = ""
        while True:
            page = await self.list_common_contacts(other_user, page_size, page_token)
            for common in page.common_contacts:
                yield common
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def list_one_way_requests(
        self, state: int = 0, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListOneWayRequestsResponse:
        """One page of one-way requests to the caller (``state`` 0: the pending ones)."""
        return await self._t.invoke(
            _FriendshipCalls.list_one_way_requests(state, page_size, page_token)
        )

    async def iter_one_way_requests(
        self, state: int = 0, page_size: int = 0
    ) -> AsyncIterator[friendship_pb2.OneWayRequest]:
        """Every one-way request to the caller (``state`` 0: pending), walking all pages."""
        page_token = ""
        while True:
            page = await self.list_one_way_requests(state, page_size, page_token)
            for request in page.one_way_requests:
                yield request
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def accept_one_way_request(
        self, name_or_user_id: str, request_id: str | None = None, *, etag: str = ""
    ) -> friendship_pb2.AcceptOneWayRequestResponse:
        """Accept the one-way request of a member (by requester id or request name)."""
        return await self._t.invoke(
            _FriendshipCalls.accept_one_way_request(name_or_user_id, etag, request_id)
        )

    async def block_one_way_request(
        self, name_or_user_id: str, request_id: str | None = None, *, etag: str = ""
    ) -> friendship_pb2.BlockOneWayRequestResponse:
        """Block the member behind a one-way request (by requester id or request name)."""
        return await self._t.invoke(
            _FriendshipCalls.block_one_way_request(name_or_user_id, etag, request_id)
        )

    async def set_presence(
        self,
        state: int,
        status_message: str = "",
        picture_uri: str = "",
        request_id: str | None = None,
    ) -> friendship_pb2.SetPresenceResponse:
        """Set the caller's presence (``PRESENCE_STATE_*``); full buddies see it."""
        return await self._t.invoke(
            _FriendshipCalls.set_presence(state, status_message, picture_uri, request_id)
        )

    async def get_buddy_presence(
        self, buddies: Iterable[str] = (), page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.GetBuddyPresenceResponse:
        """Presence of the named full buddies (buddy names or ids); none given: all of them."""
        return await self._t.invoke(
            _FriendshipCalls.get_buddy_presence(buddies, page_size, page_token)
        )

    async def submit_communication_logs(
        self,
        entries: Iterable[friendship_pb2.CommunicationLogEntry],
        device_id: str = "",
        request_id: str | None = None,
    ) -> friendship_pb2.SubmitCommunicationLogsResponse:
        """Send SMS/call-log records (at most ``MAX_COMMUNICATION_LOG_ENTRIES`` per call)."""
        return await self._t.invoke(
            _FriendshipCalls.submit_communication_logs(entries, device_id, request_id)
        )

    async def list_active_contact_proposals(
        self, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListActiveContactProposalsResponse:
        """One page of the caller's active-contact proposals, most frequent first."""
        return await self._t.invoke(
            _FriendshipCalls.list_active_contact_proposals(page_size, page_token)
        )

    async def confirm_active_contacts(
        self, excluded: Iterable[str] = (), request_id: str | None = None
    ) -> friendship_pb2.ConfirmActiveContactsResponse:
        """Confirm every open proposal except ``excluded`` (the ones the user unticked)."""
        return await self._t.invoke(_FriendshipCalls.confirm_active_contacts(excluded, request_id))

    async def watch_events(
        self, cursor: str = "", types: Iterable[int] = ()
    ) -> AsyncIterator[friendship_pb2.BuddyEvent]:
        """Buddy events after ``cursor`` (empty: from now on), as the server streams them.

        The stream has no deadline; it ends when the server ends it or the caller stops
        iterating. Keep ``event.cursor`` to resume later. When the stream breaks with a
        retryable status (UNAVAILABLE), it is reopened after the last cursor received
        (heartbeats advance it too), so no event is yielded twice; ``retries`` bounds
        consecutive failures. An expired cursor raises :class:`FailedPrecondition`
        (reason ``SYNC_CURSOR_EXPIRED``).
        """
        watch = _WatchState(cursor, types)
        while True:
            try:
                stream = self._t.server_stream(watch.call(), deadline=False)
                async with contextlib.aclosing(stream):
                    async for response in stream:
                        for event in response.events:
                            watch.on_event(event)
                            yield event
                        watch.on_response(response)
                return
            except BefriendError as error:
                if not watch.should_resume(self._t.settings, error):
                    raise
                await asyncio.sleep(self._t.settings.backoff(watch.failures, error))

    async def refresh_matches(
        self,
        users: Iterable[str] = (),
        validate_only: bool = False,
        request_id: str | None = None,
    ) -> friendship_pb2.RefreshMatchesResponse:
        """Re-run matching for ``users`` (ids or ``users/{id}``; none: everyone).

        Internal RPC: the client's ``token`` must be the server's service token
        (``BEFRIEND_SERVICE_TOKEN``); a user token is refused (PERMISSION_DENIED).
        """
        return await self._t.invoke(
            _FriendshipCalls.refresh_matches(users, validate_only, request_id)
        )


class FriendshipClient:
    """FriendshipService methods of :class:`Client` (``client.friendship``).

    See :class:`AsyncFriendshipClient`; ``watch_events`` is a blocking iterator here.
    """

    def __init__(self, transport: _SyncTransport) -> None:
        self._t = transport

    def list_buddies(
        self, kind: int = 0, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListBuddiesResponse:
        """One page of the caller's buddies; ``kind`` (``BUDDY_KIND_*``) 0 lists every kind."""
        return self._t.invoke(_FriendshipCalls.list_buddies(kind, page_size, page_token))

    def iter_buddies(self, kind: int = 0, page_size: int = 0) -> Iterator[friendship_pb2.Buddy]:
        """Every buddy of the caller (of ``kind``, 0 for all), walking all pages."""
        page_token = ""
        while True:
            page = self.list_buddies(kind=kind, page_size=page_size, page_token=page_token)
            yield from page.buddies
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def get_buddy(self, name_or_id: str) -> friendship_pb2.Buddy:
        """One buddy of the caller (buddy id, member name ``users/{id}`` or buddy name)."""
        return self._t.invoke(_FriendshipCalls.get_buddy(name_or_id)).buddy

    def list_blocked_users(
        self, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListBlockedUsersResponse:
        """One page of the members the caller blocked, most recent first."""
        return self._t.invoke(_FriendshipCalls.list_blocked_users(page_size, page_token))

    def iter_blocked_users(self, page_size: int = 0) -> Iterator[friendship_pb2.BlockedUser]:
        """Every member the caller blocked, walking all pages."""
        page_token = ""
        while True:
            page = self.list_blocked_users(page_size, page_token)
            yield from page.blocked_users
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def unblock_user(
        self, name_or_user_id: str, request_id: str | None = None
    ) -> friendship_pb2.UnblockUserResponse:
        """Lift a block; the two are re-matched at once (see the async client)."""
        return self._t.invoke(_FriendshipCalls.unblock_user(name_or_user_id, request_id))

    def list_common_contacts(
        self, other_user: str, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListCommonContactsResponse:
        """One page of the contacts the caller and the full buddy ``other_user`` both hold."""
        return self._t.invoke(
            _FriendshipCalls.list_common_contacts(other_user, page_size, page_token)
        )

    def iter_common_contacts(
        self, other_user: str, page_size: int = 0
    ) -> Iterator[friendship_pb2.CommonContact]:
        """Every contact the caller and ``other_user`` both hold, walking all pages."""
        page_token = ""
        while True:
            page = self.list_common_contacts(other_user, page_size, page_token)
            yield from page.common_contacts
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def list_one_way_requests(
        self, state: int = 0, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListOneWayRequestsResponse:
        """One page of one-way requests to the caller (``state`` 0: the pending ones)."""
        return self._t.invoke(_FriendshipCalls.list_one_way_requests(state, page_size, page_token))

    def iter_one_way_requests(
        self, state: int = 0, page_size: int = 0
    ) -> Iterator[friendship_pb2.OneWayRequest]:
        """Every one-way request to the caller (``state`` 0: pending), walking all pages."""
        page_token = ""
        while True:
            page = self.list_one_way_requests(state, page_size, page_token)
            yield from page.one_way_requests
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def accept_one_way_request(
        self, name_or_user_id: str, request_id: str | None = None, *, etag: str = ""
    ) -> friendship_pb2.AcceptOneWayRequestResponse:
        """Accept the one-way request of a member (by requester id or request name)."""
        return self._t.invoke(
            _FriendshipCalls.accept_one_way_request(name_or_user_id, etag, request_id)
        )

    def block_one_way_request(
        self, name_or_user_id: str, request_id: str | None = None, *, etag: str = ""
    ) -> friendship_pb2.BlockOneWayRequestResponse:
        """Block the member behind a one-way request (by requester id or request name)."""
        return self._t.invoke(
            _FriendshipCalls.block_one_way_request(name_or_user_id, etag, request_id)
        )

    def set_presence(
        self,
        state: int,
        status_message: str = "",
        picture_uri: str = "",
        request_id: str | None = None,
    ) -> friendship_pb2.SetPresenceResponse:
        """Set the caller's presence (``PRESENCE_STATE_*``); full buddies see it."""
        return self._t.invoke(
            _FriendshipCalls.set_presence(state, status_message, picture_uri, request_id)
        )

    def get_buddy_presence(
        self, buddies: Iterable[str] = (), page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.GetBuddyPresenceResponse:
        """Presence of the named full buddies (buddy names or ids); none given: all of them."""
        return self._t.invoke(_FriendshipCalls.get_buddy_presence(buddies, page_size, page_token))

    def submit_communication_logs(
        self,
        entries: Iterable[friendship_pb2.CommunicationLogEntry],
        device_id: str = "",
        request_id: str | None = None,
    ) -> friendship_pb2.SubmitCommunicationLogsResponse:
        """Send SMS/call-log records (at most ``MAX_COMMUNICATION_LOG_ENTRIES`` per call)."""
        return self._t.invoke(
            _FriendshipCalls.submit_communication_logs(entries, device_id, request_id)
        )

    def list_active_contact_proposals(
        self, page_size: int = 0, page_token: str = ""
    ) -> friendship_pb2.ListActiveContactProposalsResponse:
        """One page of the caller's active-contact proposals, most frequent first."""
        return self._t.invoke(_FriendshipCalls.list_active_contact_proposals(page_size, page_token))

    def confirm_active_contacts(
        self, excluded: Iterable[str] = (), request_id: str | None = None
    ) -> friendship_pb2.ConfirmActiveContactsResponse:
        """Confirm every open proposal except ``excluded`` (the ones the user unticked)."""
        return self._t.invoke(_FriendshipCalls.confirm_active_contacts(excluded, request_id))

    def watch_events(
        self, cursor: str = "", types: Iterable[int] = ()
    ) -> Iterator[friendship_pb2.BuddyEvent]:
        """Buddy events after ``cursor``, resuming a broken stream (see the async client)."""
        watch = _WatchState(cursor, types)
        while True:
            try:
                with contextlib.closing(
                    self._t.server_stream(watch.call(), deadline=False)
                ) as stream:
                    for response in stream:
                        for event in response.events:
                            watch.on_event(event)
                            yield event
                        watch.on_response(response)
                return
            except BefriendError as error:
                if not watch.should_resume(self._t.settings, error):
                    raise
                time.sleep(self._t.settings.backoff(watch.failures, error))

    def refresh_matches(
        self,
        users: Iterable[str] = (),
        validate_only: bool = False,
        request_id: str | None = None,
    ) -> friendship_pb2.RefreshMatchesResponse:
        """Re-run matching for ``users``; needs the service token (see the async client)."""
        return self._t.invoke(_FriendshipCalls.refresh_matches(users, validate_only, request_id))


class _ClientBase:
    """What both clients share: the settings behind ``target`` and ``token``."""

    def __init__(self, settings: _Settings) -> None:
        self._client_settings = settings

    @property
    def target(self) -> str:
        return self._client_settings.target

    @property
    def token(self) -> str | None:
        """The bearer token sent with authenticated RPCs."""
        return self._client_settings.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._client_settings.token = value


class AsyncClient(_ClientBase):
    """asyncio client; use as ``async with AsyncClient(...) as client``.

    Args:
        target: ``host:port`` of a befriend server.
        token: bearer token. When ``None``, a successful ``account.register`` sets it to the
            returned ``access_token`` (a client that already has a token keeps it).
        timeout: deadline of each attempt, in seconds.
        retries: retries after the first attempt (UNAVAILABLE, or RESOURCE_EXHAUSTED with
            RetryInfo); 0 disables retrying.
        channel_options: gRPC channel arguments, e.g. ``[("grpc.keepalive_time_ms", 30000)]``.
        credentials: TLS credentials; ``None`` uses a plaintext channel.
        initial_backoff, max_backoff: exponential backoff bounds in seconds (full jitter).
        max_retry_delay: a server ``RetryInfo`` delay above this is not waited for.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        channel_options: ChannelOptions = (),
        credentials: grpc.ChannelCredentials | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        settings = _settings(
            target,
            token,
            timeout,
            retries,
            initial_backoff,
            max_backoff,
            max_retry_delay,
            channel_options,
            credentials,
        )
        super().__init__(settings)
        self._transport = _AsyncTransport(settings)
        self.account = AsyncAccountClient(self._transport)
        self.sync = AsyncSyncClient(self._transport)
        self.friendship = AsyncFriendshipClient(self._transport)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (created on first use)."""
        return self._transport.channel

    async def health(self, service: str = "") -> str:
        """``grpc.health.v1.Health/Check``: the status name, e.g. ``"SERVING"``.

        ``service`` is ``""`` for the whole server or a full service name such as
        ``"befriend.v1.AccountService"``; an unknown service raises :class:`NotFound`.
        """
        return _health_status_name(await self._transport.invoke(_health_call(service)))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Client(_ClientBase):
    """Blocking client with the surface of :class:`AsyncClient`; use as ``with Client(...)``.

    It uses the synchronous gRPC API (no event loop), so it is safe in threads and scripts.
    See :class:`AsyncClient` for the arguments.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        channel_options: ChannelOptions = (),
        credentials: grpc.ChannelCredentials | None = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retry_delay: float = 30.0,
    ) -> None:
        settings = _settings(
            target,
            token,
            timeout,
            retries,
            initial_backoff,
            max_backoff,
            max_retry_delay,
            channel_options,
            credentials,
        )
        super().__init__(settings)
        self._transport = _SyncTransport(settings)
        self.account = AccountClient(self._transport)
        self.sync = SyncClient(self._transport)
        self.friendship = FriendshipClient(self._transport)

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (created on first use)."""
        return self._transport.channel

    def health(self, service: str = "") -> str:
        """``grpc.health.v1.Health/Check``: the status name, e.g. ``"SERVING"``."""
        return _health_status_name(self._transport.invoke(_health_call(service)))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
