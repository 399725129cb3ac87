# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bulk re-match of address books against the member registry (compiled kernel).

``bulk_match`` runs in four passes, all C loops without the GIL:

1. one batch ``member_index.lookup`` over every book key (the compiled KeyIndex releases the
   GIL and prefetches), then the optional ``owner_of_member`` mapping and the checks;
2. per book: the hits packed as ``other << 32 | position`` and sorted (introsort on a
   row-sized scratch buffer), so the unique others come out ascending with their first key;
   the misses deduplicated as phonebook keys through a small per-book hash set (in book
   order: sorting them cost as much as everything else together). Books are visited in owner order, so
   the edge codes ``owner << 32 | other`` come out globally sorted and unique without a global
   sort (a 30M-key sort would cost more than the lookup);
3. the edge list transposed by counting sort (CSR of in-edges: for each user, the ascending
   owners whose book holds one of its keys);
4. per user, ``out-neighbours ∩ in-neighbours`` by merge (galloping when one side is more
   than ``GALLOP_RATIO`` times the other): exactly the edges whose reverse
   ``other << 32 | owner`` is also an edge — the mutual ones.

``reverse_holders`` binary-searches every book key in the sorted query keys and groups the
hits by counting sort (holders ascending, deduplicated).
"""

import numpy as np

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

from befriend.core._arrays import as_indptr, as_u64
from befriend.core._pymatch import MAX_USERS, MatchResult

ctypedef uint64_t u64
ctypedef int64_t i64
ctypedef uint32_t u32

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    /* introsort of uint64 (median of three, heapsort past 2 log n levels, insertion < 24) */
    static void bf_isort(uint64_t *a, ptrdiff_t n) {
        for (ptrdiff_t i = 1; i < n; i++) {
            uint64_t x = a[i]; ptrdiff_t j = i;
            while (j > 0 && a[j - 1] > x) { a[j] = a[j - 1]; j--; }
            a[j] = x;
        }
    }
    static void bf_sift(uint64_t *a, ptrdiff_t i, ptrdiff_t n) {
        uint64_t x = a[i];
        for (;;) {
            ptrdiff_t c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && a[c + 1] > a[c]) c++;
            if (a[c] <= x) break;
            a[i] = a[c]; i = c;
        }
        a[i] = x;
    }
    static void bf_hsort(uint64_t *a, ptrdiff_t n) {
        for (ptrdiff_t i = n / 2 - 1; i >= 0; i--) bf_sift(a, i, n);
        for (ptrdiff_t i = n - 1; i > 0; i--) {
            uint64_t t = a[0]; a[0] = a[i]; a[i] = t; bf_sift(a, 0, i);
        }
    }
    static void bf_introsort(uint64_t *a, ptrdiff_t n, int depth) {
        while (n > 24) {
            if (depth-- == 0) { bf_hsort(a, n); return; }
            uint64_t x = a[0], y = a[n / 2], z = a[n - 1], p;
            p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
            ptrdiff_t i = -1, j = n;
            for (;;) {  /* Hoare partition: a[0..j] <= p <= a[j+1..n) */
                do i++; while (a[i] < p);
                do j--; while (a[j] > p);
                if (i >= j) break;
                uint64_t t = a[i]; a[i] = a[j]; a[j] = t;
            }
            ptrdiff_t nl = j + 1;
            if (nl < n - nl) { bf_introsort(a, nl, depth); a += nl; n -= nl; }
            else { bf_introsort(a + nl, n - nl, depth); n = nl; }
        }
        bf_isort(a, n);
    }
    static void bf_sort_u64(uint64_t *a, ptrdiff_t n) {
        int depth = 0;
        for (ptrdiff_t m = n; m > 1; m >>= 1) depth += 2;
        bf_introsort(a, n, depth);
    }
    """
    void bf_sort_u64(u64 *a, Py_ssize_t n) noexcept nogil

EMPTY_KEY = 0xFFFFFFFFFFFFFFFF
cdef u64 EMPTY = 0xFFFFFFFFFFFFFFFFULL
cdef u64 LOW32 = 0xFFFFFFFFULL
cdef u64 C_MAX_USERS = 0xFFFFFFFFULL
cdef Py_ssize_t GALLOP_RATIO = 32


# ---------------------------------------------------------------------------------------------
# nogil kernels
# ---------------------------------------------------------------------------------------------

cdef int _check_indptr(const i64 *indptr, Py_ssize_t n_books) noexcept nogil:
    cdef Py_ssize_t u
    for u in range(n_books):
        if indptr[u + 1] < indptr[u]:
            return -1
    return 0


cdef int _map_members(u64 *vals, Py_ssize_t n, const u64 *om, Py_ssize_t nom) noexcept nogil:
    """``vals[i] = om[vals[i]]`` (when ``om`` is given), then the range check.

    -3: a value is out of range for ``om``; -4: a member index >= MAX_USERS.
    """
    cdef Py_ssize_t i
    cdef u64 v
    cdef bint bad = 0
    if om != NULL:
        for i in range(n):
            v = vals[i]
            if v != EMPTY:
                if v >= <u64>nom:
                    return -3
                vals[i] = om[v]
    for i in range(n):  # branch-free: most keys miss or hit at random
        v = vals[i]
        bad |= (v != EMPTY) & (v >= C_MAX_USERS)
    return -4 if bad else 0


cdef void _count(const i64 *indptr, Py_ssize_t n_books, const u64 *keys, const u64 *vals,
                 Py_ssize_t *n_hit, Py_ssize_t *n_miss, Py_ssize_t *max_row) noexcept nogil:
    """Upper bounds of the edges and phonebook entries, and the longest book."""
    cdef Py_ssize_t u, i, base = indptr[0], h = 0, m = 0, mr = 0
    cdef u64 k, v
    for u in range(n_books):
        if indptr[u + 1] - indptr[u] > mr:
            mr = indptr[u + 1] - indptr[u]
    for i in range(indptr[n_books] - base):
        k = keys[i]
        v = vals[i]
        h += (k != EMPTY) & (v != EMPTY)
        m += (k != EMPTY) & (v == EMPTY)
    n_hit[0] = h
    n_miss[0] = m
    max_row[0] = mr


cdef void _rows(const i64 *indptr, Py_ssize_t n_books, const u64 *keys, const u64 *vals,
                u64 *hits, u64 *seen_key, u32 *seen_gen, int bits, i64 *e_ptr, i64 *e_owner,
                i64 *e_other, u64 *e_key, i64 *p_owner, u64 *p_key,
                Py_ssize_t *n_p) noexcept nogil:
    """Pass 2: per book, sorted unique edges (first key each) and phonebook keys.

    ``keys``/``vals`` start at ``indptr[0]``; ``hits`` is scratch of the longest book's
    length; ``seen_key``/``seen_gen`` a hash set of ``2**bits`` slots (at least twice the
    longest book) that dedupes the phonebook keys, a slot being live when its generation is
    the current book's (no clearing between books); ``e_ptr[u]`` receives the first edge of
    book ``u``. Phonebook keys come out in book order (first occurrence).
    """
    cdef Py_ssize_t u, i, s, e, nh, ne = 0, np_ = 0, base = indptr[0]
    cdef u64 v, k, c, prev, mask = ((<u64>1) << bits) - 1, h
    cdef int shift = 64 - bits
    cdef u32 gen
    e_ptr[0] = 0
    for u in range(n_books):
        s = indptr[u] - base
        e = indptr[u + 1] - base
        gen = <u32>u + 1
        nh = 0
        for i in range(s, e):
            k = keys[i]
            if k == EMPTY:
                continue
            v = vals[i]
            if v == EMPTY:
                h = (k * 0x9E3779B97F4A7C15ULL) >> shift
                while seen_gen[h] == gen and seen_key[h] != k:
                    h = (h + 1) & mask
                if seen_gen[h] != gen:
                    seen_gen[h] = gen
                    seen_key[h] = k
                    p_owner[np_] = u
                    p_key[np_] = k
                    np_ += 1
            elif v != <u64>u:
                hits[nh] = (v << 32) | <u64>(i - s)
                nh += 1
        if nh > 1:
            bf_sort_u64(hits, nh)
        prev = EMPTY
        for i in range(nh):
            c = hits[i] >> 32
            if c != prev:
                e_owner[ne] = u
                e_other[ne] = <i64>c
                e_key[ne] = keys[s + <Py_ssize_t>(hits[i] & LOW32)]
                ne += 1
                prev = c
        e_ptr[u + 1] = ne
    n_p[0] = np_


cdef void _transpose(const i64 *e_ptr, Py_ssize_t n_books, const i64 *e_other, i64 *in_ptr,
                     i64 *fill, u32 *in_src) noexcept nogil:
    """Pass 3: CSR of in-edges among books: ``in_src[in_ptr[v]:in_ptr[v+1]]`` = the owners
    (ascending) with an edge to ``v``, for ``v < n_books``."""
    cdef Py_ssize_t u, t
    cdef i64 v
    for u in range(n_books + 1):
        in_ptr[u] = 0
    for t in range(e_ptr[n_books]):
        v = e_other[t]
        if v < n_books:
            in_ptr[v + 1] += 1
    for u in range(n_books):
        in_ptr[u + 1] += in_ptr[u]
        fill[u] = in_ptr[u]
    for u in range(n_books):
        for t in range(e_ptr[u], e_ptr[u + 1]):
            v = e_other[t]
            if v < n_books:
                in_src[fill[v]] = <u32>u
                fill[v] += 1


cdef inline Py_ssize_t _gallop_i64(const i64 *l, Py_ssize_t lo, Py_ssize_t n, i64 x) noexcept nogil:
    """First p in [lo, n] with p == n or l[p] >= x."""
    if lo >= n or l[lo] >= x:
        return lo
    cdef Py_ssize_t prev = lo, step = 1, hi = lo + 1, mid
    while hi < n and l[hi] < x:
        prev = hi
        step <<= 1
        hi = lo + step
    if hi > n:
        hi = n
    lo = prev + 1
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if l[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _gallop_u32(const u32 *l, Py_ssize_t lo, Py_ssize_t n, u32 x) noexcept nogil:
    if lo >= n or l[lo] >= x:
        return lo
    cdef Py_ssize_t prev = lo, step = 1, hi = lo + 1, mid
    while hi < n and l[hi] < x:
        prev = hi
        step <<= 1
        hi = lo + step
    if hi > n:
        hi = n
    lo = prev + 1
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if l[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void _mutual(const i64 *e_ptr, Py_ssize_t n_books, const i64 *e_other, const i64 *in_ptr,
                  const u32 *in_src, unsigned char *mutual) noexcept nogil:
    """Pass 4: ``mutual[t]`` for edge t = (u, v) iff v is among u's in-neighbours."""
    cdef Py_ssize_t u, i, j, ni, nj, p
    cdef const i64 *out
    cdef const u32 *inn
    cdef unsigned char *m
    cdef i64 x, y
    for u in range(n_books):
        out = e_other + e_ptr[u]
        ni = e_ptr[u + 1] - e_ptr[u]
        inn = in_src + in_ptr[u]
        nj = in_ptr[u + 1] - in_ptr[u]
        m = mutual + e_ptr[u]
        if ni == 0 or nj == 0:
            continue
        if ni > nj * GALLOP_RATIO:  # few in-neighbours: find each among the out-edges
            p = 0
            for j in range(nj):
                p = _gallop_i64(out, p, ni, <i64>inn[j])
                if p == ni:
                    break
                if out[p] == <i64>inn[j]:
                    m[p] = 1
                    p += 1
        elif nj > ni * GALLOP_RATIO:  # a popular user: find each out-edge among the in-edges
            p = 0
            for i in range(ni):
                if out[i] >= n_books:
                    break
                p = _gallop_u32(inn, p, nj, <u32>out[i])
                if p == nj:
                    break
                if <i64>inn[p] == out[i]:
                    m[i] = 1
                    p += 1
        else:
            i = 0
            j = 0
            while i < ni and j < nj:
                x = out[i]
                y = <i64>inn[j]
                m[i] = x == y
                i += x <= y
                j += y <= x


cdef inline Py_ssize_t _bsearch(const u64 *q, Py_ssize_t n, u64 x) noexcept nogil:
    """Index of ``x`` in sorted ``q`` or -1."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if q[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and q[lo] == x else -1


cdef Py_ssize_t _holders(const i64 *indptr, Py_ssize_t n_books, const u64 *keys, const u64 *uq,
                         Py_ssize_t nq, i64 *slot, i64 *h_ptr, i64 *fill,
                         i64 *holders) noexcept nogil:
    """CSR of distinct holders per unique query key; ``keys`` start at ``indptr[0]``.

    ``slot`` is scratch of one entry per book key. Returns the number of holders.
    """
    cdef Py_ssize_t u, i, s, t, base = indptr[0], n = indptr[n_books] - indptr[0], k
    for t in range(nq + 1):
        h_ptr[t] = 0
    for i in range(n):
        slot[i] = -1 if keys[i] == EMPTY else _bsearch(uq, nq, keys[i])
    # a key twice in one book counts once: keep a slot's first hit per book
    for u in range(n_books):
        for i in range(indptr[u] - base, indptr[u + 1] - base):
            s = slot[i]
            if s >= 0:
                if h_ptr[s + 1] > 0 and fill[s] == u:
                    slot[i] = -1
                    continue
                fill[s] = u
                h_ptr[s + 1] += 1
    for t in range(nq):
        h_ptr[t + 1] += h_ptr[t]
        fill[t] = h_ptr[t]
    for u in range(n_books):
        for i in range(indptr[u] - base, indptr[u + 1] - base):
            s = slot[i]
            if s >= 0:
                holders[fill[s]] = u
                fill[s] += 1
    return h_ptr[nq]


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

def _books(book_indptr, book_keys):
    keys = as_u64(book_keys, "book_keys")
    indptr = as_indptr(book_indptr, keys.shape[0])
    if indptr.shape[0] - 1 > MAX_USERS:
        raise ValueError(f"at most {MAX_USERS} books (user indices are 32-bit)")
    cdef const i64[::1] pv = indptr
    cdef Py_ssize_t n_books = pv.shape[0] - 1
    cdef int rc
    with nogil:
        rc = _check_indptr(&pv[0], n_books)
    if rc:
        raise ValueError("indptr must be non-decreasing")
    return indptr, keys


def _trim(a, n):
    """The first ``n`` entries; a copy when that frees most of ``a``."""
    return a[:n].copy() if 2 * n < a.shape[0] else a[:n]


def bulk_match(book_indptr, book_keys, member_index, owner_of_member=None):
    """Match every book against ``member_index``; see ``befriend.core.match.bulk_match``."""
    indptr, keys = _books(book_indptr, book_keys)
    cdef const i64[::1] pv = indptr
    cdef Py_ssize_t n_books = pv.shape[0] - 1
    cdef Py_ssize_t base = pv[0], n = pv[n_books] - pv[0]
    sub = keys[base : base + n]
    vals = np.asarray(member_index.lookup(sub, missing=EMPTY_KEY))
    if vals.dtype != np.uint64 or not vals.flags.c_contiguous or not vals.flags.writeable:
        vals = np.array(vals, dtype=np.uint64)
    if vals.ndim != 1 or vals.shape[0] != n:
        raise ValueError("member_index.lookup returned the wrong number of values")
    if n == 0:  # keep every pointer below valid
        sub = np.zeros(1, dtype=np.uint64)
        vals = np.zeros(1, dtype=np.uint64)
    cdef const u64[::1] kv = sub
    cdef u64[::1] vv = vals
    cdef const u64[::1] omv
    cdef const u64 *om = NULL
    cdef Py_ssize_t nom = 0
    if owner_of_member is not None:
        omv = np.append(as_u64(owner_of_member, "owner_of_member"), np.uint64(0))
        nom = omv.shape[0] - 1
        om = &omv[0]
    cdef int rc
    cdef Py_ssize_t n_hit = 0, n_miss = 0, max_row = 0
    with nogil:
        rc = _map_members(&vv[0], n, om, nom)
    if rc == -3:
        raise ValueError("a member_index value is out of range for owner_of_member")
    if rc == -4:
        raise ValueError(f"member user indices must be < {MAX_USERS}")
    with nogil:
        _count(&pv[0], n_books, &kv[0], &vv[0], &n_hit, &n_miss, &max_row)

    # + 1 everywhere: never empty, so &x[0] is always valid
    e_owner = np.empty(n_hit + 1, dtype=np.int64)
    e_other = np.empty(n_hit + 1, dtype=np.int64)
    e_key = np.empty(n_hit + 1, dtype=np.uint64)
    p_owner = np.empty(n_miss + 1, dtype=np.int64)
    p_key = np.empty(n_miss + 1, dtype=np.uint64)
    e_ptr = np.empty(n_books + 1, dtype=np.int64)
    scratch = np.empty(max_row + 1, dtype=np.uint64)
    cdef int bits = 6
    while (<Py_ssize_t>1 << bits) < 2 * max_row:
        bits += 1
    seen_key = np.empty(1 << bits, dtype=np.uint64)
    seen_gen = np.zeros(1 << bits, dtype=np.uint32)  # generation 0: never a book's
    cdef i64[::1] eo = e_owner
    cdef i64[::1] et = e_other
    cdef u64[::1] ek = e_key
    cdef i64[::1] po = p_owner
    cdef u64[::1] pk = p_key
    cdef i64[::1] ep = e_ptr
    cdef u64[::1] sc = scratch
    cdef u64[::1] skv = seen_key
    cdef u32[::1] sgv = seen_gen
    cdef Py_ssize_t n_p = 0
    with nogil:
        _rows(&pv[0], n_books, &kv[0], &vv[0], &sc[0], &skv[0], &sgv[0], bits, &ep[0], &eo[0],
              &et[0], &ek[0], &po[0], &pk[0], &n_p)
    del vv, vals, sc, scratch, skv, sgv, seen_key, seen_gen
    cdef Py_ssize_t ne = ep[n_books]

    in_ptr = np.empty(n_books + 1, dtype=np.int64)
    fill = np.empty(n_books + 1, dtype=np.int64)
    in_src = np.empty(ne + 1, dtype=np.uint32)
    mutual = np.zeros(ne + 1, dtype=np.uint8)
    cdef i64[::1] ip = in_ptr
    cdef i64[::1] fv = fill
    cdef u32[::1] isv = in_src
    cdef unsigned char[::1] mv = mutual
    with nogil:
        _transpose(&ep[0], n_books, &et[0], &ip[0], &fv[0], &isv[0])
        _mutual(&ep[0], n_books, &et[0], &ip[0], &isv[0], &mv[0])
    return MatchResult(
        owner=_trim(e_owner, ne),
        other=_trim(e_other, ne),
        key=_trim(e_key, ne),
        mutual=_trim(mutual.view(np.bool_), ne),
        phonebook_owner=_trim(p_owner, n_p),
        phonebook_key=_trim(p_key, n_p),
    )


def reverse_holders(book_indptr, book_keys, keys):
    """Who holds each of ``keys``; see ``befriend.core.match.reverse_holders``."""
    indptr, bkeys = _books(book_indptr, book_keys)
    q = as_u64(keys, "keys")
    uq, inv = np.unique(q, return_inverse=True)
    uq = np.ascontiguousarray(uq, dtype=np.uint64)
    cdef const i64[::1] pv = indptr
    cdef Py_ssize_t n_books = pv.shape[0] - 1
    cdef Py_ssize_t base = pv[0], n = pv[n_books] - pv[0], nq = uq.shape[0], nh
    sub = np.append(bkeys[base : base + n], np.uint64(0))
    cdef const u64[::1] kv = sub
    cdef const u64[::1] qv = np.append(uq, np.uint64(0))
    slot = np.empty(n + 1, dtype=np.int64)
    h_ptr = np.empty(nq + 1, dtype=np.int64)
    fill = np.empty(nq + 1, dtype=np.int64)
    holders = np.empty(n + 1, dtype=np.int64)
    cdef i64[::1] sv = slot
    cdef i64[::1] hp = h_ptr
    cdef i64[::1] fv = fill
    cdef i64[::1] hv = holders
    with nogil:
        nh = _holders(&pv[0], n_books, &kv[0], &qv[0], nq, &sv[0], &hp[0], &fv[0], &hv[0])
    holders = holders[:nh]
    counts = np.diff(h_ptr)[inv] if q.shape[0] else np.zeros(0, dtype=np.int64)
    out_ptr = np.zeros(q.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    # gather rows: position j of output row i comes from h_ptr[inv[i]] + (j - out_ptr[i])
    row = np.repeat(np.arange(q.shape[0], dtype=np.int64), counts)
    src = np.asarray(h_ptr)[inv][row] + (np.arange(out_ptr[q.shape[0]], dtype=np.int64) - out_ptr[row])
    return out_ptr, holders[src]
