"""matching.common_keys: the two books' unique phone keys through the core's sorted-array
intersection kernel, minus both users' own numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from befriend.core import sets
from befriend.server.services import matching


class _Books:
    def __init__(self, books: dict[str, list[int]], own: dict[str, list[tuple[int, int]]]) -> None:
        self.books, self.own = books, own

    def book_phone_keys(self, user_id: str) -> list[int]:
        return self.books[user_id]

    def own_keys(self, user_id: str) -> list[tuple[int, int]]:
        return self.own.get(user_id, [])


def test_common_keys_use_the_sorted_intersection_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[int], list[int]]] = []
    real = sets.intersect

    def spy(a: Any, b: Any) -> Any:
        calls.append((list(map(int, a)), list(map(int, b))))
        return real(a, b)

    monkeypatch.setattr(sets, "intersect", spy)  # the module matching calls through
    repo = _Books(
        {
            "a": [8613900000009, 8613900000003, 8613900000002, 8613900000003, 1 << 49],
            "b": [8613900000003, 8613900000002, 1 << 49, 8613900000004],
        },
        # b's own number (2) and an e-mail identity (kind 2) of a, whose key is never a phone
        {"b": [(1, 8613900000002)], "a": [(2, 1 << 49)]},
    )
    got = matching.common_keys(repo, "a", "b")  # type: ignore[arg-type]
    assert got.dtype == np.uint64
    assert got.tolist() == [8613900000003, 1 << 49]
    # Sorted, de-duplicated inputs went through the kernel once.
    assert calls == [
        (
            [8613900000002, 8613900000003, 8613900000009, 1 << 49],
            [8613900000002, 8613900000003, 8613900000004, 1 << 49],
        ),
    ]


def test_common_keys_of_empty_books() -> None:
    repo = _Books({"a": [], "b": [8613900000003]}, {})
    assert matching.common_keys(repo, "a", "b").tolist() == []  # type: ignore[arg-type]
