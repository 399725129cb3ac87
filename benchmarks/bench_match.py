"""Bulk re-match (the monthly buddy refresh): every address book against the member registry.

Synthetic population (seeded): BEFRIEND_BENCH_MEMBERS members (default 1,000,000), each with
one CN mobile key (E.164 digits as an integer, 86139xxxxxxxx); the first BEFRIEND_BENCH_BOOKS
of them (default 100,000) uploaded a book of BEFRIEND_BENCH_CONTACTS contacts (default 300:
30M keys). Per book: ~48 members drawn from reciprocal pairs among book owners (so they hold
each other), 72 one-way members, the rest non-members (other CN mobile prefixes: phonebook
buddies), 3 % duplicated contacts, 2 % of books hold their owner's own number; contacts in
random order. About 40 % of the contacts are members and about 40 % of the member edges are
mutual.

Reports the matching step's contacts/s (one core), the end-to-end time (index build + match),
the member index's bytes per identity, and the ratio against a pure-Python dict/set loop on
a subsample of BEFRIEND_BENCH_PYBOOKS books (default 2,000), whose results must be identical.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from befriend.core import IMPLEMENTATION, match
from befriend.core import _pymatch as reference
from befriend.core.index import KeyIndex

U64 = np.uint64
MEMBER_PREFIX = 8613900000000
OTHER_PREFIXES = np.array([8613800000000, 8615000000000, 8618600000000, 8613500000000], dtype=U64)
MUTUAL_PER_BOOK = 48
ONE_WAY_PER_BOOK = 72


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def population(
    rng: np.random.Generator, n_members: int, n_books: int, row: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``(member_keys, book_indptr, book_keys)``; member ``m`` owns ``member_keys[m]``."""
    suffix = np.unique(rng.integers(0, 10**8, int(n_members * 1.05) + 10, dtype=np.int64))
    member_keys = (rng.permutation(suffix)[:n_members] + MEMBER_PREFIX).astype(U64)
    grid = OTHER_PREFIXES[rng.integers(0, 4, (n_books, row))]
    grid += rng.integers(0, 10**8, (n_books, row), dtype=np.int64).astype(U64)
    # reciprocal pairs among book owners: both hold each other
    n_pairs = n_books * MUTUAL_PER_BOOK // 2
    a = rng.integers(0, n_books, n_pairs, dtype=np.int64)
    b = rng.integers(0, n_books, n_pairs, dtype=np.int64)
    src, dst = np.concatenate((a, b)), np.concatenate((b, a))
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    rank = np.arange(src.shape[0]) - np.searchsorted(src, src, side="left")
    cap = min(row // 2, 150)
    keep = rank < cap
    grid[src[keep], rank[keep]] = member_keys[dst[keep]]
    filled = np.minimum(np.bincount(src, minlength=n_books), cap)
    one_way = min(ONE_WAY_PER_BOOK, row - cap)
    cols = filled[:, None] + np.arange(one_way)[None, :]
    grid[np.arange(n_books)[:, None], cols] = member_keys[
        rng.integers(0, n_members, (n_books, one_way))
    ]
    dup = rng.random((n_books, row)) < 0.03
    dup[:, 0] = False
    r, c = np.nonzero(dup)
    grid[r, c] = grid[r, c - 1]
    self_books = np.flatnonzero(rng.random(n_books) < 0.02)
    grid[self_books, row - 1] = member_keys[self_books]
    chunk = 20_000
    for s in range(0, n_books, chunk):  # random contact order within each book
        perm = np.argsort(rng.random((min(chunk, n_books - s), row)), axis=1)
        grid[s : s + chunk] = np.take_along_axis(grid[s : s + chunk], perm, axis=1)
    indptr = np.arange(n_books + 1, dtype=np.int64) * row
    return member_keys, indptr, grid.reshape(-1)


def python_match(
    books: list[list[int]], member_of: dict[int, int]
) -> tuple[list[tuple[int, int, int, bool]], list[tuple[int, int]]]:
    """The baseline: dict lookups and sets, one Python step per contact."""
    first: dict[tuple[int, int], int] = {}
    phonebook: list[tuple[int, int]] = []
    for u, book in enumerate(books):
        seen: set[int] = set()
        for k in book:
            v = member_of.get(k)
            if v is None:
                if k not in seen:
                    seen.add(k)
                    phonebook.append((u, k))
            elif v != u and (u, v) not in first:
                first[(u, v)] = k
    edges = [(u, v, k, (v, u) in first) for (u, v), k in sorted(first.items())]
    return edges, phonebook  # phonebook in book order, as bulk_match


def main() -> None:
    rng = np.random.default_rng(11)
    n_members = _env("BEFRIEND_BENCH_MEMBERS", 1_000_000)
    n_books = min(_env("BEFRIEND_BENCH_BOOKS", 100_000), n_members)
    row = _env("BEFRIEND_BENCH_CONTACTS", 300)
    py_books = min(_env("BEFRIEND_BENCH_PYBOOKS", 2_000), n_books)
    print(f"implementation={IMPLEMENTATION}")

    t = time.perf_counter()
    member_keys, indptr, keys = population(rng, n_members, n_books, row)
    t_gen = time.perf_counter() - t
    n_keys = keys.shape[0]
    print(
        f"population: {n_members:,} members, {n_books:,} books x {row} = {n_keys:,} contacts "
        f"({keys.nbytes / 2**20:.0f} MiB, generated in {t_gen:.1f} s)"
    )

    t_build, index = best(
        lambda: KeyIndex.from_arrays(member_keys, np.arange(n_members, dtype=U64))
    )
    print(
        f"member index: build {t_build * 1e3:.0f} ms, {index.nbytes / 2**20:.1f} MiB, "
        f"{index.nbytes / n_members:.2f} B/identity (key + value, load "
        f"{n_members / index.capacity:.2f})"
    )
    t_lookup, vals = best(lambda: index.lookup(keys))
    t_match, r = best(lambda: match.bulk_match(indptr, keys, index))
    n_edges = r.owner.shape[0]
    member_contacts = int(np.count_nonzero(vals != U64(2**64 - 1)))
    del vals
    print(
        f"bulk_match: {t_match:.3f} s, {n_keys / t_match / 1e6:.2f} M contacts/s "
        f"(target >= 1 M/s); of which batch lookup {t_lookup:.3f} s "
        f"({t_lookup / n_keys * 1e9:.1f} ns/key)"
    )
    print(
        f"  members among contacts {member_contacts / n_keys:.1%}; edges {n_edges:,}, mutual "
        f"{r.mutual.mean():.1%}, one-way {n_edges - int(r.mutual.sum()):,}; phonebook "
        f"{r.phonebook_owner.shape[0]:,}"
    )
    print(f"end-to-end (index build + bulk_match): {t_build + t_match:.3f} s")

    # same-run baseline: a pure-Python dict/set loop on the first py_books books
    sub_ptr = indptr[: py_books + 1]
    sub_keys = keys[: int(sub_ptr[-1])]
    t_sub, r_sub = best(lambda: match.bulk_match(sub_ptr, sub_keys, index))
    t = time.perf_counter()
    member_of = dict(zip(member_keys.tolist(), range(n_members), strict=True))
    t_dict = time.perf_counter() - t
    books = [sub_keys[sub_ptr[u] : sub_ptr[u + 1]].tolist() for u in range(py_books)]
    t_py, (edges, phonebook) = best(lambda: python_match(books, member_of), repeat=1)
    ours = list(
        zip(
            r_sub.owner.tolist(),
            r_sub.other.tolist(),
            r_sub.key.tolist(),
            r_sub.mutual.tolist(),
            strict=True,
        )
    )
    assert ours == edges, "bulk_match differs from the Python baseline"
    pb = list(zip(r_sub.phonebook_owner.tolist(), r_sub.phonebook_key.tolist(), strict=True))
    assert pb == phonebook, "phonebook differs from the Python baseline"
    n_sub = sub_keys.shape[0]
    per_py, per_ours = t_py / n_sub, t_match / n_keys
    print(
        f"python dict/set loop: {n_sub / t_py / 1e6:.2f} M contacts/s on {py_books:,} books "
        f"({per_py * n_keys:.1f} s scaled to {n_keys:,}; member dict built in {t_dict:.2f} s, "
        f"not counted); bulk_match on the same subsample {n_sub / t_sub / 1e6:.2f} M/s; "
        f"ratio {per_py / per_ours:.1f}x (full run) / {t_py / t_sub:.1f}x (subsample)"
    )
    t_ref, r_ref = best(lambda: reference.bulk_match(sub_ptr, sub_keys, index), repeat=1)
    assert all(
        np.array_equal(getattr(r_ref, f), getattr(r_sub, f)) for f in match.MatchResult._fields
    )
    print(f"numpy reference on the subsample: {n_sub / t_ref / 1e6:.2f} M contacts/s (identical)")


if __name__ == "__main__":
    main()
