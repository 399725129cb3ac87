"""KeyIndex — pure-Python reference of ``befriend.core._cindex`` (same API, same snapshots).

Entries live in a ``dict``; ``capacity`` follows the compiled growth policy exactly, and
``save`` lays the slots out with the compiled hash (splitmix64 finaliser, multiply-shift range
reduction, linear probing in Robin Hood order), so a snapshot written by either implementation
loads in the other (the layout depends on the key set only: the files are byte-identical).
``load`` always reads the whole file into the dict (``mmap`` is accepted for API parity).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from typing import Any, SupportsIndex, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from befriend.core._arrays import as_u64

__all__ = ["EMPTY_KEY", "KeyIndex"]

EMPTY_KEY = 0xFFFFFFFFFFFFFFFF
MASK64 = EMPTY_KEY
MIN_CAPACITY = 8
MAGIC = b"BFKEYIX1"
VERSION = 2  # 1: plain linear probing; 2: Robin Hood order (a v1 file would miss keys)
HEADER = struct.Struct("<8sIIQQQ")  # magic, version, slot bytes, capacity, count, hash id
HEADER_SIZE = 64
HASH_ID = 1  # splitmix64 finaliser + multiply-shift range reduction

_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="KeyIndex")


def _slots_for(n: int) -> int:
    return max(MIN_CAPACITY, (n * 10 + 6) // 7)


def _mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return x


def _home(key: int, cap: int) -> int:
    return (_mix(key) * cap) >> 64


def _index(obj: object, what: str) -> int:
    try:
        return int(obj.__index__())  # type: ignore[attr-defined]
    except AttributeError:
        raise TypeError(f"KeyIndex {what} must be integers, got {type(obj).__name__}") from None


def _as_key(key: object) -> int:
    k = _index(key, "keys")
    if k == EMPTY_KEY:
        raise ValueError("key 2**64 - 1 is reserved (empty-slot marker) and cannot be stored")
    if k < 0 or k > EMPTY_KEY:
        raise ValueError(f"key {k} is outside [0, 2**64 - 2]")
    return k


def _probe_key(key: object) -> int | None:
    k = _index(key, "keys")
    return k if 0 <= k < EMPTY_KEY else None


def _as_value(value: object) -> int:
    v = _index(value, "values")
    if v < 0 or v > EMPTY_KEY:
        raise ValueError(f"value {v} is outside [0, 2**64 - 1]")
    return v


class KeyIndex:
    """Hash table uint64 key -> uint64 value (reference implementation)."""

    __slots__ = ("_cap", "_d")

    def __init__(self, capacity: SupportsIndex = 0) -> None:
        c = _index(capacity, "capacities")
        if c < 0:
            raise ValueError(f"capacity must be >= 0, got {c}")
        self._cap = _slots_for(c)
        self._d: dict[int, int] = {}

    def _reserve(self, extra: int) -> None:
        need = len(self._d) + extra
        if need * 4 > self._cap * 3:
            self._cap = max(self._cap * 2, _slots_for(need))

    @property
    def capacity(self) -> int:
        """Number of slots (keys fit up to 0.75 * capacity before the table grows)."""
        return self._cap

    @property
    def nbytes(self) -> int:
        """Bytes of the (compiled) slot array: 16 per slot."""
        return self._cap * 16

    @property
    def mapped(self) -> bool:
        """Always False: the reference never maps snapshots."""
        return False

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"KeyIndex(len={len(self._d)}, capacity={self._cap})"

    def insert(self, key: SupportsIndex, value: SupportsIndex) -> None:
        k = _as_key(key)
        v = _as_value(value)
        self._reserve(1)
        self._d[k] = v

    def delete(self, key: SupportsIndex) -> bool:
        k = _probe_key(key)
        if k is None or k not in self._d:
            return False
        del self._d[k]
        return True

    @overload
    def get(self, key: SupportsIndex) -> int | None: ...
    @overload
    def get(self, key: SupportsIndex, default: _T) -> int | _T: ...
    def get(self, key: SupportsIndex, default: Any = None) -> Any:
        k = _probe_key(key)
        if k is None:
            return default
        return self._d.get(k, default)

    def __contains__(self, key: object) -> bool:
        k = _probe_key(key)
        return k is not None and k in self._d

    def lookup(self, keys: Any, missing: int = EMPTY_KEY) -> NDArray[np.uint64]:
        kv = as_u64(keys, "keys")
        miss = _as_value(missing)
        d = self._d
        return np.fromiter(
            (d.get(k, miss) for k in kv.tolist()), dtype=np.uint64, count=kv.shape[0]
        )

    def contains_many(self, keys: Any) -> NDArray[np.bool_]:
        kv = as_u64(keys, "keys")
        d = self._d
        return np.fromiter((k in d for k in kv.tolist()), dtype=np.bool_, count=kv.shape[0])

    def insert_many(self, keys: Any, values: Any) -> None:
        kv = as_u64(keys, "keys")
        vv = as_u64(values, "values")
        if vv.shape[0] != kv.shape[0]:
            raise ValueError(f"keys and values differ in length ({kv.shape[0]} != {vv.shape[0]})")
        if kv.shape[0] == 0:
            return
        if bool(np.any(kv == np.uint64(EMPTY_KEY))):
            raise ValueError("key 2**64 - 1 is reserved (empty-slot marker) and cannot be stored")
        self._reserve(kv.shape[0])
        self._d.update(zip(kv.tolist(), vv.tolist(), strict=True))

    @classmethod
    def from_arrays(cls: type[_Self], keys: Any, values: Any) -> _Self:
        kv = as_u64(keys, "keys")
        index = cls(kv.shape[0])
        index.insert_many(kv, values)
        return index

    def to_arrays(self) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        n = len(self._d)
        keys = np.fromiter(self._d.keys(), dtype=np.uint64, count=n)
        values = np.fromiter(self._d.values(), dtype=np.uint64, count=n)
        order = np.argsort(keys, kind="stable")
        return keys[order], values[order]

    def keys(self) -> NDArray[np.uint64]:
        return self.to_arrays()[0]

    def items(self) -> Iterator[tuple[int, int]]:
        keys, values = self.to_arrays()
        return zip(keys.tolist(), values.tolist(), strict=True)

    def _slot_array(self) -> NDArray[np.uint64]:
        """The compiled slot array for these entries: Robin Hood order, which depends on the
        key set alone (along a run, homes ascend cyclically and equal homes ascend by hash)."""
        cap = self._cap
        slot_keys = [EMPTY_KEY] * cap
        slot_values = [EMPTY_KEY] * cap  # empty slots as the compiled memset
        slot_hash = [0] * cap
        slot_home = [0] * cap
        for key, value in self._d.items():
            k, v, h = key, value, _mix(key)
            home = (h * cap) >> 64
            j, d = home, 0
            while slot_keys[j] != EMPTY_KEY:
                dj = (j - slot_home[j]) % cap
                if dj < d or (dj == d and slot_hash[j] > h):  # the resident sorts after
                    k, slot_keys[j] = slot_keys[j], k
                    v, slot_values[j] = slot_values[j], v
                    h, slot_hash[j] = slot_hash[j], h
                    home, slot_home[j] = slot_home[j], home
                    d = dj
                j += 1
                d += 1
                if j == cap:
                    j = 0
            slot_keys[j], slot_values[j], slot_hash[j], slot_home[j] = k, v, h, home
        slots = np.empty((cap, 2), dtype=np.uint64)
        slots[:, 0] = slot_keys
        slots[:, 1] = slot_values
        return slots.reshape(-1)

    def save(self, path: str | os.PathLike[str]) -> None:
        if sys.byteorder != "little":  # pragma: no cover
            raise RuntimeError("KeyIndex snapshots are little-endian only")
        p = os.fspath(path)
        header = HEADER.pack(MAGIC, VERSION, 16, self._cap, len(self._d), HASH_ID)
        header += b"\0" * (HEADER_SIZE - len(header))
        tmp = f"{p}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(self._slot_array().tobytes())
        os.replace(tmp, p)

    @classmethod
    def load(cls: type[_Self], path: str | os.PathLike[str], mmap: bool = True) -> _Self:
        if sys.byteorder != "little":  # pragma: no cover
            raise RuntimeError("KeyIndex snapshots are little-endian only")
        p = os.fspath(path)
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            raw = f.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise ValueError(f"{p}: not a KeyIndex snapshot (short header)")
        magic, version, slot_bytes, cap, count, hash_id = HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise ValueError(f"{p}: not a KeyIndex snapshot (bad magic {magic!r})")
        if version < VERSION:
            raise ValueError(
                f"{p}: KeyIndex snapshot format version {version} is no longer supported "
                f"(current: {VERSION}, Robin Hood slot order); rebuild it from the source data"
            )
        if version != VERSION or slot_bytes != 16 or hash_id != HASH_ID:
            raise ValueError(
                f"{p}: unsupported KeyIndex snapshot (version {version}, slot bytes "
                f"{slot_bytes}, hash {hash_id})"
            )
        if cap < MIN_CAPACITY or count >= cap or size != HEADER_SIZE + 16 * cap:
            raise ValueError(
                f"{p}: corrupt KeyIndex snapshot (capacity {cap}, count {count}, {size} bytes)"
            )
        slots = np.fromfile(p, dtype="<u8", offset=HEADER_SIZE).reshape(cap, 2)
        used = slots[:, 0] != np.uint64(EMPTY_KEY)
        index = cls.__new__(cls)
        index._cap = cap
        index._d = dict(zip(slots[used, 0].tolist(), slots[used, 1].tolist(), strict=True))
        return index
