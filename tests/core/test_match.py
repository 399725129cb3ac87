"""Bulk re-match: compiled == reference == a naive Python-sets oracle, and explicit cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from befriend.core import PUREPYTHON, _pymatch, match
from befriend.core.index import EMPTY_KEY, KeyIndex
from befriend.core.match import MatchResult

U64 = np.uint64
Edges = dict[tuple[int, int], tuple[int, bool]]
Phonebook = set[tuple[int, int]]


def oracle(
    books: list[list[int]], members: dict[int, int]
) -> tuple[Edges, Phonebook, dict[int, set[int]]]:
    """Naive answer with dicts and sets: edges {(owner, other): (first key, mutual)},
    phonebook {(owner, key)} and holders {key: users}."""
    first: dict[tuple[int, int], int] = {}
    phonebook: Phonebook = set()
    holders: dict[int, set[int]] = {}
    for u, book in enumerate(books):
        for k in book:
            if k == EMPTY_KEY:
                continue
            holders.setdefault(k, set()).add(u)
            v = members.get(k)
            if v is None:
                phonebook.add((u, k))
            elif v != u and (u, v) not in first:
                first[(u, v)] = k
    edges = {(u, v): (k, (v, u) in first) for (u, v), k in first.items()}
    return edges, phonebook, holders


def to_csr(books: list[list[int]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    indptr = np.zeros(len(books) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(b) for b in books])
    keys = np.array([k for b in books for k in b], dtype=U64)
    return indptr, keys


def book_order(books: list[list[int]], members: dict[int, int]) -> list[tuple[int, int]]:
    """Phonebook entries as the API orders them: by owner, then first occurrence."""
    out: list[tuple[int, int]] = []
    for u, book in enumerate(books):
        mine = [k for k in book if k != EMPTY_KEY and k not in members]
        out += [(u, k) for k in dict.fromkeys(mine)]
    return out


def as_sets(r: MatchResult) -> tuple[Edges, Phonebook]:
    edges = {
        (u, v): (k, m)
        for u, v, k, m in zip(
            r.owner.tolist(), r.other.tolist(), r.key.tolist(), r.mutual.tolist(), strict=True
        )
    }
    return edges, set(zip(r.phonebook_owner.tolist(), r.phonebook_key.tolist(), strict=True))


def check_shape(r: MatchResult) -> None:
    assert r.owner.dtype == np.int64 and r.other.dtype == np.int64
    assert r.key.dtype == U64 and r.mutual.dtype == np.bool_
    assert r.phonebook_owner.dtype == np.int64 and r.phonebook_key.dtype == U64
    n, m = r.owner.shape[0], r.phonebook_owner.shape[0]
    assert r.other.shape == r.key.shape == r.mutual.shape == (n,)
    assert r.phonebook_key.shape == (m,)
    pairs = list(zip(r.owner.tolist(), r.other.tolist(), strict=True))
    assert pairs == sorted(set(pairs))  # sorted by (owner, other), unique
    pb = list(zip(r.phonebook_owner.tolist(), r.phonebook_key.tolist(), strict=True))
    assert len(pb) == len(set(pb)) and r.phonebook_owner.tolist() == sorted(r.phonebook_owner)


def same(a: MatchResult, b: MatchResult) -> None:
    for name in MatchResult._fields:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.tolist() == y.tolist(), name


def run(
    books: list[list[int]], members: dict[int, int], owner_of_member: Any = None
) -> MatchResult:
    """bulk_match through the facade, checked against the oracle and the reference."""
    indptr, keys = to_csr(books)
    if owner_of_member is None:
        index = KeyIndex.from_arrays(list(members), list(members.values()))
        effective = members
    else:  # members maps key -> slot; owner_of_member[slot] is the user (EMPTY: nobody)
        index = KeyIndex.from_arrays(list(members), list(members.values()))
        om = [int(x) for x in owner_of_member]
        effective = {k: om[s] for k, s in members.items() if om[s] != EMPTY_KEY}
    r = match.bulk_match(indptr, keys, index, owner_of_member)
    check_shape(r)
    edges, phonebook, holders = oracle(books, effective)
    assert as_sets(r) == (edges, phonebook)
    pb = list(zip(r.phonebook_owner.tolist(), r.phonebook_key.tolist(), strict=True))
    assert pb == book_order(books, effective)
    same(r, _pymatch.bulk_match(indptr, keys, index, owner_of_member))
    query = [*sorted(holders)[:50], EMPTY_KEY, 10**15]
    q_ptr, q_holders = match.reverse_holders(indptr, keys, query)
    assert q_ptr.dtype == np.int64 and q_holders.dtype == np.int64
    for i, k in enumerate(query):
        assert q_holders[q_ptr[i] : q_ptr[i + 1]].tolist() == sorted(holders.get(k, set()))
    p_ptr, p_holders = _pymatch.reverse_holders(indptr, keys, query)
    assert p_ptr.tolist() == q_ptr.tolist() and p_holders.tolist() == q_holders.tolist()
    return r


@st.composite
def populations(draw: st.DrawFn) -> tuple[list[list[int]], dict[int, int]]:
    """A few users over a small key universe; some keys are members (one or two per user,
    some users none), books draw from the universe with duplicates and self keys."""
    n_users = draw(st.integers(0, 12))
    universe = draw(st.integers(1, 30))
    keys = list(range(1000, 1000 + universe))
    owners = draw(st.lists(st.integers(-1, n_users + 2), min_size=universe, max_size=universe))
    members = {k: o for k, o in zip(keys, owners, strict=True) if o >= 0}
    pool = st.sampled_from(keys) | st.just(EMPTY_KEY) | st.integers(0, 2**64 - 2)
    books = [draw(st.lists(pool, max_size=15)) for _ in range(n_users)]
    return books, members


@settings(max_examples=300, deadline=None)
@given(pop=populations())
def test_against_oracle_and_reference(pop: tuple[list[list[int]], dict[int, int]]) -> None:
    run(*pop)


@settings(max_examples=100, deadline=None)
@given(pop=populations(), data=st.data())
def test_owner_of_member(pop: tuple[list[list[int]], dict[int, int]], data: st.DataObject) -> None:
    books, members = pop
    slots = {k: i for i, k in enumerate(members)}
    users = st.integers(0, len(books) + 2) | st.just(EMPTY_KEY)
    om = data.draw(st.lists(users, min_size=len(slots), max_size=len(slots)))
    run(books, slots, np.array(om, dtype=U64))


def test_explicit_cases() -> None:
    # users 0..4 own keys 100..104; 105 is a second key of user 1; 900.. belong to nobody
    members = {100: 0, 101: 1, 102: 2, 103: 3, 104: 4, 105: 1}
    books = [
        [101, 900, 101, 100, 102, 105],  # 0: has 1 (twice, then 105), self, 2; phonebook 900
        [901, 100, 900, 901],  # 1: has 0 -> mutual with 0; phonebook 901 and 900 once
        [],  # 2: empty book (one-way target of 0)
        [104, EMPTY_KEY],  # 3: one-way to 4; the reserved key is skipped
        [103, 103],  # 4: has 3 -> mutual with 3
        [100],  # 5: holds 0's key but owns no key: one-way
    ]
    r = run(books, members)
    rows = zip(r.owner.tolist(), r.other.tolist(), r.key.tolist(), r.mutual.tolist(), strict=True)
    assert list(rows) == [
        (0, 1, 101, True),
        (0, 2, 102, False),
        (1, 0, 100, True),
        (3, 4, 104, True),
        (4, 3, 103, True),
        (5, 0, 100, False),
    ]
    assert r.phonebook_owner.tolist() == [0, 1, 1]
    assert r.phonebook_key.tolist() == [900, 901, 900]  # book order, not key order
    ptr, holders = match.reverse_holders(*to_csr(books), [100, 900, 999, 100])
    assert ptr.tolist() == [0, 3, 5, 5, 8]
    assert holders.tolist() == [0, 1, 5, 0, 1, 0, 1, 5]


def test_empty_inputs() -> None:
    index = KeyIndex.from_arrays([1], [0])
    cases: list[list[list[int]]] = [[], [[]], [[], []]]
    for books in cases:
        r = run(books, {1: 0})
        assert all(getattr(r, f).shape == (0,) for f in MatchResult._fields)
    r = match.bulk_match(np.array([0]), np.array([], dtype=U64), index)
    assert r.owner.shape == (0,)
    ptr, holders = match.reverse_holders([0], [], [])
    assert ptr.tolist() == [0] and holders.shape == (0,)


def test_offset_indptr_and_dtypes() -> None:
    members = {10: 0, 11: 1, 12: 2}
    books = [[11], [10, 12], [10]]
    indptr, keys = to_csr(books)
    full = match.bulk_match(indptr, keys, KeyIndex.from_arrays([10, 11, 12], [0, 1, 2]))
    # a window of a larger CSR (indptr not starting at 0); int32 indptr and int keys accepted
    padded = np.concatenate(([7, 7], keys, [7])).astype(np.int64)
    r = match.bulk_match(
        (indptr + 2).astype(np.int32), padded, KeyIndex.from_arrays([10, 11, 12], [0, 1, 2])
    )
    same(r, full)
    assert run(books, members).mutual.tolist() == [True, True, False, False]


def test_big_book_and_popular_user() -> None:
    """Skewed sizes exercise the galloping branches of the mutual check."""
    rng = np.random.default_rng(3)
    n = 400
    keys = list(range(5000, 5000 + n))
    members = {k: i for i, k in enumerate(keys)}
    books = [[*rng.choice(keys, 3, replace=False).tolist(), 5000, 5002] for _ in range(n)]
    books[0] = keys[:]  # user 0 holds everyone, and everyone holds user 0
    books[1] = rng.permutation(keys).tolist() * 2 + [1, 2, 3]  # big book, few holders
    books[2] = [5001]  # small book, held by everyone
    r = run(books, members)
    assert int(r.mutual.sum()) >= 2 * (n - 2)


def test_validation() -> None:
    index = KeyIndex.from_arrays([1, 2, 3], [0, 1, 2**32 + 5])
    with pytest.raises(ValueError, match="non-decreasing"):
        match.bulk_match([0, 2, 1, 3], [1, 2, 3], index)
    with pytest.raises(ValueError, match="exceeds"):
        match.bulk_match([0, 4], [1, 2, 3], index)
    with pytest.raises(ValueError, match="negative"):
        match.bulk_match([0, 1], [-1], index)
    with pytest.raises(TypeError, match="dtype"):
        match.bulk_match([0, 1], np.array([1.5]), index)
    with pytest.raises(ValueError, match="must be <"):
        match.bulk_match([0, 1], [3], index)
    assert match.bulk_match([0, 1], [2], index).other.tolist() == [1]
    with pytest.raises(ValueError, match="out of range for owner_of_member"):
        match.bulk_match([0, 1], [2], index, np.array([0], dtype=U64))
    with pytest.raises(ValueError, match="must be <"):
        match.bulk_match([0, 1], [2], index, np.array([0, 2**32], dtype=U64))
    with pytest.raises(ValueError, match="non-decreasing"):
        match.reverse_holders([0, 2, 1, 3], [1, 2, 3], [1])


@pytest.mark.skipif(PUREPYTHON, reason="compares the compiled module with the reference")
def test_compiled_is_selected() -> None:
    from befriend.core import _cmatch

    assert match.bulk_match is _cmatch.bulk_match
    assert match.reverse_holders is _cmatch.reverse_holders
