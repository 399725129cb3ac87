"""Bulk re-match of address books against the member registry — pure-Python/numpy reference
of ``_cmatch``.

Same API, validation, results and ordering as the compiled module; ``MatchResult`` is defined
here once so that both implementations return the same type.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from befriend.core._arrays import as_indptr, as_u64

__all__ = ["MAX_USERS", "MatchResult", "bulk_match", "reverse_holders"]

EMPTY = np.uint64(2**64 - 1)
MAX_USERS = 2**32 - 1  # user indices (owners and members) must be < MAX_USERS


class KeyLookup(Protocol):
    """What ``bulk_match`` needs of a member index (``befriend.core.index.KeyIndex``)."""

    def lookup(self, keys: Any, missing: int = ...) -> NDArray[np.uint64]: ...


class MatchResult(NamedTuple):
    """Edges of a bulk re-match, sorted by ``(owner, other)``, and phonebook entries sorted by
    owner, each owner's in book order (first occurrence).

    ``owner[i]``'s book holds ``key[i]`` (its first occurrence there), which belongs to member
    ``other[i]``; ``mutual[i]`` is True when ``other[i]``'s book also holds a key of
    ``owner[i]`` (both edges are then listed, both mutual). ``phonebook_key[j]`` is a key in
    ``phonebook_owner[j]``'s book that belongs to no member (once per owner).
    """

    owner: NDArray[np.int64]
    other: NDArray[np.int64]
    key: NDArray[np.uint64]
    mutual: NDArray[np.bool_]
    phonebook_owner: NDArray[np.int64]
    phonebook_key: NDArray[np.uint64]


def _check_books(book_indptr: Any, book_keys: Any) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
    keys = as_u64(book_keys, "book_keys")
    indptr = as_indptr(book_indptr, keys.shape[0])
    if indptr.shape[0] - 1 > MAX_USERS:
        raise ValueError(f"at most {MAX_USERS} books (user indices are 32-bit)")
    if bool(np.any(indptr[1:] < indptr[:-1])):
        raise ValueError("indptr must be non-decreasing")
    return indptr, keys


def _members(
    member_index: KeyLookup, keys: NDArray[np.uint64], owner_of_member: Any
) -> NDArray[np.uint64]:
    """Member user index of every key (``EMPTY`` for none), validated like the kernel."""
    vals = np.asarray(member_index.lookup(keys, missing=2**64 - 1), dtype=np.uint64)
    if owner_of_member is not None:
        om = as_u64(owner_of_member, "owner_of_member")
        hit = vals != EMPTY
        if bool(np.any(vals[hit] >= np.uint64(om.shape[0]))):
            raise ValueError("a member_index value is out of range for owner_of_member")
        mapped = np.full(vals.shape[0], EMPTY, dtype=np.uint64)
        mapped[hit] = om[vals[hit].astype(np.int64)]
        vals = mapped
    if bool(np.any((vals != EMPTY) & (vals >= np.uint64(MAX_USERS)))):
        raise ValueError(f"member user indices must be < {MAX_USERS}")
    return vals


def bulk_match(
    book_indptr: Any,
    book_keys: Any,
    member_index: KeyLookup,
    owner_of_member: Any = None,
) -> MatchResult:
    """Match every book (CSR ``book_keys[book_indptr[u]:book_indptr[u + 1]]`` of user ``u``)
    against ``member_index`` (identity key -> member user index, or -> an index into
    ``owner_of_member`` that gives the member user index; 2**64 - 1 there means "no member").

    Self-matches are dropped, duplicate ``(owner, other)`` pairs keep the first key, keys of
    no member become phonebook entries (deduplicated per owner), and book keys equal to
    2**64 - 1 (the reserved empty marker) are skipped.
    """
    indptr, keys = _check_books(book_indptr, book_keys)
    n_books = indptr.shape[0] - 1
    base, end = int(indptr[0]), int(indptr[-1])
    sub = keys[base:end]
    vals = _members(member_index, sub, owner_of_member)
    owner = np.repeat(np.arange(n_books, dtype=np.int64), np.diff(indptr))
    valid = sub != EMPTY

    # edges: first key per (owner, other), self-matches dropped
    hit = valid & (vals != EMPTY)
    hit &= vals != owner.astype(np.uint64)
    pos = np.flatnonzero(hit)
    codes = (owner[pos].astype(np.uint64) << np.uint64(32)) | vals[pos]
    uniq, first = np.unique(codes, return_index=True)  # first occurrence = smallest position
    e_owner = (uniq >> np.uint64(32)).astype(np.int64)
    e_other = (uniq & np.uint64(0xFFFFFFFF)).astype(np.int64)
    e_key = sub[pos[first]]
    rev = (e_other.astype(np.uint64) << np.uint64(32)) | e_owner.astype(np.uint64)
    mutual = np.isin(rev, uniq, assume_unique=True)

    # phonebook: keys of no member, first occurrence per owner, in book order
    miss = np.flatnonzero(valid & (vals == EMPTY))
    order = np.lexsort((miss, sub[miss], owner[miss]))  # by (owner, key, position)
    m_owner, m_key = owner[miss][order], sub[miss][order]
    first_of_group = np.ones(order.shape[0], dtype=np.bool_)
    first_of_group[1:] = (m_owner[1:] != m_owner[:-1]) | (m_key[1:] != m_key[:-1])
    kept = np.sort(miss[order][first_of_group])
    return MatchResult(
        owner=e_owner,
        other=e_other,
        key=e_key.astype(np.uint64, copy=False),
        mutual=mutual.astype(np.bool_, copy=False),
        phonebook_owner=owner[kept].astype(np.int64, copy=False),
        phonebook_key=sub[kept].astype(np.uint64, copy=False),
    )


def reverse_holders(
    book_indptr: Any, book_keys: Any, keys: Any
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Who holds each of ``keys``: CSR ``(indptr, holders)``, ``holders[indptr[i]:indptr[i+1]]``
    the ascending distinct users whose book holds ``keys[i]`` (duplicate query keys each get
    the full list; 2**64 - 1 is held by nobody)."""
    indptr, bkeys = _check_books(book_indptr, book_keys)
    q = as_u64(keys, "keys")
    n_books = indptr.shape[0] - 1
    base, end = int(indptr[0]), int(indptr[-1])
    sub = bkeys[base:end]
    owner = np.repeat(np.arange(n_books, dtype=np.int64), np.diff(indptr))
    uq, inv = np.unique(q, return_inverse=True)
    slot = np.searchsorted(uq, sub)
    slot_c = np.minimum(slot, max(uq.shape[0] - 1, 0))
    found = (slot < uq.shape[0]) & (sub != EMPTY)
    if uq.shape[0]:
        found &= uq[slot_c] == sub
    pairs = np.unique(
        (slot[found].astype(np.uint64) << np.uint64(32)) | owner[found].astype(np.uint64)
    )
    p_slot = (pairs >> np.uint64(32)).astype(np.int64)
    p_owner = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    per_u = np.bincount(p_slot, minlength=uq.shape[0]).astype(np.int64)
    u_ptr = np.zeros(uq.shape[0] + 1, dtype=np.int64)
    np.cumsum(per_u, out=u_ptr[1:])
    counts = per_u[inv] if q.shape[0] else np.zeros(0, dtype=np.int64)
    out_ptr = np.zeros(q.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    holders = np.empty(int(out_ptr[-1]), dtype=np.int64)
    for i, s in enumerate(inv.tolist()):
        holders[out_ptr[i] : out_ptr[i + 1]] = p_owner[u_ptr[s] : u_ptr[s + 1]]
    return out_ptr, holders
