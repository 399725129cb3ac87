"""Type stub of the compiled key kernel (``_ckeys.pyx``); the API matches ``_pykeys``."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from befriend.core._pykeys import ContactLayout, EntryLayout, KeyRow

T = TypeVar("T")

def contact_identities(
    data: bytes, layout: ContactLayout
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...], int]: ...
def upload_entries(
    data: bytes, layout: EntryLayout, contact: ContactLayout, make: Callable[..., T], small: int
) -> tuple[list[T], list[tuple[int, int]]]: ...
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
) -> list[KeyRow]: ...
