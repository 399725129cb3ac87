"""KeyIndex: batch lookup vs a Python set loop and numpy.searchsorted; build rate; memory;
snapshot save/load.

Sizes: BEFRIEND_BENCH_INDEX_KEYS (default 10_000_000), BEFRIEND_BENCH_INDEX_PROBES
(default 1_000_000; half hits, random order). Keys mimic production: 70% E.164 phone numbers
as integers (dense national ranges, < 2**50), 30% hashed identities (top bit set).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from befriend.core import IMPLEMENTATION
from befriend.core.index import EMPTY_KEY, KeyIndex

U64 = np.uint64


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def make_keys(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    """~70% phone-like keys in dense national ranges, ~30% hashed identities (top bit set)."""
    n_phone = int(n * 0.7)
    prefixes = np.array([447, 4915, 336, 1212, 1415, 9198, 5511, 2348], dtype=U64)
    p = prefixes[rng.integers(0, prefixes.shape[0], n_phone)]
    digits = np.where(p < 1000, 10**9, 10**8).astype(U64)  # ~12-digit numbers
    phones = p * digits + rng.integers(0, 10**8, n_phone, dtype=U64)
    ids = rng.integers(0, 2**63 - 1, n - n_phone, dtype=U64) | U64(1 << 63)
    keys = np.unique(np.concatenate((phones, ids)))
    rng.shuffle(keys)
    return keys


def main() -> None:
    n = _env("BEFRIEND_BENCH_INDEX_KEYS", 10_000_000)
    n_probes = _env("BEFRIEND_BENCH_INDEX_PROBES", 1_000_000)
    rng = np.random.default_rng(20240601)
    keys = make_keys(rng, n)
    n = keys.shape[0]
    values = np.arange(n, dtype=U64)
    print(f"implementation={IMPLEMENTATION} keys={n:,} probes={n_probes:,}")

    t_build, index = best(lambda: KeyIndex.from_arrays(keys, values), repeat=1)
    print(f"build (from_arrays)      {t_build:8.3f} s   {n / t_build / 1e6:7.2f} M keys/s")
    print(
        f"memory                   {index.nbytes / 2**20:8.1f} MiB {index.nbytes / n:7.2f} B/key "
        f"(capacity {index.capacity:,}, load {n / index.capacity:.2f})"
    )

    hits = keys[rng.integers(0, n, n_probes // 2)]
    misses = make_keys(rng, n_probes - hits.shape[0] + 1000)
    misses = misses[~index.contains_many(misses)][: n_probes - hits.shape[0]]
    probes = np.concatenate((hits, misses))
    rng.shuffle(probes)

    t_lookup, got = best(lambda: index.lookup(probes))
    assert int(np.count_nonzero(got != U64(EMPTY_KEY))) == hits.shape[0]
    print(
        f"batch lookup             {t_lookup * 1e3:8.1f} ms  "
        f"{t_lookup / probes.shape[0] * 1e9:7.1f} ns/probe"
    )
    t_contains, _ = best(lambda: index.contains_many(probes))
    print(f"contains_many            {t_contains * 1e3:8.1f} ms")

    # baseline 1: Python set membership loop over a list of Python ints
    key_set = set(keys.tolist())
    probe_list = probes.tolist()
    t_set, found = best(lambda: [k in key_set for k in probe_list])
    assert sum(found) == hits.shape[0]
    key_set.clear()  # free ~1 GiB before the next baseline
    print(
        f"python set loop          {t_set * 1e3:8.1f} ms  ratio {t_set / t_lookup:6.1f}x "
        f"(target >= 8x)"
    )

    # baseline 2: searchsorted of the (unsorted) probes into a sorted key array
    order = np.argsort(keys)
    sorted_keys, sorted_values = keys[order], values[order]

    def searchsorted() -> np.ndarray[Any, Any]:
        pos = np.minimum(np.searchsorted(sorted_keys, probes), n - 1)
        return np.where(sorted_keys[pos] == probes, sorted_values[pos], U64(EMPTY_KEY))

    t_ss, ss = best(searchsorted)
    assert np.array_equal(ss, got)
    print(
        f"numpy searchsorted       {t_ss * 1e3:8.1f} ms  ratio {t_ss / t_lookup:6.1f}x "
        f"(target >= 20x)"
    )

    with tempfile.TemporaryDirectory(dir=os.environ.get("BEFRIEND_BENCH_TMP")) as tmp:
        path = Path(tmp) / "index.bfk"
        t_save, _ = best(lambda: index.save(path), repeat=1)
        size = path.stat().st_size
        print(f"snapshot save            {t_save:8.3f} s   {size / 2**20:7.1f} MiB")
        t_load, mapped = best(lambda: KeyIndex.load(path, mmap=True))
        t_first, got2 = best(lambda: mapped.lookup(probes), repeat=1)
        assert np.array_equal(got2, got)
        print(f"snapshot load (mmap)     {t_load * 1e3:8.2f} ms")
        print(f"  first lookup on mmap   {t_first * 1e3:8.1f} ms  (faults pages in)")
        t_lookup_m, _ = best(lambda: mapped.lookup(probes))
        print(f"  warm lookup on mmap    {t_lookup_m * 1e3:8.1f} ms  (4 KiB file pages)")
        t_read, _ = best(lambda: KeyIndex.load(path, mmap=False), repeat=1)
        print(f"snapshot load (read)     {t_read:8.3f} s")


if __name__ == "__main__":
    main()
