"""Identities of uploaded contacts and their entry_keys rows (public facade of the key
kernel).

Re-exports the compiled ``befriend.core._ckeys`` or, under ``BEFRIEND_PUREPYTHON=1``, the
reference ``befriend.core._pykeys``; both have the same API and results. Semantics are
documented in ``befriend.core._pykeys``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from befriend.core._impl import load
from befriend.core._pykeys import MAX_VALUE_CHARS, ContactLayout, KeyRow, WireError

__all__ = [
    "MAX_VALUE_CHARS",
    "ContactLayout",
    "KeyRow",
    "WireError",
    "contact_identities",
    "key_rows",
]

_m = load("_ckeys", "_pykeys")

contact_identities: Callable[
    [bytes, ContactLayout],
    tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...], int],
] = _m.contact_identities


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
    """entry_keys rows ``(entry_pk, user_id, kind, key, weak_key, value)`` of the entries
    whose ``entry_pks[i]`` is >= 0, from the chunk's identity columns (see ``_pykeys``)."""
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
