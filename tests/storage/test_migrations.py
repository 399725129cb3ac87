"""Migrations on SQLite and PostgreSQL: they match the models and can be re-applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from befriend.server.storage.db import Database, alembic_config
from befriend.server.storage.models import Base
from befriend.server.storage.repositories import key_from_db, key_to_db
from tests.conftest import _postgres_database


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


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has been migrated into."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.db'}"
        return
    gen = _postgres_database()
    yield next(gen)
    next(gen, None)


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_upgrade_through_0007_and_0008_keeps_books_and_member_rows(empty_url: str) -> None:
    """A 0006 database with a book, its keys, a member row, a phonebook row and an event:
    the upgrade drops the phonebook row (now derived) and the bulk tables' foreign keys, and
    keeps every other row (SQLite copies those tables to drop their keys)."""
    engine = create_engine(empty_url)
    _upgrade(engine, "0006")
    at = "2026-12-01 12:00:00+00:00"
    statements = [
        "INSERT INTO users (id, display_name, region_code, time_zone, profile, version, "
        f"created_at, updated_at) VALUES ('a', 'A', 'CN', 'UTC', '{{}}', 1, '{at}', '{at}'), "
        f"('b', 'B', 'CN', 'UTC', '{{}}', 1, '{at}', '{at}')",
        "INSERT INTO address_books (id, user_id, book_id, kind, device_id, entry_count, version,"
        f" created_at, updated_at) VALUES (7, 'a', 'phone', 1, 'd', 0, 1, '{at}', '{at}')",
        "INSERT INTO contact_entries (id, book_pk, user_id, entry_id, raw, raw_media_type, "
        "content_hash, contact, created_at, updated_at, change_seq) VALUES "
        f"(11, 7, 'a', 'e1', :r1, '', 'h1', :c1, '{at}', '{at}', 5), "
        f"(12, 7, 'a', 'e2', :r2, '', 'h2', :c2, '{at}', '{at}', 5)",
        "INSERT INTO entry_keys (id, entry_pk, user_id, kind, key, weak_key, value) VALUES "
        "(21, 11, 'a', 1, 8613900000002, 2, '+8613900000002'), "
        "(22, 12, 'a', 1, 8613800000000, 0, '+8613800000000')",
        "INSERT INTO buddies (owner_id, other_id, kind, key, key_kind, entry_pk, origin, "
        f"created_at, updated_at) VALUES ('a', 'b', 2, 8613900000002, 1, 11, 1, '{at}', '{at}'),"
        f" ('a', NULL, 3, 8613800000000, 1, 12, 1, '{at}', '{at}')",
        "INSERT INTO buddy_events (user_id, type, other_id, created_at) "
        f"VALUES ('b', 2, 'a', '{at}')",
    ]
    with engine.begin() as conn:
        blobs = {"r1": b"\x01\x02", "c1": b"\x03", "r2": b"\x04\x05", "c2": b"\x06"}
        for sql in statements:
            conn.execute(text(sql), blobs if ":r1" in sql else {})
    _upgrade(engine, "head")
    with engine.connect() as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(text(sql))]

        assert rows("SELECT id, entry_id, raw, change_seq FROM contact_entries ORDER BY id") == [
            (11, "e1", b"\x01\x02", 5),
            (12, "e2", b"\x04\x05", 5),
        ]
        assert rows("SELECT entry_pk, ordinal, key FROM entry_keys ORDER BY entry_pk") == [
            (11, 0, 8613900000002),
            (12, 0, 8613800000000),
        ]
        assert rows("SELECT owner_id, other_id, kind FROM buddies") == [("a", "b", 2)]
        assert rows("SELECT user_id, other_id FROM buddy_events") == [("b", "a")]
    found = inspect(engine)
    for table in ("contact_entries", "entry_keys", "buddies", "buddy_events"):
        assert found.get_foreign_keys(table) == []
    indexes = {i["name"]: i["column_names"] for i in found.get_indexes("entry_keys")}
    assert indexes["ix_entry_keys_user_key"] == ["user_id", "key", "entry_pk", "kind"]
    # (no key index after 0013: the holder index is in memory)
    assert "ix_entry_keys_user_id" not in indexes and "ix_entry_keys_key" not in indexes
    engine.dispose()


_KEYS_0011 = [  # (id, entry_pk, key): entry 11's rows inserted out of their id order
    (30, 11, 8613900000030),
    (10, 11, 8613900000010),
    (20, 11, 8613900000020),
    (15, 12, 8613900000015),
]


def test_0012_numbers_each_entrys_key_rows_in_id_order_and_back(empty_url: str) -> None:
    """0012 keys entry_keys by (entry_pk, ordinal), the ordinals following the old ids;
    its downgrade gives the rows ids in that order again, and new rows take ids after
    them."""
    engine = create_engine(empty_url)
    _upgrade(engine, "0011")
    insert = (
        "INSERT INTO entry_keys (id, entry_pk, user_id, kind, key, weak_key, value) "
        "VALUES (:id, :pk, 'a', 1, :key, NULL, 'v')"
    )
    with engine.begin() as conn:
        for pk_, entry_pk, key in _KEYS_0011:
            conn.execute(text(insert), {"id": pk_, "pk": entry_pk, "key": key})
    _upgrade(engine, "0012")
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT entry_pk, ordinal, key FROM entry_keys ORDER BY entry_pk, ordinal")
        ).all()
    assert [tuple(r) for r in found] == [
        (11, 0, 8613900000010),
        (11, 1, 8613900000020),
        (11, 2, 8613900000030),
        (12, 0, 8613900000015),
    ]
    indexes = {i["name"] for i in inspect(engine).get_indexes("entry_keys")}
    assert indexes == {"ix_entry_keys_key", "ix_entry_keys_weak_key", "ix_entry_keys_user_key"}
    assert inspect(engine).get_pk_constraint("entry_keys")["constrained_columns"] == [
        "entry_pk",
        "ordinal",
    ]
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entry_keys (entry_pk, user_id, kind, key, weak_key, value) "
                "VALUES (13, 'a', 1, 8613900000099, NULL, 'v')"
            )
        )
        back = conn.execute(text("SELECT id, entry_pk, key FROM entry_keys ORDER BY id")).all()
    assert [tuple(r) for r in back] == [
        (1, 11, 8613900000010),
        (2, 11, 8613900000020),
        (3, 11, 8613900000030),
        (4, 12, 8613900000015),
        (5, 13, 8613900000099),
    ]
    assert "ix_entry_keys_entry_pk" in {
        i["name"] for i in inspect(engine).get_indexes("entry_keys")
    }
    engine.dispose()


def test_0013_moves_the_key_index_to_the_log_and_back(empty_url: str) -> None:
    """0013 drops the index on entry_keys.key and adds book_key_log (the in-memory holder
    index's feed); its downgrade restores the index over the rows stored meanwhile."""
    engine = create_engine(empty_url)
    _upgrade(engine, "0012")
    _upgrade(engine, "head")
    found = inspect(engine)
    assert "ix_entry_keys_key" not in {i["name"] for i in found.get_indexes("entry_keys")}
    assert {c["name"] for c in found.get_columns("book_key_log")} == {
        "seq",
        "entry_ranges",
        "created_at",
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entry_keys (entry_pk, ordinal, user_id, kind, key, weak_key, value) "
                "VALUES (11, 0, 'a', 1, 8613900000010, NULL, 'v')"
            )
        )
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
    found = inspect(engine)
    assert "ix_entry_keys_key" in {i["name"] for i in found.get_indexes("entry_keys")}
    assert "book_key_log" not in found.get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT entry_pk, key FROM entry_keys")).all() == [
            (11, 8613900000010)
        ]
    engine.dispose()


def test_buddies_pages_keep_room_for_rows_rewritten_in_place(db: Database) -> None:
    """PostgreSQL (migration 0011): buddies rows turned full or re-pointed stay on their
    page, their index entries untouched."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL storage parameter")
    with db.engine.connect() as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'buddies'")
        ).scalar_one()
    assert options == ["fillfactor=90"]
