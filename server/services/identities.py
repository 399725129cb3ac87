"""Turning what people type into identities (normalised value + 64-bit key).

Phone numbers go through befriend.core's normaliser with the owner's region as default.
"""

from __future__ import annotations

import phonenumbers

from befriend.server.errors import InvalidArgument
from befriend.server.records import IdentityKind, IdentityRecord

MAX_RAW = 320


def _check_raw(raw: str, field: str, what: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidArgument.field(field, f"empty {what}")
    if len(raw) > MAX_RAW:
        raise InvalidArgument.field(field, f"{what} longer than {MAX_RAW} characters")
    return text


def valid_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def phone_identity(raw: str, default_region: str, field: str) -> IdentityRecord:
    text = _check_raw(raw, field, "phone number")
    try:
        parsed = phonenumbers.parse(text, default_region or None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidArgument.field(
            field, f"not a phone number ({exc.args[0]})", reason="INVALID_PHONE_NUMBER"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidArgument.field(
            field,
            f"not a valid phone number for region {default_region or 'unknown'}",
            reason="INVALID_PHONE_NUMBER",
        )
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return IdentityRecord(
        IdentityKind.PHONE,
        e164,
        int(e164[1:]),
        raw,
        int(phonenumbers.number_type(parsed)),
    )


def phone_region(identity: IdentityRecord) -> str:
    region = phonenumbers.region_code_for_number(phonenumbers.parse(identity.value))
    return str(region or "")


def email_identity(raw: str, field: str) -> IdentityRecord:
    from befriend.core.normalize import email_key

    text = _check_raw(raw, field, "e-mail address")
    try:
        value, key = email_key(text)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc), reason="INVALID_EMAIL_ADDRESS") from None
    return IdentityRecord(IdentityKind.EMAIL, value, key, raw)


def im_identity(kind: str, ident: str, field: str) -> IdentityRecord:
    from befriend.core.normalize import im_key

    _check_raw(kind, f"{field}.kind", "IM kind")
    _check_raw(ident, f"{field}.id", "IM id")
    try:
        value, key = im_key(kind, ident)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc)) from None
    return IdentityRecord(IdentityKind.IM, value, key, f"{kind}:{ident}")
