"""befriend.core — the pure domain and the compiled matching core.

Every kernel exists twice: a Cython extension (``_c*.pyx``) and a pure-Python reference
(``_py*.py``) with the same API. ``BEFRIEND_PUREPYTHON=1`` selects the references; otherwise
the compiled modules are required, and a missing extension is an ImportError, never a silent
fallback. Public facades (``befriend.core.normalize``, ``befriend.core.index``,
``befriend.core.sets``) re-export whichever implementation is selected.

This package imports neither grpc nor sqlalchemy.
"""

from befriend.core._impl import IMPLEMENTATION, PUREPYTHON

__all__ = ["IMPLEMENTATION", "PUREPYTHON"]
