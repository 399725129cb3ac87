"""Address-book uploads (resumable, chunked, idempotent per chunk) and restore (seed 001).

A chunk is applied in one transaction together with the upload's progress, so an
acknowledged chunk is durable and a chunk applied twice is impossible: a resent chunk at or
below the acknowledged sequence number is only acknowledged again. Chunks of one stream that
have already arrived may share a transaction (``apply_chunks``); they are acknowledged after
it commits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from befriend.core.keys import KeyRow, key_rows
from befriend.core.normalize import Status, email_key, im_key, normalize_many
from befriend.server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from befriend.server.records import (
    WEAK_DIGITS,
    EntryInput,
    EntryKeyRecord,
    IdentityKind,
    Rejection,
    StoredEntry,
    UploadMode,
    UploadRecord,
    UploadState,
)
from befriend.server.storage.addressbooks import AddressBookRepository, KeyDelta, KnownEntries
from befriend.server.storage.changes import ORIGIN_DEVICE_UPLOAD, ChangeStamp
from befriend.server.storage.repositories import AccountRepository, key_from_db

# (stored contact, its provenance, the device's new contact, the uploader's region) ->
# (contact to store, provenance, changed field names, the stored contact's identity keys
# when merged values make them differ from the device's, else None); see
# befriend.server.api.contactdoc.remerge.
ContactRemerge = Callable[
    [bytes, Any, bytes, str], tuple[bytes, Any, list[str], Sequence[EntryKeyRecord] | None]
]
MAX_ENTRIES_PER_CHUNK = 500
MAX_RAW_BYTES = 64 * 1024
MAX_ENTRY_ID = 128
MAX_UPLOAD_ID = 64
UPLOAD_TTL = timedelta(hours=24)
BOOK_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
UPLOADABLE_KINDS = frozenset({1, 2, 3})  # device phone book, e-mail book, IM book
# At most this many already-received chunks of one stream, with at most this many entries
# in all, are applied in one transaction (``apply_chunks``).
MAX_BATCH_CHUNKS = 8
MAX_BATCH_ENTRIES = 4_000


@dataclass
class StreamState:
    """What one upload stream carries from chunk to chunk, so later chunks skip queries: the
    uploader's region (read at the first chunk) and, for the key quota, the exact keys the
    user's books hold (read at the first quota check, then kept up to date with what the
    stream adds). Keys another stream adds meanwhile count as new again (never fewer
    charged); a key deleted elsewhere meanwhile still counts as held. And the entries of the
    book an upload of the stream filled from empty, while no one else writes the user's
    contacts (``KnownEntries``)."""

    region: str = ""
    held_keys: set[int] | None = None
    book: KnownEntries = field(default_factory=KnownEntries)  # the entries of its book

    def rolled_back(self) -> None:
        """A transaction that applied chunks of this stream rolled back: the held keys it
        added may not be held after all, so they are read again at the next quota check,
        and the book's entries are no longer known."""
        self.held_keys = None
        self.book = KnownEntries()


@dataclass
class BatchState:
    """What the chunks applied in one transaction share (``apply_chunks``), so that each
    chunk after the first skips five statements: the upload row, read and locked once and
    then kept here as the chunks advance it (written once, by ``flush``), one change stamp
    for all of them, and the user's key quota of the day (read once, the chunks' charges
    summed and added by ``flush``)."""

    upload_id: str = ""
    upload: tuple[int, int, UploadRecord] | None = None  # (upload pk, book pk, record)
    advanced: bool = False  # a chunk moved the upload since its row was written
    added: int = 0  # entries the chunks added since the upload row was written
    last_entry_id: str = ""
    stamp: ChangeStamp | None = None
    quota_day: str = ""
    quota_used: int | None = None
    quota_added: int = 0

    def flush(self, books: AddressBookRepository, user_id: str) -> None:
        """Write what the chunks changed in the upload row and the quota."""
        if self.upload is not None and self.advanced:
            upload_pk, _, up = self.upload
            books.advance_upload(
                upload_pk,
                sequence=up.last_sequence,
                added=self.added,
                last_entry_id=self.last_entry_id,
                state=up.state,
                now=up.updated_at,
                expires_at=up.expires_at,
            )
        self.advanced, self.added, self.last_entry_id = False, 0, ""
        if self.quota_added:
            books.add_quota(user_id, self.quota_day, self.quota_added)
        self.quota_added = 0


@dataclass(frozen=True)
class Chunk:
    upload_id: str
    sequence: int
    entries: Sequence[EntryInput]
    final: bool = False
    book_id: str = ""
    book_kind: int = 0
    device_id: str = ""
    mode: UploadMode = UploadMode.INCREMENTAL
    # Entries the gRPC layer already found malformed (index -> rejection).
    rejected: dict[int, Rejection] = field(default_factory=dict)
    # New distinct keys the user may submit per UTC day (0 = no limit).
    daily_key_quota: int = 0
    # What the upload stream remembers between its chunks (None: nothing, read it all).
    stream: StreamState | None = None


@dataclass(frozen=True)
class ChunkResult:
    upload: UploadRecord  # the upload's progress after this chunk
    rejections: list[Rejection]
    replayed: bool  # the chunk had been applied before; nothing changed
    # Exact keys of the entry_keys rows the chunk inserted or deleted (old and new keys of
    # the contacts whose identities it changed), for matching.match_user(keys=...).
    keys: frozenset[int] = frozenset()
    rekeyed: bool = False  # the chunk inserted or deleted any entry_keys row (weak ones too)


def _check_header(chunk: Chunk) -> None:
    if not chunk.upload_id or len(chunk.upload_id) > MAX_UPLOAD_ID:
        raise InvalidArgument.field("upload_id", f"required, at most {MAX_UPLOAD_ID} characters")
    if chunk.sequence < 1:
        raise InvalidArgument.field("sequence_number", "must start at 1")
    if len(chunk.entries) > MAX_ENTRIES_PER_CHUNK:
        raise InvalidArgument(
            f"entries: {len(chunk.entries)} entries in one chunk; the limit is "
            f"{MAX_ENTRIES_PER_CHUNK}",
            reason="CHUNK_TOO_LARGE",
            violations=[
                FieldViolation("entries", f"at most {MAX_ENTRIES_PER_CHUNK} entries per chunk")
            ],
            metadata={"field": "entries", "limit": str(MAX_ENTRIES_PER_CHUNK)},
        )


def _check_first_chunk(chunk: Chunk) -> None:
    if not BOOK_ID.match(chunk.book_id):
        raise InvalidArgument.field("address_book_id", "required: [a-z0-9-], 1-63 characters")
    if chunk.book_kind not in UPLOADABLE_KINDS:
        raise InvalidArgument.field(
            "address_book_kind", "required: device phone book, e-mail book or IM book"
        )
    if not chunk.device_id or len(chunk.device_id) > 128:
        raise InvalidArgument.field("device_id", "required, at most 128 characters")


def _entry_problem(entry: EntryInput) -> tuple[str, str] | None:
    if not entry.entry_id or len(entry.entry_id) > MAX_ENTRY_ID:
        return "entry_id", f"required, at most {MAX_ENTRY_ID} characters"
    if entry.deleted:
        return None
    if len(entry.raw) > MAX_RAW_BYTES:
        return "raw", f"{len(entry.raw)} bytes; at most {MAX_RAW_BYTES}"
    if entry.content_hash and entry.content_hash != hashlib.sha256(entry.raw).hexdigest():
        return "content_hash", "does not match the SHA-256 of raw"
    return None


@dataclass(frozen=True)
class ChunkKeys:
    """Normalised identities of a list of entries, as columns: every phone (entry index,
    raw string, normalisation result) and every other identity (e-mail, IM) that has a
    key, each in entry order."""

    count: int
    phone_owner: npt.NDArray[np.int64]
    phone_raw: list[str]
    phone_ok: npt.NDArray[np.bool_]
    phone_key: npt.NDArray[np.uint64]
    phone_weak: npt.NDArray[np.uint64]
    phone_e164: list[str]
    other_owner: list[int]
    other_kind: list[int]
    other_key: list[int]
    other_value: list[str]

    def rows(self, user_id: str, entry_pks: Sequence[int]) -> list[KeyRow]:
        """entry_keys rows of the entries with ``entry_pks[i] >= 0``, each entry's identities
        deduplicated by (kind, value) (compiled kernel)."""
        return key_rows(
            user_id,
            entry_pks,
            int(IdentityKind.PHONE),
            self.phone_owner,
            self.phone_ok,
            self.phone_key,
            self.phone_weak,
            self.phone_e164,
            self.phone_raw,
            self.other_owner,
            self.other_kind,
            self.other_key,
            self.other_value,
        )

    def exact_keys(self) -> set[int]:
        """Distinct exact keys (normalised phones, e-mails, IM ids) of all the entries."""
        keys = set(self.phone_key[self.phone_ok].tolist())
        keys.update(self.other_key)
        return keys

    def records(self) -> list[list[EntryKeyRecord]]:
        """Per entry, its identities in order (phones, e-mails, IM ids), not deduplicated."""
        out: list[list[EntryKeyRecord]] = [[] for _ in range(self.count)]
        phone = IdentityKind.PHONE
        for j, (i, raw, ok, key, weak) in enumerate(
            zip(
                self.phone_owner.tolist(),
                self.phone_raw,
                self.phone_ok.tolist(),
                self.phone_key.tolist(),
                self.phone_weak.tolist(),
                strict=True,
            )
        ):
            if ok or weak:
                value = self.phone_e164[j] if ok else raw[:320]
                out[i].append(EntryKeyRecord(phone, key if ok else None, weak or None, value))
        for i, kind, key, value in zip(
            self.other_owner, self.other_kind, self.other_key, self.other_value, strict=True
        ):
            out[i].append(EntryKeyRecord(IdentityKind(kind), key, None, value))
        return out


def chunk_keys(entries: Sequence[EntryInput], region: str) -> ChunkKeys:
    """Normalised identities of the entries: phones through the compiled batch normaliser
    with the uploader's region (unnormalisable numbers keep their weak key), e-mails and IM
    ids through their key functions (invalid ones are not matchable: no key)."""
    owner = [i for i, e in enumerate(entries) for _ in e.phones]
    raws = [raw for e in entries for raw in e.phones]
    batch = normalize_many(raws, region, weak_digits=WEAK_DIGITS)
    other_owner: list[int] = []
    other_kind: list[int] = []
    other_key: list[int] = []
    other_value: list[str] = []
    email, im = int(IdentityKind.EMAIL), int(IdentityKind.IM)
    for i, e in enumerate(entries):
        if not (e.emails or e.ims):
            continue
        for raw in e.emails:
            try:
                value, key = email_key(raw)
            except ValueError:
                continue  # kept in the as-is copy; just not matchable
            other_owner.append(i)
            other_kind.append(email)
            other_key.append(key)
            other_value.append(value)
        for kind, ident in e.ims:
            try:
                value, key = im_key(kind, ident)
            except ValueError:
                continue
            other_owner.append(i)
            other_kind.append(im)
            other_key.append(key)
            other_value.append(value)
    return ChunkKeys(
        len(entries),
        np.asarray(owner, dtype=np.int64),
        raws,
        batch.status == int(Status.OK),
        batch.key,
        batch.weak_key,
        batch.e164,
        other_owner,
        other_kind,
        other_key,
        other_value,
    )


def entry_keys(entries: Sequence[EntryInput], region: str) -> list[list[EntryKeyRecord]]:
    """Normalised identities of each entry (see ``chunk_keys``), in order: phones, e-mails,
    IM ids."""
    return chunk_keys(entries, region).records()


def doc_keys(docs: Sequence[dict[str, Any]], region: str) -> list[list[EntryKeyRecord]]:
    """The identities of contacts given as documents (befriend.core.merge's shape), keyed as
    an upload keys them, each (kind, value) once: for contacts a merge or a user edit
    wrote."""

    def texts(items: Any, *names: str) -> tuple[str, ...]:
        found = (next((str(i[n]) for n in names if i.get(n)), "") for i in items or [])
        return tuple(t for t in found if t)

    inputs = [
        EntryInput(
            entry_id="",
            raw=b"",
            media_type="",
            content_hash="",
            contact=b"",
            phones=texts(
                [*(doc.get("mobile_numbers") or []), *(doc.get("fixed_numbers") or [])],
                "raw",
                "e164",
            ),
            emails=texts(doc.get("email_addresses"), "raw", "normalized"),
            ims=tuple(
                (str(i.get("kind", "")), str(i.get("id", ""))) for i in doc.get("im_ids") or []
            ),
        )
        for doc in docs
    ]
    out: list[list[EntryKeyRecord]] = []
    for keys in entry_keys(inputs, region):
        unique: dict[tuple[int, str], EntryKeyRecord] = {}
        for k in keys:
            unique.setdefault((k.kind, k.value), k)
        out.append(list(unique.values()))
    return out


def _records(rows: Sequence[KeyRow]) -> list[EntryKeyRecord]:
    return [
        EntryKeyRecord(
            IdentityKind(kind), key_from_db(key) if key is not None else None, weak, value
        )
        for _, _, kind, key, weak, value, _ in rows
    ]


def apply_chunk(
    books: AddressBookRepository,
    accounts: AccountRepository,
    user_id: str,
    chunk: Chunk,
    now: datetime,
    remerge: ContactRemerge,
    batch: BatchState,
) -> ChunkResult:
    """Apply one chunk in the caller's transaction (``apply_chunks``). ``remerge`` combines
    a re-uploaded entry with what merges and user edits added to the stored copy (given the
    uploader's region, to key the merged numbers). The upload row and the quota are written
    by ``batch.flush``, which must run before the transaction commits."""
    _check_header(chunk)
    if batch.upload_id != chunk.upload_id:
        batch.flush(books, user_id)
        batch.upload_id, batch.upload = chunk.upload_id, None
    stream = chunk.stream if chunk.stream is not None else StreamState()
    found = batch.upload
    if found is None:
        found = books.upload(user_id, chunk.upload_id)
    if found is None:
        if chunk.sequence != 1:
            raise FailedPrecondition(
                f"upload {chunk.upload_id} is unknown; start it with sequence_number 1",
                reason="UPLOAD_NOT_FOUND",
                metadata={"field": "sequence_number"},
            )
        _check_first_chunk(chunk)
        book_pk, _ = books.ensure_book(
            user_id, chunk.book_id, chunk.book_kind, chunk.device_id, now
        )
        upload_pk = books.create_upload(
            user_id, chunk.upload_id, book_pk, chunk.device_id, chunk.mode, now, now + UPLOAD_TTL
        )
        found = books.upload(user_id, chunk.upload_id)
        assert found is not None
        # an empty book is known from here
        stream.book = KnownEntries(book_pk, probe=True, ahead=stream.book.ahead)
    upload_pk, book_pk, upload = found
    if chunk.book_id and chunk.book_id != upload.book_id:
        raise InvalidArgument.field(
            "address_book_id", f"upload {chunk.upload_id} belongs to book {upload.book_id}"
        )
    if upload.state == UploadState.EXPIRED or upload.expires_at < now:
        raise FailedPrecondition(
            f"upload {chunk.upload_id} expired; start a new upload_id", reason="UPLOAD_EXPIRED"
        )
    if chunk.sequence <= upload.last_sequence:
        return ChunkResult(upload, [], replayed=True)
    if upload.state == UploadState.COMMITTED:
        raise FailedPrecondition(
            f"upload {chunk.upload_id} is already committed", reason="UPLOAD_COMMITTED"
        )
    if chunk.sequence != upload.last_sequence + 1:
        raise FailedPrecondition(
            f"sequence_number {chunk.sequence} skips chunks; the next expected is "
            f"{upload.last_sequence + 1}",
            reason="SEQUENCE_GAP",
            metadata={
                "field": "sequence_number",
                "expected": str(upload.last_sequence + 1),
            },
        )

    rejections = dict(chunk.rejected)
    seen: set[str] = set()
    for i, entry in enumerate(chunk.entries):
        if i in rejections:
            continue
        problem = _entry_problem(entry)
        if problem is None and entry.entry_id in seen:
            problem = ("entry_id", "appears twice in this chunk")
        if problem is not None:
            rejections[i] = Rejection(i, entry.entry_id, *problem)
        seen.add(entry.entry_id)
    accepted = [e for i, e in enumerate(chunk.entries) if i not in rejections]
    live = [e for e in accepted if not e.deleted]
    if batch.stamp is None:
        batch.stamp = books.stamp(user_id, ORIGIN_DEVICE_UPLOAD, upload.device_id)
    stamp = batch.stamp
    deleted = [e.entry_id for e in accepted if e.deleted]
    delta = KeyDelta()
    if deleted:
        books.delete_entries(book_pk, deleted, stamp, now, delta)
    if not stream.region:
        stream.region = accounts.region_of(user_id)
    keys = chunk_keys(live, stream.region)
    if chunk.daily_key_quota:
        _spend_quota(books, user_id, keys.exact_keys(), chunk.daily_key_quota, now, stream, batch)
    hashes = [e.content_hash or hashlib.sha256(e.raw).hexdigest() for e in live]
    books.write_entries(
        user_id,
        book_pk,
        upload_pk,
        live,
        hashes,
        lambda pks: keys.rows(user_id, pks),
        _records,
        now,
        stamp,
        lambda old, provenance, new: remerge(old, provenance, new, stream.region),
        delta,
        stream.book,
    )
    state = UploadState.COMMITTED if chunk.final else UploadState.IN_PROGRESS
    if chunk.final and upload.mode == UploadMode.FULL_SNAPSHOT:
        books.drop_entries_not_in_upload(book_pk, upload_pk, stamp, now, delta)
    if chunk.final:  # the book's count and version move once per committed upload
        books.touch_book(book_pk, upload.device_id, now)
    progressed = replace(
        upload,
        last_sequence=chunk.sequence,
        entry_count=upload.entry_count + len(live),
        last_entry_id=live[-1].entry_id if live else upload.last_entry_id,
        state=state,
        updated_at=now,
        expires_at=now + UPLOAD_TTL,
    )
    batch.upload = (upload_pk, book_pk, progressed)
    batch.advanced = True
    batch.added += len(live)
    batch.last_entry_id = live[-1].entry_id if live else batch.last_entry_id
    return ChunkResult(
        progressed,
        sorted(rejections.values(), key=lambda r: r.index),
        False,
        frozenset(delta.keys),
        delta.changed,
    )


@dataclass(frozen=True)
class BatchResult:
    results: list[ChunkResult]  # one per chunk, in order
    # The union of the keys of the chunks that rekeyed, for matching.match_user(keys=...).
    keys: frozenset[int]
    rekeyed: bool  # some chunk inserted or deleted an entry_keys row


def apply_chunks(
    books: AddressBookRepository,
    accounts: AccountRepository,
    user_id: str,
    chunks: Sequence[Chunk],
    now: datetime,
    remerge: ContactRemerge,
) -> BatchResult:
    """Apply chunks of one stream in order in the caller's transaction (``apply_chunk``
    each). A domain error of any chunk propagates and the caller's transaction must roll
    back whole (then ``StreamState.rolled_back``); the caller may re-apply the chunks one per
    transaction to commit those before the bad one."""
    batch = BatchState()
    results = []
    for i, chunk in enumerate(chunks):
        if chunk.stream is not None:  # new primary keys for the rest of the batch at once
            chunk.stream.book.ahead = sum(len(c.entries) for c in chunks[i:])
        results.append(apply_chunk(books, accounts, user_id, chunk, now, remerge, batch))
    batch.flush(books, user_id)
    rekeyed = [r for r in results if r.rekeyed]
    keys = frozenset(k for r in rekeyed for k in r.keys)
    return BatchResult(results, keys, bool(rekeyed))


def _spend_quota(
    books: AddressBookRepository,
    user_id: str,
    exact: set[int],
    limit: int,
    now: datetime,
    stream: StreamState,
    batch: BatchState,
) -> None:
    """Enumeration defence: count keys new to the user's books against a daily quota.

    Over the quota the chunk is refused whole with RESOURCE_EXHAUSTED and a retry delay
    until the next UTC day; nothing of it is stored (the upload can resume then)."""
    if not exact:
        return
    if stream.held_keys is None:
        stream.held_keys = books.user_keys(user_id)
    new = len(exact - stream.held_keys)
    if not new:
        return
    day = now.date().isoformat()
    if batch.quota_used is None or batch.quota_day != day:
        batch.flush(books, user_id)
        batch.quota_day, batch.quota_used = day, books.quota_used(user_id, day)
    used = batch.quota_used + batch.quota_added
    if used + new > limit:
        tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
        raise ResourceExhausted(
            f"{new} new numbers would exceed the daily matching quota of {limit} "
            f"({used} used today); retry after {tomorrow.isoformat()}",
            metadata={"limit": str(limit), "used": str(used), "requested": str(new)},
            retry_after=(tomorrow - now).total_seconds(),
        )
    batch.quota_added += new
    stream.held_keys |= exact


def upload_status(
    books: AddressBookRepository, user_id: str, upload_id: str, now: datetime
) -> UploadRecord:
    """The upload's progress; an unfinished upload past its expiry reports EXPIRED (the
    same rule apply_chunk enforces)."""
    found = books.upload(user_id, upload_id)
    if found is None:
        raise NotFound(f"upload {upload_id} not found", metadata={"field": "upload_id"})
    upload = found[2]
    if upload.state == UploadState.IN_PROGRESS and upload.expires_at < now:
        return replace(upload, state=UploadState.EXPIRED)
    return upload


def restore(
    books: AddressBookRepository,
    user_id: str,
    book_id: str,
    held_entry_ids: Sequence[str],
    held_hashes: Sequence[str],
) -> list[int]:
    """Primary keys of the entries the device lacks, in upload order."""
    found = books.book(user_id, book_id)
    if found is None:
        raise NotFound(f"address book {book_id} not found", metadata={"field": "address_book"})
    ids, hashes = set(held_entry_ids), {h.lower() for h in held_hashes}
    return [
        pk
        for pk, entry_id, content_hash in books.entry_index(found[0])
        if entry_id not in ids and content_hash not in hashes
    ]


def fetch(books: AddressBookRepository, pks: Sequence[int]) -> list[StoredEntry]:
    return books.fetch_entries(pks)
