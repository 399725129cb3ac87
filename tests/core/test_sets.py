"""Set kernels against Python sets, and compiled vs reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from befriend.core import PUREPYTHON, sets

U64 = np.uint64
TOP = 2**64 - 1

values = st.one_of(st.integers(0, 200), st.integers(TOP - 200, TOP - 1), st.integers(0, TOP))


def sorted_unique(max_size: int, elements: st.SearchStrategy[int] = values) -> Any:
    return st.lists(elements, max_size=max_size, unique=True).map(
        lambda xs: np.array(sorted(xs), dtype=U64)
    )


def big_and_small() -> Any:
    """Skewed pairs (ratio > GALLOP_RATIO) to exercise galloping, in both orders."""
    big = st.integers(0, 3000).flatmap(
        lambda n: st.integers(0, 2**32).map(
            lambda seed: np.unique(np.random.default_rng(seed).integers(0, 4000, n, dtype=U64))
        )
    )
    small = sorted_unique(20, st.integers(0, 4100) | st.just(TOP - 1))
    return st.tuples(big, small, st.booleans()).map(
        lambda t: (t[0], t[1]) if t[2] else (t[1], t[0])
    )


def check_all(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    sa, sb = set(a.tolist()), set(b.tolist())
    got = sets.intersect(a, b)
    assert got.dtype == U64
    assert got.tolist() == sorted(sa & sb)
    assert sets.intersect_count(a, b) == len(sa & sb)
    assert sets.union(a, b).tolist() == sorted(sa | sb)
    assert sets.difference(a, b).tolist() == sorted(sa - sb)
    assert sets.difference(b, a).tolist() == sorted(sb - sa)


@settings(max_examples=200, deadline=None)
@given(a=sorted_unique(60), b=sorted_unique(60))
def test_pairs_against_python_sets(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> None:
    check_all(a, b)


@settings(max_examples=150, deadline=None)
@given(pair=big_and_small())
def test_skewed_pairs_gallop(pair: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> None:
    check_all(*pair)


def test_empty_and_extremes() -> None:
    e = np.array([], dtype=U64)
    x = np.array([0, 1, TOP - 1], dtype=U64)
    check_all(e, e)
    check_all(e, x)
    check_all(x, x)
    assert sets.intersect([], []).dtype == U64
    assert sets.union([], [TOP - 1]).tolist() == [TOP - 1]
    big = np.arange(10_000, dtype=U64) * U64(3)
    small = np.array([0, 3, 4, 29_997, TOP - 1], dtype=U64)
    check_all(big, small)
    assert sets.intersect_count(small, big) == 3


def test_input_validation() -> None:
    a = np.array([1, 2, 3], dtype=U64)
    assert sets.intersect(np.array([1, 2], dtype=np.int32), a).tolist() == [1, 2]
    assert sets.intersect([2, 3], a).tolist() == [2, 3]
    assert sets.intersect(a[::-1][::-1], a[::2]).tolist() == [1, 3]  # non-contiguous ok
    with pytest.raises(TypeError, match="dtype"):
        sets.intersect(np.array([1.0, 2.0]), a)
    with pytest.raises(TypeError):
        sets.union(np.array(["a"]), a)
    with pytest.raises(ValueError, match="negative"):
        sets.difference(np.array([-1, 2]), a)
    with pytest.raises(ValueError, match="1-D"):
        sets.intersect_count(np.zeros((2, 2), dtype=U64), a)
    q = np.array([1, 2], dtype=U64)
    with pytest.raises(ValueError, match="non-decreasing"):
        sets.overlap_counts(q, np.array([0, 2, 1, 3]), a)
    with pytest.raises(ValueError, match="exceeds"):
        sets.overlap_counts(q, np.array([0, 4]), a)
    with pytest.raises(ValueError, match=r"indptr\[0\]"):
        sets.overlap_counts(q, np.array([-1, 2]), a)
    with pytest.raises(ValueError, match="non-empty"):
        sets.overlap_counts(q, np.array([], dtype=np.int64), a)
    with pytest.raises(TypeError, match="indptr"):
        sets.overlap_counts(q, np.array([0.0, 1.0]), a)
    with pytest.raises(ValueError, match="k must be"):
        sets.top_k(q, np.array([0, 3]), a, -1)
    # unsorted input: unspecified answer, but no crash
    rng = np.random.default_rng(0)
    junk = rng.integers(0, 100, 500, dtype=U64)
    for f in (sets.intersect, sets.union, sets.difference, sets.intersect_count):
        f(junk, junk[:7])
        f(junk[:7], junk)
        f(junk, junk[::-1].copy())


csr_rows = st.lists(sorted_unique(40, st.integers(0, 120) | st.just(TOP - 1)), max_size=30)


def to_csr(rows: list[np.ndarray[Any, Any]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([r.shape[0] for r in rows])
    indices = np.concatenate(rows) if rows else np.array([], dtype=U64)
    return indptr, indices.astype(U64)


@settings(max_examples=150, deadline=None)
@given(
    query=sorted_unique(60, st.integers(0, 120) | st.just(TOP - 1)),
    rows=csr_rows,
    k=st.integers(0, 35),
)
def test_overlap_counts_and_top_k(
    query: np.ndarray[Any, Any], rows: list[np.ndarray[Any, Any]], k: int
) -> None:
    indptr, indices = to_csr(rows)
    sq = set(query.tolist())
    expected = [len(sq & set(r.tolist())) for r in rows]
    counts = sets.overlap_counts(query, indptr, indices)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected
    ranked = sorted((-c, r) for r, c in enumerate(expected) if c > 0)[:k]
    row_ids, top = sets.top_k(query, indptr, indices, k)
    assert row_ids.tolist() == [r for _, r in ranked]
    assert top.tolist() == [-c for c, _ in ranked]


def test_overlap_counts_large_query_and_offset_indptr() -> None:
    rng = np.random.default_rng(5)
    query = np.unique(rng.integers(0, 10**6, 50_000, dtype=U64))  # bitmap at its cap size
    rows = [np.unique(rng.integers(0, 10**6, 300, dtype=U64)) for _ in range(50)]
    indptr, indices = to_csr(rows)
    sq = set(query.tolist())
    assert sets.overlap_counts(query, indptr, indices).tolist() == [
        len(sq & set(r.tolist())) for r in rows
    ]
    # a sub-range of a CSR matrix (indptr not starting at 0) is accepted
    sub = sets.overlap_counts(query, indptr[10:20], indices)
    assert sub.tolist() == [len(sq & set(r.tolist())) for r in rows[10:19]]
    assert sets.overlap_counts(query, np.array([0]), indices).shape == (0,)


@pytest.mark.skipif(PUREPYTHON, reason="compares the compiled module with the reference")
@settings(max_examples=100, deadline=None)
@given(a=sorted_unique(80), b=sorted_unique(80), rows=csr_rows)
def test_compiled_matches_reference(
    a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], rows: list[np.ndarray[Any, Any]]
) -> None:
    from befriend.core import _csets, _pysets

    for name in ("intersect", "union", "difference"):
        assert getattr(_csets, name)(a, b).tolist() == getattr(_pysets, name)(a, b).tolist()
    assert _csets.intersect_count(a, b) == _pysets.intersect_count(a, b)
    indptr, indices = to_csr(rows)
    assert (
        _csets.overlap_counts(a, indptr, indices).tolist()
        == _pysets.overlap_counts(a, indptr, indices).tolist()
    )
    c_rows, c_counts = _csets.top_k(a, indptr, indices, 5)
    p_rows, p_counts = _pysets.top_k(a, indptr, indices, 5)
    assert c_rows.tolist() == p_rows.tolist()
    assert c_counts.tolist() == p_counts.tolist()
    assert _csets.GALLOP_RATIO == _pysets.GALLOP_RATIO
