"""KeyIndex: uint64 key -> uint64 value hash table (compiled, or the reference under
``BEFRIEND_PUREPYTHON=1``).

Open addressing with linear probing in Robin Hood order (a miss stops early) and backward-shift
deletion; the key ``2**64 - 1`` (:data:`EMPTY_KEY`) is reserved. ``KeyIndex.save`` and
``KeyIndex.load`` write and map snapshot files (64-byte header + raw slots; a mapped index is
copy-on-write: mutable, the file is never modified). Concurrent readers are safe; writers need
a lock held by the caller (a mutation during a GIL-free batch lookup raises RuntimeError rather
than corrupting memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from befriend.core._impl import load

_m = load("_cindex", "_pyindex")

if TYPE_CHECKING:
    from befriend.core._pyindex import EMPTY_KEY, KeyIndex
else:
    EMPTY_KEY: int = _m.EMPTY_KEY
    KeyIndex = _m.KeyIndex

__all__ = ["EMPTY_KEY", "KeyIndex"]
