"""Type stub of the compiled normalisation kernel (same API as ``_pynormalize``)."""

from collections.abc import Sequence

from befriend.core._pynormalize import CN_IP_PREFIXES as CN_IP_PREFIXES
from befriend.core._pynormalize import Normalized as Normalized
from befriend.core._pynormalize import NormalizedBatch as NormalizedBatch
from befriend.core._pynormalize import NumberType as NumberType
from befriend.core._pynormalize import Status as Status
from befriend.core._pynormalize import email_key as email_key
from befriend.core._pynormalize import im_key as im_key

FAST_CALLING_CODES: tuple[int, ...]

def normalize(raw: str, default_region: str, *, weak_digits: int = 7) -> Normalized: ...
def normalize_many(
    raws: Sequence[str], default_region: str, *, weak_digits: int = 7
) -> NormalizedBatch: ...
def fast_path_decides(raw: object, default_region: str, *, weak_digits: int = 7) -> bool: ...
def fast_regions() -> tuple[tuple[str, ...], tuple[int, ...]]: ...
def clear_memo() -> None: ...
