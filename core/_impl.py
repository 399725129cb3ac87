"""Selection between the compiled kernels and their pure-Python references."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PUREPYTHON: bool = os.environ.get("BEFRIEND_PUREPYTHON", "") not in ("", "0")
IMPLEMENTATION: str = "python" if PUREPYTHON else "cython"


def load(compiled: str, reference: str) -> ModuleType:
    """Import ``befriend.core.<compiled>`` or, under BEFRIEND_PUREPYTHON=1, ``<reference>``.

    A missing compiled module raises ImportError with a hint: a build that silently fell
    back to Python would hide a broken build.
    """
    if PUREPYTHON:
        return importlib.import_module(f"befriend.core.{reference}")
    try:
        return importlib.import_module(f"befriend.core.{compiled}")
    except ImportError as exc:  # pragma: no cover - exercised only on a broken build
        raise ImportError(
            f"compiled kernel befriend.core.{compiled} is not built ({exc}); rebuild with "
            "`make install`, or set BEFRIEND_PUREPYTHON=1 to use the reference explicitly"
        ) from exc
