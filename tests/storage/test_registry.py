"""The in-memory Registry tails the identity log: on SQLite and PostgreSQL it sees new,
removed and late-committed identities, and a lookup with nothing new reads no log rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func
from sqlalchemy.orm import Session

from befriend.core.index import EMPTY_KEY
from befriend.server.records import IdentityKind, IdentityRecord
from befriend.server.services import registry as registry_module
from befriend.server.services.registry import Registry
from befriend.server.storage import models
from befriend.server.storage.db import Database
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.repositories import AccountRepository
from tests.conftest import statements_run

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _add(s: Session, user_id: str, key: int) -> None:
    """A member with one phone key, in the transaction of ``s``."""
    AccountRepository(s).add_user(
        user_id,
        display_name=user_id,
        region_code="CN",
        time_zone="UTC",
        profile={},
        identities=[IdentityRecord(IdentityKind.PHONE, f"+{key}", key, f"+{key}")],
        now=T0,
    )


def _register(db: Database, user_id: str, key: int, seq: int | None = None) -> None:
    """A member with one phone key; ``seq``: its identity-log entry takes that number."""
    with db.transaction() as s:
        _add(s, user_id, key)
        if seq is not None:
            pk = s.query(models.Identity.id).filter_by(user_id=user_id).scalar()
            s.query(models.IdentityLog).filter_by(identity_pk=pk).update({"seq": seq})


def _found(db: Database, registry: Registry, *keys: int) -> list[bool]:
    with db.transaction(readonly=True) as s:
        hits = registry.lookup(MatchRepository(s), np.array(keys, dtype=np.uint64))
    return [int(h) != int(EMPTY_KEY) for h in hits]


def test_tail_sees_new_removed_and_late_identities(db: Database) -> None:
    registry = Registry()
    _register(db, "a" * 32, 8613900000001)
    assert _found(db, registry, 8613900000001, 8613900000002) == [True, False]

    _register(db, "b" * 32, 8613900000002)
    assert _found(db, registry, 8613900000002) == [True]

    with db.transaction() as s:
        AccountRepository(s).delete_user("a" * 32, T0)
    assert _found(db, registry, 8613900000001) == [False]

    # A transaction that took a lower log number commits after a higher one: its entry
    # lands inside the replay window, behind the registry's position.
    with db.transaction() as s:
        top = s.query(func.max(models.IdentityLog.seq)).scalar()
    _register(db, "c" * 32, 8613900000003, seq=top + 10)
    assert _found(db, registry, 8613900000003) == [True]
    _register(db, "d" * 32, 8613900000004, seq=top + 5)  # the late one
    assert _found(db, registry, 8613900000004) == [True]


def test_lookup_with_nothing_new_reads_no_log_rows(db: Database) -> None:
    registry = Registry()
    _register(db, "a" * 32, 8613900000001)
    for _ in range(2):  # the load, then one re-read of the window behind the snapshot
        assert _found(db, registry, 8613900000001) == [True]
    with statements_run(db.engine) as statements:
        for _ in range(3):
            assert _found(db, registry, 8613900000001) == [True]
    # Per lookup only the count of the window, at the driver (not recorded here): the log
    # rows themselves are not read again (identity_log_since).
    assert statements == []


def test_snapshot_streams_every_identity_with_its_exact_key(db: Database) -> None:
    """The load reads the identities into arrays: every pk with its key, hashed keys (top
    bit set, stored as negative BIGINTs) included."""
    keys = [8613900000001, 2**63 + 5, 2**64 - 2, 8613900000004, 2**63]
    for i, key in enumerate(keys):
        _register(db, f"{i:032d}", key)
    with db.transaction(readonly=True) as s:
        repo = MatchRepository(s)
        seq, pks, got = repo.identity_snapshot()
        expected = dict(s.query(models.Identity.id, models.Identity.key).all())
        assert seq == s.query(func.max(models.IdentityLog.seq)).scalar()
    assert pks.dtype == got.dtype == np.uint64
    assert dict(zip(pks.tolist(), got.tolist(), strict=True)) == {
        pk: k + 2**64 if k < 0 else k for pk, k in expected.items()
    }
    assert sorted(got.tolist()) == sorted(keys)
    assert _found(db, Registry(), *keys) == [True] * 5


class _RolledBack(Exception):
    pass


def test_a_rolled_back_identity_change_is_forgotten(db: Database) -> None:
    """A registration or removal that the registry took in inside its own transaction, then
    rolled back, leaves no trace: the removed identity is found again, and on SQLite the
    next writer, handed the rolled-back log seq, is found too."""
    registry = Registry()
    _register(db, "a" * 32, 8613900000001)
    assert _found(db, registry, 8613900000001) == [True]
    try:
        with db.transaction() as s:
            AccountRepository(s).delete_user("a" * 32, T0)
            _add(s, "b" * 32, 8613900000002)
            hits = registry.lookup(MatchRepository(s), np.array([8613900000002], np.uint64))
            assert int(hits[0]) != int(EMPTY_KEY)  # its own new member, taken in
            raise _RolledBack
    except _RolledBack:
        pass
    _register(db, "c" * 32, 8613900000003)  # on SQLite: the rolled-back log seqs again
    assert _found(db, registry, 8613900000001, 8613900000002, 8613900000003) == [
        True,
        False,
        True,
    ]


class _Counting(MatchRepository):
    """Counts the reads of every identity (``identity_snapshot``)."""

    reads = 0

    def identity_snapshot(self) -> tuple[int, Any, Any]:
        type(self).reads += 1
        return super().identity_snapshot()


def _found_counted(db: Database, registry: Registry, *keys: int) -> tuple[list[bool], int]:
    _Counting.reads = 0
    with db.transaction(readonly=True) as s:
        hits = registry.lookup(_Counting(s), np.array(keys, dtype=np.uint64))
    return [int(h) != int(EMPTY_KEY) for h in hits], _Counting.reads


def test_processes_share_one_registry_snapshot(
    db: Database, other_db: Database, tmp_path: Path
) -> None:
    """With ``--index-dir`` the first process reads the identities and stores them; the
    next maps them and catches up by the log (a registration and a deletion since); one
    of another database, or older than SNAPSHOT_MAX_AGE, is not used."""
    _register(db, "a" * 32, 8613900000001)
    _register(db, "b" * 32, 8613900000002)
    first = Registry(index_dir=str(tmp_path))
    assert _found_counted(db, first, 8613900000001) == ([True], 1)
    assert first.mapped == 0
    assert len(list(tmp_path.glob("registry-*"))) == 1
    _register(db, "c" * 32, 8613900000003)
    with db.transaction() as s:
        AccountRepository(s).delete_user("b" * 32, T0)
    second = Registry(index_dir=str(tmp_path))
    keys = (8613900000001, 8613900000002, 8613900000003, 8613900000004)
    assert _found_counted(db, second, *keys) == ([True, False, True, False], 0)
    assert second.mapped == 1
    assert _found_counted(db, first, *keys) == ([True, False, True, False], 0)
    # a rolled-back identity change makes the registry load again: from the snapshot now
    try:
        with db.transaction() as s:
            _add(s, "e" * 32, 8613900000005)
            assert (
                second.lookup(MatchRepository(s), np.array([8613900000005], np.uint64))[0]
                != EMPTY_KEY
            )
            raise _RolledBack
    except _RolledBack:
        pass
    assert _found_counted(db, second, *keys, 8613900000005) == (
        [True, False, True, False, False],
        0,
    )
    assert second.mapped == 2
    # another database's snapshot: not used
    _register(other_db, "x" * 32, 8613900000009)
    other = Registry(index_dir=str(tmp_path))
    assert _found_counted(other_db, other, 8613900000009, 8613900000001) == ([True, False], 1)
    assert other.mapped == 0


def test_a_registry_snapshot_older_than_a_day_is_read_again(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(db, "a" * 32, 8613900000001)
    assert _found_counted(db, Registry(index_dir=str(tmp_path)), 8613900000001) == ([True], 1)
    monkeypatch.setattr(registry_module, "SNAPSHOT_MAX_AGE", timedelta(0))
    late = Registry(index_dir=str(tmp_path))
    assert _found_counted(db, late, 8613900000001) == ([True], 1)
    assert late.mapped == 0
    assert len(list(tmp_path.glob("registry-*"))) == 1  # stored anew, the old one gone
