# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""KeyIndex: open-addressing hash table uint64 key -> uint64 value (compiled kernel).

Layout: one malloc'ed (or memory-mapped) array of ``capacity`` slots, each slot the pair
``(key, value)`` interleaved, so a probe touches one cache line. Linear probing from the home
slot ``(splitmix64(key) * capacity) >> 64`` (Lemire's multiply-shift range reduction, so the
capacity need not be a power of two and the table stays under 24 bytes per key), in Robin Hood
order: along a run, homes ascend (cyclically) and equal homes ascend by hash, so a search stops
at the first resident that sorts after the key (a miss scans ~2 slots at load 0.7 instead of
~6). The order is a function of the key set alone (the hash is a bijection), so the reference
writes byte-identical snapshots. Deletion by backward shift, so there are no tombstones. The
key ``2**64 - 1`` marks an empty slot and cannot be stored.

Thread safety: concurrent readers are safe. ``lookup``/``contains_many`` release the GIL; a
mutation (insert, delete, resize) attempted while such a batch runs in another thread raises
RuntimeError instead of freeing memory under it. Mutations from several threads, or a
mutation concurrent with a scalar read, need a lock held by the caller (the GIL makes each
method call atomic, so a single writer thread with reader threads is memory-safe).
"""

import os
import struct
import sys

import numpy as np

from libc.stdint cimport uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from befriend.core._arrays import as_u64

ctypedef uint64_t u64

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint64_t bf_mix(uint64_t x) {
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;
        return x;
    }
    static inline uint64_t bf_reduce(uint64_t h, uint64_t cap) {
        return (uint64_t)(((unsigned __int128)h * cap) >> 64);
    }
    static inline uint64_t bf_home(uint64_t key, uint64_t cap) {
        return bf_reduce(bf_mix(key), cap);
    }
    /* a probe run often spills into the next cache line: fetch both */
    #define bf_prefetch_r(p) do { __builtin_prefetch((const void *)(p), 0, 3); \
        __builtin_prefetch((const char *)(p) + 64, 0, 3); } while (0)
    #define bf_prefetch_w(p) __builtin_prefetch((const void *)(p), 1, 3)
    #include <stdlib.h>
    #include <sys/mman.h>
    /* Large tables: 2 MiB-aligned and madvise(MADV_HUGEPAGE), so random probes do not pay a
       page walk each (transparent huge pages are often in "madvise" mode). */
    static void *bf_alloc(size_t nbytes) {
        void *p = NULL;
        size_t align = nbytes >= (4u << 20) ? (2u << 20) : 64;
        if (posix_memalign(&p, align, nbytes) != 0) return NULL;
    #ifdef MADV_HUGEPAGE
        if (align == (2u << 20)) madvise(p, nbytes, MADV_HUGEPAGE);
    #endif
        return p;
    }
    """
    u64 bf_mix(u64 x) noexcept nogil
    u64 bf_reduce(u64 h, u64 cap) noexcept nogil
    u64 bf_home(u64 key, u64 cap) noexcept nogil
    void bf_prefetch_r(const void *p) noexcept nogil
    void bf_prefetch_w(const void *p) noexcept nogil
    void *bf_alloc(size_t nbytes) noexcept nogil

EMPTY_KEY = 0xFFFFFFFFFFFFFFFF
cdef u64 EMPTY = 0xFFFFFFFFFFFFFFFFULL
cdef u64 MIN_CAPACITY = 8
cdef enum:
    PF = 32  # prefetch distance in keys; the ring buffers of homes have PF entries
    PF_MASK = PF - 1

MAGIC = b"BFKEYIX1"
VERSION = 2  # 1: plain linear probing; 2: Robin Hood order (a v1 file would miss keys)
HEADER = struct.Struct("<8sIIQQQ")  # magic, version, slot bytes, capacity, count, hash id
HEADER_SIZE = 64
HASH_ID = 1  # splitmix64 finaliser + multiply-shift range reduction


cdef inline u64 _slots_for(u64 n) noexcept nogil:
    """Slots for ``n`` keys at load factor <= 0.7."""
    cdef u64 c = (n * 10 + 6) // 7
    return c if c > MIN_CAPACITY else MIN_CAPACITY


# ---------------------------------------------------------------------------------------------
# nogil kernels over a raw slot array: slots[2*i] = key, slots[2*i + 1] = value
# ---------------------------------------------------------------------------------------------

# Robin Hood order: along a run, entries are sorted by (probe distance from home descending
# at each slot, i.e. home ascending cyclically), ties (same home) by hash ascending. The
# hash is a bijection of the key, so the layout is a function of the key set alone (history
# independent): the reference computes the very same slot array. A search stops at the first
# slot whose resident sorts after the key, so a miss scans ~2 slots instead of ~6 at load 0.7.

cdef inline bint _after(u64 k, u64 i, u64 cap, u64 h, u64 d) noexcept nogil:
    """True if resident ``k`` at slot ``i`` sorts after a key of hash ``h`` and distance ``d``."""
    cdef u64 hk = bf_mix(k)
    cdef u64 home = bf_reduce(hk, cap)
    cdef u64 dk = i - home if i >= home else i + cap - home
    return dk < d or (dk == d and hk > h)


cdef inline Py_ssize_t _find(const u64 *slots, u64 cap, u64 key) noexcept nogil:
    """Slot index of ``key`` or -1. Bounded by ``cap`` probes (a corrupt full table cannot hang)."""
    cdef u64 h = bf_mix(key)
    cdef u64 i = bf_reduce(h, cap)
    cdef u64 d = 0
    cdef u64 k
    while d < cap:
        k = slots[2 * i]
        if k == key:
            return <Py_ssize_t>i
        if k == EMPTY or _after(k, i, cap, h, d):
            return -1
        i += 1
        if i == cap:
            i = 0
        d += 1
    return -1


cdef inline int _put(u64 *slots, u64 cap, u64 key, u64 value, u64 h, u64 home) noexcept nogil:
    """Insert or overwrite (``h`` = hash, ``home`` = home slot of ``key``).

    1 = added, 0 = overwritten, -1 = table full.
    """
    cdef u64 i = home
    cdef u64 d = 0
    cdef u64 n = 0
    cdef u64 k, v, hk, hhome, dk
    while n < cap:
        k = slots[2 * i]
        if k == EMPTY:
            slots[2 * i] = key
            slots[2 * i + 1] = value
            return 1
        if k == key:
            slots[2 * i + 1] = value
            return 0
        hk = bf_mix(k)
        hhome = bf_reduce(hk, cap)
        dk = i - hhome if i >= hhome else i + cap - hhome
        if dk < d or (dk == d and hk > h):
            # the resident sorts after the carried entry: swap and carry the resident on
            v = slots[2 * i + 1]
            slots[2 * i] = key
            slots[2 * i + 1] = value
            key = k
            value = v
            h = hk
            d = dk
        i += 1
        if i == cap:
            i = 0
        d += 1
        n += 1
    return -1


cdef Py_ssize_t _put_many(u64 *slots, u64 cap, const u64 *keys, const u64 *values,
                          Py_ssize_t n) noexcept nogil:
    """Insert ``n`` pairs in order (last duplicate wins), prefetching PF keys ahead.

    Returns the number of keys added, or -1 if the table filled up (corrupt count).
    """
    cdef u64 ring_h[PF]
    cdef u64 ring_home[PF]
    cdef Py_ssize_t i, j, added = 0
    cdef int r
    cdef u64 h, home, h0, home0
    for i in range(min(n, PF)):
        h = bf_mix(keys[i])
        home = bf_reduce(h, cap)
        ring_h[i & PF_MASK] = h
        ring_home[i & PF_MASK] = home
        bf_prefetch_w(&slots[2 * home])
    for i in range(n):
        j = i & PF_MASK
        h0 = ring_h[j]
        home0 = ring_home[j]
        if i + PF < n:  # refill the ring slot just read with key i + PF
            h = bf_mix(keys[i + PF])
            home = bf_reduce(h, cap)
            ring_h[j] = h
            ring_home[j] = home
            bf_prefetch_w(&slots[2 * home])
        r = _put(slots, cap, keys[i], values[i], h0, home0)
        if r < 0:
            return -1
        added += r
    return added


cdef inline Py_ssize_t _probe(const u64 *slots, u64 cap, u64 key, u64 h, u64 i) noexcept nogil:
    """Slot of ``key`` (hash ``h``, home ``i``) or -1; the batch kernels' inner loop."""
    cdef u64 d = 0
    cdef u64 k
    if key == EMPTY:
        return -1
    while d < cap:
        k = slots[2 * i]
        if k == key:
            return <Py_ssize_t>i
        if k == EMPTY or _after(k, i, cap, h, d):
            return -1
        i += 1
        if i == cap:
            i = 0
        d += 1
    return -1


cdef void _lookup_many(const u64 *slots, u64 cap, const u64 *keys, u64 *out, u64 missing,
                       Py_ssize_t n) noexcept nogil:
    cdef u64 ring_h[PF]
    cdef u64 ring_home[PF]
    cdef Py_ssize_t i, j, s
    cdef u64 h, home, h0, home0
    for i in range(min(n, PF)):
        h = bf_mix(keys[i])
        home = bf_reduce(h, cap)
        ring_h[i & PF_MASK] = h
        ring_home[i & PF_MASK] = home
        bf_prefetch_r(&slots[2 * home])
    for i in range(n):
        j = i & PF_MASK
        h0 = ring_h[j]
        home0 = ring_home[j]
        if i + PF < n:  # refill the ring slot just read with key i + PF
            h = bf_mix(keys[i + PF])
            home = bf_reduce(h, cap)
            ring_h[j] = h
            ring_home[j] = home
            bf_prefetch_r(&slots[2 * home])
        s = _probe(slots, cap, keys[i], h0, home0)
        out[i] = slots[2 * s + 1] if s >= 0 else missing


cdef void _contains_many(const u64 *slots, u64 cap, const u64 *keys, unsigned char *out,
                         Py_ssize_t n) noexcept nogil:
    cdef u64 ring_h[PF]
    cdef u64 ring_home[PF]
    cdef Py_ssize_t i, j
    cdef u64 h, home, h0, home0
    for i in range(min(n, PF)):
        h = bf_mix(keys[i])
        home = bf_reduce(h, cap)
        ring_h[i & PF_MASK] = h
        ring_home[i & PF_MASK] = home
        bf_prefetch_r(&slots[2 * home])
    for i in range(n):
        j = i & PF_MASK
        h0 = ring_h[j]
        home0 = ring_home[j]
        if i + PF < n:  # refill the ring slot just read with key i + PF
            h = bf_mix(keys[i + PF])
            home = bf_reduce(h, cap)
            ring_h[j] = h
            ring_home[j] = home
            bf_prefetch_r(&slots[2 * home])
        out[i] = _probe(slots, cap, keys[i], h0, home0) >= 0


cdef void _remove_at(u64 *slots, u64 cap, u64 i) noexcept nogil:
    """Empty slot ``i`` and shift the rest of its run back one slot while the entries are
    displaced (probe distance > 0): keeps the Robin Hood order, no tombstones."""
    cdef u64 j, k, n = 0
    while n < cap:
        j = i + 1
        if j == cap:
            j = 0
        k = slots[2 * j]
        if k == EMPTY or bf_home(k, cap) == j:
            break
        slots[2 * i] = k
        slots[2 * i + 1] = slots[2 * j + 1]
        i = j
        n += 1
    slots[2 * i] = EMPTY
    slots[2 * i + 1] = EMPTY  # as a fresh slot (snapshots are byte-identical to the reference)


cdef Py_ssize_t _compact(const u64 *slots, u64 cap, u64 *keys_out, u64 *values_out) noexcept nogil:
    cdef u64 i
    cdef Py_ssize_t n = 0
    for i in range(cap):
        if slots[2 * i] != EMPTY:
            keys_out[n] = slots[2 * i]
            values_out[n] = slots[2 * i + 1]
            n += 1
    return n


cdef Py_ssize_t _rehash(const u64 *old, u64 old_cap, u64 *new, u64 new_cap) noexcept nogil:
    """Move every entry of ``old`` into the empty table ``new`` (keys are distinct)."""
    cdef u64 i, k, h
    cdef Py_ssize_t n = 0
    for i in range(old_cap):
        k = old[2 * i]
        if k == EMPTY:
            continue
        h = bf_mix(k)
        _put(new, new_cap, k, old[2 * i + 1], h, bf_reduce(h, new_cap))
        n += 1
    return n


cdef u64 *_alloc_slots(u64 cap) except NULL:
    if cap > (<u64>1 << 59):
        raise MemoryError(f"KeyIndex capacity {cap} is too large")
    cdef u64 *p = <u64 *>bf_alloc(<size_t>(cap * 16))
    if p == NULL:
        raise MemoryError(f"cannot allocate a KeyIndex of {cap} slots ({cap * 16} bytes)")
    with nogil:
        memset(p, 0xFF, <size_t>(cap * 16))  # every key = EMPTY (values are ignored)
    return p


cdef u64 _as_key(object key) except? 0:
    """A storable key: an int in [0, 2**64 - 2]. TypeError / ValueError otherwise."""
    try:
        k = key.__index__()
    except AttributeError:
        raise TypeError(f"KeyIndex keys must be integers, got {type(key).__name__}") from None
    if k < 0 or k >= EMPTY_KEY:
        if k == EMPTY_KEY:
            raise ValueError("key 2**64 - 1 is reserved (empty-slot marker) and cannot be stored")
        raise ValueError(f"key {k} is outside [0, 2**64 - 2]")
    return <u64>k


cdef int _probe_key(object key, u64 *out) except -1:
    """For reads: 1 and the key in ``out`` if it can be stored, 0 if it cannot (never present)."""
    try:
        k = key.__index__()
    except AttributeError:
        raise TypeError(f"KeyIndex keys must be integers, got {type(key).__name__}") from None
    if k < 0 or k >= EMPTY_KEY:
        return 0
    out[0] = <u64>k
    return 1


cdef u64 _as_value(object value) except? 0:
    try:
        v = value.__index__()
    except AttributeError:
        raise TypeError(f"KeyIndex values must be integers, got {type(value).__name__}") from None
    if v < 0 or v > EMPTY_KEY:
        raise ValueError(f"value {v} is outside [0, 2**64 - 1]")
    return <u64>v


cdef class KeyIndex:
    """Hash table uint64 key -> uint64 value; see the module docstring for layout and threads."""

    cdef u64 *slots       # 2 * cap words: (key, value) per slot
    cdef u64 cap          # number of slots
    cdef u64 count        # number of stored keys
    cdef bint owned       # slots came from malloc (else from the mapped snapshot in _base)
    cdef object _base     # keeps a memory-mapped snapshot alive
    cdef int _readers     # batch reads running without the GIL

    def __cinit__(self, capacity=0):
        self.slots = NULL
        self.cap = 0
        self.count = 0
        self.owned = False
        self._base = None
        self._readers = 0

    def __init__(self, capacity: int = 0) -> None:
        c = capacity.__index__()
        if c < 0:
            raise ValueError(f"capacity must be >= 0, got {c}")
        self.cap = _slots_for(<u64>c)
        self.slots = _alloc_slots(self.cap)
        self.owned = True

    def __dealloc__(self):
        if self.owned and self.slots != NULL:
            free(self.slots)
        self.slots = NULL

    # -- bookkeeping -------------------------------------------------------------------------

    cdef int _check_writable(self) except -1:
        if self._readers:
            raise RuntimeError("KeyIndex mutated while a batch lookup runs in another thread")
        return 0

    cdef int _resize(self, u64 new_cap) except -1:
        cdef u64 *new = _alloc_slots(new_cap)
        with nogil:
            _rehash(self.slots, self.cap, new, new_cap)
        if self.owned:
            free(self.slots)
        self.slots = new
        self.cap = new_cap
        self.owned = True
        self._base = None  # a mapped snapshot is no longer referenced
        return 0

    cdef int _reserve(self, u64 extra) except -1:
        """Grow so that ``count + extra`` keys stay at load factor <= 0.75."""
        cdef u64 need = self.count + extra
        if need * 4 > self.cap * 3:
            self._resize(max(self.cap * 2, _slots_for(need)))
        return 0

    @property
    def capacity(self) -> int:
        """Number of slots (keys fit up to 0.75 * capacity before the table grows)."""
        return self.cap

    @property
    def nbytes(self) -> int:
        """Bytes of the slot array (16 per slot: key and value)."""
        return self.cap * 16

    @property
    def mapped(self) -> bool:
        """True while the slots are a copy-on-write mapping of a snapshot file."""
        return not self.owned

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"KeyIndex(len={self.count}, capacity={self.cap})"

    # -- scalar operations ---------------------------------------------------------------------

    def insert(self, key, value) -> None:
        """Set ``index[key] = value``. ValueError for the reserved key 2**64 - 1."""
        cdef u64 k = _as_key(key)
        cdef u64 v = _as_value(value)
        self._check_writable()
        self._reserve(1)
        cdef u64 h = bf_mix(k)
        cdef int r = _put(self.slots, self.cap, k, v, h, bf_reduce(h, self.cap))
        if r < 0:
            raise RuntimeError("KeyIndex table is full (corrupt snapshot?)")
        self.count += <u64>r

    def delete(self, key) -> bool:
        """Remove ``key``; True if it was present."""
        cdef u64 k
        if not _probe_key(key, &k):
            return False
        self._check_writable()
        cdef Py_ssize_t i = _find(self.slots, self.cap, k)
        if i < 0:
            return False
        _remove_at(self.slots, self.cap, <u64>i)
        self.count -= 1
        return True

    def get(self, key, default=None):
        """The value of ``key`` or ``default``."""
        cdef u64 k
        if not _probe_key(key, &k):
            return default
        cdef Py_ssize_t i = _find(self.slots, self.cap, k)
        if i < 0:
            return default
        return self.slots[2 * i + 1]

    def __contains__(self, key) -> bool:
        cdef u64 k
        if not _probe_key(key, &k):
            return False
        return _find(self.slots, self.cap, k) >= 0

    # -- batch operations --------------------------------------------------------------------

    def lookup(self, keys, missing: int = EMPTY_KEY):
        """Values of ``keys`` (uint64 array) with ``missing`` for absent keys; GIL released."""
        cdef const u64[::1] kv = as_u64(keys, "keys")
        cdef u64 miss = _as_value(missing)
        out = np.empty(kv.shape[0], dtype=np.uint64)
        cdef u64[::1] ov = out
        cdef Py_ssize_t n = kv.shape[0]
        if n == 0:
            return out
        self._readers += 1
        try:
            with nogil:
                _lookup_many(self.slots, self.cap, &kv[0], &ov[0], miss, n)
        finally:
            self._readers -= 1
        return out

    def contains_many(self, keys):
        """Boolean membership of each key; GIL released."""
        cdef const u64[::1] kv = as_u64(keys, "keys")
        cdef Py_ssize_t n = kv.shape[0]
        out = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return out
        cdef unsigned char[::1] ov = out.view(np.uint8)
        self._readers += 1
        try:
            with nogil:
                _contains_many(self.slots, self.cap, &kv[0], &ov[0], n)
        finally:
            self._readers -= 1
        return out

    def insert_many(self, keys, values) -> None:
        """Insert pairs in order (a later duplicate overwrites). All-or-nothing on bad input."""
        cdef const u64[::1] kv = as_u64(keys, "keys")
        cdef const u64[::1] vv = as_u64(values, "values")
        cdef Py_ssize_t n = kv.shape[0]
        if vv.shape[0] != n:
            raise ValueError(f"keys and values differ in length ({n} != {vv.shape[0]})")
        if n == 0:
            return
        if np.any(np.asarray(kv) == EMPTY_KEY):
            raise ValueError("key 2**64 - 1 is reserved (empty-slot marker) and cannot be stored")
        self._check_writable()
        self._reserve(<u64>n)
        cdef Py_ssize_t added
        with nogil:
            added = _put_many(self.slots, self.cap, &kv[0], &vv[0], n)
        if added < 0:
            raise RuntimeError("KeyIndex table is full (corrupt snapshot?)")
        self.count += <u64>added

    @classmethod
    def from_arrays(cls, keys, values):
        """Bulk build from parallel arrays; duplicates: the last occurrence wins."""
        kv = as_u64(keys, "keys")
        cdef KeyIndex index = cls(kv.shape[0])
        index.insert_many(kv, values)
        return index

    def to_arrays(self):
        """``(keys, values)`` as uint64 arrays sorted by key."""
        keys_out = np.empty(self.count, dtype=np.uint64)
        values_out = np.empty(self.count, dtype=np.uint64)
        if self.count == 0:
            return keys_out, values_out
        cdef u64[::1] ko = keys_out
        cdef u64[::1] vo = values_out
        with nogil:
            _compact(self.slots, self.cap, &ko[0], &vo[0])
        order = np.argsort(keys_out, kind="stable")
        return keys_out[order], values_out[order]

    def keys(self):
        """Stored keys as a sorted uint64 array."""
        return self.to_arrays()[0]

    def items(self):
        """Iterate ``(key, value)`` pairs in ascending key order (over a snapshot copy)."""
        keys_out, values_out = self.to_arrays()
        return zip(keys_out.tolist(), values_out.tolist())

    # -- snapshots -----------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write a snapshot: 64-byte header then the raw slot array; atomic (tmp + rename)."""
        if sys.byteorder != "little":  # pragma: no cover
            raise RuntimeError("KeyIndex snapshots are little-endian only")
        path = os.fspath(path)
        header = HEADER.pack(MAGIC, VERSION, 16, self.cap, self.count, HASH_ID)
        header += b"\0" * (HEADER_SIZE - len(header))
        tmp = f"{path}.tmp{os.getpid()}"
        view = <u64[:2 * self.cap]> self.slots
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(memoryview(view).cast("B"))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path, mmap: bool = True):
        """Load a snapshot written by ``save``.

        ``mmap=True`` maps the file copy-on-write (MAP_PRIVATE): loading costs no reading,
        pages fault in on first use, the index is fully mutable and writes stay private to
        the process (the file is never modified; growth moves the table to private memory).
        ``mmap=False`` reads the slots into private memory.
        """
        if sys.byteorder != "little":  # pragma: no cover
            raise RuntimeError("KeyIndex snapshots are little-endian only")
        path = os.fspath(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise ValueError(f"{path}: not a KeyIndex snapshot (short header)")
        magic, version, slot_bytes, cap, count, hash_id = HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise ValueError(f"{path}: not a KeyIndex snapshot (bad magic {magic!r})")
        if version < VERSION:
            raise ValueError(
                f"{path}: KeyIndex snapshot format version {version} is no longer supported "
                f"(current: {VERSION}, Robin Hood slot order); rebuild it from the source data"
            )
        if version != VERSION or slot_bytes != 16 or hash_id != HASH_ID:
            raise ValueError(
                f"{path}: unsupported KeyIndex snapshot (version {version}, slot bytes "
                f"{slot_bytes}, hash {hash_id})"
            )
        if cap < MIN_CAPACITY or count >= cap or size != HEADER_SIZE + 16 * cap:
            raise ValueError(
                f"{path}: corrupt KeyIndex snapshot (capacity {cap}, count {count}, "
                f"{size} bytes)"
            )
        cdef KeyIndex index = cls.__new__(cls)
        cdef u64[::1] sv
        if mmap:
            arr = np.memmap(path, dtype=np.uint64, mode="c", offset=HEADER_SIZE, shape=(2 * cap,))
            sv = arr
            index.slots = &sv[0]
            index.owned = False
            index._base = arr
        else:
            index.slots = _alloc_slots(cap)
            index.owned = True
            view = <u64[:2 * cap]> index.slots
            with open(path, "rb") as f:
                f.seek(HEADER_SIZE)
                got = f.readinto(memoryview(view).cast("B"))
            if got != 16 * cap:
                raise ValueError(f"{path}: truncated KeyIndex snapshot")
        index.cap = cap
        index.count = count
        return index
