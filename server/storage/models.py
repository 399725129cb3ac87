"""SQLAlchemy 2 typed ORM models. Only repositories import this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(3), default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    identities: Mapped[list[Identity]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Identity.id",
    )


class Identity(Base):
    """A phone number, e-mail or IM id owned by a user: normalised value, key and raw form."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("kind", "value", name="uq_identities_kind_value"),
        Index("ix_identities_key", "key"),
        Index("ix_identities_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[int] = mapped_column(SmallInteger)  # IdentityKind
    value: Mapped[str] = mapped_column(String(320))  # E.164, normalised e-mail, "kind:id"
    key: Mapped[int] = mapped_column(BigInteger)  # identity key as signed int64
    raw: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="identities")


class Device(Base):
    """A handset/SIM seen for a user (first and last seen)."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_id", name="uq_devices_user_device"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    sim_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    platform: Mapped[str] = mapped_column(String(32), default="")
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class Token(Base):
    """A bearer token, stored as its SHA-256 (tokens are 256-bit random, so no slow hash)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """The first answer to a mutation, replayed for a retry with the same request_id."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("scope", "method", "request_id", name="uq_idempotency_request"),
        Index("ix_idempotency_user_id", "user_id"),
        Index("ix_idempotency_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(40))  # caller's user id, or "anonymous"
    method: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    # The user the answer is about, so DeleteAccount can erase it too.
    user_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]


class AddressBook(Base):
    """An uploaded address book of a user (device phone book, e-mail book, IM book)."""

    __tablename__ = "address_books"
    __table_args__ = (UniqueConstraint("user_id", "book_id", name="uq_address_books_user_book"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    book_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[int] = mapped_column(SmallInteger)
    device_id: Mapped[str] = mapped_column(String(128), default="")
    entry_count: Mapped[int] = mapped_column(Integer, default=0)  # unused: counted on listing
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ContactEntry(Base):
    """One address-book entry: the as-is copy (restore source) and the parsed contact."""

    __tablename__ = "contact_entries"
    __table_args__ = (
        UniqueConstraint("book_pk", "entry_id", name="uq_contact_entries_book_entry"),
        # serves every "this user's entries" query too (user_id is its prefix)
        Index("ix_contact_entries_changes", "user_id", "change_seq", "id"),
        # ids name contacts (users/u/contacts/N): never handed out twice (migration 0009)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys on the bulk tables (migration 0008): deleted with their user
    # (AccountRepository.delete_user) and entry (ChangeStamp.delete_entries).
    book_pk: Mapped[int] = mapped_column(BigId)
    user_id: Mapped[str] = mapped_column(String(32))
    entry_id: Mapped[str] = mapped_column(String(128))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    raw_media_type: Mapped[str] = mapped_column(String(100), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    contact: Mapped[bytes] = mapped_column(LargeBinary)  # befriend.v1.Contact, serialised
    upload_pk: Mapped[int | None] = mapped_column(BigInteger)  # last upload that wrote it
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Field provenance (befriend.core.merge JSON); NULL: every value came from the device.
    provenance: Mapped[Any | None] = mapped_column(JSON, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # etag
    # The change feed: the per-user sequence number of the last change and what made it.
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    change_origin: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")
    change_device: Mapped[str] = mapped_column(String(128), default="", server_default="")
    changed_fields: Mapped[str] = mapped_column(String(400), default="", server_default="")


class EntryKey(Base):
    """Normalised identities of an entry: the reverse index "who holds this key".

    Keyed by (entry, ordinal): an entry's rows are numbered 0, 1, … in the order of its
    identities (migration 0012). So the rows of an entry are found through the primary key,
    with no index of their own and no sequence value per row. SQLite stores the table
    clustered by that key (WITHOUT ROWID), so its indexes carry the ordinal and a whole-book
    read of entry, ordinal, kind and key needs no table lookup."""

    __tablename__ = "entry_keys"
    __table_args__ = (
        # No index on the key alone (migration 0013): "who holds this key" is answered by
        # the in-memory HolderIndex, fed from book_key_log, and confirmed here by primary key.
        # the weak-key fallback looks up numbers that could not be normalised only
        Index(
            "ix_entry_keys_weak_key",
            "weak_key",
            sqlite_where=text("key IS NULL"),
            postgresql_where=text("key IS NULL"),
        ),
        # every column a whole-book read needs (migration 0010): read from the index alone
        Index("ix_entry_keys_user_key", "user_id", "key", "entry_pk", "kind"),
        {"sqlite_with_rowid": False},
    )

    # contact_entries.id (no foreign key), and the row's place among its entry's rows
    entry_pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ordinal: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[int] = mapped_column(SmallInteger)  # IdentityKind
    key: Mapped[int | None] = mapped_column(BigInteger)  # None: could not be normalised
    weak_key: Mapped[int | None] = mapped_column(BigInteger)  # rightmost digits of a phone
    value: Mapped[str] = mapped_column(String(320))  # E.164 / e-mail / kind:id, or raw


class Upload(Base):
    """A resumable chunked upload of one address book."""

    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("user_id", "upload_id", name="uq_uploads_user_upload"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    upload_id: Mapped[str] = mapped_column(String(64))
    book_pk: Mapped[int] = mapped_column(ForeignKey("address_books.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(128))
    mode: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[int] = mapped_column(SmallInteger)  # UploadState
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    entry_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_entry_id: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class IdentityLog(Base):
    """Ordered log of identity changes; in-memory registries tail it. It holds no personal
    data (only the identity row's id), so it survives account deletion harmlessly."""

    __tablename__ = "identity_log"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    identity_pk: Mapped[int] = mapped_column(BigInteger)
    op: Mapped[int] = mapped_column(SmallInteger)  # 1 added, 2 removed
    created_at: Mapped[datetime]


class BookKeyLog(Base):
    """Ordered log of writes to entry_keys: each row names the entries (as ranges of
    contact_entries ids) whose key rows one statement inserted. In-memory holder indexes
    (``befriend.server.services.holders``) tail it and read those entries' keys; it holds no
    personal data (only ids), so it survives account deletion harmlessly."""

    __tablename__ = "book_key_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # little-endian int64 pairs (first, last): inclusive ranges of entry pks
    entry_ranges: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class BuddyRow(Base):
    """One member on ``owner_id``'s buddy list (full or one-way). Phonebook buddies are
    not stored: they are derived from the books when listed (migration 0007)."""

    __tablename__ = "buddies"
    __table_args__ = (
        UniqueConstraint("owner_id", "other_id", "key", name="uq_buddies_owner_other_key"),
        Index("ix_buddies_other_id", "other_id"),
        # room on each page for rows rewritten in place (HOT updates; migration 0011)
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(32))  # (no foreign keys: migration 0008)
    other_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[int] = mapped_column(SmallInteger)  # 1 full, 2 one-way
    key: Mapped[int] = mapped_column(BigInteger)  # the key that made the match
    key_kind: Mapped[int] = mapped_column(SmallInteger)  # BuddyMatchKey
    entry_pk: Mapped[int | None] = mapped_column(BigId)  # the contact naming the member
    origin: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BuddyDecision(Base):
    """A one-way request answered: ``decider_id`` accepted or blocked ``requester_id``."""

    __tablename__ = "buddy_decisions"
    __table_args__ = (
        UniqueConstraint("decider_id", "requester_id", name="uq_buddy_decisions_pair"),
        Index("ix_buddy_decisions_requester", "requester_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decider_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    requester_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    decision: Mapped[int] = mapped_column(SmallInteger)  # 1 accepted, 2 blocked
    created_at: Mapped[datetime]


class BuddyEvent(Base):
    """Something a user is told about: a new match, a one-way request, an acceptance."""

    __tablename__ = "buddy_events"
    __table_args__ = (
        Index("ix_buddy_events_user_seq", "user_id", "seq"),
        Index("ix_buddy_events_other_id", "other_id"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(32))  # (no foreign keys: migration 0008)
    type: Mapped[int] = mapped_column(SmallInteger)  # BuddyEventType
    other_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class PresenceRow(Base):
    __tablename__ = "presence"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[int] = mapped_column(SmallInteger)
    status_message: Mapped[str] = mapped_column(String(280), default="")
    picture_uri: Mapped[str] = mapped_column(String(2048), default="")
    updated_at: Mapped[datetime]


class KeyQuota(Base):
    """New distinct keys a user submitted for matching on one UTC day (enumeration defence)."""

    __tablename__ = "key_quota"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    used: Mapped[int] = mapped_column(Integer, default=0)


class ActiveContact(Base):
    """A number seen in the user's SMS or call logs, proposed as an active contact."""

    __tablename__ = "active_contacts"
    __table_args__ = (UniqueConstraint("user_id", "e164", name="uq_active_contacts_user_e164"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(20))
    raw: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    interactions: Mapped[int] = mapped_column(Integer, default=0)
    sources: Mapped[int] = mapped_column(SmallInteger, default=0)  # bit per log source
    last_seen: Mapped[datetime]
    state: Mapped[int] = mapped_column(SmallInteger, default=1)  # 1 open, 2 confirmed, 3 excluded


class PendingMatch(Base):
    """Keys an upload stored but has not matched yet: an upload's non-final batches only
    store; its final chunk matches the keys of all of them at once (one pass over the book
    instead of one restricted match per batch). A stream that never sends its final chunk
    is matched by the pending-match job once its oldest row is older than the grace
    period, so a dropped or crashed upload is matched all the same."""

    __tablename__ = "pending_matches"
    __table_args__ = (
        Index("ix_pending_matches_user_id", "user_id"),
        Index("ix_pending_matches_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    keys: Mapped[bytes] = mapped_column(LargeBinary)  # packed little-endian uint64 keys
    created_at: Mapped[datetime]


class RefreshJob(Base):
    """A bulk re-match; ``last_user_id`` lets a crashed job resume where it stopped."""

    __tablename__ = "refresh_jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[int] = mapped_column(SmallInteger)  # 1 running, 2 done
    last_user_id: Mapped[str] = mapped_column(String(32), default="")
    user_count: Mapped[int] = mapped_column(BigInteger, default=0)
    done_count: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ChangeCounter(Base):
    """Per-user sequence of contact changes. Every write transaction takes the next number
    under this row's lock, so numbers follow commit order and a cursor never skips a change.
    ``pruned_through``: tombstones up to this number were pruned; older cursors expired."""

    __tablename__ = "change_counters"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)


class ContactTombstone(Base):
    """A deleted contact, kept for the change feed until the retention period ends."""

    __tablename__ = "contact_tombstones"
    __table_args__ = (
        Index("ix_contact_tombstones_changes", "user_id", "change_seq", "id"),
        Index("ix_contact_tombstones_deleted_at", "deleted_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    book_pk: Mapped[int] = mapped_column(ForeignKey("address_books.id", ondelete="CASCADE"))
    entry_pk: Mapped[int] = mapped_column(BigInteger)  # the deleted contact's id
    entry_id: Mapped[str] = mapped_column(String(128))
    change_seq: Mapped[int] = mapped_column(BigInteger)
    change_origin: Mapped[int] = mapped_column(SmallInteger)
    change_device: Mapped[str] = mapped_column(String(128), default="")
    deleted_at: Mapped[datetime]


class FeedWatermark(Base):
    """How far a global feed (e.g. ``buddy_events``) was pruned: cursors at or below
    ``pruned_through`` have expired."""

    __tablename__ = "feed_watermarks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class SyncSettingsRow(Base):
    __tablename__ = "sync_settings"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    sync_pictures: Mapped[bool] = mapped_column(Boolean, default=False)
    default_network_source: Mapped[int] = mapped_column(SmallInteger, default=1)
    default_target: Mapped[int] = mapped_column(SmallInteger, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime]


class MergePlanRow(Base):
    """A previewed seed-000 merge: matched pairs with their additions, and the unmatched."""

    __tablename__ = "merge_plans"
    __table_args__ = (Index("ix_merge_plans_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    device_book_pk: Mapped[int] = mapped_column(ForeignKey("address_books.id", ondelete="CASCADE"))
    network_source: Mapped[int] = mapped_column(SmallInteger)
    source_book_pk: Mapped[int] = mapped_column(ForeignKey("address_books.id", ondelete="CASCADE"))
    target: Mapped[int] = mapped_column(SmallInteger)
    include_pictures: Mapped[bool] = mapped_column(Boolean, default=False)
    inputs_seq: Mapped[int] = mapped_column(BigInteger)  # the user's change_seq it saw
    matched_count: Mapped[int] = mapped_column(Integer, default=0)
    addition_count: Mapped[int] = mapped_column(Integer, default=0)
    unmatched_device_count: Mapped[int] = mapped_column(Integer, default=0)
    unmatched_network_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class MergePlanItemRow(Base):
    __tablename__ = "merge_plan_items"
    __table_args__ = (UniqueConstraint("plan_pk", "item_no", name="uq_merge_plan_items_plan_item"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    plan_pk: Mapped[int] = mapped_column(ForeignKey("merge_plans.id", ondelete="CASCADE"))
    item_no: Mapped[int] = mapped_column(Integer)
    kind: Mapped[int] = mapped_column(SmallInteger)  # MergePlanItemKind
    device_entry_pk: Mapped[int | None] = mapped_column(BigInteger)
    network_entry_pk: Mapped[int | None] = mapped_column(BigInteger)
    basis: Mapped[int] = mapped_column(SmallInteger, default=0)  # MergeMatchBasis
    matched_kind: Mapped[int] = mapped_column(SmallInteger, default=0)  # IdentityKind
    matched_value: Mapped[str] = mapped_column(String(320), default="")
    additions: Mapped[Any | None] = mapped_column(JSON, default=None)


class MergeRow(Base):
    """An applied merge; ``merge_contacts`` lists what it touched, for UndoMerge."""

    __tablename__ = "merges"
    __table_args__ = (Index("ix_merges_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    merge_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(String(32))
    contacts_updated: Mapped[int] = mapped_column(Integer, default=0)
    field_additions: Mapped[int] = mapped_column(Integer, default=0)
    contacts_created: Mapped[int] = mapped_column(Integer, default=0)
    applied_at: Mapped[datetime]
    undone_at: Mapped[datetime | None]


class MergeContact(Base):
    __tablename__ = "merge_contacts"
    __table_args__ = (Index("ix_merge_contacts_merge_pk", "merge_pk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    merge_pk: Mapped[int] = mapped_column(ForeignKey("merges.id", ondelete="CASCADE"))
    entry_pk: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[bool] = mapped_column(Boolean, default=False)  # the merge created it


def table(model: type[Base]) -> Table:
    """The Core table of a model, for bulk executemany inserts that skip ORM bookkeeping."""
    return Base.metadata.tables[model.__tablename__]
