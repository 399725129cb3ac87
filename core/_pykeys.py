"""Identity extraction and entry-key rows of uploaded address-book entries (reference).

Three kernels of the upload path, compiled in ``_ckeys.pyx``; this module is the reference
(``BEFRIEND_PUREPYTHON=1``) and defines the semantics.

``contact_identities`` reads the identities of one serialised contact straight from its
protobuf wire bytes, without building message objects. The caller names the field numbers
(``ContactLayout``), so the kernel knows the wire format only, not the contract. The bytes
must be a canonical serialisation (as ``SerializeToString`` writes: one record per repeated
item); a record whose wire type does not match the layout is skipped, as a parser keeps it
among the unknown fields.

``upload_entries`` reads the entries of a serialised upload request the same way
(``EntryLayout``): each entry's fields, its contact's bytes as they are, and the contact's
identities, made into the caller's record, so a chunk of 500 entries costs no message
objects. A singular field given twice keeps its last value, as a parser does, and a contact
given twice is the concatenation of its records (which a parser reads as their merge).

``key_rows`` turns the normalised identities of a chunk's entries into rows of the reverse
index (``entry_keys``): for each entry, its phones (in order) then its other identities (in
order); a phone that did not normalise keeps only its weak key (none: no row) and its raw
string (cut to 320 characters) as the value; an identity whose (kind, value) the entry
already listed is dropped; keys are stored as signed 64-bit integers (two's complement);
each row carries its ordinal among its entry's rows (0, 1, …: the identities' order, which
the table's primary key (entry_pk, ordinal) keeps, so rows may be written in any order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
MAX_VALUE_CHARS = 320

# (entry_pk, user_id, kind, key, weak_key, value, ordinal): an entry_keys row, keys signed,
# 0 -> None
KeyRow = tuple[int, str, int, int | None, int | None, str, int]
T = TypeVar("T")


class ContactLayout(NamedTuple):
    """Field numbers of the contact message and of its identity sub-messages."""

    mobile: int  # repeated phone message
    fixed: int  # repeated phone message
    email: int  # repeated e-mail message
    im: int  # repeated IM message
    phone_raw: int  # string in the phone message
    email_raw: int  # string in the e-mail message
    im_kind: int  # string in the IM message
    im_id: int  # string in the IM message
    flag_fields: tuple[int, ...]  # fields whose presence sets bit i of the flags


class EntryLayout(NamedTuple):
    """Field numbers of an upload request's repeated entries and of an entry's fields."""

    entries: int  # repeated entry message in the request
    entry_id: int  # string
    raw: int  # bytes
    media_type: int  # string
    contact: int  # contact message (ContactLayout)
    content_hash: int  # string, returned lower-cased
    deleted: int  # bool


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return _varint(data, pos, end)[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = _varint(data, pos, end)
        pos += n
    elif wire == 5:
        pos += 4
    else:
        raise WireError(f"unsupported wire type {wire}")
    if pos > end:
        raise WireError("field runs past the end of the message")
    return pos


def _span(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length is at ``pos``."""
    n, pos = _varint(data, pos, end)
    if pos + n > end:
        raise WireError("field runs past the end of the message")
    return pos, pos + n


def _strings(data: bytes, pos: int, end: int, a: int, b: int) -> tuple[str, str]:
    """The last values of string fields ``a`` and ``b`` of the message in data[pos:end]."""
    va = vb = ""
    while pos < end:
        tag, pos = _varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if wire == 2 and field in (a, b):
            start, pos = _span(data, pos, end)
            text = data[start:pos].decode("utf-8")
            if field == a:
                va = text
            if field == b:
                vb = text
        else:
            pos = _skip(data, pos, end, wire)
    return va, vb


def contact_identities(
    data: bytes, layout: ContactLayout
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...], int]:
    """(phones: the mobile numbers' raw strings then the fixed ones', e-mails' raw strings,
    IM (kind, id) pairs, flags: bit i set when ``layout.flag_fields[i]`` is present)."""
    mobile: list[str] = []
    fixed: list[str] = []
    emails: list[str] = []
    ims: list[tuple[str, str]] = []
    flags = 0
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        for i, flagged in enumerate(layout.flag_fields):
            if field == flagged:
                flags |= 1 << i
        if wire != 2:
            pos = _skip(data, pos, end, wire)
            continue
        pos, stop = _span(data, pos, end)
        if field == layout.mobile:
            mobile.append(_strings(data, pos, stop, layout.phone_raw, -1)[0])
        elif field == layout.fixed:
            fixed.append(_strings(data, pos, stop, layout.phone_raw, -1)[0])
        elif field == layout.email:
            emails.append(_strings(data, pos, stop, layout.email_raw, -1)[0])
        elif field == layout.im:
            ims.append(_strings(data, pos, stop, layout.im_kind, layout.im_id))
        pos = stop
    return tuple(mobile + fixed), tuple(emails), tuple(ims), flags


def upload_entries(
    data: bytes, layout: EntryLayout, contact: ContactLayout, make: Callable[..., T], small: int
) -> tuple[list[T], list[tuple[int, int]]]:
    """The entries of the serialised request in ``data``, each as ``make(entry_id, raw,
    media_type, content_hash (lower-cased), contact bytes, phones, e-mails, IM ids,
    deleted)`` (the identities as ``contact_identities`` reads them), and (index, flags) of
    each entry whose contact has flags (``contact_identities``' last item) or is longer
    than ``small`` bytes, in order."""
    made: list[T] = []
    notes: list[tuple[int, int]] = []
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if field != layout.entries or wire != 2:
            pos = _skip(data, pos, end, wire)
            continue
        pos, stop = _span(data, pos, end)
        entry_id = media_type = content_hash = ""
        raw = b""
        parts: list[bytes] = []
        deleted = False
        while pos < stop:
            tag, pos = _varint(data, pos, stop)
            field, wire = tag >> 3, tag & 7
            if wire == 0 and field == layout.deleted:
                value, pos = _varint(data, pos, stop)
                deleted = value != 0
                continue
            if wire != 2 or field not in (
                layout.entry_id,
                layout.raw,
                layout.media_type,
                layout.contact,
                layout.content_hash,
            ):
                pos = _skip(data, pos, stop, wire)
                continue
            start, pos = _span(data, pos, stop)
            value_bytes = data[start:pos]
            if field == layout.raw:
                raw = value_bytes
            elif field == layout.contact:
                parts.append(value_bytes)
            elif field == layout.entry_id:
                entry_id = value_bytes.decode("utf-8")
            elif field == layout.media_type:
                media_type = value_bytes.decode("utf-8")
            else:
                content_hash = value_bytes.decode("utf-8").lower()
        body = b"".join(parts)
        phones, emails, ims, flagged = contact_identities(body, contact)
        if flagged or len(body) > small:
            notes.append((len(made), flagged))
        made.append(
            make(entry_id, raw, media_type, content_hash, body, phones, emails, ims, deleted)
        )
    return made, notes


def _signed(key: int) -> int:
    return key - _U64 if key > _I64_MAX else key


def key_rows(
    user_id: str,
    entry_pks: Sequence[int],
    phone_kind: int,
    phone_owner: Any,
    phone_ok: Any,
    phone_key: Any,
    phone_weak: Any,
    phone_e164: Sequence[str],
    phone_raw: Sequence[str],
    other_owner: Any,
    other_kind: Any,
    other_key: Any,
    other_value: Sequence[str],
) -> list[KeyRow]:
    """entry_keys rows of the entries whose ``entry_pks[i]`` is >= 0.

    Phones are columns over every phone of the chunk, ``phone_owner`` the entry index of each
    (non-decreasing); ``phone_ok`` true where the number normalised (``phone_key`` and
    ``phone_e164`` then hold its key and E.164), ``phone_weak`` its weak key or 0. The other
    identities (e-mail, IM) are columns too, with their kind, key (never 0) and value.
    """
    p_owner = np.asarray(phone_owner, dtype=np.int64).tolist()
    p_ok = np.asarray(phone_ok, dtype=bool).tolist()
    p_key = np.asarray(phone_key, dtype=np.uint64).tolist()
    p_weak = np.asarray(phone_weak, dtype=np.uint64).tolist()
    o_owner = np.asarray(other_owner, dtype=np.int64).tolist()
    o_kind = np.asarray(other_kind, dtype=np.int64).tolist()
    o_key = np.asarray(other_key, dtype=np.uint64).tolist()
    if len(p_ok) != len(p_owner) or len(p_key) != len(p_owner) or len(p_weak) != len(p_owner):
        raise ValueError("phone columns differ in length")
    if len(phone_e164) != len(p_owner) or len(phone_raw) != len(p_owner):
        raise ValueError("phone columns differ in length")
    if len(o_kind) != len(o_owner) or len(o_key) != len(o_owner):
        raise ValueError("identity columns differ in length")
    if len(other_value) != len(o_owner):
        raise ValueError("identity columns differ in length")
    for owners in (p_owner, o_owner):
        if any(not 0 <= o < len(entry_pks) for o in owners):
            raise ValueError("owner index out of range")
        if any(a > b for a, b in itertools.pairwise(owners)):
            raise ValueError("owners must be non-decreasing")
    rows: list[KeyRow] = []
    p = o = 0
    for i, pk in enumerate(entry_pks):
        first = len(rows)
        while p < len(p_owner) and p_owner[p] == i:
            if pk >= 0 and (p_ok[p] or p_weak[p]):
                ok = p_ok[p]
                value = phone_e164[p] if ok else phone_raw[p][:MAX_VALUE_CHARS]
                if not any(r[2] == phone_kind and r[5] == value for r in rows[first:]):
                    key = _signed(p_key[p]) if ok and p_key[p] else None
                    weak = p_weak[p] or None
                    rows.append((pk, user_id, phone_kind, key, weak, value, len(rows) - first))
            p += 1
        while o < len(o_owner) and o_owner[o] == i:
            if pk >= 0:
                kind, value = o_kind[o], other_value[o]
                if not any(r[2] == kind and r[5] == value for r in rows[first:]):
                    key = _signed(o_key[o]) if o_key[o] else None
                    rows.append((pk, user_id, kind, key, None, value, len(rows) - first))
            o += 1
    return rows
