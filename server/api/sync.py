"""SyncService servicer: resumable upload, upload status, books, restore."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from befriend.core.keys import ContactLayout, contact_identities
from befriend.server.api import auth, contactdoc, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.contacts import ContactsApi
from befriend.server.api.merge import MergeApi
from befriend.server.api.status import Context
from befriend.server.api.validate import MAX_REPEATED, date_problem, oversized
from befriend.server.errors import InvalidArgument
from befriend.server.records import EntryInput, Rejection, StoredEntry, UploadMode, UploadState
from befriend.server.services import addressbooks, matching, pagination
from befriend.server.services.addressbooks import Chunk, ChunkResult, StreamState
from befriend.server.services.matching import ORIGIN_ADDRESS_BOOK
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.matching import MatchRepository
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


def _entry(
    entry: sync_pb2.AddressBookEntry, index: int, rejected: dict[int, Rejection]
) -> EntryInput:
    """The domain's view of one wire entry; a malformed contact is noted in ``rejected``."""
    contact = entry.contact
    data = contact.SerializeToString(deterministic=True)
    phones, emails, ims, flags = contact_identities(data, _LAYOUT)
    if len(data) > _SMALL_CONTACT or flags & _BIRTHDAY:
        bad = _malformed(index, entry)
        if bad is not None:
            rejected[index] = bad
    if flags & _OUTPUT_ONLY:
        copy = common_pb2.Contact()
        copy.CopyFrom(contact)
        copy.ClearField("name")
        copy.ClearField("etag")
        data = copy.SerializeToString(deterministic=True)
    return EntryInput(
        entry.entry_id,
        entry.raw,
        entry.raw_media_type,
        entry.content_hash.lower(),
        data,
        phones,
        emails,
        ims,
        entry.deleted,
    )


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
    entries = [_entry(e, i, rejected) for i, e in enumerate(request.entries)]
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
        me = auth.require_user()
        stream = StreamState()  # what the chunks of this stream share (region, held keys)
        async for request in request_iterator:
            chunk = chunk_from(request, self.daily_key_quota, stream)

            def work(s: Session, chunk: Chunk = chunk) -> ChunkResult:
                now = utcnow()
                result = addressbooks.apply_chunk(
                    AddressBookRepository(s),
                    AccountRepository(s),
                    me,
                    chunk,
                    now,
                    contactdoc.remerge,
                )
                if result.rekeyed:  # only the keys this chunk added or removed
                    matching.match_user(
                        MatchRepository(s),
                        self.backend.registry,
                        me,
                        now,
                        ORIGIN_ADDRESS_BOOK,
                        keys=result.keys,
                    )
                return result

            result = await self.backend.write(work)
            yield _ack(me, result, chunk)

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
