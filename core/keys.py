"""Identities of uploaded contacts and their entry_keys rows (public facade of the key
kernel).

Re-exports the compiled ``befriend.core._ckeys`` or, under ``BEFRIEND_PUREPYTHON=1``, the
reference ``befriend.core._pykeys``; both have the same API and results. Semantics are
documented in ``befriend.core._pykeys``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from befriend.core._impl import load
from befriend.core._pykeys import MAX_VALUE_CHARS, ContactLayout, EntryLayout, KeyRow, WireError

__all__ = [
    "MAX_VALUE_CHARS",
    "ContactLayout",
    "EntryLayout",
    "KeyRow",
    "WireError",
    "contact_identities",
    "key_rows",
    "upload_entries",
]

_m = load("_ckeys", "_pykeys")

contact_identities: Callable[
    [bytes, ContactLayout],
    tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...], int],
] = _m.contact_identities

T = TypeVar("T")


def upload_entries(
    data: bytes, layout: EntryLayout, contact: ContactLayout, make: Callable[..., T], small: int
) -> tuple[list[T], list[tuple[int, int]]]:
    """Each entry of a serialised upload request as ``make(entry_id, raw, media_type,
    content_hash, contact, phones, emails, ims, deleted)``, and (index, flags) of the
    entries whose contact has flags or is longer than ``small`` bytes (see ``_pykeys``)."""
    made: tuple[list[T], list[tuple[int, int]]] = _m.upload_entries(
        data, layout, contact, make, small
    )
    return made


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
    """entry_keys rows ``(entry_pk, user_id, kind, key, weak_key, value, ordinal)`` of the
    entries whose ``entry_pks[i]`` is >= 0, from the chunk's identity columns (see
    ``_pykeys``)."""
    rows: list[KeyRow] = _m.key_rows(
        user_id,
        entry_pks,
        phone_kind,
        phone_owner,
        phone_ok,
        phone_key,
        phone_weak,
        phone_e164,
        phone_raw,
        other_owner,
        other_kind,
        other_key,
        other_value,
    )
    return rows
