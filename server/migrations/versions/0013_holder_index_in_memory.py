"""book_key_log: "who holds this key" moves from a database index to memory

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 15:00:00

Every uploaded key went into ``ix_entry_keys_key``, a b-tree over every book's keys at a
random place. Once the books hold millions of entries it outgrows the page cache, and SQLite
then writes a whole page to its log for nearly every key (upload benchmark, 1M members with 3
stored entries each, SQLite: the key rows' INSERTs 266 -> 32 ms and the commits 231 -> 8 ms
without it). The question it answered (which entries hold one of these keys) is now answered
by an in-memory index in each server process (``befriend.server.services.holders``), loaded
from entry_keys at start-up and kept current by tailing this log, then confirmed against
entry_keys by primary key. Each log row names the entries, as ranges of ids, whose key rows
one statement inserted: an upload's chunk is one row of a few dozen bytes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "book_key_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("entry_ranges", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.drop_index("ix_entry_keys_key", table_name="entry_keys")


def downgrade() -> None:
    op.create_index("ix_entry_keys_key", "entry_keys", ["key"])
    op.drop_table("book_key_log")
