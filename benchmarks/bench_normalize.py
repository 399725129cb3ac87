"""Phone normalisation throughput: compiled ``normalize_many`` vs the pure reference vs
``phonenumbers.parse`` + ``format_number(E164)``, on a mixed corpus of address-book entries.

``BEFRIEND_BENCH_N`` sets the corpus size (default 1,000,000); the reference and the
phonenumbers baseline run on a subsample (``BEFRIEND_BENCH_SUB``, default 20,000). Agreement
(identical E.164 wherever phonenumbers finds the number valid) is checked on the subsample
and must be 100 %.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Callable

import phonenumbers

import befriend.core._cnormalize as compiled
import befriend.core._pynormalize as reference

SEED = 20240601
OWNERS = ("CN", "CN", "CN", "HK", "US", "IN", "DE", "GB")  # uploader regions, CN-heavy
SEPS = (" ", "-", "", ".", " ")


def _digits(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice("0123456789") for _ in range(n))


def _sep(rnd: random.Random, s: str, groups: tuple[int, ...]) -> str:
    sep = rnd.choice(SEPS)
    out, i = [], 0
    for g in groups:
        out.append(s[i : i + g])
        i += g
    if i < len(s):
        out.append(s[i:])
    return sep.join(x for x in out if x)


def _cn(rnd: random.Random, owner: str) -> str:
    r = rnd.random()
    mobile = "1" + rnd.choice("3456789") + _digits(rnd, 9)
    if r < 0.55:
        body = _sep(rnd, mobile, (3, 4, 4))
        if owner != "CN" or rnd.random() < 0.3:
            return rnd.choice(("+86 ", "+86", "0086 ", "86")) + body
        return body
    if r < 0.65:
        return rnd.choice(("17951", "17911", "12593", "17909")) + rnd.choice(("", " ")) + mobile
    if r < 0.72:
        return rnd.choice(("17951 ", "17911")) + "010 " + "8" + _digits(rnd, 7)
    area = rnd.choice(("10", "21", "20", "755", "571", "28"))
    local = rnd.choice("2345678") + _digits(rnd, 7 if len(area) == 2 else 6)
    if owner == "CN" and rnd.random() < 0.7:
        return f"0{area}-{local}" if rnd.random() < 0.5 else f"(0{area}) {local}"
    return f"+86 {area} {local}"


def _hk(rnd: random.Random, owner: str) -> str:
    n = rnd.choice("569") + _digits(rnd, 7)
    body = _sep(rnd, n, (4, 4))
    r = rnd.random()
    if owner == "HK" and r < 0.6:
        return body
    if owner == "CN" and r < 0.3:
        return rnd.choice(("", "852", "852 ")) + body
    return rnd.choice(("+852 ", "+852", "00852 ")) + body


def _us(rnd: random.Random, owner: str) -> str:
    area = rnd.choice(("212", "415", "650", "312", "617", "206", "305", "702", "800", "646"))
    n = area + rnd.choice("23456789") + _digits(rnd, 6)
    if owner == "US" and rnd.random() < 0.7:
        return rnd.choice((f"({n[:3]}) {n[3:6]}-{n[6:]}", f"{n[:3]}-{n[3:6]}-{n[6:]}", "1" + n))
    return rnd.choice(("+1 ", "+1-", "+1")) + _sep(rnd, n, (3, 3, 4))


def _in(rnd: random.Random, owner: str) -> str:
    n = rnd.choice("6789") + _digits(rnd, 9)
    if owner == "IN" and rnd.random() < 0.7:
        return rnd.choice(("", "0")) + _sep(rnd, n, (5, 5))
    return "+91 " + _sep(rnd, n, (5, 5))


def _de(rnd: random.Random, owner: str) -> str:
    n = rnd.choice(("151", "160", "170", "176", "30", "89", "40", "69")) + _digits(rnd, 7)
    if owner == "DE" and rnd.random() < 0.7:
        return "0" + _sep(rnd, n, (3, 4))
    return rnd.choice(("+49 ", "0049 ")) + _sep(rnd, n, (3, 4))


def _gb(rnd: random.Random, owner: str) -> str:
    n = rnd.choice(("7400", "7700", "7911", "20", "161", "131")) + _digits(rnd, 6)
    n = n + _digits(rnd, 10 - len(n))
    if owner == "GB" and rnd.random() < 0.7:
        return "0" + _sep(rnd, n, (4, 6))
    return "+44 " + _sep(rnd, n, (4, 6))


def _invalid(rnd: random.Random, owner: str) -> str:
    r = rnd.random()
    if r < 0.5:
        return _digits(rnd, rnd.randrange(3, 16))
    if r < 0.7:
        return "+" + _digits(rnd, rnd.randrange(4, 17))
    if r < 0.85:
        return rnd.choice(("", "n/a", "unknown", "---", "1-800-FLOWERS", "13812345678 x12"))
    return _digits(rnd, 11) + " / " + _digits(rnd, 8)


KINDS: tuple[tuple[Callable[[random.Random, str], str], float], ...] = (
    (_cn, 0.45),
    (_hk, 0.12),
    (_us, 0.12),
    (_in, 0.08),
    (_de, 0.07),
    (_gb, 0.08),
    (_invalid, 0.08),
)


def corpus(n: int, seed: int = SEED) -> dict[str, list[str]]:
    """``n`` raw entries grouped by the uploader's (default) region."""
    rnd = random.Random(seed)
    books: dict[str, list[str]] = defaultdict(list)
    gens = [g for g, _ in KINDS]
    weights = [w for _, w in KINDS]
    for _ in range(n):
        owner = rnd.choice(OWNERS)
        books[owner].append(rnd.choices(gens, weights)[0](rnd, owner))
    return dict(books)


def _sample(books: dict[str, list[str]], k: int, seed: int = 7) -> dict[str, list[str]]:
    rnd = random.Random(seed)
    total = sum(len(v) for v in books.values())
    return {r: rnd.sample(v, min(len(v), max(1, k * len(v) // total))) for r, v in books.items()}


def _run_many(fn: Callable[..., object], books: dict[str, list[str]]) -> float:
    t = time.perf_counter()
    for region, raws in books.items():
        fn(raws, region)
    return time.perf_counter() - t


def _phonenumbers_baseline(books: dict[str, list[str]]) -> float:
    failures = 0
    t = time.perf_counter()
    for region, raws in books.items():
        for raw in raws:
            try:
                phonenumbers.format_number(
                    phonenumbers.parse(raw, region), phonenumbers.PhoneNumberFormat.E164
                )
            except phonenumbers.NumberParseException:
                failures += 1
    return time.perf_counter() - t


def _agreement(books: dict[str, list[str]]) -> tuple[int, int, int]:
    """(phonenumbers-valid entries, identical E.164 among them, compiled == reference rows)."""
    valid = same = rows_equal = 0
    for region, raws in books.items():
        cb = compiled.normalize_many(raws, region)
        rb = reference.normalize_many(raws, region)
        for i, raw in enumerate(raws):
            rows_equal += cb[i] == rb[i]
            try:
                p = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(p):
                valid += 1
                same += cb.e164[i] == phonenumbers.format_number(
                    p, phonenumbers.PhoneNumberFormat.E164
                )
    return valid, same, rows_equal


def _line(name: str, n: int, seconds: float) -> float:
    rate = n / seconds
    print(f"{name:<44} {n:>9,} in {seconds:7.3f} s  {rate:>12,.0f} /s  {1e6 / rate:8.3f} µs")
    return rate


def main() -> None:
    n = int(os.environ.get("BEFRIEND_BENCH_N", "1000000"))
    k = int(os.environ.get("BEFRIEND_BENCH_SUB", "20000"))
    t = time.perf_counter()
    books = corpus(n)
    sub = _sample(books, k)
    n_sub = sum(len(v) for v in sub.values())
    print(f"corpus: {n:,} entries in {time.perf_counter() - t:.1f} s; subsample {n_sub:,}")
    fast = sum(compiled.fast_path_decides(r, reg) for reg, v in sub.items() for r in v)
    print(f"compiled fast path decides {fast / n_sub:.1%} of entries (rest: reference path)")

    compiled.clear_memo()
    c_cold = _line(
        "compiled normalize_many (cold memo)", n, _run_many(compiled.normalize_many, books)
    )
    c_warm = _line(
        "compiled normalize_many (warm memo)", n, _run_many(compiled.normalize_many, books)
    )
    compiled.clear_memo()
    c_sub = _line(
        "compiled normalize_many, subsample (cold)", n_sub, _run_many(compiled.normalize_many, sub)
    )
    p_sub = _line(
        "pure reference normalize_many, subsample", n_sub, _run_many(reference.normalize_many, sub)
    )
    b_sub = _line("phonenumbers parse+format_number(E164)", n_sub, _phonenumbers_baseline(sub))
    print(f"ratio compiled(cold, full corpus) / phonenumbers: {c_cold / b_sub:6.1f}x")
    print(f"ratio compiled(warm, full corpus) / phonenumbers: {c_warm / b_sub:6.1f}x")
    print(f"ratio compiled(cold, subsample)   / phonenumbers: {c_sub / b_sub:6.1f}x")
    print(f"ratio compiled(cold, full corpus) / pure reference: {c_cold / p_sub:6.1f}x")
    valid, same, rows = _agreement(sub)
    print(
        f"agreement: {same:,}/{valid:,} identical E.164 where phonenumbers finds the number "
        f"valid ({same / max(valid, 1):.2%}); compiled == reference on {rows:,}/{n_sub:,} rows"
    )
    if same != valid or rows != n_sub:
        raise SystemExit("normalisation disagreement")


if __name__ == "__main__":
    main()
