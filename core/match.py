"""Bulk re-match of address books against the member registry (compiled, or the reference
under ``BEFRIEND_PUREPYTHON=1``) — the scheduled (monthly) buddy refresh of seed 001.

``bulk_match(book_indptr, book_keys, member_index, owner_of_member=None)`` takes every book
in CSR form (user ``u``'s keys are ``book_keys[book_indptr[u]:book_indptr[u + 1]]``, any
order, duplicates allowed) and a ``KeyIndex`` of registered identity keys. Its values are
member user indices in the books' index space, or, with ``owner_of_member``, indices into that
array, which gives the member user index (2**64 - 1 there: "no member", e.g. a released
number). User indices must be below ``MAX_USERS`` (2**32 - 1).

The ``MatchResult`` holds one edge per ``(owner, other)`` pair, sorted: the first key of
``owner``'s book that maps to ``other``, and ``mutual`` when ``other``'s book holds a key of
``owner`` too (full match: buddies both ways; otherwise one-way); self-matches are dropped.
Keys of no member are the phonebook buddies, once per owner, sorted by owner and in book order
(first occurrence) within an owner. Book
keys equal to 2**64 - 1 (the KeyIndex's reserved empty marker) are skipped.

``reverse_holders(book_indptr, book_keys, keys)`` answers "who holds this number" (the
registration and number-change triggers): a CSR ``(indptr, holders)`` with, for each query
key, the ascending distinct users whose book holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from befriend.core._impl import load
from befriend.core._pymatch import MAX_USERS, MatchResult

_m = load("_cmatch", "_pymatch")

if TYPE_CHECKING:
    from befriend.core._pymatch import bulk_match, reverse_holders
else:
    bulk_match = _m.bulk_match
    reverse_holders = _m.reverse_holders

__all__ = ["MAX_USERS", "MatchResult", "bulk_match", "reverse_holders"]
