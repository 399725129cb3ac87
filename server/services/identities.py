"""Turning what people type into identities (normalised value + 64-bit key).

Phone numbers, e-mails and IM ids go through befriend.core's normaliser; a phone number's
default region is its owner's home region.
"""

from __future__ import annotations

import phonenumbers

from befriend.core.normalize import Status, email_key, im_key, normalize
from befriend.server.errors import InvalidArgument
from befriend.server.records import IdentityKind, IdentityRecord

MAX_RAW = 320
_PROBLEMS = {
    Status.NOT_A_NUMBER: "not a phone number",
    Status.TOO_SHORT: "too short for a phone number",
    Status.TOO_LONG: "too long for a phone number",
    Status.INVALID_COUNTRY_CODE: "unknown country calling code",
    Status.INVALID_REGION: "no country code and no default region",
}


def _check_raw(raw: str, field: str, what: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidArgument.field(field, f"empty {what}")
    if len(raw) > MAX_RAW:
        raise InvalidArgument.field(field, f"{what} longer than {MAX_RAW} characters")
    return text


def valid_region(region: str) -> bool:
    """A CLDR region code that phone numbers can be normalised for."""
    return region in phonenumbers.SUPPORTED_REGIONS


def phone_identity(raw: str, default_region: str, field: str) -> IdentityRecord:
    """Normalise with befriend.core (the owner's region is the default region)."""
    text = _check_raw(raw, field, "phone number")
    result = normalize(text, default_region)
    if result.status != Status.OK:
        problem = _PROBLEMS.get(result.status, "not a valid phone number")
        raise InvalidArgument.field(
            field,
            f"{problem} (default region {default_region or 'none'})",
            reason="INVALID_PHONE_NUMBER",
        )
    return IdentityRecord(
        IdentityKind.PHONE, result.e164, result.key, raw, int(result.number_type), result.region
    )


def email_identity(raw: str, field: str) -> IdentityRecord:
    text = _check_raw(raw, field, "e-mail address")
    try:
        value, key = email_key(text)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc), reason="INVALID_EMAIL_ADDRESS") from None
    return IdentityRecord(IdentityKind.EMAIL, value, key, raw)


def im_identity(kind: str, ident: str, field: str) -> IdentityRecord:
    _check_raw(kind, f"{field}.kind", "IM kind")
    _check_raw(ident, f"{field}.id", "IM id")
    try:
        value, key = im_key(kind, ident)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc)) from None
    return IdentityRecord(IdentityKind.IM, value, key, f"{kind}:{ident}")
