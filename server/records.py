"""Plain domain records passed between repositories, domain services and servicers.

Nothing here knows SQL or protobuf.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
