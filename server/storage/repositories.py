"""Repositories: the only code that speaks SQL. They take a Session (one transaction) and
return records from befriend.server.records, never ORM objects."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from befriend.server.records import DeviceRecord, IdentityKind, IdentityRecord, UserRecord
from befriend.server.storage import models
from befriend.server.storage.db import TXN_INFO

IDENTITY_ADDED = 1
IDENTITY_REMOVED = 2
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def key_to_db(key: int) -> int:
    """Unsigned 64-bit identity key -> signed BIGINT (two's complement)."""
    return key - _U64 if key > _I64_MAX else key


def key_from_db(value: int) -> int:
    return value + _U64 if value < 0 else value


# Session.info key: the transaction wrote identity_log rows
WROTE_IDENTITY_LOG = TXN_INFO + "wrote_identity_log"


def _identity(row: models.Identity) -> IdentityRecord:
    return IdentityRecord(IdentityKind(row.kind), row.value, key_from_db(row.key), row.raw)


def _user(row: models.User) -> UserRecord:
    return UserRecord(
        id=row.id,
        display_name=row.display_name,
        region_code=row.region_code,
        time_zone=row.time_zone,
        profile=dict(row.profile or {}),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        identities=tuple(_identity(i) for i in row.identities),
    )


def _device(row: models.Device) -> DeviceRecord:
    return DeviceRecord(row.device_id, row.sim_id, row.platform, row.first_seen, row.last_seen)


class AccountRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add_user(
        self,
        user_id: str,
        *,
        display_name: str,
        region_code: str,
        time_zone: str,
        profile: dict[str, Any],
        identities: Iterable[IdentityRecord],
        now: datetime,
    ) -> UserRecord:
        row = models.User(
            id=user_id,
            display_name=display_name,
            region_code=region_code,
            time_zone=time_zone,
            profile=profile,
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.s.add(row)
        for ident in identities:
            row.identities.append(self._identity_row(user_id, ident, now))
        self.s.flush()
        self._log([i.id for i in row.identities], IDENTITY_ADDED, now)
        return _user(row)

    def _log(self, identity_pks: Iterable[int], op: int, now: datetime) -> None:
        rows = [{"identity_pk": pk, "op": op, "created_at": now} for pk in identity_pks]
        if rows:
            self.s.info[WROTE_IDENTITY_LOG] = True  # (``Registry``: forgotten on rollback)
            self.s.execute(insert(models.table(models.IdentityLog)), rows)

    @staticmethod
    def _identity_row(user_id: str, ident: IdentityRecord, now: datetime) -> models.Identity:
        return models.Identity(
            user_id=user_id,
            kind=int(ident.kind),
            value=ident.value,
            key=key_to_db(ident.key),
            raw=ident.raw,
            created_at=now,
        )

    def _user_row(self, user_id: str, *, lock: bool = False) -> models.User | None:
        stmt = (
            select(models.User)
            .where(models.User.id == user_id)
            .options(selectinload(models.User.identities))
        )
        if lock:
            stmt = stmt.with_for_update()
        return self.s.scalars(stmt).one_or_none()

    def get_user(self, user_id: str, *, lock: bool = False) -> UserRecord | None:
        row = self._user_row(user_id, lock=lock)
        return _user(row) if row is not None else None

    def region_of(self, user_id: str) -> str:
        """The user's home region (the default region of their address book)."""
        region = self.s.execute(
            select(models.User.region_code).where(models.User.id == user_id)
        ).scalar_one_or_none()
        if region is None:
            raise LookupError(user_id)
        return region

    def identity_owners(self, kind: IdentityKind, values: Iterable[str]) -> dict[str, str]:
        """Map each given normalised value that some user owns to that user's id."""
        wanted = list(set(values))
        if not wanted:
            return {}
        rows = self.s.execute(
            select(models.Identity.value, models.Identity.user_id).where(
                models.Identity.kind == int(kind), models.Identity.value.in_(wanted)
            )
        )
        return {value: user_id for value, user_id in rows}

    def update_user(self, user_id: str, now: datetime, **changes: Any) -> UserRecord:
        """Apply column changes and bump the version (the etag)."""
        row = self._user_row(user_id, lock=True)
        if row is None:
            raise LookupError(user_id)
        for name, value in changes.items():
            setattr(row, name, value)
        row.version += 1
        row.updated_at = now
        self.s.flush()
        return _user(row)

    def replace_identity(
        self, user_id: str, old: IdentityRecord, new: IdentityRecord, now: datetime
    ) -> None:
        gone = self.s.scalars(
            delete(models.Identity)
            .where(
                models.Identity.user_id == user_id,
                models.Identity.kind == int(old.kind),
                models.Identity.value == old.value,
            )
            .returning(models.Identity.id)
        ).all()
        row = self._identity_row(user_id, new, now)
        self.s.add(row)
        self.s.flush()
        self._log(gone, IDENTITY_REMOVED, now)
        self._log([row.id], IDENTITY_ADDED, now)

    def upsert_device(
        self, user_id: str, device_id: str, sim_id: str, platform: str, now: datetime
    ) -> DeviceRecord:
        row = self.s.scalars(
            select(models.Device).where(
                models.Device.user_id == user_id, models.Device.device_id == device_id
            )
        ).one_or_none()
        if row is None:
            row = models.Device(
                user_id=user_id,
                device_id=device_id,
                sim_id=sim_id,
                platform=platform,
                first_seen=now,
                last_seen=now,
            )
            self.s.add(row)
        else:
            row.sim_id = sim_id or row.sim_id
            row.platform = platform or row.platform
            row.last_seen = now
        self.s.flush()
        return _device(row)

    def list_devices(self, user_id: str, offset: int, limit: int) -> list[DeviceRecord]:
        rows = self.s.scalars(
            select(models.Device)
            .where(models.Device.user_id == user_id)
            .order_by(models.Device.last_seen.desc(), models.Device.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return [_device(r) for r in rows]

    def add_token(self, user_id: str, token_hash: str, now: datetime) -> None:
        self.s.add(models.Token(user_id=user_id, token_hash=token_hash, created_at=now))
        self.s.flush()

    def user_for_token(self, token_hash: str) -> str | None:
        return self.s.scalars(
            select(models.Token.user_id).where(models.Token.token_hash == token_hash)
        ).one_or_none()

    def delete_user(self, user_id: str, now: datetime) -> bool:
        """Delete the user and every row of their personal data."""
        pks = self.s.scalars(
            select(models.Identity.id).where(models.Identity.user_id == user_id)
        ).all()
        self._log(pks, IDENTITY_REMOVED, now)
        self.s.execute(
            delete(models.IdempotencyRecord).where(
                (models.IdempotencyRecord.user_id == user_id)
                | (models.IdempotencyRecord.scope == user_id)
            )
        )
        b, ev = models.BuddyRow, models.BuddyEvent  # (no foreign keys to cascade from)
        self.s.execute(delete(b).where((b.owner_id == user_id) | (b.other_id == user_id)))
        self.s.execute(delete(ev).where((ev.user_id == user_id) | (ev.other_id == user_id)))
        for table in (
            models.Token,
            models.Device,
            models.Identity,
            models.EntryKey,
            models.ContactEntry,
            models.Upload,
            models.AddressBook,
            models.PresenceRow,
        ):
            self.s.execute(delete(table).where(table.user_id == user_id))
        result = self.s.execute(delete(models.User).where(models.User.id == user_id))
        return bool(getattr(result, "rowcount", 0))


class IdempotencyRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, scope: str, method: str, request_id: str) -> tuple[str, bytes] | None:
        row = self.s.execute(
            select(models.IdempotencyRecord.request_hash, models.IdempotencyRecord.response).where(
                models.IdempotencyRecord.scope == scope,
                models.IdempotencyRecord.method == method,
                models.IdempotencyRecord.request_id == request_id,
            )
        ).one_or_none()
        return (row[0], row[1]) if row is not None else None

    def put(
        self,
        scope: str,
        method: str,
        request_id: str,
        request_hash: str,
        response: bytes,
        user_id: str | None,
        now: datetime,
    ) -> None:
        self.s.add(
            models.IdempotencyRecord(
                scope=scope,
                method=method,
                request_id=request_id,
                request_hash=request_hash,
                response=response,
                user_id=user_id,
                created_at=now,
            )
        )
        self.s.flush()

    def purge_before(self, cutoff: datetime) -> int:
        result = self.s.execute(
            delete(models.IdempotencyRecord).where(models.IdempotencyRecord.created_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0))
