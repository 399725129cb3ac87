"""Plain domain records passed between repositories, domain services and servicers.

Nothing here knows SQL or protobuf.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

WEAK_DIGITS = 7  # weak key: the rightmost 7 digits of a phone number (seed 001)


class IdentityKind(enum.IntEnum):
    PHONE = 1
    EMAIL = 2
    IM = 3


@dataclass(frozen=True)
class IdentityRecord:
    kind: IdentityKind
    value: str  # E.164, normalised e-mail, or "kind:id"
    key: int  # unsigned 64-bit identity key
    raw: str  # as the user typed it
    number_type: int = 0  # befriend.core NumberType for phones (not stored)
    region: str = ""  # CLDR region of a phone number (not stored)


@dataclass(frozen=True)
class UserRecord:
    id: str
    display_name: str
    region_code: str
    time_zone: str
    profile: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    identities: tuple[IdentityRecord, ...] = field(default_factory=tuple)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def of_kind(self, kind: IdentityKind) -> list[IdentityRecord]:
        return [i for i in self.identities if i.kind == kind]


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    sim_id: str
    platform: str
    first_seen: datetime
    last_seen: datetime


class UploadState(enum.IntEnum):
    IN_PROGRESS = 1
    COMMITTED = 2
    EXPIRED = 3


class UploadMode(enum.IntEnum):
    INCREMENTAL = 1
    FULL_SNAPSHOT = 2


class EntryInput(NamedTuple):
    """One uploaded address-book entry, as the domain sees it (a named tuple: an upload
    makes one per contact, and a frozen dataclass's constructor cost 2 us of it)."""

    entry_id: str
    raw: bytes
    media_type: str
    content_hash: str
    contact: bytes  # the parsed contact, serialised; stored as is
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ims: tuple[tuple[str, str], ...] = ()
    deleted: bool = False


@dataclass(frozen=True)
class EntryKeyRecord:
    kind: IdentityKind
    key: int | None  # None when the identity could not be normalised
    weak_key: int | None
    value: str


@dataclass(frozen=True)
class StoredEntry:
    entry_id: str
    raw: bytes
    media_type: str
    content_hash: str
    contact: bytes


@dataclass(frozen=True)
class BookRecord:
    book_id: str
    kind: int
    device_id: str
    entry_count: int
    version: int
    updated_at: datetime

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    book_id: str
    device_id: str
    mode: UploadMode
    state: UploadState
    last_sequence: int
    entry_count: int
    last_entry_id: str
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Rejection:
    index: int
    entry_id: str
    field: str
    description: str
    reason: str = "INVALID_ARGUMENT"
