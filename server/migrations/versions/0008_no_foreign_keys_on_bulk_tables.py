"""no foreign keys on the four bulk tables an upload writes; entry keys indexed by (user, key)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:00:00

Every uploaded contact writes a contact_entries row, ~1.3 entry_keys rows and, for member
matches, a buddies row and an event. On PostgreSQL each foreign key is a trigger per row
(a lookup and a FOR KEY SHARE lock of the referenced row): measured here 13 µs of a 17 µs
row insert with two keys, about six checks per contact. None of them is needed for
integrity the code does not already keep: a user's rows are deleted explicitly with the
user (``AccountRepository.delete_user``), an entry's key rows with the entry and its
buddy rows' reference cleared (``ChangeStamp.delete_entries``), and no table refers to these
rows by key; events about a deleted user are found through a new ``other_id`` index (an
index entry costs a fraction of a foreign-key check). ``ix_entry_keys_user_id`` becomes
``(user_id, key)``: the same one index per key row, and "which of this user's rows hold
these keys" (the upload's match) reads one row per key instead of every holder of the key.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referred table, on delete)
FOREIGN_KEYS = [
    ("contact_entries", "book_pk", "address_books", "CASCADE"),
    ("contact_entries", "user_id", "users", "CASCADE"),
    ("entry_keys", "entry_pk", "contact_entries", "CASCADE"),
    ("entry_keys", "user_id", "users", "CASCADE"),
    ("buddies", "owner_id", "users", "CASCADE"),
    ("buddies", "other_id", "users", "CASCADE"),
    ("buddies", "entry_pk", "contact_entries", "SET NULL"),
    ("buddy_events", "user_id", "users", "CASCADE"),
    ("buddy_events", "other_id", "users", "CASCADE"),
]
# SQLite's foreign keys are unnamed: a batch (table copy) names them by this convention.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s"}


def _tables() -> list[str]:
    return list(dict.fromkeys(t for t, _, _, _ in FOREIGN_KEYS))


def upgrade() -> None:
    """Upgrade schema."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in _tables():
        columns = [c for t, c, _, _ in FOREIGN_KEYS if t == table]
        if sqlite:
            with op.batch_alter_table(table, naming_convention=NAMING) as batch:
                for column in columns:
                    batch.drop_constraint(f"fk_{table}_{column}", type_="foreignkey")
        else:
            for column in columns:
                op.drop_constraint(f"{table}_{column}_fkey", table, type_="foreignkey")
    op.drop_index("ix_entry_keys_user_id", table_name="entry_keys")
    op.create_index("ix_entry_keys_user_key", "entry_keys", ["user_id", "key"])
    op.create_index("ix_buddy_events_other_id", "buddy_events", ["other_id"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_buddy_events_other_id", table_name="buddy_events")
    op.drop_index("ix_entry_keys_user_key", table_name="entry_keys")
    op.create_index("ix_entry_keys_user_id", "entry_keys", ["user_id"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in _tables():
        keys = [(c, ref, ondelete) for t, c, ref, ondelete in FOREIGN_KEYS if t == table]
        if sqlite:
            with op.batch_alter_table(table) as batch:
                for column, ref, ondelete in keys:
                    batch.create_foreign_key(None, ref, [column], ["id"], ondelete=ondelete)
        else:
            for column, ref, ondelete in keys:
                op.create_foreign_key(
                    f"{table}_{column}_fkey", table, ref, [column], ["id"], ondelete=ondelete
                )
