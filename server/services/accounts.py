"""Account rules: registration, profile updates, phone-number changes, devices, deletion."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from befriend.server.errors import Aborted as AbortedError
from befriend.server.errors import AlreadyExists, InvalidArgument, NotFound
from befriend.server.records import DeviceRecord, IdentityKind, IdentityRecord, UserRecord
from befriend.server.services import identities
from befriend.server.storage.repositories import AccountRepository

MAX_DISPLAY_NAME = 200
MAX_IDENTITIES = 20
MAX_DEVICE_FIELD = 128
PROFILE_FIELDS = ("picture_uri", "homepage_url", "address", "organizations", "birthday")
UPDATABLE = {"display_name", "region_code", "time_zone", "profile"} | {
    f"profile.{f}" for f in PROFILE_FIELDS
}


@dataclass(frozen=True)
class DeviceInput:
    device_id: str
    sim_id: str = ""
    platform: str = ""


@dataclass(frozen=True)
class RegisterCommand:
    display_name: str
    phone_numbers: Sequence[str] = ()
    email_addresses: Sequence[str] = ()
    im_ids: Sequence[tuple[str, str]] = ()
    region_code: str = ""
    time_zone: str = ""
    device: DeviceInput | None = None


@dataclass(frozen=True)
class ProfileUpdate:
    """New values for the paths in ``paths`` (already checked against UPDATABLE)."""

    paths: frozenset[str]
    display_name: str = ""
    region_code: str = ""
    time_zone: str = ""
    profile: dict[str, Any] = field(default_factory=dict)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "bf_" + secrets.token_urlsafe(32)


def check_display_name(name: str, field_name: str = "display_name") -> str:
    text = name.strip()
    if not text:
        raise InvalidArgument.field(field_name, "required")
    if len(text) > MAX_DISPLAY_NAME:
        raise InvalidArgument.field(field_name, f"longer than {MAX_DISPLAY_NAME} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidArgument.field(field_name, "contains control characters")
    return text


def check_region(region: str, field_name: str = "region_code") -> str:
    code = region.strip().upper()
    if code and not identities.valid_region(code):
        raise InvalidArgument.field(field_name, f"unknown region code {region!r}")
    return code


def check_time_zone(tz: str, field_name: str = "time_zone") -> str:
    name = tz.strip() or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument.field(field_name, f"unknown IANA time zone {tz!r}") from None
    return name


def check_etag(user: UserRecord, etag: str, field_name: str = "etag") -> None:
    if etag and etag != user.etag:
        raise AbortedError(
            f"{field_name} {etag!r} is stale; the user is at {user.etag}",
            metadata={"current_etag": user.etag},
        )


def _check_device(device: DeviceInput, prefix: str) -> DeviceInput:
    device_id = device.device_id.strip()
    if not device_id:
        raise InvalidArgument.field(f"{prefix}.device_id", "required")
    for name, value in (
        ("device_id", device_id),
        ("sim_id", device.sim_id),
        ("platform", device.platform),
    ):
        if len(value) > MAX_DEVICE_FIELD:
            raise InvalidArgument.field(
                f"{prefix}.{name}", f"longer than {MAX_DEVICE_FIELD} characters"
            )
    return DeviceInput(device_id, device.sim_id.strip(), device.platform.strip().lower())


def _collect_identities(cmd: RegisterCommand, region: str) -> list[IdentityRecord]:
    total = len(cmd.phone_numbers) + len(cmd.email_addresses) + len(cmd.im_ids)
    if total == 0:
        raise InvalidArgument.field("phone_numbers", "at least one phone number or e-mail")
    if total > MAX_IDENTITIES:
        raise InvalidArgument.field("phone_numbers", f"at most {MAX_IDENTITIES} identities")
    found: dict[tuple[IdentityKind, str], IdentityRecord] = {}
    for i, raw in enumerate(cmd.phone_numbers):
        ident = identities.phone_identity(raw, region, f"phone_numbers[{i}]")
        found.setdefault((ident.kind, ident.value), ident)
    for i, raw in enumerate(cmd.email_addresses):
        ident = identities.email_identity(raw, f"email_addresses[{i}]")
        found.setdefault((ident.kind, ident.value), ident)
    for i, (kind, ident_id) in enumerate(cmd.im_ids):
        ident = identities.im_identity(kind, ident_id, f"im_ids[{i}]")
        found.setdefault((ident.kind, ident.value), ident)
    return list(found.values())


def _ensure_unowned(
    repo: AccountRepository, wanted: Sequence[IdentityRecord], me: str | None
) -> None:
    for kind in IdentityKind:
        values = [i.value for i in wanted if i.kind == kind]
        for value, owner in repo.identity_owners(kind, values).items():
            if owner != me:
                raise AlreadyExists(
                    f"{kind.name.lower()} {value} belongs to another user",
                    reason="IDENTITY_TAKEN",
                    metadata={"identity": value},
                )


def register(
    repo: AccountRepository, cmd: RegisterCommand, now: datetime
) -> tuple[UserRecord, str]:
    """Create a user with its identities (and device); return the user and a new token."""
    name = check_display_name(cmd.display_name)
    region = check_region(cmd.region_code)
    tz = check_time_zone(cmd.time_zone)
    device = _check_device(cmd.device, "device") if cmd.device is not None else None
    idents = _collect_identities(cmd, region)
    if not region:
        # Without an explicit home region, the first phone number's region is home.
        phones = [i for i in idents if i.kind == IdentityKind.PHONE]
        region = phones[0].region if phones else ""
    _ensure_unowned(repo, idents, None)
    user = repo.add_user(
        uuid.uuid4().hex,
        display_name=name,
        region_code=region,
        time_zone=tz,
        profile={},
        identities=idents,
        now=now,
    )
    if device is not None:
        repo.upsert_device(user.id, device.device_id, device.sim_id, device.platform, now)
    token = new_token()
    repo.add_token(user.id, hash_token(token), now)
    return user, token


def get_user(repo: AccountRepository, user_id: str, *, lock: bool = False) -> UserRecord:
    user = repo.get_user(user_id, lock=lock)
    if user is None:
        raise NotFound(f"users/{user_id} not found")
    return user


def update_profile(
    repo: AccountRepository, user_id: str, etag: str, update: ProfileUpdate, now: datetime
) -> UserRecord:
    unknown = sorted(update.paths - UPDATABLE)
    if unknown or not update.paths:
        raise InvalidArgument.field(
            "update_mask",
            f"unknown paths {unknown}" if unknown else "no paths given",
        )
    user = get_user(repo, user_id, lock=True)
    check_etag(user, etag, "user.etag")
    changes: dict[str, Any] = {}
    if "display_name" in update.paths:
        changes["display_name"] = check_display_name(update.display_name, "user.display_name")
    if "region_code" in update.paths:
        changes["region_code"] = check_region(update.region_code, "user.region_code")
    if "time_zone" in update.paths:
        changes["time_zone"] = check_time_zone(update.time_zone, "user.time_zone")
    if "profile" in update.paths:
        changes["profile"] = dict(update.profile)
    else:
        sub = {p.split(".", 1)[1] for p in update.paths if p.startswith("profile.")}
        if sub:
            profile = dict(user.profile)
            for name in sub:
                if name in update.profile:
                    profile[name] = update.profile[name]
                else:
                    profile.pop(name, None)
            changes["profile"] = profile
    return repo.update_user(user_id, now, **changes)


def change_phone_number(
    repo: AccountRepository, user_id: str, old_raw: str, new_raw: str, etag: str, now: datetime
) -> tuple[UserRecord, IdentityRecord]:
    """Swap one of the user's numbers; returns the user and the released identity."""
    user = get_user(repo, user_id, lock=True)
    check_etag(user, etag)
    old = identities.phone_identity(old_raw, user.region_code, "old_phone_number")
    new = identities.phone_identity(new_raw, user.region_code, "new_phone_number")
    mine = {i.value for i in user.of_kind(IdentityKind.PHONE)}
    if old.value not in mine:
        raise NotFound(
            f"{old.value} is not one of your phone numbers",
            metadata={"field": "old_phone_number"},
        )
    if new.value in mine:
        raise InvalidArgument.field("new_phone_number", f"{new.value} is already yours")
    _ensure_unowned(repo, [new], user_id)
    repo.replace_identity(user_id, old, new, now)
    return repo.update_user(user_id, now), old


def register_device(
    repo: AccountRepository, user_id: str, device: DeviceInput, now: datetime
) -> DeviceRecord:
    d = _check_device(device, "device")
    get_user(repo, user_id)
    return repo.upsert_device(user_id, d.device_id, d.sim_id, d.platform, now)


def delete_account(repo: AccountRepository, user_id: str, etag: str, now: datetime) -> None:
    user = get_user(repo, user_id, lock=True)
    check_etag(user, etag)
    if not repo.delete_user(user_id, now):  # pragma: no cover - raced with another delete
        raise NotFound(f"users/{user_id} not found")


__all__ = [
    "DeviceInput",
    "ProfileUpdate",
    "RegisterCommand",
    "change_phone_number",
    "delete_account",
    "get_user",
    "hash_token",
    "register",
    "register_device",
    "update_profile",
]
