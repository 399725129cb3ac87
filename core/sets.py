"""Set kernels over sorted unique uint64 arrays (compiled, or the reference under
``BEFRIEND_PUREPYTHON=1``): intersection (merge or galloping), counts, union, difference,
and many-against-one overlap counts over CSR candidate sets with top-k selection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from befriend.core._impl import load

_m = load("_csets", "_pysets")

if TYPE_CHECKING:
    from befriend.core._pysets import (
        GALLOP_RATIO,
        difference,
        intersect,
        intersect_count,
        overlap_counts,
        top_k,
        union,
    )
else:
    GALLOP_RATIO = _m.GALLOP_RATIO
    difference = _m.difference
    intersect = _m.intersect
    intersect_count = _m.intersect_count
    overlap_counts = _m.overlap_counts
    top_k = _m.top_k
    union = _m.union

__all__ = [
    "GALLOP_RATIO",
    "difference",
    "intersect",
    "intersect_count",
    "overlap_counts",
    "top_k",
    "union",
]
