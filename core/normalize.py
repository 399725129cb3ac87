"""Phone, e-mail and IM identity normalisation (public facade of the normalisation kernel).

Re-exports the compiled ``befriend.core._cnormalize`` or, under ``BEFRIEND_PUREPYTHON=1``, the
reference ``befriend.core._pynormalize``; both have the same API and results. Semantics,
seed rules and key layout are documented in ``befriend.core._pynormalize``.

Keys: a phone's ``key`` is its E.164 digits as an integer (< 2**50, injective); e-mail and IM
keys are 64-bit keyed hashes with the top bit set (>= 2**63), so the three never collide
with phone keys. Stored identities keep the normalised string beside the key and the
matcher confirms the string on a key hit (hash collisions cost a lookup, never a match).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from befriend.core._impl import load
from befriend.core._pynormalize import (
    CN_IP_PREFIXES,
    Normalized,
    NormalizedBatch,
    NumberType,
    Status,
)

__all__ = [
    "CN_IP_PREFIXES",
    "Normalized",
    "NormalizedBatch",
    "NumberType",
    "Status",
    "email_key",
    "im_key",
    "normalize",
    "normalize_many",
]

_m = load("_cnormalize", "_pynormalize")


def normalize(raw: str, default_region: str, *, weak_digits: int = 7) -> Normalized:
    """Normalise one phone number read under the uploader's ``default_region``; never raises
    for bad input (the status says what went wrong). ValueError for weak_digits outside 1..18.
    """
    return cast(Normalized, _m.normalize(raw, default_region, weak_digits=weak_digits))


def normalize_many(
    raws: Sequence[str], default_region: str, *, weak_digits: int = 7
) -> NormalizedBatch:
    """Normalise a batch into numpy columns; one bad entry never aborts the batch."""
    return cast(NormalizedBatch, _m.normalize_many(raws, default_region, weak_digits=weak_digits))


email_key: Callable[[str], tuple[str, int]] = _m.email_key
im_key: Callable[[str, str], tuple[str, int]] = _m.im_key
