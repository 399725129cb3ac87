"""Input validation and small helpers shared by the compiled kernels and their references.

Kept in one place so both implementations accept and reject exactly the same inputs.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["as_indptr", "as_u64", "select_top_k"]


def as_u64(x: Any, name: str) -> NDArray[np.uint64]:
    """Return ``x`` as a 1-D C-contiguous uint64 array (no copy when it already is one).

    Any integer dtype is accepted; signed arrays must be non-negative. Empty inputs of any
    dtype (``[]`` becomes float64 in numpy) are accepted. Anything else raises TypeError
    (wrong kind) or ValueError (wrong shape, negative values).
    """
    arr = np.asarray(x)
    if arr.dtype.kind in "fO" and isinstance(x, list | tuple) and all(type(v) is int for v in x):
        # a list of Python ints above 2**63 becomes float64 or object in numpy
        try:
            arr = np.array(x, dtype=np.uint64)
        except OverflowError:
            raise ValueError(f"{name} has values outside [0, 2**64 - 1]") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.flags.c_contiguous:
        return arr
    if arr.size == 0:
        return np.empty(0, dtype=np.uint64)
    kind = arr.dtype.kind
    if kind == "u":
        return np.ascontiguousarray(arr, dtype=np.uint64)
    if kind == "i":
        if int(arr.min()) < 0:
            raise ValueError(f"{name} contains negative values; keys are unsigned 64-bit")
        return np.ascontiguousarray(arr, dtype=np.uint64)
    raise TypeError(f"{name} must be an array of unsigned 64-bit integers, got dtype {arr.dtype}")


def as_indptr(indptr: Any, n_indices: int) -> NDArray[np.int64]:
    """Validate a CSR row pointer against ``len(indices)``; return it as C-contiguous int64.

    Requires ``len(indptr) >= 1``, ``indptr[0] >= 0``, ``indptr[-1] <= n_indices``; the
    monotonicity check (non-decreasing) is done by the caller's kernel or here by numpy.
    """
    arr = np.asarray(indptr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"indptr must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indptr must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr[-1]) > np.iinfo(np.int64).max:
        raise ValueError("indptr values exceed int64")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if int(out[0]) < 0:
        raise ValueError("indptr[0] must be >= 0")
    if int(out[-1]) > n_indices:
        raise ValueError(f"indptr[-1] = {int(out[-1])} exceeds len(indices) = {n_indices}")
    return out


def select_top_k(counts: NDArray[np.int64], k: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows with the ``k`` largest positive counts, by count descending then row id ascending.

    Rows with a zero count are never returned, so fewer than ``k`` rows may come back.
    """
    k = operator.index(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    nz = np.flatnonzero(counts)
    if k == 0 or nz.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    c = counts[nz]
    if k < nz.size:
        kth = int(np.partition(c, nz.size - k)[nz.size - k])  # the k-th largest count
        above = nz[c > kth]
        ties = nz[c == kth][: k - above.size]  # nz is ascending: smallest row ids first
        nz = np.concatenate((above, ties))
        c = counts[nz]
    order = np.lexsort((nz, -c))
    rows = nz[order].astype(np.int64, copy=False)
    return rows, counts[rows].astype(np.int64, copy=False)
