"""SyncService servicer: resumable upload, upload status, books, restore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from befriend.core.keys import ContactLayout, EntryLayout, upload_entries
from befriend.server.api import auth, contactdoc, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.contacts import ContactsApi
from befriend.server.api.merge import MergeApi
from befriend.server.api.status import Context
from befriend.server.api.validate import MAX_REPEATED, date_problem, oversized
from befriend.server.errors import InvalidArgument
from befriend.server.records import EntryInput, Rejection, StoredEntry, UploadMode, UploadState
from befriend.server.services import addressbooks, matching, pagination
from befriend.server.services.addressbooks import (
    MAX_BATCH_CHUNKS,
    MAX_BATCH_ENTRIES,
    Chunk,
    ChunkResult,
    StreamState,
)
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.pending import PendingMatchRepository
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import common_pb2, sync_pb2

DEFAULT_RESTORE_BATCH = 200
MAX_RESTORE_BATCH = 500


_LENGTH_DELIMITED = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BYTES,
    FieldDescriptor.TYPE_MESSAGE,
)


def _smallest_breaking_size(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> int:
    """Fewest serialised bytes a message of this type needs to break a limit of
    ``oversized``: a string over MAX_STRING_CHARS takes more bytes than characters, and an item
    of a repeated field at least two bytes (tag and length), or one in a packed scalar list."""
    floor = 2 * MAX_REPEATED
    for fd in descriptor.fields:
        if fd.is_repeated and fd.type not in _LENGTH_DELIMITED:
            floor = min(floor, MAX_REPEATED)
        sub = fd.message_type
        if (
            fd.type == FieldDescriptor.TYPE_MESSAGE
            and sub is not None
            and sub.full_name not in seen
        ):
            floor = min(floor, _smallest_breaking_size(sub, seen | {descriptor.full_name}))
    return floor


# A contact whose serialised form is at most this long cannot exceed any size limit, so the
# field walk of ``oversized`` runs only for bigger ones.
_SMALL_CONTACT = _smallest_breaking_size(common_pb2.Contact.DESCRIPTOR)


def _field(message: type[Message], name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[name].number)


_C = common_pb2.Contact
# Where the identities sit in a serialised Contact, for the compiled wire scan.
_LAYOUT = ContactLayout(
    mobile=_field(_C, "mobile_numbers"),
    fixed=_field(_C, "fixed_numbers"),
    email=_field(_C, "email_addresses"),
    im=_field(_C, "im_ids"),
    phone_raw=_field(common_pb2.PhoneNumber, "raw"),
    email_raw=_field(common_pb2.EmailAddress, "raw"),
    im_kind=_field(common_pb2.ImId, "kind"),
    im_id=_field(common_pb2.ImId, "id"),
    flag_fields=(_field(_C, "name"), _field(_C, "etag"), _field(_C, "birthday")),
)
_OUTPUT_ONLY = 0b011  # name, etag: not stored
_BIRTHDAY = 0b100


_E = sync_pb2.AddressBookEntry
# Where an upload request's entries and their fields sit, for the compiled wire scan.
_ENTRIES = EntryLayout(
    entries=_field(sync_pb2.UploadContactsRequest, "entries"),
    entry_id=_field(_E, "entry_id"),
    raw=_field(_E, "raw"),
    media_type=_field(_E, "raw_media_type"),
    contact=_field(_E, "contact"),
    content_hash=_field(_E, "content_hash"),
    deleted=_field(_E, "deleted"),
)


def _entries(
    request: sync_pb2.UploadContactsRequest, rejected: dict[int, Rejection]
) -> list[EntryInput]:
    """The domain's view of the request's entries, read from its wire bytes by the compiled
    scan (no message object per entry); a malformed contact is noted in ``rejected``.
    Only a contact that is big enough to break a size limit, or has a birthday, is checked
    field by field, and only one that carries an output-only field is rewritten."""
    data = request.SerializeToString(deterministic=True)
    entries, notes = upload_entries(data, _ENTRIES, _LAYOUT, EntryInput, _SMALL_CONTACT)
    for i, flag in notes:
        if flag & _BIRTHDAY or len(entries[i].contact) > _SMALL_CONTACT:
            bad = _malformed(i, request.entries[i])
            if bad is not None:
                rejected[i] = bad
        if flag & _OUTPUT_ONLY:
            copy = common_pb2.Contact()
            copy.CopyFrom(request.entries[i].contact)
            copy.ClearField("name")
            copy.ClearField("etag")
            entries[i] = entries[i]._replace(contact=copy.SerializeToString(deterministic=True))
    return entries


def _malformed(index: int, entry: sync_pb2.AddressBookEntry) -> Rejection | None:
    problem = oversized(entry.contact, "contact") or date_problem(
        entry.contact.birthday.year,
        entry.contact.birthday.month,
        entry.contact.birthday.day,
        "contact.birthday",
    )
    if problem is None:
        return None
    return Rejection(index, entry.entry_id, *problem)


def chunk_from(
    request: sync_pb2.UploadContactsRequest,
    daily_key_quota: int = 0,
    stream: StreamState | None = None,
) -> Chunk:
    rejected: dict[int, Rejection] = {}
    entries = _entries(request, rejected)
    return Chunk(
        upload_id=request.upload_id,
        sequence=request.sequence_number,
        entries=entries,
        final=request.final,
        book_id=request.address_book_id,
        book_kind=int(request.address_book_kind),
        device_id=request.device_id,
        mode=(
            UploadMode.FULL_SNAPSHOT
            if request.mode == sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT
            else UploadMode.INCREMENTAL
        ),
        rejected=rejected,
        daily_key_quota=daily_key_quota,
        stream=stream,
    )


def _ack(user_id: str, result: ChunkResult, chunk: Chunk) -> sync_pb2.UploadContactsResponse:
    up = result.upload
    return sync_pb2.UploadContactsResponse(
        upload_id=up.upload_id,
        address_book=f"users/{user_id}/addressBooks/{up.book_id}",
        acknowledged_sequence_number=up.last_sequence,
        acknowledged_entry_count=up.entry_count,
        last_acknowledged_entry_id=up.last_entry_id,
        rejections=[
            sync_pb2.EntryRejection(
                sequence_number=chunk.sequence,
                entry_index=r.index,
                entry_id=r.entry_id,
                field=r.field,
                reason=common_pb2.ErrorReason.Value(f"ERROR_REASON_{r.reason}"),
                description=r.description,
            )
            for r in result.rejections
        ],
        committed=up.state == UploadState.COMMITTED,
    )


@dataclass(frozen=True)
class _End:
    """The request stream ended: by the client (``error`` None) or with ``error``."""

    error: Exception | None = None


_Item: TypeAlias = "Chunk | _End"


async def _read_chunks(
    requests: AsyncIterator[sync_pb2.UploadContactsRequest],
    queue: asyncio.Queue[_Item],
    convert: Callable[[sync_pb2.UploadContactsRequest], Chunk],
) -> None:
    """The reader task of an upload stream: each request as a chunk, in arrival order, then
    an ``_End`` (a read that fails ends the stream with its error, raised by the writer
    after the chunks before it). The queue is bounded, so a reader ahead of the writer
    stops reading and gRPC flow control holds the client back."""
    try:
        async for request in requests:
            await queue.put(convert(request))
    except Exception as exc:
        await queue.put(_End(exc))
    else:
        await queue.put(_End())


class _Batches:
    """Takes from an upload stream's queue the chunks to apply in one transaction."""

    def __init__(self, queue: asyncio.Queue[_Item]) -> None:
        self.queue = queue
        self.carry: _Item | None = None  # taken from the queue, left for the next batch

    async def next(self) -> tuple[list[Chunk], _End | None]:
        """Waits for one item, then takes every chunk already queued, at most
        MAX_BATCH_CHUNKS chunks and (unless the first alone is more) MAX_BATCH_ENTRIES
        entries; returns them and the stream's end when it follows them."""
        item = self.carry if self.carry is not None else await self.queue.get()
        self.carry = None
        chunks: list[Chunk] = []
        entries = 0
        while True:
            if isinstance(item, _End):
                return chunks, item
            chunks.append(item)
            entries += len(item.entries)
            if len(chunks) >= MAX_BATCH_CHUNKS or self.queue.empty():
                return chunks, None
            item = self.queue.get_nowait()
            if isinstance(item, Chunk) and entries + len(item.entries) > MAX_BATCH_ENTRIES:
                self.carry = item
                return chunks, None


class SyncServicer(ContactsApi, MergeApi):
    """SyncService: uploads, books and restore here; contacts and the change feed in
    befriend.server.api.contacts; merges in befriend.server.api.merge."""

    def __init__(self, backend: Backend, *, daily_key_quota: int = 0) -> None:
        self.backend = backend
        self.daily_key_quota = daily_key_quota

    async def UploadContacts(
        self,
        request_iterator: AsyncIterator[sync_pb2.UploadContactsRequest],
        context: Context,
    ) -> AsyncIterator[sync_pb2.UploadContactsResponse]:
        """Chunks are read by a task of their own as they arrive; each time the writer is
        free, every chunk already received (up to the caps of ``_Batches``) is applied in
        one transaction, and their acks follow its commit. A batch that fails is rolled back
        and re-applied one chunk per transaction, so the chunks before a bad one are stored
        and acknowledged and the bad one fails with its own error."""
        me = auth.require_user()
        stream = StreamState()  # what the chunks of this stream share (region, held keys)
        queue: asyncio.Queue[_Item] = asyncio.Queue(MAX_BATCH_CHUNKS)
        reader = asyncio.create_task(
            _read_chunks(
                request_iterator,
                queue,
                lambda request: chunk_from(request, self.daily_key_quota, stream),
            )
        )
        batches = _Batches(queue)
        try:
            while True:
                chunks, end = await batches.next()
                results: list[ChunkResult] | None = None
                if len(chunks) > 1:
                    try:
                        results = await self._apply(me, chunks)
                    except Exception:  # rolled back: redone one chunk per transaction below
                        stream.rolled_back()
                if results is not None:
                    for chunk, result in zip(chunks, results, strict=True):
                        yield _ack(me, result, chunk)
                else:
                    for chunk in chunks:
                        (result,) = await self._apply(me, [chunk])
                        yield _ack(me, result, chunk)
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return
        finally:
            reader.cancel()
            await asyncio.wait([reader])

    async def _apply(self, me: str, chunks: Sequence[Chunk]) -> list[ChunkResult]:
        """Apply ``chunks`` in one transaction; the keys they added or removed are matched
        when the final chunk commits (with every earlier batch's, ``match_upload``)."""

        def work(s: Session) -> list[ChunkResult]:
            now = utcnow()
            batch = addressbooks.apply_chunks(
                AddressBookRepository(s),
                AccountRepository(s),
                me,
                chunks,
                now,
                contactdoc.remerge,
            )
            matching.match_upload(
                MatchRepository(s),
                PendingMatchRepository(s),
                self.backend.registry,
                me,
                batch.keys,
                now,
                final=any(c.final for c in chunks),
                changed=batch.rekeyed,
            )
            return batch.results

        return await self.backend.write(work)

    async def GetUploadStatus(
        self, request: sync_pb2.GetUploadStatusRequest, context: Context
    ) -> sync_pb2.GetUploadStatusResponse:
        me = auth.require_user()
        up = await self.backend.read(
            lambda s: addressbooks.upload_status(
                AddressBookRepository(s), me, request.upload_id, utcnow()
            )
        )
        return sync_pb2.GetUploadStatusResponse(
            upload_id=up.upload_id,
            address_book=f"users/{me}/addressBooks/{up.book_id}",
            device_id=up.device_id,
            state=int(up.state),  # type: ignore[arg-type]
            last_acknowledged_sequence_number=up.last_sequence,
            acknowledged_entry_count=up.entry_count,
            last_acknowledged_entry_id=up.last_entry_id,
            expire_time=convert.timestamp(up.expires_at),
            update_time=convert.timestamp(up.updated_at),
        )

    async def ListAddressBooks(
        self, request: sync_pb2.ListAddressBooksRequest, context: Context
    ) -> sync_pb2.ListAddressBooksResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        scope = f"books:{me}"
        page = pagination.page(request.page_size, request.page_token, scope)
        books = await self.backend.read(
            lambda s: AddressBookRepository(s).list_books(me, page.offset, page.size)
        )
        return sync_pb2.ListAddressBooksResponse(
            address_books=[
                sync_pb2.AddressBook(
                    name=f"users/{me}/addressBooks/{b.book_id}",
                    address_book_id=b.book_id,
                    kind=b.kind,  # type: ignore[arg-type]
                    device_id=b.device_id,
                    entry_count=b.entry_count,
                    update_time=convert.timestamp(b.updated_at),
                    etag=b.etag,
                )
                for b in books
            ],
            next_page_token=page.next_token(len(books), scope),
        )

    async def RestoreContacts(
        self, request: sync_pb2.RestoreContactsRequest, context: Context
    ) -> AsyncIterator[sync_pb2.RestoreContactsResponse]:
        me = auth.require_user()
        book_id = auth.resolve_name(request.address_book, "address_book", "addressBooks")
        if request.batch_size < 0:
            raise InvalidArgument.field("batch_size", "must not be negative")
        size = min(request.batch_size or DEFAULT_RESTORE_BATCH, MAX_RESTORE_BATCH)
        missing = await self.backend.read(
            lambda s: addressbooks.restore(
                AddressBookRepository(s),
                me,
                book_id,
                list(request.held_entry_ids),
                list(request.held_content_hashes),
            )
        )
        for start in range(0, len(missing), size):
            pks = missing[start : start + size]

            def fetch(s: Session, pks: list[int] = pks) -> list[StoredEntry]:
                return AddressBookRepository(s).fetch_entries(pks)

            entries = await self.backend.read(fetch)
            yield sync_pb2.RestoreContactsResponse(
                entries=[
                    sync_pb2.AddressBookEntry(
                        entry_id=e.entry_id,
                        raw=e.raw,
                        raw_media_type=e.media_type,
                        contact=common_pb2.Contact.FromString(e.contact),
                        content_hash=e.content_hash,
                    )
                    for e in entries
                ],
                remaining_count=len(missing) - start - len(pks),
            )
