"""entry_keys is keyed by (entry_pk, ordinal): no surrogate id, no entry_pk index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 13:00:00

Each uploaded contact writes ~1.3 rows of the reverse index, and each row went into five
b-trees (the id key, entry_pk, key, the user's (user, key, entry, kind) and, for
unnormalisable numbers, the weak key) and took a sequence value. The id only ordered an
entry's identities; the entry_pk index only found an entry's rows. Both are now the primary
key (entry_pk, ordinal): an entry's rows are numbered 0, 1, … in the order of its
identities. Measured with 13,000 rows written by binary COPY into 260,000 (PostgreSQL,
medians of 16 alternated): 93 -> 81 ms; in the upload benchmark's breakdown (1M members),
the 20 COPYs of an upload's key rows took 63 and 75 ms before, 57 and 59 ms after.

SQLite stores the table WITHOUT ROWID, clustered by the new key: its secondary indexes
carry (entry_pk, ordinal) instead of a row id, so the whole-book read through
``ix_entry_keys_user_key`` still needs no table lookup.

The table is copied (ordinals from the old ids' order), then renamed; on PostgreSQL the
copy also leaves the new table without the old one's dead rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DATA = "user_id, kind, key, weak_key, value"


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.BigInteger(), nullable=True),
        sa.Column("weak_key", sa.BigInteger(), nullable=True),
        sa.Column("value", sa.String(320), nullable=False),
    ]


def _indexes(*, entry_pk: bool) -> None:
    op.create_index("ix_entry_keys_key", "entry_keys", ["key"])
    op.create_index(
        "ix_entry_keys_weak_key",
        "entry_keys",
        ["weak_key"],
        sqlite_where=sa.text("key IS NULL"),
        postgresql_where=sa.text("key IS NULL"),
    )
    if entry_pk:
        op.create_index("ix_entry_keys_entry_pk", "entry_keys", ["entry_pk"])
    op.create_index("ix_entry_keys_user_key", "entry_keys", ["user_id", "key", "entry_pk", "kind"])


def _swap(pg: bool) -> None:
    """entry_keys_new becomes entry_keys, with the usual name of its primary key."""
    op.drop_table("entry_keys")
    op.rename_table("entry_keys_new", "entry_keys")
    if pg:
        op.execute(
            "ALTER TABLE entry_keys RENAME CONSTRAINT entry_keys_new_pkey TO entry_keys_pkey"
        )


def upgrade() -> None:
    """Upgrade schema."""
    pg = op.get_bind().dialect.name == "postgresql"
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "entry_keys_new",
        sa.Column("entry_pk", big_id, nullable=False, autoincrement=False),
        sa.Column("ordinal", sa.SmallInteger(), nullable=False, autoincrement=False),
        *_columns(),
        sa.PrimaryKeyConstraint("entry_pk", "ordinal", name="entry_keys_new_pkey"),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO entry_keys_new (entry_pk, ordinal, {_DATA}) "
        "SELECT entry_pk, row_number() OVER (PARTITION BY entry_pk ORDER BY id) - 1, "
        f"{_DATA} FROM entry_keys"
    )
    _swap(pg)
    _indexes(entry_pk=False)


def downgrade() -> None:
    """Downgrade schema."""
    pg = op.get_bind().dialect.name == "postgresql"
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "entry_keys_new",
        sa.Column("id", big_id, autoincrement=True, nullable=False),
        sa.Column("entry_pk", big_id, nullable=False),
        *_columns(),
        sa.PrimaryKeyConstraint("id", name="entry_keys_new_pkey"),
    )
    op.execute(
        f"INSERT INTO entry_keys_new (id, entry_pk, {_DATA}) "
        "SELECT row_number() OVER (ORDER BY entry_pk, ordinal), entry_pk, "
        f"{_DATA} FROM entry_keys"
    )
    _swap(pg)
    if pg:
        op.execute(
            "ALTER SEQUENCE entry_keys_new_id_seq RENAME TO entry_keys_id_seq; "
            "SELECT setval('entry_keys_id_seq', (SELECT COALESCE(max(id), 0) + 1 FROM "
            "entry_keys), false)"
        )
    _indexes(entry_pk=True)
