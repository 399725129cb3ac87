"""Differential tests: compiled == reference == phonenumbers (+ seed rules).

* compiled vs reference: every field identical, on generated numbers of many regions and
  formats and on raw digit strings with the seeds' prefixes (skipped, only that comparison,
  under BEFRIEND_PUREPYTHON=1 where the compiled module is not the one under test).
* reference (and the selected implementation) vs phonenumbers: wherever phonenumbers finds
  the number valid, ours is OK with the identical E.164 string, type and region.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from befriend.core import PUREPYTHON, normalize
from befriend.core import _pynormalize as ref

REGIONS = sorted(
    {"CN", "HK", "MO", "TW", "US", "CA", "PR", "DO", "JM", "IN", "DE", "GB", "GG", "JE", "IM"}
    | {"FR", "IT", "ES", "RU", "KZ", "JP", "KR", "SG", "AU", "MY", "TH", "BR", "AR", "MX"}
    | {"AG", "BS", "CH", "NL", "SE", "NG", "ZA", "AE", "IL", "VN", "ID", "PH", "NZ", "CX"}
)
DEFAULTS = ("CN", "HK", "US", "IN", "DE", "GB", "FR", "JP", "CA", "ZZ")
TYPES = [t for t in range(11)]
SEPARATORS = [" ", "-", ".", "/", "", "\u00a0", " - ", "\u3000"]
FULLWIDTH = str.maketrans({str(i): chr(0xFF10 + i) for i in range(10)} | {"+": "\uff0b"})


def _compiled() -> ModuleType | None:
    if PUREPYTHON:
        return None
    return importlib.import_module("befriend.core._cnormalize")


C = _compiled()
FAST = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def _example(region: str, kind: int, rnd: random.Random) -> phonenumbers.PhoneNumber | None:
    ex = phonenumbers.example_number_for_type(region, kind)
    if ex is None:
        return None
    nsn = phonenumbers.national_significant_number(ex)
    # keep a random head of the example (the valid prefix range), randomise the tail; a
    # random length change now and then produces too short / too long / invalid numbers
    keep = rnd.randrange(1, len(nsn) + 1)
    tail = "".join(rnd.choice("0123456789") for _ in range(len(nsn) - keep))
    new = nsn[:keep] + tail
    roll = rnd.random()
    if roll < 0.08:
        new = new[:-1]
    elif roll < 0.16:
        new += rnd.choice("0123456789")
    num = phonenumbers.PhoneNumber(country_code=ex.country_code, national_number=int(new))
    if new.startswith("0"):
        num.italian_leading_zero = True
        num.number_of_leading_zeros = len(new) - len(new.lstrip("0")) or None
    return num


def _render(num: phonenumbers.PhoneNumber, default: str, rnd: random.Random) -> str:
    style = rnd.randrange(8)
    cc = str(num.country_code)
    nsn = phonenumbers.national_significant_number(num)
    if style == 0:
        s = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    elif style == 1:
        s = phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL)
    elif style == 2:
        s = phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    elif style == 3:  # dialled out of the default region
        s = phonenumbers.format_out_of_country_calling_number(num, default)
    elif style == 4:  # "00"/"011" + cc + nsn, or cc + nsn without '+'
        s = rnd.choice(["00", "011", "", "+"]) + cc + rnd.choice(["", " "]) + nsn
    elif style == 5:  # bare national significant number
        s = nsn
    elif style == 6:  # national prefix + nsn
        meta = phonenumbers.PhoneMetadata.metadata_for_region(
            phonenumbers.region_code_for_country_code(num.country_code or 0)
        )
        s = ((meta.national_prefix or "") if meta else "") + nsn
    else:
        s = "+" + cc + nsn
    # re-separate: drop the formatter's separators now and then, insert random ones
    if rnd.random() < 0.5:
        digits = [c for c in s if c.isdigit() or c == "+"]
        out = []
        for c in digits:
            out.append(c)
            if c != "+" and rnd.random() < 0.25:
                out.append(rnd.choice(SEPARATORS))
        s = "".join(out)
    if rnd.random() < 0.1:
        s = f"({s[:4]}){s[4:]}" if not s.startswith("+") else s
    if rnd.random() < 0.08:
        s = s.translate(FULLWIDTH)
    if rnd.random() < 0.1:
        s = "  " + s + " "
    return s


@st.composite
def generated(draw: st.DrawFn) -> tuple[str, str]:
    rnd = random.Random(draw(st.integers(0, 2**32)))
    region = draw(st.sampled_from(REGIONS))
    kind = draw(st.sampled_from(TYPES))
    num = _example(region, kind, rnd)
    default = draw(st.sampled_from((*DEFAULTS, region)))
    if num is None:
        num = phonenumbers.example_number(region)
        assert num is not None
    return _render(num, default, rnd), default


PREFIXES: tuple[str, ...] = ("", "", "+", "00", "011", "0", "1", "86", "+86", "0086", "852")
PREFIXES += ("+852", "00852")
PREFIXES += ("17951", "17911", "12593", "17909", "96688", "10193", "91", "+91", "44", "+44")
PREFIXES += ("49", "+49", "0049", "001", "+1", "1", "01", "179510", "00852", "0085")


@st.composite
def digit_strings(draw: st.DrawFn) -> tuple[str, str]:
    prefix = draw(st.sampled_from(PREFIXES))
    head = draw(st.sampled_from(("", "1", "13", "15", "18", "5", "6", "9", "2", "7", "0", "20")))
    body = draw(st.text("0123456789", min_size=0, max_size=16))
    sep = draw(st.sampled_from(("", " ", "-")))
    default = draw(st.sampled_from(DEFAULTS))
    return prefix + sep + head + body, default


def _check_against_phonenumbers(raw: str, default: str, got: ref.Normalized) -> None:
    region = default if default in phonenumbers.SUPPORTED_REGIONS else None
    try:
        p = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return
    if phonenumbers.is_valid_number(p):
        assert got.status == ref.Status.OK, (raw, default, got)
        assert got.e164 == phonenumbers.format_number(p, PhoneNumberFormat.E164), (raw, default)
        assert got.key == int(got.e164[1:])
        assert got.number_type == phonenumbers.number_type(p)
        assert got.region == phonenumbers.region_code_for_number(p)


@FAST
@given(generated())
def test_generated_numbers_agree(case: tuple[str, str]) -> None:
    raw, default = case
    expected = ref.normalize(raw, default)
    _check_against_phonenumbers(raw, default, expected)
    assert normalize.normalize(raw, default) == expected
    if C is not None:
        assert C.normalize(raw, default) == expected, (raw, default)


@FAST
@given(digit_strings())
def test_digit_strings_agree(case: tuple[str, str]) -> None:
    raw, default = case
    expected = ref.normalize(raw, default)
    _check_against_phonenumbers(raw, default, expected)
    if C is not None:
        assert C.normalize(raw, default) == expected, (raw, default)
        assert C.normalize(raw, default, weak_digits=11) == ref.normalize(
            raw, default, weak_digits=11
        )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(generated(), digit_strings()), min_size=0, max_size=40))
def test_batches_agree(cases: list[tuple[str, str]]) -> None:
    raws = [raw for raw, _ in cases]
    for default in ("CN", "US"):
        expected = [ref.normalize(r, default) for r in raws]
        batch = normalize.normalize_many(raws, default)
        assert [batch[i] for i in range(len(batch))] == expected
        if C is not None:
            cb = C.normalize_many(raws, default)
            assert [cb[i] for i in range(len(cb))] == expected


@pytest.mark.skipif(C is None, reason="compiled module not under test (BEFRIEND_PUREPYTHON=1)")
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.sampled_from(DEFAULTS))
def test_arbitrary_text_compiled_equals_reference(raw: str, default: str) -> None:
    assert C is not None
    assert C.normalize(raw, default) == ref.normalize(raw, default)


@pytest.mark.skipif(C is None, reason="compiled module not under test (BEFRIEND_PUREPYTHON=1)")
@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+86 138 1234 5678", "US"),
        ("138-1234-5678", "CN"),
        ("010 1234 5678", "CN"),
        ("17951 13812345678", "CN"),
        ("17951 010 12345678", "CN"),
        ("0086 13812345678", "CN"),
        ("+852 9123 4567", "CN"),
        ("9123 4567", "CN"),
        ("9123 4567", "HK"),
        ("(650) 253-0000", "US"),
        ("+1 650-253-0000", "DE"),
        ("098765 43210", "IN"),
        ("+91 98765 43210", "GB"),
        ("030 123456", "DE"),
        ("+49 30 123456", "CN"),
        ("020 7946 0000", "GB"),
        ("+44 20 7946 0000", "US"),
        ("\uff11\uff13\uff18\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18", "CN"),
    ],
)
def test_fast_path_covers_common_shapes(raw: str, region: str) -> None:
    assert C is not None
    assert C.fast_path_decides(raw, region), (raw, region)
