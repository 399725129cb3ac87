"""Set kernels over sorted unique uint64 arrays — pure-Python/numpy reference of ``_csets``.

Same API and validation as the compiled module. Inputs must be sorted and unique (not
checked); ``GALLOP_RATIO`` is exported for parity, the reference has one strategy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from befriend.core._arrays import as_indptr, as_u64, select_top_k

__all__ = [
    "GALLOP_RATIO",
    "difference",
    "intersect",
    "intersect_count",
    "overlap_counts",
    "top_k",
    "union",
]

GALLOP_RATIO = 32


def intersect(a: Any, b: Any) -> NDArray[np.uint64]:
    """Sorted unique ``a & b``."""
    av, bv = as_u64(a, "a"), as_u64(b, "b")
    return np.intersect1d(av, bv, assume_unique=True).astype(np.uint64, copy=False)


def intersect_count(a: Any, b: Any) -> int:
    """``len(a & b)``."""
    return int(intersect(a, b).shape[0])


def union(a: Any, b: Any) -> NDArray[np.uint64]:
    """Sorted unique ``a | b``."""
    av, bv = as_u64(a, "a"), as_u64(b, "b")
    return np.union1d(av, bv).astype(np.uint64, copy=False)


def difference(a: Any, b: Any) -> NDArray[np.uint64]:
    """Sorted unique ``a \\ b``."""
    av, bv = as_u64(a, "a"), as_u64(b, "b")
    return np.setdiff1d(av, bv, assume_unique=True).astype(np.uint64, copy=False)


def overlap_counts(query: Any, indptr: Any, indices: Any) -> NDArray[np.int64]:
    """``|query ∩ row|`` for every CSR row ``indices[indptr[r]:indptr[r + 1]]`` (int64)."""
    qv = as_u64(query, "query")
    iv = as_u64(indices, "indices")
    pv = as_indptr(indptr, iv.shape[0])
    if bool(np.any(pv[1:] < pv[:-1])):
        raise ValueError("indptr must be non-decreasing")
    hit = np.isin(iv, qv, assume_unique=False)
    cum = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(hit, dtype=np.int64)))
    counts: NDArray[np.int64] = (cum[pv[1:]] - cum[pv[:-1]]).astype(np.int64, copy=False)
    return counts


def top_k(
    query: Any, indptr: Any, indices: Any, k: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows with the ``k`` largest positive overlaps: ``(row_ids, counts)``, int64 arrays,
    by count descending then row id ascending; rows with no overlap are not returned."""
    return select_top_k(overlap_counts(query, indptr, indices), k)
