# cython: language_level=3
"""Compiled normalisation kernel: same API and results as ``befriend.core._pynormalize``.

Fast path (no ``phonenumbers`` call): inputs made of digits (ASCII or full-width), one leading
``+`` and separators (space, ``-``, ``.``, ``/``, parentheses, NBSP and their full-width
forms), read under a prepared default region, or with ``+`` / a dial-out prefix and a
prepared country calling code. The fast path replays ``phonenumbers.parse`` step by step
(dial-out prefix, country code, default-country-code stripping, national-prefix stripping,
length tests) and ``phonenumbers``' validity / type / region decision, on tables compiled at
import time from ``phonenumbers``' own metadata: every ``national_number_pattern`` of a
region is converted into one deterministic automaton over the digits 0-9 whose accepting
states carry a bit per number type, so a single pass over the national significant number
yields every pattern that matches it. Regular-expression constructs outside the subset used
by the metadata (digits, ``\\d``, classes, groups, ``|``, ``?``, ``*``, ``+``, ``{m,n}``) make
a region unprepared, never wrong. The seed rescues of the reference are replayed too.

Anything else (extensions, letters, other scripts, unprepared regions, a parse error,
ambiguous prefixes) takes the reference code path, ``_pynormalize.normalize_slow``; those
results are memoised in a bounded dict keyed by (raw, region, weak_digits).
"""

from libc.stdint cimport int8_t, int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc
from libc.string cimport memcpy
from cpython.unicode cimport PyUnicode_DecodeASCII

cimport numpy as cnp

import numpy as np
import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from befriend.core import _pynormalize as _py
from befriend.core._pynormalize import (
    CN_IP_PREFIXES,
    Normalized,
    NormalizedBatch,
    NumberType,
    Status,
    email_key,
    im_key,
)

cnp.import_array()

__all__ = [
    "CN_IP_PREFIXES",
    "Normalized",
    "NormalizedBatch",
    "NumberType",
    "Status",
    "email_key",
    "fast_regions",
    "im_key",
    "normalize",
    "normalize_many",
]

cdef extern from *:
    """
    #define BF_KIND(s) PyUnicode_KIND(s)
    #define BF_DATA(s) PyUnicode_DATA(s)
    #define BF_READ(k, d, i) PyUnicode_READ(k, d, i)
    """
    int BF_KIND(object s)
    void* BF_DATA(object s)
    uint32_t BF_READ(int k, void* d, Py_ssize_t i) nogil


# --------------------------------------------------------------------------------------------
# Regular expression (metadata subset) -> deterministic automaton over the digits 0-9
# --------------------------------------------------------------------------------------------

class _Unsupported(Exception):
    pass


_ALL = (1 << 10) - 1


def _parse_regex(p):
    """AST of a metadata pattern: ('set', mask) | ('cat', [..]) | ('alt', [..]) |
    ('rep', node, min, max_or_None)."""
    pos = 0
    n = len(p)

    def alt():
        nonlocal pos
        branches = [cat()]
        while pos < n and p[pos] == "|":
            pos += 1
            branches.append(cat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def cat():
        items = []
        while pos < n and p[pos] not in "|)":
            items.append(rep())
        return ("cat", items)

    def number():
        nonlocal pos
        start = pos
        while pos < n and p[pos].isdigit():
            pos += 1
        return int(p[start:pos]) if pos > start else None

    def rep():
        nonlocal pos
        node = atom()
        while pos < n and p[pos] in "?*+{":
            c = p[pos]
            pos += 1
            if c == "?":
                node = ("rep", node, 0, 1)
            elif c == "*":
                node = ("rep", node, 0, None)
            elif c == "+":
                node = ("rep", node, 1, None)
            else:
                lo = number()
                hi = lo
                if pos < n and p[pos] == ",":
                    pos += 1
                    hi = number()
                if lo is None or pos >= n or p[pos] != "}":
                    raise _Unsupported(p)
                pos += 1
                node = ("rep", node, lo, hi)
            if pos < n and p[pos] in "?+":  # lazy / possessive quantifiers
                raise _Unsupported(p)
        return node

    def atom():
        nonlocal pos
        c = p[pos]
        if c == "(":
            if p.startswith("(?:", pos):
                pos += 3
            elif pos + 1 < n and p[pos + 1] == "?":
                raise _Unsupported(p)
            else:
                pos += 1
            node = alt()
            if pos >= n or p[pos] != ")":
                raise _Unsupported(p)
            pos += 1
            return node
        if c == "[":
            pos += 1
            neg = pos < n and p[pos] == "^"
            if neg:
                pos += 1
            mask = 0
            while pos < n and p[pos] != "]":
                if p.startswith("\\d", pos):
                    mask |= _ALL
                    pos += 2
                    continue
                a = p[pos]
                if not a.isdigit():
                    raise _Unsupported(p)
                if pos + 2 < n and p[pos + 1] == "-" and p[pos + 2] != "]":
                    b = p[pos + 2]
                    if not b.isdigit():
                        raise _Unsupported(p)
                    for d in range(int(a), int(b) + 1):
                        mask |= 1 << d
                    pos += 3
                else:
                    mask |= 1 << int(a)
                    pos += 1
            if pos >= n:
                raise _Unsupported(p)
            pos += 1
            return ("set", (_ALL & ~mask) if neg else mask)
        if c == "\\":
            if pos + 1 < n and p[pos + 1] == "d":
                pos += 2
                return ("set", _ALL)
            raise _Unsupported(p)
        if c.isdigit():
            pos += 1
            return ("set", 1 << int(c))
        raise _Unsupported(p)

    tree = alt()
    if pos != n:
        raise _Unsupported(p)
    return tree


class _NFA:
    def __init__(self):
        self.eps = []
        self.edge = []

    def new(self):
        self.eps.append([])
        self.edge.append(None)
        return len(self.eps) - 1

    def build(self, node):
        kind = node[0]
        if kind == "set":
            s, e = self.new(), self.new()
            self.edge[s] = (node[1], e)
            return s, e
        if kind == "cat":
            s = self.new()
            cur = s
            for item in node[1]:
                a, b = self.build(item)
                self.eps[cur].append(a)
                cur = b
            return s, cur
        if kind == "alt":
            s, e = self.new(), self.new()
            for br in node[1]:
                a, b = self.build(br)
                self.eps[s].append(a)
                self.eps[b].append(e)
            return s, e
        _, sub, lo, hi = node
        s = self.new()
        cur = s
        for _ in range(lo):
            a, b = self.build(sub)
            self.eps[cur].append(a)
            cur = b
        if hi is None:
            loop = self.new()
            self.eps[cur].append(loop)
            a, b = self.build(sub)
            self.eps[loop].append(a)
            self.eps[b].append(loop)
            return s, loop
        end = self.new()
        for _ in range(hi - lo):
            self.eps[cur].append(end)
            a, b = self.build(sub)
            self.eps[cur].append(a)
            cur = b
        self.eps[cur].append(end)
        return s, end


def _dfa(patterns):
    """Subset construction for tagged patterns [(bit, pattern)].

    Returns (trans int32[n_states, 10], accept uint32[n_states]); state 0 is the dead state,
    state 1 the start. accept[s] has bit b set when the digits read so far fully match the
    pattern tagged b.
    """
    nfa = _NFA()
    start = nfa.new()
    tags = {}
    for bit, pattern in patterns:
        a, b = nfa.build(_parse_regex(pattern))
        nfa.eps[start].append(a)
        tags[b] = tags.get(b, 0) | (1 << bit)
    closures = []
    for q in range(len(nfa.eps)):
        seen = {q}
        stack = [q]
        while stack:
            x = stack.pop()
            for y in nfa.eps[x]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        closures.append(frozenset(seen))
    edges = [(q, e[0], e[1]) for q, e in enumerate(nfa.edge) if e is not None]
    edge_of = {q: (m, t) for q, m, t in edges}
    dead = frozenset()
    first = closures[start]
    index = {dead: 0, first: 1}
    order = [dead, first]
    trans = [[0] * 10, None]
    i = 1
    while i < len(order):
        cur = order[i]
        row = [0] * 10
        movers = [edge_of[q] for q in cur if q in edge_of]
        for d in range(10):
            bit = 1 << d
            nxt = set()
            for m, t in movers:
                if m & bit:
                    nxt |= closures[t]
            key = frozenset(nxt)
            j = index.get(key)
            if j is None:
                j = len(order)
                index[key] = j
                order.append(key)
                trans.append(None)
            row[d] = j
        trans[i] = row
        i += 1
    acc = [0] * len(order)
    for j, st in enumerate(order):
        m = 0
        for q in st:
            m |= tags.get(q, 0)
        acc[j] = m
    return np.array(trans, dtype=np.int32), np.array(acc, dtype=np.uint32)


def _fixed_alternatives(pattern):
    """Top-level alternatives of a prefix pattern as [(trans, acc, length)] when each one
    only matches strings of one length (so ``re.match`` = first alternative whose fixed-length
    prefix is in its language); raises _Unsupported otherwise."""
    tree = _parse_regex(pattern)
    branches = tree[1] if tree[0] == "alt" else [tree]
    out = []
    for br in branches:
        nfa_pattern = _unparse(br)
        trans, acc = _dfa([(0, nfa_pattern)])
        lengths = set()
        frontier = {1}
        depth = 0
        while frontier:
            if depth > 32:
                raise _Unsupported(pattern)
            for s in frontier:
                if acc[s]:
                    lengths.add(depth)
            frontier = {int(trans[s, d]) for s in frontier for d in range(10)} - {0}
            depth += 1
        if len(lengths) != 1:
            raise _Unsupported(pattern)
        out.append((trans, acc, lengths.pop()))
    return out


def _match_end_table(pattern, max_len=4):
    """``re.match(pattern, s).end()`` (-1: no match) for every digit string s of length
    <= K, K the longest string the pattern can match (<= max_len), computed by Python's own
    ``re``; a longer input has the match end of its first K digits. None if K > max_len."""
    import re

    trans, acc = _dfa([(0, pattern)])
    depth, frontier, k = 0, {1}, 0
    while frontier:
        if depth > max_len:
            return None
        if any(acc[s] for s in frontier):
            k = depth
        frontier = {int(trans[s, d]) for s in frontier for d in range(10)} - {0}
        depth += 1
    rx = re.compile(pattern)
    offsets = []
    ends = []
    for L in range(k + 1):
        offsets.append(len(ends))
        for v in range(10**L):
            m = rx.match(str(v).zfill(L) if L else "")
            ends.append(m.end() if m else -1)
    return np.array(ends, dtype=np.int32), np.array(offsets, dtype=np.uint32), k


def _unparse(node):
    kind = node[0]
    if kind == "set":
        return "[" + "".join(str(d) for d in range(10) if node[1] >> d & 1) + "]"
    if kind == "cat":
        return "".join("(?:" + _unparse(x) + ")" for x in node[1])
    if kind == "alt":
        return "(?:" + "|".join(_unparse(x) for x in node[1]) + ")"
    _, sub, lo, hi = node
    return "(?:" + _unparse(sub) + "){%d,%s}" % (lo, "" if hi is None else hi)


# --------------------------------------------------------------------------------------------
# Region tables
# --------------------------------------------------------------------------------------------

DEF MAX_ALTS = 8
DEF MAX_CC_REGIONS = 32

# result of phonenumbers' _test_number_length
DEF TL_POSSIBLE = 0
DEF TL_LOCAL = 1
DEF TL_SHORT = 2
DEF TL_INVALID_LENGTH = 3
DEF TL_LONG = 4

DEF B_GEN = 0
DEF B_FIXED = 9
DEF B_MOBILE = 10
DEF T_UNKNOWN = 99

cdef struct RegionT:
    int32_t cc
    int32_t* trans
    uint32_t* acc
    uint32_t lenmask[11]
    int same_fm
    int8_t testlen[64]
    int32_t* ld_trans  # leading digits (prefix match), NULL if none
    uint32_t* ld_acc
    int n_np  # national prefix for parsing: fixed-length alternatives
    int32_t* np_trans[MAX_ALTS]
    uint32_t* np_acc[MAX_ALTS]
    int np_len[MAX_ALTS]
    int idd_mode  # 0 none, 1 fixed-length alternatives, 2 prefix check only (fall back)
    int n_idd
    int32_t* idd_trans[MAX_ALTS]
    uint32_t* idd_acc[MAX_ALTS]
    int idd_len[MAX_ALTS]
    int national_ok  # usable as the default region of national input
    char cc_str[4]
    int cc_len

cdef struct CCT:
    int n
    int ids[MAX_CC_REGIONS]

# The order of desc bits is phonenumbers' order in _number_type_helper.
_DESCS = (
    "general_desc",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)

#: Country calling codes prepared for the fast path (their every region), and the default
#: regions prepared for national input. Extending them only costs import time.
FAST_CALLING_CODES = tuple(sorted(COUNTRY_CODE_TO_REGION_CODE))

cdef RegionT* _R = NULL
cdef CCT* _C = NULL
cdef int _CC_MAP[1000]  # -1 unknown code, -2 known but not prepared, >= 0 index into _C
cdef list _KEEP = []  # numpy arrays backing the raw pointers
cdef list _REGION_CODES = []
cdef dict _REGION_ID = {}
cdef dict _HOME = {}


cdef int32_t* _i32(object arr):
    a = np.ascontiguousarray(arr, dtype=np.int32)
    _KEEP.append(a)
    return <int32_t*> cnp.PyArray_DATA(a)


cdef uint32_t* _u32(object arr):
    a = np.ascontiguousarray(arr, dtype=np.uint32)
    _KEEP.append(a)
    return <uint32_t*> cnp.PyArray_DATA(a)


def _region_tables(code):
    """Python-side tables of one region, or raise _Unsupported."""
    m = PhoneMetadata.metadata_for_region(code, None)
    if m is None or m.general_desc is None or not m.general_desc.national_number_pattern:
        raise _Unsupported(code)
    patterns = []
    lenmasks = []
    for bit, name in enumerate(_DESCS):
        desc = getattr(m, name)
        if desc is None or not desc.national_number_pattern:
            lenmasks.append(0)
            continue
        lengths = tuple(desc.possible_length or ())
        if lengths:
            mask = 0
            for L in lengths:
                if 0 <= L < 32:
                    mask |= 1 << L
        else:
            mask = 0xFFFFFFFF
        lenmasks.append(mask)
        patterns.append((bit, desc.national_number_pattern))
    trans, acc = _dfa(patterns)
    general = tuple(m.general_desc.possible_length or ())
    if not general:
        raise _Unsupported(code)
    local = tuple(m.general_desc.possible_length_local_only or ())
    testlen = []
    for L in range(64):
        if L in local:
            testlen.append(TL_LOCAL)
        elif general[0] == L:
            testlen.append(TL_POSSIBLE)
        elif general[0] > L:
            testlen.append(TL_SHORT)
        elif general[len(general) - 1] < L:
            testlen.append(TL_LONG)
        elif L in general[1:]:
            testlen.append(TL_POSSIBLE)
        else:
            testlen.append(TL_INVALID_LENGTH)
    leading = None
    if m.leading_digits is not None:
        leading = _dfa([(0, m.leading_digits)])
    transform = bool(m.national_prefix_transform_rule)
    np_alts = []
    npp = m.national_prefix_for_parsing
    np_ok = not transform
    if npp:
        try:
            np_alts = _fixed_alternatives(npp)
        except _Unsupported:
            np_ok = False
        if len(np_alts) > MAX_ALTS:
            np_ok = False
    idd_mode = 0
    idd_alts = []
    if m.international_prefix:
        try:
            idd_alts = _fixed_alternatives(m.international_prefix)
            idd_mode = 1
            if len(idd_alts) > MAX_ALTS:
                raise _Unsupported(code)
        except _Unsupported:
            idd_mode = 2
            idd_alts = [(*_dfa([(0, m.international_prefix)]), -1)]
            table = _match_end_table(m.international_prefix)
            if table is not None:
                idd_mode = 3
                idd_alts = [(table[0], table[1], table[2])]
    return dict(
        cc=m.country_code,
        trans=trans,
        acc=acc,
        lenmasks=lenmasks,
        same_fm=bool(m.same_mobile_and_fixed_line_pattern),
        testlen=testlen,
        leading=leading,
        np_ok=np_ok,
        np_alts=np_alts,
        idd_mode=idd_mode,
        idd_alts=idd_alts,
    )


cdef void _fill(RegionT* r, dict t):
    cdef int i
    r.cc = t["cc"]
    r.trans = _i32(t["trans"])
    r.acc = _u32(t["acc"])
    for i in range(11):
        r.lenmask[i] = t["lenmasks"][i]
    r.same_fm = t["same_fm"]
    for i in range(64):
        r.testlen[i] = t["testlen"][i]
    if t["leading"] is not None:
        r.ld_trans = _i32(t["leading"][0])
        r.ld_acc = _u32(t["leading"][1])
    r.national_ok = t["np_ok"]
    r.n_np = len(t["np_alts"])
    for i, (tr, ac, L) in enumerate(t["np_alts"]):
        r.np_trans[i] = _i32(tr)
        r.np_acc[i] = _u32(ac)
        r.np_len[i] = L
    r.idd_mode = t["idd_mode"]
    r.n_idd = len(t["idd_alts"])
    for i, (tr, ac, L) in enumerate(t["idd_alts"]):
        r.idd_trans[i] = _i32(tr)
        r.idd_acc[i] = _u32(ac)
        r.idd_len[i] = L
    s = str(r.cc).encode("ascii")
    r.cc_len = len(s)
    memcpy(r.cc_str, <char*> s, r.cc_len)


def _prepare():
    global _R, _C
    groups = []
    for cc in FAST_CALLING_CODES:
        regions = COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
        if not regions or len(regions) > MAX_CC_REGIONS or "001" in regions:
            continue
        try:
            tables = [(code, _region_tables(code)) for code in regions]
        except _Unsupported:
            continue
        if not tables[0][1]["np_ok"]:  # the main region's rules strip national prefixes
            continue
        groups.append((cc, tables))
    n_regions = sum(len(t) for _, t in groups)
    _R = <RegionT*> calloc(max(n_regions, 1), sizeof(RegionT))
    _C = <CCT*> calloc(max(len(groups), 1), sizeof(CCT))
    if _R == NULL or _C == NULL:
        raise MemoryError()
    cdef int i
    for i in range(1000):
        _CC_MAP[i] = -2 if i in COUNTRY_CODE_TO_REGION_CODE else -1
    rid = 0
    for gi, (cc, tables) in enumerate(groups):
        _CC_MAP[cc] = gi
        _C[gi].n = len(tables)
        for j, (code, t) in enumerate(tables):
            _fill(&_R[rid], t)
            _C[gi].ids[j] = rid
            _REGION_CODES.append(code)
            _REGION_ID[code] = rid
            # national input: the region must be its code's main region (phonenumbers then
            # strips with this region's own metadata) with supported prefix rules
            if j == 0 and _R[rid].national_ok and _R[rid].idd_mode != 0:
                _HOME[code] = rid
            rid += 1


_prepare()


def fast_regions():
    """(default regions with a national fast path, calling codes with an E.164 fast path)."""
    return (
        tuple(sorted(_HOME)),
        tuple(sorted(cc for cc in range(1000) if _CC_MAP[cc] >= 0)),
    )


# --------------------------------------------------------------------------------------------
# C-level replay of phonenumbers.parse + is_valid_number + number_type
# --------------------------------------------------------------------------------------------

cdef struct Out:
    int status
    int ntype
    int cc
    int region  # region id or -1
    const char* nsn
    int nsn_len


cdef inline uint32_t _full(const int32_t* t, const uint32_t* a, const char* s, int n) noexcept nogil:
    cdef int32_t st = 1
    cdef int i
    for i in range(n):
        st = t[st * 10 + (s[i] - 48)]
        if st == 0:
            return 0
    return a[st]


cdef inline bint _prefix(const int32_t* t, const uint32_t* a, const char* s, int n) noexcept nogil:
    cdef int32_t st = 1
    cdef int i
    if a[st]:
        return True
    for i in range(n):
        st = t[st * 10 + (s[i] - 48)]
        if st == 0:
            return False
        if a[st]:
            return True
    return False


cdef inline bint _gen(const RegionT* r, const char* s, int n) noexcept nogil:
    return (_full(r.trans, r.acc, s, n) >> B_GEN) & 1


cdef inline int _testlen(const RegionT* r, int n) noexcept nogil:
    return r.testlen[n] if n < 64 else TL_LONG


cdef int _type(const RegionT* r, const char* s, int n) noexcept nogil:
    cdef uint32_t m = _full(r.trans, r.acc, s, n)
    cdef int b
    if n >= 32:
        return T_UNKNOWN
    for b in range(11):
        if not ((r.lenmask[b] >> n) & 1):
            m &= ~(<uint32_t> 1 << b)
    if not (m & 1):
        return T_UNKNOWN
    if m & (1 << 1):
        return 4  # PREMIUM_RATE
    if m & (1 << 2):
        return 3  # TOLL_FREE
    if m & (1 << 3):
        return 5  # SHARED_COST
    if m & (1 << 4):
        return 6  # VOIP
    if m & (1 << 5):
        return 7  # PERSONAL_NUMBER
    if m & (1 << 6):
        return 8  # PAGER
    if m & (1 << 7):
        return 9  # UAN
    if m & (1 << 8):
        return 10  # VOICEMAIL
    if m & (1 << B_FIXED):
        if r.same_fm or (m & (1 << B_MOBILE)):
            return 2  # FIXED_LINE_OR_MOBILE
        return 0  # FIXED_LINE
    if (not r.same_fm) and (m & (1 << B_MOBILE)):
        return 1  # MOBILE
    return T_UNKNOWN


cdef int _strip_np(const RegionT* r, const char* s, int n) noexcept nogil:
    """Digits phonenumbers' _maybe_strip_national_prefix_carrier_code removes (no transform)."""
    cdef int j, end = -1
    if n == 0 or r.n_np == 0:
        return 0
    for j in range(r.n_np):
        if r.np_len[j] <= n and _full(r.np_trans[j], r.np_acc[j], s, r.np_len[j]):
            end = r.np_len[j]
            break
    if end < 0:
        return 0
    if _gen(r, s, n) and not _gen(r, s + end, n - end):
        return 0
    return end


cdef int _region_for(const CCT* g, const char* s, int n) noexcept nogil:
    cdef int j
    cdef const RegionT* r
    if g.n == 1:
        return g.ids[0]
    for j in range(g.n):
        r = &_R[g.ids[j]]
        if r.ld_trans != NULL:
            if _prefix(r.ld_trans, r.ld_acc, s, n):
                return g.ids[j]
        elif _type(r, s, n) != T_UNKNOWN:
            return g.ids[j]
    return -1


cdef int _replay(const char* d, int n, bint plus, int home, Out* o) noexcept nogil:
    """1 when decided (o filled), 0 when the reference must decide."""
    cdef int off = 0, j, k, L, v, s1, s2, cc = 0, gi
    cdef const RegionT* h
    cdef const RegionT* meta
    cdef const char* nat
    cdef int natn
    cdef bint idd = False
    if not plus:
        if home < 0:
            return 0
        h = &_R[home]
        if h.idd_mode == 2:
            if _prefix(h.idd_trans[0], h.idd_acc[0], d, n):
                return 0
        elif h.idd_mode == 3:
            k = h.idd_len[0] if h.idd_len[0] < n else n
            v = 0
            for j in range(k):
                v = v * 10 + (d[j] - 48)
            L = h.idd_trans[0][h.idd_acc[0][k] + v]
            if L >= 0 and not (L < n and d[L] == 48):
                off = L
                idd = True
        else:
            for j in range(h.n_idd):
                L = h.idd_len[j]
                if L <= n and _full(h.idd_trans[j], h.idd_acc[j], d, L):
                    if not (L < n and d[L] == 48):  # a '0' after it: not a dial-out prefix
                        off = L
                        idd = True
                    break
        if not idd:
            cc = h.cc
            meta = h
            nat = d
            natn = n
            if n >= h.cc_len:
                k = 1
                for j in range(h.cc_len):
                    if d[j] != h.cc_str[j]:
                        k = 0
                        break
                if k:
                    s1 = _strip_np(h, d + h.cc_len, n - h.cc_len)
                    if (
                        (not _gen(h, d, n) and _gen(h, d + h.cc_len + s1, n - h.cc_len - s1))
                        or _testlen(h, n) == TL_LONG
                    ):
                        nat = d + h.cc_len + s1
                        natn = n - h.cc_len - s1
    if plus or idd:
        natn = n - off
        if natn <= 2 or d[off] == 48:
            return 0
        cc = -1
        v = 0
        for L in range(1, 4):
            if L > natn:
                break
            v = v * 10 + (d[off + L - 1] - 48)
            if _CC_MAP[v] != -1:
                cc = v
                break
        if cc < 0 or _CC_MAP[cc] < 0:
            return 0
        meta = &_R[_C[_CC_MAP[cc]].ids[0]]
        nat = d + off + L
        natn = natn - L
    gi = _CC_MAP[cc]
    if gi < 0 or natn < 2:
        return 0
    s2 = _strip_np(meta, nat, natn)
    if s2 > 0:
        k = _testlen(meta, natn - s2)
        if k != TL_SHORT and k != TL_LOCAL and k != TL_INVALID_LENGTH:
            nat += s2
            natn -= s2
    if natn < 2:
        return 0
    if natn > 17:  # phonenumbers raises TOO_LONG ("too long to be a phone number")
        o.status = 3
        o.region = -1
        o.ntype = T_UNKNOWN
        o.cc = cc
        o.nsn = nat
        o.nsn_len = natn
        return 1
    o.cc = cc
    o.nsn = nat
    o.nsn_len = natn
    o.region = _region_for(&_C[gi], nat, natn)
    o.ntype = _type(&_R[o.region], nat, natn) if o.region >= 0 else T_UNKNOWN
    if o.ntype != T_UNKNOWN:
        o.status = 0
        return 1
    k = _testlen(&_R[_C[gi].ids[0]], natn)
    o.status = 2 if k == TL_SHORT else (3 if k == TL_LONG else 1)
    return 1


cdef bint _cn_mobile(const char* s) noexcept nogil:
    cdef int i
    if s[0] != 49 or s[1] < 51:  # 1[3-9]
        return False
    for i in range(11):
        if s[i] < 48 or s[i] > 57:
            return False
    return True


cdef char _IP[11][5]
for _i, _p in enumerate(CN_IP_PREFIXES):
    for _j in range(5):
        _IP[_i][_j] = ord(_p[_j])
cdef int _N_IP = len(CN_IP_PREFIXES)
cdef int _HOME_CN = _HOME.get("CN", -1)
cdef int _HOME_HK = _HOME.get("HK", -1)


cdef int _try(const char* cand, int n, bint mobile_only, Out* o) noexcept nogil:
    """-1: reference needed; 1: candidate accepted (o filled); 0: rejected."""
    if not _replay(cand, n, True, -1, o):
        return -1
    if o.status == 0 and (not mobile_only or o.ntype == 1):
        return 1
    return 0


cdef int _rescue(const char* d, int n, int home, char* buf, Out* o) noexcept nogil:
    """Seed rescues (see _pynormalize._rescue_candidates), same order. buf: >= 24 bytes."""
    cdef int j, i, r, ln
    cdef bint ip
    if home != _HOME_CN and home != _HOME_HK:
        return 0
    if home == _HOME_CN:
        if n > 5:
            ip = False
            for j in range(_N_IP):
                ip = True
                for i in range(5):
                    if d[i] != _IP[j][i]:
                        ip = False
                        break
                if ip:
                    break
            if ip:
                ln = n - 5
                if ln == 11 and _cn_mobile(d + 5):
                    buf[0] = 56
                    buf[1] = 54
                    memcpy(buf + 2, d + 5, 11)
                    r = _try(buf, 13, False, o)
                    if r != 0:
                        return r
                elif d[5] == 48 and 10 <= ln <= 12:
                    buf[0] = 56
                    buf[1] = 54
                    memcpy(buf + 2, d + 6, ln - 1)
                    r = _try(buf, ln + 1, False, o)
                    if r != 0:
                        return r
        if n == 13 and d[0] == 56 and d[1] == 54 and _cn_mobile(d + 2):
            r = _try(d, 13, False, o)
            if r != 0:
                return r
        if n == 8 and d[0] >= 52:
            buf[0] = 56
            buf[1] = 53
            buf[2] = 50
            memcpy(buf + 3, d, 8)
            r = _try(buf, 11, d[0] == 52 or d[0] == 55 or d[0] == 56, o)
            if r != 0:
                return r
    if n == 11 and d[0] == 56 and d[1] == 53 and d[2] == 50:
        r = _try(d, 11, False, o)
        if r != 0:
            return r
    if n > 4 and d[0] == 48 and d[1] == 48 and d[2] != 48:
        r = _try(d + 2, n - 2, False, o)
        if r != 0:
            return r
    return 0


DEF MAXD = 40


cdef inline int _clean(object s, char* buf, bint* plus):
    """Digits of a fast-path-shaped string into buf; -1 when the shape is not accepted."""
    cdef Py_ssize_t n = len(s), i
    cdef int kind = BF_KIND(s), k = 0
    cdef void* data = BF_DATA(s)
    cdef uint32_t c
    plus[0] = False
    if n > 250:
        return -1
    for i in range(n):
        c = BF_READ(kind, data, i)
        if 48 <= c <= 57:
            if k >= MAXD:
                return -1
            buf[k] = <char> c
            k += 1
        elif 0xFF10 <= c <= 0xFF19:
            if k >= MAXD:
                return -1
            buf[k] = <char> (c - 0xFF10 + 48)
            k += 1
        elif c == 43 or c == 0xFF0B:
            if k or plus[0]:
                return -1
            plus[0] = True
        elif not (
            c == 32 or c == 45 or c == 46 or c == 47 or c == 40 or c == 41
            or c == 0xA0 or c == 0x3000 or c == 0x2007 or c == 0x202F
            or c == 0xFF08 or c == 0xFF09 or c == 0xFF0D or c == 0xFF0E or c == 0xFF0F
        ):
            return -1
    return k


cdef inline uint64_t _weak(const char* s, int n, int w) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    if n < w:
        return 0
    for i in range(n - w, n):
        v = v * 10 + <uint64_t> (s[i] - 48)
    return v


cdef int _fast(object raw, int home, int w, char* digits, char* e164, Out* o, uint64_t* key,
               uint64_t* weak, int* e164_len):
    """1 when the fast path decided (outputs filled), 0 when the reference must decide."""
    cdef bint plus
    cdef int n = _clean(raw, digits, &plus)
    cdef int r, i, L
    cdef char cand[24]
    cdef uint64_t v
    cdef Out alt
    if n < 3:
        return 0
    if not _replay(digits, n, plus, home, o):
        return 0
    if o.status != 0:
        if plus:
            r = 0
        else:
            r = _rescue(digits, n, home, cand, &alt)
        if r < 0:
            return 0
        if r == 1:
            # the candidate's nsn points into cand: copy it out before cand goes away
            memcpy(digits, alt.nsn, alt.nsn_len)
            alt.nsn = digits
            o[0] = alt
        else:  # the native failure stands; weak key from every digit found
            weak[0] = _weak(digits, n, w)
            key[0] = 0
            e164_len[0] = 0
            return 1
    # status OK: "+" cc nsn
    L = 0
    e164[L] = 43
    L += 1
    if o.cc >= 100:
        e164[L] = <char> (48 + o.cc // 100)
        L += 1
    if o.cc >= 10:
        e164[L] = <char> (48 + (o.cc // 10) % 10)
        L += 1
    e164[L] = <char> (48 + o.cc % 10)
    L += 1
    memcpy(e164 + L, o.nsn, o.nsn_len)
    L += o.nsn_len
    v = 0
    for i in range(1, L):
        v = v * 10 + <uint64_t> (e164[i] - 48)
    key[0] = v
    e164_len[0] = L
    weak[0] = _weak(o.nsn, o.nsn_len, w)
    return 1


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

cdef dict _MEMO = {}
DEF MEMO_MAX = 1 << 16

_STATUS = tuple(Status(i) for i in range(7))
_TYPES = {int(t): t for t in NumberType}


cdef object _slow(object raw, object region, int w):
    if type(raw) is not str:
        return _py.normalize_slow(raw, region, w)
    k = (raw, region, w)
    res = _MEMO.get(k)
    if res is None:
        res = _py.normalize_slow(raw, region, w)
        if len(_MEMO) >= MEMO_MAX:
            _MEMO.clear()
        _MEMO[k] = res
    return res


def normalize(raw, default_region, *, weak_digits=7):
    """Normalise one phone number (see ``befriend.core._pynormalize.normalize``)."""
    cdef int w = _py._check_weak(weak_digits)
    region = _py._region(default_region)
    cdef int home = _HOME.get(region, -1) if region is not None else -1
    cdef char digits[MAXD + 1]
    cdef char e164[32]
    cdef Out o
    cdef uint64_t key = 0, weak = 0
    cdef int L = 0
    if type(raw) is str and _fast(raw, home, w, digits, e164, &o, &key, &weak, &L):
        return Normalized(
            _STATUS[o.status],
            PyUnicode_DecodeASCII(e164, L, NULL),
            key,
            _TYPES[o.ntype if o.status == 0 else T_UNKNOWN],
            _REGION_CODES[o.region] if o.region >= 0 else "",
            weak,
        )
    return _slow(raw, region, w)


def normalize_many(raws, default_region, *, weak_digits=7):
    """Normalise a batch into numpy columns (see ``_pynormalize.normalize_many``)."""
    cdef int w = _py._check_weak(weak_digits)
    region = _py._region(default_region)
    cdef int home = _HOME.get(region, -1) if region is not None else -1
    items = raws if type(raws) is list else list(raws)
    cdef Py_ssize_t n = len(items), i
    status_a = np.zeros(n, dtype=np.uint8)
    key_a = np.zeros(n, dtype=np.uint64)
    type_a = np.zeros(n, dtype=np.uint8)
    weak_a = np.zeros(n, dtype=np.uint64)
    cdef uint8_t[::1] st = status_a
    cdef uint64_t[::1] ky = key_a
    cdef uint8_t[::1] ty = type_a
    cdef uint64_t[::1] wk = weak_a
    e164s = [""] * n
    regions = [""] * n
    cdef char digits[MAXD + 1]
    cdef char e164[32]
    cdef Out o
    cdef uint64_t key = 0, weak = 0
    cdef int L = 0
    cdef list region_codes = _REGION_CODES
    for i in range(n):
        raw = items[i]
        if type(raw) is str and _fast(raw, home, w, digits, e164, &o, &key, &weak, &L):
            st[i] = o.status
            ky[i] = key
            wk[i] = weak
            if o.status == 0:
                ty[i] = o.ntype
                e164s[i] = PyUnicode_DecodeASCII(e164, L, NULL)
            else:
                ty[i] = T_UNKNOWN
            if o.region >= 0:
                regions[i] = region_codes[o.region]
            continue
        res = _slow(raw, region, w)
        st[i] = res.status
        ky[i] = res.key
        ty[i] = res.number_type
        wk[i] = res.weak_key
        e164s[i] = res.e164
        regions[i] = res.region
    return NormalizedBatch(status_a, key_a, type_a, weak_a, e164s, regions)


def fast_path_decides(raw, default_region, *, weak_digits=7):
    """True when the compiled fast path answers ``raw`` without the reference (diagnostics)."""
    cdef int w = _py._check_weak(weak_digits)
    region = _py._region(default_region)
    cdef int home = _HOME.get(region, -1) if region is not None else -1
    cdef char digits[MAXD + 1]
    cdef char e164[32]
    cdef Out o
    cdef uint64_t key = 0, weak = 0
    cdef int L = 0
    return bool(type(raw) is str and _fast(raw, home, w, digits, e164, &o, &key, &weak, &L))


def clear_memo():
    """Empty the memo of reference-path results (benchmarks measure cold runs with it)."""
    _MEMO.clear()
