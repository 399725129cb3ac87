"""Migrations on SQLite and PostgreSQL: they match the models and can be re-applied."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from befriend.server.storage.db import Database
from befriend.server.storage.models import Base
from befriend.server.storage.repositories import key_from_db, key_to_db


def test_models_match_migrations(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    db.migrate()
    assert db.is_migrated()


def test_identity_keys_round_trip_through_signed_bigint() -> None:
    for key in (0, 8613912345678, 2**50 - 1, 2**63, 2**64 - 1):
        stored = key_to_db(key)
        assert -(2**63) <= stored < 2**63
        assert key_from_db(stored) == key
