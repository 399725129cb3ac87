"""Explicit rules of befriend.core.normalize: seed 000 Table 1, DESIGN §3, garbage, e-mail/IM.

Runs on whichever implementation is selected (compiled, or the reference under
BEFRIEND_PUREPYTHON=1).
"""

from __future__ import annotations

import numpy as np
import phonenumbers
import pytest

from befriend.core.normalize import (
    CN_IP_PREFIXES,
    NumberType,
    Status,
    email_key,
    im_key,
    normalize,
    normalize_many,
)


def e164(raw: str, region: str) -> str:
    r = normalize(raw, region)
    assert r.status == Status.OK, (raw, region, r)
    assert r.key == int(r.e164[1:]) < 2**50
    return r.e164


def test_number_type_mirrors_phonenumbers() -> None:
    for name in dir(phonenumbers.PhoneNumberType):
        if name.isupper():
            assert NumberType[name] == getattr(phonenumbers.PhoneNumberType, name)


@pytest.mark.parametrize(
    "raw",
    ["13812345678", "+86 13812345678", "+8613812345678", "0086 138 1234 5678", "8613812345678"],
)
def test_cn_mobile_forms(raw: str) -> None:
    r = normalize(raw, "CN")
    assert (r.status, r.e164, r.number_type, r.region) == (
        Status.OK,
        "+8613812345678",
        NumberType.MOBILE,
        "CN",
    )
    assert r.weak_key == 2345678
    assert normalize(raw, "CN", weak_digits=11).weak_key == 13812345678


def test_three_four_four_and_separators() -> None:
    for raw in ["138-1234-5678", "138 1234 5678", "(138)1234.5678", "138/1234/5678"]:
        assert e164(raw, "CN") == "+8613812345678"
    assert e164("\u00a0138\u00a01234\u00a05678 ", "CN") == "+8613812345678"
    wide = str.maketrans({str(i): chr(0xFF10 + i) for i in range(10)} | {"+": "\uff0b"})
    assert e164("13812345678".translate(wide), "CN") == "+8613812345678"
    assert e164("+86\u300013812345678".translate(wide), "US") == "+8613812345678"
    assert e164("1-650-253-0000", "US") == "+16502530000"


@pytest.mark.parametrize("prefix", ["17951", "17911", "12593", "17909"])
def test_cn_ip_prefix_before_mobile_and_fixed_line(prefix: str) -> None:
    assert prefix in CN_IP_PREFIXES
    assert e164(f"{prefix} 13812345678", "CN") == "+8613812345678"
    assert e164(f"{prefix}13812345678", "CN") == "+8613812345678"
    fixed = normalize(f"{prefix} 010 12345678", "CN")
    assert (fixed.e164, fixed.number_type) == ("+861012345678", NumberType.FIXED_LINE)
    # phonenumbers alone leaves the fixed-line form invalid (the rule is ours)
    p = phonenumbers.parse(f"{prefix} 010 12345678", "CN")
    assert not phonenumbers.is_valid_number(p)


def test_ip_prefix_only_under_cn() -> None:
    r = normalize("17951 010 12345678", "US")
    assert r.status != Status.OK
    assert r.weak_key == 2345678  # the fallback key still exists


def test_hk_numbers() -> None:
    for raw in ["9123 4567", "+852 9123 4567", "00852 91234567", "852 9123 4567"]:
        assert e164(raw, "HK") == "+85291234567"
    for raw in ["+852 9123 4567", "00852 91234567", "85291234567"]:
        assert e164(raw, "CN") == "+85291234567"
    # phonenumbers alone reads "00852..." under HK as 008 (HK carrier dial-out) + Mexico
    assert not phonenumbers.is_valid_number(phonenumbers.parse("0085291234567", "HK"))
    assert e164("0086 138 1234 5678", "HK") == "+8613812345678"  # 008 + 61 natively
    # seed Table 1: an 8-digit number starting with 5/6/9 is read as HK under CN
    r = normalize("91234567", "CN")
    assert (r.e164, r.region, r.number_type) == ("+85291234567", "HK", NumberType.MOBILE)
    assert e164("5123 4567", "CN") == "+85251234567"
    # ...but not under other regions, and 8 digits starting with 2/3 stay unread under CN
    assert normalize("91234567", "US").status != Status.OK
    assert normalize("21234567", "CN").status != Status.OK
    assert normalize("21234567", "CN").weak_key == 1234567


def test_valid_native_reading_is_never_overridden() -> None:
    # a valid number under the default region stays what phonenumbers says
    assert e164("6502530000", "US") == "+16502530000"
    assert e164("010 1234 5678", "CN") == "+861012345678"


def test_dial_out_prefix_depends_on_default_region() -> None:
    assert e164("0049 30 123456", "DE") == "+4930123456"
    assert e164("0049 30 123456", "CN") == "+4930123456"
    r = normalize("0049 30 123456", "US")  # 00 is not the US dial-out prefix
    assert r.status != Status.OK and r.e164 == "" and r.key == 0
    assert e164("011 49 30 123456", "US") == "+4930123456"
    assert e164("+49 30 123456", "US") == "+4930123456"


@pytest.mark.parametrize(
    "raw", ["138 1234 5678 x123", "138 1234 5678 ext. 123", "13812345678#123", "13812345678转123"]
)
def test_extension_dropped(raw: str) -> None:
    r = normalize(raw, "CN")
    assert (r.status, r.e164, r.key) == (Status.OK, "+8613812345678", 8613812345678)


def test_other_regions() -> None:
    assert e164("(650) 253-0000", "US") == "+16502530000"
    assert e164("098765 43210", "IN") == "+919876543210"
    assert e164("030 123456", "DE") == "+4930123456"
    assert e164("020 7946 0000", "GB") == "+442079460000"
    assert e164("07400 123456", "GB") == "+447400123456"
    assert normalize("07400 123456", "GB").number_type == NumberType.MOBILE


def test_vanity_letters_follow_phonenumbers() -> None:
    assert e164("1-800-FLOWERS", "US") == "+18003569377"
    assert normalize("1-800-FLOWERS", "US").number_type == NumberType.TOLL_FREE


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "---",
        "()",
        "\x00",
        "\x00" * 20,
        "😀",
        "😀😀😀 138",
        "x" * 10_000,
        "1" * 10_000,
        "+",
        "++86 138",
        "abc",
        "\uff11\uff13\uff18abcд",
        "+0 123456",
        "+999 123456789",
        "0",
        "12",
        "\ud800",
        "ext. 123",
    ],
)
def test_garbage_gets_a_status(raw: str) -> None:
    for region in ("CN", "US", "ZZ", "", "nonsense"):
        r = normalize(raw, region)
        assert r.status != Status.OK
        assert r.e164 == "" and r.key == 0 and r.number_type == NumberType.UNKNOWN


def test_too_long_input_keeps_a_weak_key() -> None:
    r = normalize("1" * 10_000, "CN")
    assert r.status == Status.TOO_LONG and r.weak_key == 1111111


def test_regions() -> None:
    r = normalize("650 253 0000", "XX")
    assert r.status == Status.INVALID_REGION and r.weak_key == 2530000
    assert e164("+1 650 253 0000", "XX") == "+16502530000"
    assert e164("138 1234 5678", " cn ") == "+8613812345678"
    assert normalize("+999 1234567", "CN").status == Status.INVALID_COUNTRY_CODE


def test_weak_digits_range() -> None:
    assert normalize("9123 4567", "HK", weak_digits=11).weak_key == 0  # 8-digit NSN
    assert normalize("9123 4567", "HK", weak_digits=1).weak_key == 7
    for bad in (0, 19, -1):
        with pytest.raises(ValueError):
            normalize("1", "CN", weak_digits=bad)
        with pytest.raises(ValueError):
            normalize_many(["1"], "CN", weak_digits=bad)


def test_normalize_many_columns() -> None:
    raws = ["138 1234 5678", "", "x" * 10_000, "+852 9123 4567", "17951 010 12345678", "12"]
    b = normalize_many(raws, "CN")
    assert len(b) == len(raws)
    assert b.status.dtype == np.uint8 and b.number_type.dtype == np.uint8
    assert b.key.dtype == np.uint64 and b.weak_key.dtype == np.uint64
    assert b.e164 == ["+8613812345678", "", "", "+85291234567", "+861012345678", ""]
    assert b.region == ["CN", "", "", "HK", "CN", "CN"]
    assert list(b.status) == [0, 4, 3, 0, 0, 2]
    assert int(b.key[0]) == 8613812345678
    assert [b[i] for i in range(len(b))] == [normalize(r, "CN") for r in raws]
    empty = normalize_many([], "CN")
    assert len(empty) == 0 and empty.key.shape == (0,)


def test_normalize_many_accepts_non_strings_without_aborting() -> None:
    b = normalize_many(["13812345678", None, 42, "13812345678"], "CN")  # type: ignore[list-item]
    assert list(b.status) == [0, 4, 4, 0]


def test_email_key() -> None:
    norm, key = email_key("  John.Doe@Example.COM. ")
    assert norm == "John.Doe@example.com"
    assert key >= 2**63 and key < 2**64
    assert email_key("John.Doe@example.com") == (norm, key)
    assert email_key("john.doe@example.com")[1] != key  # local part kept as written
    for bad in ["", "john", "@x.com", "john@", "a@b@c", "jo hn@x.com", "john@x .com", "a\x00@b"]:
        with pytest.raises(ValueError):
            email_key(bad)


def test_im_key() -> None:
    norm, key = im_key(" QQ ", " 00123456 ")
    assert norm == "qq:123456" and key >= 2**63
    assert im_key("qq", "123456") == (norm, key)
    assert im_key("MSN", "John@Hotmail.COM")[0] == "msn:John@hotmail.com"
    assert im_key("skype", "Live:Foo")[0] == "skype:Live:Foo"
    assert im_key("qq", "123456")[1] != email_key("qq@123456")[1]
    for kind, ident in [("", "1"), ("qq", ""), ("qq", "1 2"), ("q q", "1"), ("qq", "   ")]:
        with pytest.raises(ValueError):
            im_key(kind, ident)


def test_hash_is_fixed() -> None:
    # the key is part of stored data: it must never change between releases or platforms
    assert email_key("a@b.c")[1] == email_key("a@B.C")[1]
    import hashlib

    h = hashlib.blake2b(b"email\0a@b.c", digest_size=8, key=b"befriend-v1").digest()
    assert email_key("a@b.c")[1] == int.from_bytes(h, "big") | (1 << 63)
