# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Set kernels over sorted unique uint64 arrays (compiled).

Two-input operations merge (branch-free steps) when the sizes are similar and gallop
(exponential then binary search of each element of the small side in the large side) when
the larger input is more than ``GALLOP_RATIO`` times the smaller. ``overlap_counts`` marks the
query's keys in a small bitmap (L1/L2-resident), tests each candidate key against it and
confirms the rare hits by binary search in the query. All kernels run without the GIL.

Inputs must be sorted and unique: this is not checked (that would cost as much as the
operation); unsorted input gives unspecified results but never reads out of bounds.
"""

import numpy as np

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc, free

from befriend.core._arrays import as_indptr, as_u64, select_top_k

ctypedef uint64_t u64
ctypedef int64_t i64

GALLOP_RATIO = 32
cdef Py_ssize_t C_GALLOP_RATIO = 32


# ---------------------------------------------------------------------------------------------
# nogil kernels
# ---------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _gallop(const u64 *l, Py_ssize_t lo, Py_ssize_t n, u64 x) noexcept nogil:
    """First index p in [lo, n] with p == n or l[p] >= x (l sorted)."""
    if lo >= n or l[lo] >= x:
        return lo
    cdef Py_ssize_t prev = lo      # l[prev] < x
    cdef Py_ssize_t step = 1
    cdef Py_ssize_t hi = lo + 1
    while hi < n and l[hi] < x:
        prev = hi
        step <<= 1
        hi = lo + step
    if hi > n:
        hi = n
    cdef Py_ssize_t a = prev + 1, mid
    while a < hi:                  # answer in [prev + 1, hi]
        mid = a + ((hi - a) >> 1)
        if l[mid] < x:
            a = mid + 1
        else:
            hi = mid
    return a


cdef Py_ssize_t _intersect_merge(const u64 *a, Py_ssize_t na, const u64 *b, Py_ssize_t nb,
                                 u64 *out) noexcept nogil:
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef u64 x, y
    while i < na and j < nb:
        x = a[i]
        y = b[j]
        if out != NULL:
            out[k] = x             # k <= min(i, j): always in bounds
        k += x == y
        i += x <= y
        j += y <= x
    return k


cdef Py_ssize_t _intersect_gallop(const u64 *s, Py_ssize_t ns, const u64 *l, Py_ssize_t nl,
                                  u64 *out) noexcept nogil:
    cdef Py_ssize_t i, p = 0, k = 0
    cdef u64 x
    for i in range(ns):
        x = s[i]
        p = _gallop(l, p, nl, x)
        if p == nl:
            break
        if l[p] == x:
            if out != NULL:
                out[k] = x
            k += 1
            p += 1
    return k


cdef Py_ssize_t _union_merge(const u64 *a, Py_ssize_t na, const u64 *b, Py_ssize_t nb,
                             u64 *out) noexcept nogil:
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef u64 x, y
    while i < na and j < nb:
        x = a[i]
        y = b[j]
        out[k] = x if x < y else y
        k += 1
        i += x <= y
        j += y <= x
    if i < na:
        memcpy(&out[k], &a[i], (na - i) * sizeof(u64))
        k += na - i
    if j < nb:
        memcpy(&out[k], &b[j], (nb - j) * sizeof(u64))
        k += nb - j
    return k


cdef Py_ssize_t _union_gallop(const u64 *s, Py_ssize_t ns, const u64 *l, Py_ssize_t nl,
                              u64 *out) noexcept nogil:
    cdef Py_ssize_t i, p = 0, q, k = 0
    cdef u64 x
    for i in range(ns):
        x = s[i]
        q = _gallop(l, p, nl, x)
        if q > p:
            memcpy(&out[k], &l[p], (q - p) * sizeof(u64))
            k += q - p
        out[k] = x
        k += 1
        if q < nl and l[q] == x:
            q += 1
        p = q
    if p < nl:
        memcpy(&out[k], &l[p], (nl - p) * sizeof(u64))
        k += nl - p
    return k


cdef Py_ssize_t _difference_merge(const u64 *a, Py_ssize_t na, const u64 *b, Py_ssize_t nb,
                                  u64 *out) noexcept nogil:
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef u64 x, y
    while i < na and j < nb:
        x = a[i]
        y = b[j]
        out[k] = x                 # k <= i: in bounds
        k += x < y
        i += x <= y
        j += y <= x
    if i < na:
        memcpy(&out[k], &a[i], (na - i) * sizeof(u64))
        k += na - i
    return k


cdef Py_ssize_t _difference_small_a(const u64 *a, Py_ssize_t na, const u64 *b, Py_ssize_t nb,
                                    u64 *out) noexcept nogil:
    """a \\ b with a much smaller: gallop each element of a in b."""
    cdef Py_ssize_t i, p = 0, k = 0
    cdef u64 x
    for i in range(na):
        x = a[i]
        p = _gallop(b, p, nb, x)
        if p < nb and b[p] == x:
            p += 1
        else:
            out[k] = x
            k += 1
    return k


cdef Py_ssize_t _difference_small_b(const u64 *a, Py_ssize_t na, const u64 *b, Py_ssize_t nb,
                                    u64 *out) noexcept nogil:
    """a \\ b with b much smaller: copy the runs of a between b's elements."""
    cdef Py_ssize_t j, p = 0, q, k = 0
    cdef u64 y
    for j in range(nb):
        y = b[j]
        q = _gallop(a, p, na, y)
        if q > p:
            memcpy(&out[k], &a[p], (q - p) * sizeof(u64))
            k += q - p
        if q < na and a[q] == y:
            q += 1
        p = q
    if p < na:
        memcpy(&out[k], &a[p], (na - p) * sizeof(u64))
        k += na - p
    return k


cdef inline bint _bsearch(const u64 *q, Py_ssize_t n, u64 x) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if q[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and q[lo] == x


cdef int _overlap_counts(const u64 *q, Py_ssize_t nq, const i64 *indptr, Py_ssize_t nrows,
                         const u64 *idx, i64 *out) noexcept nogil:
    """out[r] = |q ∩ idx[indptr[r]:indptr[r+1]]|. -1 if indptr decreases, -2 out of memory."""
    cdef Py_ssize_t r, t
    for r in range(nrows):
        if indptr[r + 1] < indptr[r]:
            return -1
    if nq == 0:
        memset(out, 0, nrows * sizeof(i64))
        return 0
    # bitmap of >= 64 bits per query key (false-positive rate <= 1/64), 4 KiB .. 512 KiB
    cdef int bits = 15
    while bits < 22 and (<Py_ssize_t>1 << bits) < 64 * nq:
        bits += 1
    cdef int shift = 64 - bits
    cdef u64 *bm = <u64 *>calloc((<size_t>1 << bits) // 64, sizeof(u64))
    if bm == NULL:
        return -2
    cdef u64 h, x
    cdef i64 c
    for t in range(nq):
        h = (q[t] * 0x9E3779B97F4A7C15ULL) >> shift
        bm[h >> 6] |= (<u64>1) << (h & 63)
    for r in range(nrows):
        c = 0
        for t in range(indptr[r], indptr[r + 1]):
            x = idx[t]
            h = (x * 0x9E3779B97F4A7C15ULL) >> shift
            if (bm[h >> 6] >> (h & 63)) & 1:
                c += _bsearch(q, nq, x)
        out[r] = c
    free(bm)
    return 0


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

cdef inline const u64 *_ptr(const u64[::1] v) noexcept:
    return &v[0] if v.shape[0] > 0 else NULL


def intersect(a, b):
    """Sorted unique ``a ∩ b``."""
    cdef const u64[::1] av = as_u64(a, "a")
    cdef const u64[::1] bv = as_u64(b, "b")
    cdef Py_ssize_t na = av.shape[0], nb = bv.shape[0], k
    out = np.empty(min(na, nb), dtype=np.uint64)
    if na == 0 or nb == 0:
        return out
    cdef u64[::1] ov = out
    cdef const u64 *pa = &av[0]
    cdef const u64 *pb = &bv[0]
    with nogil:
        if na * C_GALLOP_RATIO < nb:
            k = _intersect_gallop(pa, na, pb, nb, &ov[0])
        elif nb * C_GALLOP_RATIO < na:
            k = _intersect_gallop(pb, nb, pa, na, &ov[0])
        else:
            k = _intersect_merge(pa, na, pb, nb, &ov[0])
    return out[:k].copy() if 2 * k < out.shape[0] else out[:k]


def intersect_count(a, b) -> int:
    """``len(a ∩ b)`` without materialising it."""
    cdef const u64[::1] av = as_u64(a, "a")
    cdef const u64[::1] bv = as_u64(b, "b")
    cdef Py_ssize_t na = av.shape[0], nb = bv.shape[0], k
    if na == 0 or nb == 0:
        return 0
    cdef const u64 *pa = &av[0]
    cdef const u64 *pb = &bv[0]
    with nogil:
        if na * C_GALLOP_RATIO < nb:
            k = _intersect_gallop(pa, na, pb, nb, NULL)
        elif nb * C_GALLOP_RATIO < na:
            k = _intersect_gallop(pb, nb, pa, na, NULL)
        else:
            k = _intersect_merge(pa, na, pb, nb, NULL)
    return k


def union(a, b):
    """Sorted unique ``a ∪ b``."""
    cdef const u64[::1] av = as_u64(a, "a")
    cdef const u64[::1] bv = as_u64(b, "b")
    cdef Py_ssize_t na = av.shape[0], nb = bv.shape[0], k
    if na == 0:
        return np.array(bv, dtype=np.uint64)
    if nb == 0:
        return np.array(av, dtype=np.uint64)
    out = np.empty(na + nb, dtype=np.uint64)
    cdef u64[::1] ov = out
    cdef const u64 *pa = &av[0]
    cdef const u64 *pb = &bv[0]
    with nogil:
        if na * C_GALLOP_RATIO < nb:
            k = _union_gallop(pa, na, pb, nb, &ov[0])
        elif nb * C_GALLOP_RATIO < na:
            k = _union_gallop(pb, nb, pa, na, &ov[0])
        else:
            k = _union_merge(pa, na, pb, nb, &ov[0])
    return out[:k].copy() if 2 * k < out.shape[0] else out[:k]


def difference(a, b):
    """Sorted unique ``a \\ b``."""
    cdef const u64[::1] av = as_u64(a, "a")
    cdef const u64[::1] bv = as_u64(b, "b")
    cdef Py_ssize_t na = av.shape[0], nb = bv.shape[0], k
    if na == 0 or nb == 0:
        return np.array(av, dtype=np.uint64)
    out = np.empty(na, dtype=np.uint64)
    cdef u64[::1] ov = out
    cdef const u64 *pa = &av[0]
    cdef const u64 *pb = &bv[0]
    with nogil:
        if na * C_GALLOP_RATIO < nb:
            k = _difference_small_a(pa, na, pb, nb, &ov[0])
        elif nb * C_GALLOP_RATIO < na:
            k = _difference_small_b(pa, na, pb, nb, &ov[0])
        else:
            k = _difference_merge(pa, na, pb, nb, &ov[0])
    return out[:k].copy() if 2 * k < out.shape[0] else out[:k]


def overlap_counts(query, indptr, indices):
    """``|query ∩ row|`` for every CSR row ``indices[indptr[r]:indptr[r + 1]]`` (int64)."""
    cdef const u64[::1] qv = as_u64(query, "query")
    cdef const u64[::1] iv = as_u64(indices, "indices")
    cdef const i64[::1] pv = as_indptr(indptr, iv.shape[0])
    cdef Py_ssize_t nrows = pv.shape[0] - 1
    out = np.zeros(nrows, dtype=np.int64)
    if nrows == 0:
        return out
    cdef i64[::1] ov = out
    cdef const u64 *pq = _ptr(qv)
    cdef const u64 *pi = _ptr(iv)
    cdef Py_ssize_t nq = qv.shape[0]
    cdef int rc
    with nogil:
        rc = _overlap_counts(pq, nq, &pv[0], nrows, pi, &ov[0])
    if rc == -1:
        raise ValueError("indptr must be non-decreasing")
    if rc == -2:
        raise MemoryError("overlap_counts: cannot allocate the query bitmap")
    return out


def top_k(query, indptr, indices, k):
    """Rows with the ``k`` largest positive overlaps: ``(row_ids, counts)``, int64 arrays,
    by count descending then row id ascending; rows with no overlap are not returned."""
    return select_top_k(overlap_counts(query, indptr, indices), k)
