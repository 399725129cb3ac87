"""Set kernels: intersect_count vs numpy.intersect1d (similar and skewed sizes) and
many-against-one overlap counts over CSR candidate sets vs a pure-Python loop.

Sizes: BEFRIEND_BENCH_SETS_N (default 1_000_000: the 1M vs 1M case), BEFRIEND_BENCH_SETS_BIG
(default 10_000_000: the 1k vs 10M case), BEFRIEND_BENCH_SETS_CANDIDATES (default
1_000_000 candidate sets of BEFRIEND_BENCH_SETS_ROW = 300 keys from a 50M universe),
BEFRIEND_BENCH_SETS_PYROWS (default 20_000: the pure-Python baseline's subsample).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from befriend.core import IMPLEMENTATION, sets

U64 = np.uint64
UNIVERSE = 50_000_000


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def sample(rng: np.random.Generator, n: int, universe: int) -> np.ndarray[Any, Any]:
    return np.unique(rng.integers(0, universe, n, dtype=U64))


def make_candidates(
    rng: np.random.Generator, query: np.ndarray[Any, Any], n_rows: int, row: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """CSR of ``n_rows`` sorted unique rows of ``row`` keys. Each shares a few query keys
    (Poisson(3); 1% of rows Poisson(60): close contacts), the rest drawn from the universe
    minus the query (so rows are unique by construction)."""
    nq = query.shape[0]
    skip = query.astype(np.int64) - np.arange(nq)  # m-th non-query value = m + #(skip <= m)
    indices = np.empty(n_rows * row, dtype=U64)
    chunk = 50_000
    cols = np.arange(row)
    for start in range(0, n_rows, chunk):
        c = min(chunk, n_rows - start)
        rand = np.sort(rng.integers(0, UNIVERSE - nq - row, (c, row), dtype=np.int64), axis=1)
        rand += cols  # strictly increasing in each row
        rand += np.searchsorted(skip, rand, side="right")
        shared = rng.poisson(3, c)
        close = rng.random(c) < 0.01
        shared[close] = rng.poisson(60, int(close.sum()))
        shared = np.minimum(shared, min(nq, row))
        offset = rng.integers(0, nq, c)
        window = query.astype(np.int64)[(offset[:, None] + cols[None, :]) % nq]
        mask = cols[None, :] < shared[:, None]
        rand[mask] = window[mask]
        rand.sort(axis=1)
        indices[start * row : (start + c) * row] = rand.reshape(-1).astype(U64)
    indptr = np.arange(n_rows + 1, dtype=np.int64) * row
    return indptr, indices


def main() -> None:
    rng = np.random.default_rng(7)
    n = _env("BEFRIEND_BENCH_SETS_N", 1_000_000)
    big = _env("BEFRIEND_BENCH_SETS_BIG", 10_000_000)
    n_rows = _env("BEFRIEND_BENCH_SETS_CANDIDATES", 1_000_000)
    row = _env("BEFRIEND_BENCH_SETS_ROW", 300)
    py_rows = _env("BEFRIEND_BENCH_SETS_PYROWS", 20_000)
    print(f"implementation={IMPLEMENTATION}")

    for label, na, nb, universe, target in (
        (f"{n:,} vs {n:,}", n, n, 4 * n, 2),
        (f"1k vs {big:,}", 1_000, big, 5 * big, 50),
    ):
        a, b = sample(rng, na, universe), sample(rng, nb, universe)
        t_ours, k = best(lambda: sets.intersect_count(a, b))  # noqa: B023 (called at once)
        t_np, ref = best(lambda: np.intersect1d(a, b, assume_unique=True))  # noqa: B023
        assert k == ref.shape[0]
        print(
            f"intersect_count {label:>22}: {t_ours * 1e3:9.3f} ms  intersect1d "
            f"{t_np * 1e3:9.2f} ms  ratio {t_np / t_ours:7.1f}x (target >= {target}x)"
        )
        t_i, inter = best(lambda: sets.intersect(a, b))  # noqa: B023
        t_u, _ = best(lambda: sets.union(a, b))  # noqa: B023
        t_d, _ = best(lambda: sets.difference(b, a))  # noqa: B023
        assert np.array_equal(inter, ref)
        print(
            f"  intersect {t_i * 1e3:.3f} ms, union {t_u * 1e3:.3f} ms, "
            f"difference(big, small) {t_d * 1e3:.3f} ms"
        )

    query = sample(rng, row, UNIVERSE)[:row]
    t_gen = time.perf_counter()
    indptr, indices = make_candidates(rng, query, n_rows, row)
    t_gen = time.perf_counter() - t_gen
    print(
        f"many-against-one: query {query.shape[0]} keys vs {n_rows:,} candidates x {row} keys "
        f"({indices.nbytes / 2**30:.2f} GiB CSR, generated in {t_gen:.1f} s)"
    )
    t_ours, counts = best(lambda: sets.overlap_counts(query, indptr, indices))
    print(
        f"  overlap_counts   {t_ours:8.3f} s  {n_rows / t_ours / 1e6:7.2f} M candidates/s  "
        f"mean overlap {counts.mean():.2f}, max {counts.max()}"
    )
    t_top, (_rows, top_counts) = best(lambda: sets.top_k(query, indptr, indices, 100))
    print(f"  top_k(100)       {t_top:8.3f} s  best counts {top_counts[:5].tolist()}")

    m = min(py_rows, n_rows)
    rows = [indices[indptr[r] : indptr[r + 1]].tolist() for r in range(m)]
    qset = set(query.tolist())
    t_py, py_counts = best(lambda: [len(qset.intersection(r)) for r in rows], repeat=1)
    assert py_counts == counts[:m].tolist()
    per_py, per_ours = t_py / m, t_ours / n_rows
    print(
        f"  python set loop  {per_py * 1e6:8.2f} us/candidate (subsample {m:,}; "
        f"{per_py * n_rows:.1f} s scaled to {n_rows:,})  ratio {per_py / per_ours:6.1f}x"
    )


if __name__ == "__main__":
    main()
