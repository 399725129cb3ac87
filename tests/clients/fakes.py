"""Scripted in-process AccountService, SyncService, FriendshipService and health service for
the client tests.

The servicer is a plain subclass of the generated ``AccountServiceServicer`` served by a
real ``grpc.aio`` server on 127.0.0.1:0; it answers with the rich error model the befriend
server uses (``google.rpc.Status`` with ErrorInfo / BadRequest / RetryInfo details).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import _async as health_aio  # the asyncio HealthServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from befriend.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    friendship_pb2,
    friendship_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

DOMAIN = "befriend.dev"
UNKNOWN_SERVICE = "befriend.v1.NotHere"


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
    retry_delay: float | None = None,
) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason is not None:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
        status.details.add().Pack(info)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
        status.details.add().Pack(bad)
    if retry_delay is not None:
        delay = Duration()
        delay.FromNanoseconds(int(retry_delay * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


@dataclass
class StreamFault:
    """Break one UploadContacts (or RestoreContacts) stream.

    After ``after`` chunks of the stream were handled (stored and, unless ``ack_last`` is
    False for the last of them, acknowledged; for restore: ``after`` batches sent), the
    stream fails with ``code``; ``code=None`` ends it cleanly instead.
    """

    after: int
    ack_last: bool = True
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE


@dataclass
class FakeUpload:
    book_id: str
    kind: sync_pb2.AddressBookKind.ValueType
    device_id: str
    mode: sync_pb2.UploadMode.ValueType
    last_sequence_number: int = 0
    stored: int = 0
    last_entry_id: str = ""
    committed: bool = False
    staged: list[sync_pb2.AddressBookEntry] = field(default_factory=list)


@dataclass
class FakeBook:
    kind: sync_pb2.AddressBookKind.ValueType
    device_id: str
    entries: dict[str, sync_pb2.AddressBookEntry] = field(default_factory=dict)
    updates: int = 0


@dataclass
class SyncState:
    """The fake SyncService's data and script; tests set faults and inspect the rest."""

    upload_faults: deque[StreamFault] = field(default_factory=deque)
    restore_faults: deque[StreamFault] = field(default_factory=deque)
    status_failures: int = 0  # GetUploadStatus answers UNAVAILABLE this many times first
    uploads: dict[str, FakeUpload] = field(default_factory=dict)
    books: dict[str, FakeBook] = field(default_factory=dict)
    # entry_id -> times an entry was applied (staged) across all uploads
    applied: Counter[str] = field(default_factory=Counter)
    upload_streams: int = 0
    restore_requests: list[sync_pb2.RestoreContactsRequest] = field(default_factory=list)


def _default_buddies() -> list[friendship_pb2.Buddy]:
    def entry(name: str, phone: str) -> common_pb2.Contact:
        return common_pb2.Contact(
            display_name=name, mobile_numbers=[common_pb2.PhoneNumber(raw=phone)]
        )

    return [
        friendship_pb2.Buddy(
            name="users/u1/buddies/u2",
            kind=friendship_pb2.BUDDY_KIND_FULL,
            user="users/u2",
            display_name="Bob",
            phonebook_entry=entry("Bobby", "139 0000 0002"),
            match=friendship_pb2.BuddyMatch(key=friendship_pb2.BUDDY_MATCH_KEY_EXACT_E164),
        ),
        friendship_pb2.Buddy(
            name="users/u1/buddies/u3",
            kind=friendship_pb2.BUDDY_KIND_ONE_WAY,
            user="users/u3",
            display_name="Carol",
            phonebook_entry=entry("Carol W", "0000 0003"),
            match=friendship_pb2.BuddyMatch(
                key=friendship_pb2.BUDDY_MATCH_KEY_WEAK_SUFFIX, weak_suffix_digits=7
            ),
        ),
        friendship_pb2.Buddy(
            name="users/u1/buddies/k8613900000009",
            kind=friendship_pb2.BUDDY_KIND_PHONEBOOK,
            display_name="Dan",
            phonebook_entry=entry("Dan", "13900000009"),
        ),
    ]


def _default_requests() -> dict[str, str]:
    return {"u4": "Eve", "u5": "Frank"}


@dataclass
class FriendshipState:
    """The fake FriendshipService's data and script (users/u1's view)."""

    buddies: list[friendship_pb2.Buddy] = field(default_factory=_default_buddies)
    # pending one-way requests to users/u1: requester id -> display name
    requests: dict[str, str] = field(default_factory=_default_requests)
    # the event log; event i (1-based) has cursor str(i)
    events: list[friendship_pb2.BuddyEvent] = field(default_factory=list)
    watch_faults: deque[StreamFault] = field(default_factory=deque)
    watch_streams: int = 0
    # the cursor below which the log was trimmed (older cursors: SYNC_CURSOR_EXPIRED)
    trimmed_before: int = 0

    def add_events(self, *types: friendship_pb2.BuddyEventType.ValueType) -> None:
        for t in types:
            n = len(self.events) + 1
            self.events.append(
                friendship_pb2.BuddyEvent(
                    cursor=str(n), type=t, buddy=friendship_pb2.Buddy(name=f"ev{n}")
                )
            )


@dataclass
class Recorder:
    """What the fake saw: every call's method, request and metadata."""

    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    sync: SyncState = field(default_factory=SyncState)
    friendship: FriendshipState = field(default_factory=FriendshipState)

    def requests(self, method: str) -> list[Any]:
        return [req for m, req, _ in self.calls if m == method]

    def metadata(self, method: str) -> list[dict[str, str]]:
        return [md for m, _, md in self.calls if m == method]


def _e164(raw: str) -> str:
    digits = "".join(ch for ch in raw if ch.isdigit())
    return "+" + digits if raw.startswith("+") else "+86" + digits


class FakeAccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Scripted behaviour, keyed by request contents (see each method)."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self.users: dict[str, common_pb2.User] = {}
        self.devices = [account_pb2.Device(device_id=f"dev-{i}") for i in range(5)]

    def _record(self, method: str, request, context) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.rec.calls.append((method, request, md))

    async def _require_token(self, context) -> common_pb2.User:
        md = dict(context.invocation_metadata() or ())
        auth = md.get("authorization", "")
        user = self.users.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or user is None:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or unknown token",
                    reason="UNAUTHENTICATED",
                )
            )
        assert user is not None
        return user

    async def Register(self, request, context):
        self._record("Register", request, context)
        self.rec.attempts[request.request_id] += 1
        attempt = self.rec.attempts[request.request_id]
        if request.display_name == "flaky" and attempt <= 2:
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAVAILABLE, "try again", reason="SHUTTING_DOWN")
            )
        if request.display_name == "quota" and attempt == 1:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "slow down",
                    reason="QUOTA_EXCEEDED",
                    retry_delay=0.05,
                )
            )
        if request.display_name == "hard-quota":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more", reason="QUOTA_EXCEEDED")
            )
        bad = [
            (f"phone_numbers[{i}]", f"{p!r} is not a phone number")
            for i, p in enumerate(request.phone_numbers)
            if not any(ch.isdigit() for ch in p)
        ]
        if bad:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid phone number",
                    reason="INVALID_PHONE_NUMBER",
                    violations=bad,
                )
            )
        for phone in request.phone_numbers:
            if "999" in phone:
                await context.abort_with_status(
                    rich_status(
                        grpc.StatusCode.ALREADY_EXISTS,
                        "identity taken",
                        reason="IDENTITY_TAKEN",
                        metadata={"identity": _e164(phone)},
                    )
                )
        user_id = f"u{len(self.users) + 1}"
        user = common_pb2.User(
            name=f"users/{user_id}",
            user_id=user_id,
            display_name=request.display_name,
            phone_numbers=[
                common_pb2.PhoneNumber(raw=p, e164=_e164(p)) for p in request.phone_numbers
            ],
            email_addresses=[
                common_pb2.EmailAddress(raw=e, normalized=e.lower())
                for e in request.email_addresses
            ],
            im_ids=request.im_ids,
            region_code=request.region_code,
            time_zone=request.time_zone or "UTC",
            etag="e1",
        )
        token = f"tok-{user_id}"
        self.users[token] = user
        return account_pb2.RegisterResponse(user=user, access_token=token)

    async def GetMe(self, request, context):
        self._record("GetMe", request, context)
        return account_pb2.GetMeResponse(user=await self._require_token(context))

    async def GetUser(self, request, context):
        self._record("GetUser", request, context)
        if request.name == "users/down":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAVAILABLE, "down for good")
            )
        if request.name == "users/slow":
            await asyncio.sleep(2)
        if request.name == "users/plain":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        if request.name == "users/other":
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.PERMISSION_DENIED, "not yours", reason="PERMISSION_DENIED"
                )
            )
        return account_pb2.GetUserResponse(user=common_pb2.User(name=request.name))

    async def UpdateProfile(self, request, context):
        self._record("UpdateProfile", request, context)
        return account_pb2.UpdateProfileResponse(user=request.user)

    async def ChangePhoneNumber(self, request, context):
        self._record("ChangePhoneNumber", request, context)
        if request.etag != "e1":
            await context.abort_with_status(
                rich_status(grpc.StatusCode.ABORTED, "stale etag", reason="ETAG_MISMATCH")
            )
        return account_pb2.ChangePhoneNumberResponse(user=common_pb2.User(etag="e2"))

    async def RegisterDevice(self, request, context):
        self._record("RegisterDevice", request, context)
        self.rec.attempts[request.request_id] += 1
        if self.rec.attempts[request.request_id] <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return account_pb2.RegisterDeviceResponse(device=request.device)

    async def ListDevices(self, request, context):
        self._record("ListDevices", request, context)
        size = request.page_size or 2
        start = int(request.page_token or "0")
        page = self.devices[start : start + size]
        nxt = str(start + size) if start + size < len(self.devices) else ""
        return account_pb2.ListDevicesResponse(devices=page, next_page_token=nxt)

    async def DeleteAccount(self, request, context):
        self._record("DeleteAccount", request, context)
        return account_pb2.DeleteAccountResponse()


USER = "users/u1"


def _book_name(book_id: str) -> str:
    return f"{USER}/addressBooks/{book_id}"


class FakeSyncServicer(sync_pb2_grpc.SyncServiceServicer):
    """UploadContacts / GetUploadStatus / ListAddressBooks / RestoreContacts per sync.proto.

    One user (users/u1, "users/me" accepted); any bearer token is accepted, none is
    UNAUTHENTICATED. Faults come from ``recorder.sync`` (see :class:`StreamFault`).
    """

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self.state = recorder.sync

    def _record(self, method: str, request, context) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.rec.calls.append((method, request, md))

    async def _require_token(self, context) -> None:
        md = dict(context.invocation_metadata() or ())
        if not str(md.get("authorization", "")).startswith("Bearer "):
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAUTHENTICATED, "no token", reason="UNAUTHENTICATED")
            )

    @staticmethod
    def _rejections(chunk: sync_pb2.UploadContactsRequest) -> dict[int, sync_pb2.EntryRejection]:
        out: dict[int, sync_pb2.EntryRejection] = {}
        for i, entry in enumerate(chunk.entries):
            field_, why = "", ""
            if not entry.entry_id:
                field_, why = "entry_id", "entry_id is required"
            elif entry.content_hash and entry.content_hash != hashlib.sha256(entry.raw).hexdigest():
                field_, why = "content_hash", "content_hash does not match raw"
            elif b"REJECT" in entry.raw:
                field_, why = "contact.mobile_numbers[0].raw", "not a phone number"
            if field_:
                out[i] = sync_pb2.EntryRejection(
                    sequence_number=chunk.sequence_number,
                    entry_index=i,
                    entry_id=entry.entry_id,
                    field=field_,
                    reason=common_pb2.ERROR_REASON_INVALID_ARGUMENT,
                    description=why,
                )
        return out

    def _commit(self, upload: FakeUpload) -> None:
        book = self.state.books.setdefault(
            upload.book_id, FakeBook(kind=upload.kind, device_id=upload.device_id)
        )
        if upload.mode == sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT:
            book.entries.clear()
        for entry in upload.staged:
            if entry.deleted:
                book.entries.pop(entry.entry_id, None)
            else:
                book.entries[entry.entry_id] = entry
        book.kind, book.device_id = upload.kind, upload.device_id
        book.updates += 1
        upload.committed = True

    def _ack(
        self, upload_id: str, upload: FakeUpload, rejections=()
    ) -> sync_pb2.UploadContactsResponse:
        return sync_pb2.UploadContactsResponse(
            upload_id=upload_id,
            address_book=_book_name(upload.book_id),
            acknowledged_sequence_number=upload.last_sequence_number,
            acknowledged_entry_count=upload.stored,
            last_acknowledged_entry_id=upload.last_entry_id,
            rejections=list(rejections),
            committed=upload.committed,
        )

    async def UploadContacts(self, request_iterator, context):
        await self._require_token(context)
        self.state.upload_streams += 1
        fault = self.state.upload_faults.popleft() if self.state.upload_faults else None
        handled = 0
        if fault is not None and fault.after == 0:
            await context.abort(fault.code, "connection reset by fake")
        async for chunk in request_iterator:
            self._record("UploadContacts", chunk, context)
            upload = self.state.uploads.get(chunk.upload_id)
            if upload is None:
                if chunk.sequence_number != 1:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "upload not started")
                upload = FakeUpload(
                    chunk.address_book_id, chunk.address_book_kind, chunk.device_id, chunk.mode
                )
                self.state.uploads[chunk.upload_id] = upload
            if chunk.sequence_number > upload.last_sequence_number + 1:
                await context.abort_with_status(
                    rich_status(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"expected chunk {upload.last_sequence_number + 1}",
                        reason="INVALID_ARGUMENT",
                    )
                )
            rejections: dict[int, sync_pb2.EntryRejection] = {}
            if chunk.sequence_number == upload.last_sequence_number + 1:
                rejections = self._rejections(chunk)
                for i, entry in enumerate(chunk.entries):
                    if i in rejections:
                        continue
                    upload.staged.append(entry)
                    self.state.applied[entry.entry_id] += 1
                    upload.stored += 1
                    upload.last_entry_id = entry.entry_id
                upload.last_sequence_number = chunk.sequence_number
                if chunk.final:
                    self._commit(upload)
            handled += 1
            if fault is not None and handled >= fault.after:
                if fault.ack_last:
                    yield self._ack(chunk.upload_id, upload, rejections.values())
                if fault.code is None:
                    return
                await context.abort(fault.code, "connection reset by fake")
            yield self._ack(chunk.upload_id, upload, rejections.values())

    async def GetUploadStatus(self, request, context):
        self._record("GetUploadStatus", request, context)
        await self._require_token(context)
        if self.state.status_failures > 0:
            self.state.status_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "status down")
        upload = self.state.uploads.get(request.upload_id)
        if upload is None:
            await context.abort_with_status(
                rich_status(grpc.StatusCode.NOT_FOUND, "no such upload", reason="NOT_FOUND")
            )
        assert upload is not None
        return sync_pb2.GetUploadStatusResponse(
            upload_id=request.upload_id,
            address_book=_book_name(upload.book_id),
            device_id=upload.device_id,
            state=sync_pb2.UPLOAD_STATE_COMMITTED
            if upload.committed
            else sync_pb2.UPLOAD_STATE_IN_PROGRESS,
            last_acknowledged_sequence_number=upload.last_sequence_number,
            acknowledged_entry_count=upload.stored,
            last_acknowledged_entry_id=upload.last_entry_id,
        )

    async def ListAddressBooks(self, request, context):
        self._record("ListAddressBooks", request, context)
        await self._require_token(context)
        books = [
            sync_pb2.AddressBook(
                name=_book_name(book_id),
                address_book_id=book_id,
                kind=book.kind,
                device_id=book.device_id,
                entry_count=len(book.entries),
                etag=str(book.updates),
            )
            for book_id, book in sorted(self.state.books.items())
        ]
        size = request.page_size or 50
        start = int(request.page_token or "0")
        nxt = str(start + size) if start + size < len(books) else ""
        return sync_pb2.ListAddressBooksResponse(
            address_books=books[start : start + size], next_page_token=nxt
        )

    async def RestoreContacts(self, request, context):
        self._record("RestoreContacts", request, context)
        await self._require_token(context)
        self.state.restore_requests.append(request)
        prefix, _, book_id = request.address_book.rpartition("/addressBooks/")
        book = self.state.books.get(book_id)
        if prefix not in ("users/me", USER) or book is None:
            await context.abort_with_status(
                rich_status(grpc.StatusCode.NOT_FOUND, "no such address book", reason="NOT_FOUND")
            )
        assert book is not None
        held_ids = set(request.held_entry_ids)
        held_hashes = set(request.held_content_hashes)
        todo = [
            e
            for e in book.entries.values()
            if e.entry_id not in held_ids and e.content_hash not in held_hashes
        ]
        size = request.batch_size or 200
        fault = self.state.restore_faults.popleft() if self.state.restore_faults else None
        for sent, start in enumerate(range(0, len(todo), size)):
            if fault is not None and sent >= fault.after:
                await context.abort(fault.code or grpc.StatusCode.UNAVAILABLE, "reset by fake")
            batch = todo[start : start + size]
            yield sync_pb2.RestoreContactsResponse(
                entries=batch, remaining_count=len(todo) - start - len(batch)
            )


SERVICE_TOKEN = "service-token"


class FakeFriendshipServicer(friendship_pb2_grpc.FriendshipServiceServicer):
    """FriendshipService per friendship.proto for users/u1 ("users/me" accepted).

    Any bearer token is accepted except for RefreshMatches (``SERVICE_TOKEN`` only). A
    request id answered UNAVAILABLE once: requester ``flaky`` (accept/block). WatchEvents
    sends one event per message after the request's cursor, then a heartbeat, then ends;
    faults come from ``recorder.friendship.watch_faults``.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self.state = recorder.friendship

    def _record(self, method: str, request, context) -> None:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.rec.calls.append((method, request, md))

    async def _require_token(self, context) -> str:
        md = dict(context.invocation_metadata() or ())
        auth = str(md.get("authorization", ""))
        if not auth.startswith("Bearer "):
            await context.abort_with_status(
                rich_status(grpc.StatusCode.UNAUTHENTICATED, "no token", reason="UNAUTHENTICATED")
            )
        return auth.removeprefix("Bearer ")

    async def _own(self, name: str, context, collection: str) -> str:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "users" or parts[2] != collection:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "malformed name",
                    reason="INVALID_ARGUMENT",
                    violations=[("name", f"expected users/{{user}}/{collection}/{{id}}")],
                )
            )
        if parts[1] not in ("me", "u1"):
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.PERMISSION_DENIED, "not yours", reason="PERMISSION_DENIED"
                )
            )
        return parts[3]

    async def ListBuddies(self, request, context):
        self._record("ListBuddies", request, context)
        await self._require_token(context)
        found = [b for b in self.state.buddies if not request.kind or b.kind == request.kind]
        size = request.page_size or 100
        start = int(request.page_token or "0")
        nxt = str(start + size) if start + size < len(found) else ""
        return friendship_pb2.ListBuddiesResponse(
            buddies=found[start : start + size], next_page_token=nxt, total_size=len(found)
        )

    async def ListOneWayRequests(self, request, context):
        self._record("ListOneWayRequests", request, context)
        await self._require_token(context)
        found = [
            friendship_pb2.OneWayRequest(
                name=f"users/u1/oneWayRequests/{uid}",
                requester=f"users/{uid}",
                requester_display_name=name,
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_PENDING,
            )
            for uid, name in self.state.requests.items()
        ]
        size = request.page_size or 50
        start = int(request.page_token or "0")
        nxt = str(start + size) if start + size < len(found) else ""
        return friendship_pb2.ListOneWayRequestsResponse(
            one_way_requests=found[start : start + size], next_page_token=nxt
        )

    async def _answer(self, method: str, request, context) -> str:
        self._record(method, request, context)
        await self._require_token(context)
        requester = await self._own(request.name, context, "oneWayRequests")
        self.rec.attempts[request.request_id] += 1
        if requester == "flaky" and self.rec.attempts[request.request_id] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if requester not in self.state.requests and requester != "flaky":
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.NOT_FOUND,
                    f"no pending one-way request from users/{requester}",
                    reason="NOT_FOUND",
                )
            )
        self.state.requests.pop(requester, None)
        return requester

    async def AcceptOneWayRequest(self, request, context):
        requester = await self._answer("AcceptOneWayRequest", request, context)
        buddy = friendship_pb2.Buddy(
            name=f"users/u1/buddies/{requester}",
            kind=friendship_pb2.BUDDY_KIND_FULL,
            user=f"users/{requester}",
        )
        self.state.buddies.append(buddy)
        return friendship_pb2.AcceptOneWayRequestResponse(
            one_way_request=friendship_pb2.OneWayRequest(
                name=request.name,
                requester=f"users/{requester}",
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_ACCEPTED,
            ),
            buddy=buddy,
        )

    async def BlockOneWayRequest(self, request, context):
        requester = await self._answer("BlockOneWayRequest", request, context)
        return friendship_pb2.BlockOneWayRequestResponse(
            one_way_request=friendship_pb2.OneWayRequest(
                name=request.name,
                requester=f"users/{requester}",
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_BLOCKED,
            ),
            blocked_user=friendship_pb2.BlockedUser(
                name=f"users/u1/blockedUsers/{requester}", user=f"users/{requester}"
            ),
        )

    async def SetPresence(self, request, context):
        self._record("SetPresence", request, context)
        await self._require_token(context)
        return friendship_pb2.SetPresenceResponse(presence=request.presence)

    async def GetBuddyPresence(self, request, context):
        self._record("GetBuddyPresence", request, context)
        await self._require_token(context)
        return friendship_pb2.GetBuddyPresenceResponse(
            presences=[friendship_pb2.BuddyPresence(buddy=b) for b in request.buddies]
        )

    async def SubmitCommunicationLogs(self, request, context):
        self._record("SubmitCommunicationLogs", request, context)
        await self._require_token(context)
        distinct = {e.phone_number for e in request.entries}
        return friendship_pb2.SubmitCommunicationLogsResponse(
            accepted_count=len(request.entries),
            distinct_number_count=len(distinct),
            proposal_count=len(distinct),
        )

    async def ListActiveContactProposals(self, request, context):
        self._record("ListActiveContactProposals", request, context)
        await self._require_token(context)
        return friendship_pb2.ListActiveContactProposalsResponse(
            proposals=[
                friendship_pb2.ActiveContactProposal(
                    name="users/u1/activeContactProposals/p1", selected=True
                )
            ]
        )

    async def ConfirmActiveContacts(self, request, context):
        self._record("ConfirmActiveContacts", request, context)
        await self._require_token(context)
        return friendship_pb2.ConfirmActiveContactsResponse()

    async def WatchEvents(self, request, context):
        self._record("WatchEvents", request, context)
        await self._require_token(context)
        self.state.watch_streams += 1
        after = int(request.cursor or str(len(self.state.events)))
        if after < self.state.trimmed_before:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "cursor expired",
                    reason="SYNC_CURSOR_EXPIRED",
                )
            )
        fault = self.state.watch_faults.popleft() if self.state.watch_faults else None
        types = set(request.types)
        sent = 0
        for event in self.state.events[after:]:
            if fault is not None and sent >= fault.after:
                await context.abort(fault.code or grpc.StatusCode.UNAVAILABLE, "reset by fake")
            if types and event.type not in types:
                continue
            sent += 1
            yield friendship_pb2.WatchEventsResponse(events=[event], cursor=event.cursor)
        yield friendship_pb2.WatchEventsResponse(cursor=str(len(self.state.events)))

    async def RefreshMatches(self, request, context):
        self._record("RefreshMatches", request, context)
        if await self._require_token(context) != SERVICE_TOKEN:
            await context.abort_with_status(
                rich_status(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "internal RPC: service token required",
                    reason="PERMISSION_DENIED",
                )
            )
        return friendship_pb2.RefreshMatchesResponse(
            job_id="job-1", user_count=len(request.users) or 42
        )


async def start_server(
    recorder: Recorder, health_status: int = health_pb2.HealthCheckResponse.SERVING
) -> tuple[grpc.aio.Server, int]:
    """Start the fake AccountService, SyncService, FriendshipService and health on :0."""
    server = grpc.aio.server()
    account_pb2_grpc.add_AccountServiceServicer_to_server(FakeAccountServicer(recorder), server)
    # Only the RPCs the SDK calls are scripted; the rest answer UNIMPLEMENTED.
    sync = FakeSyncServicer(recorder)  # type: ignore[abstract]
    sync_pb2_grpc.add_SyncServiceServicer_to_server(sync, server)
    friendship = FakeFriendshipServicer(recorder)  # type: ignore[abstract]
    friendship_pb2_grpc.add_FriendshipServiceServicer_to_server(friendship, server)
    health = health_aio.HealthServicer()
    await health.set("", health_status)
    await health.set("befriend.v1.AccountService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class ThreadedServer:
    """The fake server on its own event loop thread, for the blocking client and the CLI."""

    def __init__(self, health_status: int = health_pb2.HealthCheckResponse.SERVING) -> None:
        self.recorder = Recorder()
        self._health_status = health_status
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            start_server(self.recorder, self._health_status), self._loop
        )
        self._server, self.port = fut.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


__all__ = [
    "DOMAIN",
    "SERVICE_TOKEN",
    "UNKNOWN_SERVICE",
    "USER",
    "FakeAccountServicer",
    "FakeBook",
    "FakeFriendshipServicer",
    "FakeSyncServicer",
    "FakeUpload",
    "FriendshipState",
    "Recorder",
    "StreamFault",
    "SyncState",
    "ThreadedServer",
    "rich_status",
    "start_server",
]
