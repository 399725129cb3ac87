"""Pure-Python reference of the normalisation kernel (phone numbers, e-mail, IM ids).

The compiled twin is ``befriend.core._cnormalize``; the public facade is
``befriend.core.normalize``. Both implementations return identical results for every input;
the compiled one answers the common shapes itself and calls :func:`normalize_slow` (this
module's code path) for everything else.

Semantics (DESIGN §3, seed 000 Table 1, seed 001)
--------------------------------------------------
A phone number is normalised in three steps:

1. *Pre-cleaning* (:func:`preclean`): full-width digits (U+FF10-U+FF19) and the full-width
   plus (U+FF0B) become ASCII, NBSP / ideographic spaces become spaces, and a trailing
   extension (``x123``, ``ext. 123``, ``#123``, ``转123``, ``分机123``) is dropped: extensions
   are not part of the identity and never reach the E.164 string or the key.
2. *Native reading*: ``phonenumbers.parse(cleaned, default_region)`` with the uploader's region
   as default (so ``00`` / ``011`` dial-out prefixes follow that region: ``0049 30 123456``
   read under US is ``+1004930123456``, invalid). If ``phonenumbers`` finds the number valid,
   that is the answer, always: the seed rules below never override a valid native reading.
3. *Seed rescue* (only when the native reading is not valid and the input consists of digits,
   an optional leading ``+`` and separators):

   * default region CN, no ``+``: a CN IP-dial prefix (see :data:`CN_IP_PREFIXES`) followed by
     an 11-digit mobile ``1[3-9]xxxxxxxxx`` -> ``+86`` mobile; followed by a 0-led area code +
     fixed number (``17951 010 12345678``) -> ``+86`` fixed line without the trunk ``0``
     (``+861012345678``; phonenumbers leaves that invalid). IP prefixes are stripped only
     under default region CN: elsewhere the same digits are ordinary numbers.
   * default region CN, no ``+``: ``86`` + 11-digit mobile -> ``+86`` mobile
     (``+86``/``0086`` and ``86`` before valid mobiles are already handled natively).
   * default region CN or HK, no ``+``: ``852`` + 8 digits -> ``+852`` + 8 digits; and
     ``00`` + country code + number -> ``+`` country code + number (under HK, phonenumbers
     reads ``008`` as HK's carrier dial-out prefix, so ``00852 9123 4567`` becomes an invalid
     Mexican number and ``0086 138...`` an invalid Australian one).
   * default region CN, no ``+``: an 8-digit number starting with 5, 6 or 9 is read as a
     Hong Kong number (seed 000 Table 1: "8 digit number beginning with 5/6/9 -> directly read
     the 8-digit number"), if it is a valid HK number; one starting with 4, 7 or 8 only if HK
     metadata calls it MOBILE. Mainland 8-digit *local* fixed-line numbers (dialled without
     their area code) cannot be normalised anyway (phonenumbers: invalid), so the seed's
     reading costs nothing valid; such an entry still carries its weak key.

   A rescued candidate must itself be valid per ``phonenumbers``; the rules decide how to
   read the digits, never whether the result is valid.

Result fields: ``status`` (:class:`Status`), ``e164`` and ``key`` (E.164 digits as an integer,
< 2**50, injective) only when ``status == OK``; ``number_type`` mirrors
``phonenumbers.PhoneNumberType``; ``region`` is the CLDR region of the number ("" if none);
``weak_key`` is the integer value of the rightmost ``weak_digits`` digits of the national
significant number (OK) or of all digits found in the input (not OK), 0 when there are fewer
digits. The weak key is a fallback only; it is not injective.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import phonenumbers
from numpy.typing import NDArray
from phonenumbers import NumberParseException, ValidationResult

__all__ = [
    "CN_IP_PREFIXES",
    "MAX_INPUT_LENGTH",
    "Normalized",
    "NormalizedBatch",
    "NumberType",
    "Status",
    "email_key",
    "im_key",
    "normalize",
    "normalize_many",
    "normalize_slow",
    "preclean",
]


class Status(enum.IntEnum):
    """Outcome of normalising one phone number (stored as uint8 in batches)."""

    OK = 0
    INVALID = 1  # parsed, plausible length, but not a valid number of its region
    TOO_SHORT = 2
    TOO_LONG = 3
    NOT_A_NUMBER = 4  # empty, garbage, no digits, not a string
    INVALID_REGION = 5  # no '+' and the default region is unknown
    INVALID_COUNTRY_CODE = 6  # '+' / dial-out prefix followed by an unknown country code


class NumberType(enum.IntEnum):
    """Mirror of ``phonenumbers.PhoneNumberType`` (same values)."""

    FIXED_LINE = 0
    MOBILE = 1
    FIXED_LINE_OR_MOBILE = 2
    TOLL_FREE = 3
    PREMIUM_RATE = 4
    SHARED_COST = 5
    VOIP = 6
    PERSONAL_NUMBER = 7
    PAGER = 8
    UAN = 9
    VOICEMAIL = 10
    UNKNOWN = 99


class Normalized(NamedTuple):
    """One normalised phone number (immutable)."""

    status: Status
    e164: str
    key: int
    number_type: NumberType
    region: str
    weak_key: int


@dataclass(frozen=True, eq=False)
class NormalizedBatch:
    """Column-wise results of :func:`normalize_many` (row i belongs to input i)."""

    status: NDArray[np.uint8]
    key: NDArray[np.uint64]
    number_type: NDArray[np.uint8]
    weak_key: NDArray[np.uint64]
    e164: list[str]
    region: list[str]

    def __len__(self) -> int:
        return len(self.e164)

    def __getitem__(self, i: int) -> Normalized:
        return Normalized(
            Status(int(self.status[i])),
            self.e164[i],
            int(self.key[i]),
            NumberType(int(self.number_type[i])),
            self.region[i],
            int(self.weak_key[i]),
        )


#: CN carrier IP-dial prefixes stripped by the seed rescue (default region CN only). The
#: first nine fit phonenumbers' own CN carrier pattern ``1(?:[12]\d|79)\d\d`` (17951/12593/
#: 17950 China Mobile, 17911/17910 China Unicom, 17909/17908 China Telecom, 11808, 12520);
#: 10193 and 96688 do not and are only ever stripped by the rescue (i.e. when the plain
#: reading is invalid and the rest is a valid CN number).
CN_IP_PREFIXES: tuple[str, ...] = (
    "17951",
    "17911",
    "12593",
    "17909",
    "17950",
    "17910",
    "17908",
    "11808",
    "12520",
    "10193",
    "96688",
)

#: phonenumbers refuses longer input with TOO_LONG; we use the same limit.
MAX_INPUT_LENGTH = 250
MAX_WEAK_DIGITS = 18

_TRANSLATE: dict[int, str] = {0xFF10 + i: str(i) for i in range(10)}
_TRANSLATE.update({0xFF0B: "+", 0x00A0: " ", 0x3000: " ", 0x2007: " ", 0x202F: " "})
_TRANSLATE.update({0xFF08: "(", 0xFF09: ")", 0xFF0D: "-", 0xFF0E: ".", 0xFF0F: "/"})

# A trailing extension: marker, optional separators, 1-7 digits, end. The marker must not be
# glued to a preceding letter (so vanity words such as "FAX1234" are left alone).
_EXTENSION = re.compile(
    r"[\s,;]*(?<![A-Za-z])(?:ext(?:ension)?\.?|[xX#]|转|分机)[\s.:#-]*\d{1,7}\s*#?\s*$",
    re.IGNORECASE,
)
_SEPARATORS = frozenset(" -./()")
_ASCII_DIGITS = frozenset("0123456789")
_CN_MOBILE = re.compile(r"1[3-9]\d{9}")


def _check_weak(weak_digits: int) -> int:
    w = int(weak_digits)
    if not 1 <= w <= MAX_WEAK_DIGITS:
        raise ValueError(f"weak_digits must be in 1..{MAX_WEAK_DIGITS}, got {weak_digits}")
    return w


def _region(default_region: object) -> str | None:
    """The default region upper-cased, or None when phonenumbers does not know it."""
    if not isinstance(default_region, str):
        return None
    r = default_region.strip().upper()
    return r if r in phonenumbers.SUPPORTED_REGIONS else None


def preclean(raw: str) -> str:
    """Full-width / NBSP translation and removal of a trailing extension (see module doc)."""
    s = raw.translate(_TRANSLATE)
    m = _EXTENSION.search(s)
    if m is not None and any(c in _ASCII_DIGITS for c in s[: m.start()]):
        s = s[: m.start()]
    return s


def _weak(digits: str, w: int) -> int:
    return int(digits[-w:]) if len(digits) >= w else 0


def _shape(s: str) -> tuple[bool, str] | None:
    """(has_plus, digits) when ``s`` is only separators, digits and one leading '+'."""
    has_plus = False
    digits: list[str] = []
    for c in s:
        if c in _ASCII_DIGITS:
            digits.append(c)
        elif c == "+":
            if has_plus or digits:
                return None
            has_plus = True
        elif c not in _SEPARATORS:
            return None
    return has_plus, "".join(digits)


def _status_of_invalid(p: phonenumbers.PhoneNumber) -> Status:
    reason = phonenumbers.is_possible_number_with_reason(p)
    if reason == ValidationResult.TOO_SHORT:
        return Status.TOO_SHORT
    if reason == ValidationResult.TOO_LONG:
        return Status.TOO_LONG
    if reason == ValidationResult.INVALID_COUNTRY_CODE:  # pragma: no cover - parse refuses
        return Status.INVALID_COUNTRY_CODE
    return Status.INVALID


_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: Status.INVALID_COUNTRY_CODE,
    NumberParseException.NOT_A_NUMBER: Status.NOT_A_NUMBER,
    NumberParseException.TOO_SHORT_AFTER_IDD: Status.TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: Status.TOO_SHORT,
    NumberParseException.TOO_LONG: Status.TOO_LONG,
}


def _native(s: str, region: str | None, w: int) -> tuple[Normalized, str]:
    """phonenumbers' reading of ``s``: (result, national significant number or "")."""
    try:
        p = phonenumbers.parse(s, region)
    except NumberParseException as exc:
        status = _PARSE_ERRORS.get(exc.error_type, Status.NOT_A_NUMBER)
        if status == Status.INVALID_COUNTRY_CODE and region is None and "+" not in s:
            status = Status.INVALID_REGION
        return Normalized(status, "", 0, NumberType.UNKNOWN, "", 0), ""
    nsn = phonenumbers.national_significant_number(p)
    found = phonenumbers.region_code_for_number(p) or ""
    if found and phonenumbers.is_valid_number_for_region(p, found):
        e164 = phonenumbers.format_number(p, phonenumbers.PhoneNumberFormat.E164)
        kind = NumberType(phonenumbers.number_type(p))
        return Normalized(Status.OK, e164, int(e164[1:]), kind, found, _weak(nsn, w)), nsn
    return Normalized(_status_of_invalid(p), "", 0, NumberType.UNKNOWN, found, 0), nsn


def _rescue_candidates(has_plus: bool, d: str, region: str | None) -> list[tuple[str, bool]]:
    """Seed-rule readings of an invalid number: ("+<digits>", mobile_only) in priority order."""
    if has_plus or region not in ("CN", "HK"):
        return []
    out: list[tuple[str, bool]] = []
    if region == "CN":
        if len(d) > 5 and d[:5] in CN_IP_PREFIXES:
            rest = d[5:]
            if len(rest) == 11 and _CN_MOBILE.fullmatch(rest):
                out.append(("+86" + rest, False))
            elif rest[:1] == "0" and 10 <= len(rest) <= 12:
                out.append(("+86" + rest[1:], False))
        if len(d) == 13 and d[:2] == "86" and _CN_MOBILE.fullmatch(d[2:]):
            out.append(("+" + d, False))
        if len(d) == 8 and d[0] in "456789":
            out.append(("+852" + d, d[0] in "478"))
    if len(d) == 11 and d[:3] == "852":
        out.append(("+" + d, False))
    if len(d) > 4 and d[:2] == "00" and d[2] != "0":
        out.append(("+" + d[2:], False))
    return out


def normalize_slow(raw: Any, region: str | None, w: int) -> Normalized:
    """The reference code path (``region`` already checked by :func:`_region`)."""
    if not isinstance(raw, str):
        return Normalized(Status.NOT_A_NUMBER, "", 0, NumberType.UNKNOWN, "", 0)
    if len(raw) > MAX_INPUT_LENGTH:
        digits = "".join(c for c in raw.translate(_TRANSLATE) if c in _ASCII_DIGITS)
        return Normalized(Status.TOO_LONG, "", 0, NumberType.UNKNOWN, "", _weak(digits, w))
    s = preclean(raw)
    res, _ = _native(s, region, w)
    if res.status == Status.OK:
        return res
    shape = _shape(s)
    if shape is not None:
        for cand, mobile_only in _rescue_candidates(shape[0], shape[1], region):
            alt, _ = _native(cand, region, w)
            if alt.status == Status.OK and (
                not mobile_only or alt.number_type == NumberType.MOBILE
            ):
                return alt
        digits = shape[1]
    else:
        digits = "".join(c for c in s if c in _ASCII_DIGITS)
    return res._replace(weak_key=_weak(digits, w))


def normalize(raw: str, default_region: str, *, weak_digits: int = 7) -> Normalized:
    """Normalise one phone number; never raises for bad input (see the module docstring).

    ``default_region`` is the uploader's region (CLDR code, case-insensitive); an unknown
    region still allows ``+``-prefixed numbers, others get ``Status.INVALID_REGION``.
    ``weak_digits`` must be within 1..18 (ValueError otherwise).
    """
    return normalize_slow(raw, _region(default_region), _check_weak(weak_digits))


def _empty_batch(n: int) -> NormalizedBatch:
    return NormalizedBatch(
        status=np.zeros(n, dtype=np.uint8),
        key=np.zeros(n, dtype=np.uint64),
        number_type=np.zeros(n, dtype=np.uint8),
        weak_key=np.zeros(n, dtype=np.uint64),
        e164=[""] * n,
        region=[""] * n,
    )


def normalize_many(
    raws: Sequence[str], default_region: str, *, weak_digits: int = 7
) -> NormalizedBatch:
    """Normalise a batch; a bad entry gets a status, it never aborts the batch."""
    w = _check_weak(weak_digits)
    region = _region(default_region)
    items = list(raws)
    out = _empty_batch(len(items))
    for i, raw in enumerate(items):
        r = normalize_slow(raw, region, w)
        out.status[i] = r.status
        out.key[i] = r.key
        out.number_type[i] = r.number_type
        out.weak_key[i] = r.weak_key
        out.e164[i] = r.e164
        out.region[i] = r.region
    return out


# --- e-mail and IM identities -------------------------------------------------------------

_HASH_KEY = b"befriend-v1"
_TOP_BIT = 1 << 63
_MAX_U64 = (1 << 64) - 1


def identity_hash(kind: bytes, normalized: str) -> int:
    """64-bit keyed BLAKE2b of ``kind \\0 normalized`` with the top bit set (>= 2**63).

    Phone keys are < 2**50, so hashed identities never collide with phone keys. Two
    different identities may (with probability ~2**-63 per pair) share a key (2**64 - 1,
    the index's empty-slot sentinel, is folded onto 2**64 - 2): stored
    identities keep the normalised string beside the key and the matcher confirms the string
    on a key hit, so a collision can only cost a lookup, never a wrong match.
    """
    h = hashlib.blake2b(kind + b"\0" + normalized.encode("utf-8"), digest_size=8, key=_HASH_KEY)
    key = int.from_bytes(h.digest(), "big") | _TOP_BIT
    # 2**64 - 1 is KeyIndex's empty-slot sentinel: never hand it out
    return key - 1 if key == _MAX_U64 else key


def _has_space(s: str) -> bool:
    # str.split() cuts at exactly the characters str.isspace() accepts
    return bool(s) and s.split() != [s]


def email_key(raw: str) -> tuple[str, int]:
    """Normalise an e-mail address; return (normalised, 64-bit key >= 2**63).

    Trimmed; the domain is lower-cased (domains are case-insensitive) and a trailing dot is
    dropped; the local part is kept exactly as written, because RFC 5321 makes it
    case-sensitive and provider-specific folding (Gmail dots, ``+tags``) would merge distinct
    mailboxes elsewhere. ValueError unless there is exactly one ``@`` with non-empty sides
    and no whitespace or control characters inside. See :func:`identity_hash` for collisions.
    """
    if not isinstance(raw, str):
        raise ValueError("an e-mail address must be a string")
    s = raw.strip()
    if s.count("@") != 1 or _has_space(s) or not s.isprintable():
        raise ValueError(f"not an e-mail address: {raw!r}")
    local, domain = s.split("@")
    domain = domain.rstrip(".").lower()
    if not local or not domain:
        raise ValueError(f"not an e-mail address: {raw!r}")
    norm = f"{local}@{domain}"
    return norm, identity_hash(b"email", norm)


_IM_KIND = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,31}")


def im_key(kind: str, ident: str) -> tuple[str, int]:
    """Normalise an IM id; return ("kind:id", 64-bit key >= 2**63).

    ``kind`` is trimmed and lower-cased (``QQ`` == ``qq``), ``ident`` trimmed. Numeric QQ
    ids lose leading zeros (QQ numbers never start with 0, so ``00123456`` is a formatting
    artefact of ``123456``). Ids that look like e-mail addresses (MSN/Live, Jabber) get the
    e-mail rule (domain lower-cased). Other ids are kept as written. ValueError for an empty
    or malformed kind, or an empty id / one with whitespace inside.
    """
    if not isinstance(kind, str) or not isinstance(ident, str):
        raise ValueError("IM kind and id must be strings")
    k = kind.strip().lower()
    i = ident.strip()
    if not _IM_KIND.fullmatch(k):
        raise ValueError(f"not an IM kind: {kind!r}")
    if not i or _has_space(i) or not i.isprintable():
        raise ValueError(f"not an IM id: {ident!r}")
    if k == "qq" and i.isascii() and i.isdigit():
        i = i.lstrip("0") or "0"
    elif i.count("@") == 1 and not i.startswith("@") and not i.endswith("@"):
        i = email_key(i)[0]
    norm = f"{k}:{i}"
    return norm, identity_hash(b"im", norm)
