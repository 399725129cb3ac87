"""Type stub of the compiled bulk re-match (``_cmatch.pyx``); the API matches ``_pymatch``."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from befriend.core._pymatch import KeyLookup, MatchResult

EMPTY_KEY: int

def bulk_match(
    book_indptr: Any,
    book_keys: Any,
    member_index: KeyLookup,
    owner_of_member: Any = None,
) -> MatchResult: ...
def reverse_holders(
    book_indptr: Any, book_keys: Any, keys: Any
) -> tuple[NDArray[np.int64], NDArray[np.int64]]: ...
