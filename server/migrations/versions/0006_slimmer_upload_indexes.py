"""slimmer indexes on the upload path: drop two redundant contact_entries indexes, and
index weak keys only for numbers that could not be normalised

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:20:00

Every uploaded contact writes one contact_entries row and ~1.3 entry_keys rows, so each
secondary index costs every upload. ``ix_contact_entries_user_id`` is a prefix of
``ix_contact_entries_changes`` (user_id, change_seq, id); ``ix_contact_entries_upload_pk``
(book_pk, upload_pk) served only "the book's entries not written by this upload", an
inequality that walks the book's prefix of the unique (book_pk, entry_id) index just as
well. The weak-key fallback only ever looks up rows without an exact key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_EXACT_KEY = sa.text("key IS NULL")


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_index("ix_contact_entries_user_id", table_name="contact_entries")
    op.drop_index("ix_contact_entries_upload_pk", table_name="contact_entries")
    op.drop_index("ix_entry_keys_weak_key", table_name="entry_keys")
    op.create_index(
        "ix_entry_keys_weak_key",
        "entry_keys",
        ["weak_key"],
        sqlite_where=NO_EXACT_KEY,
        postgresql_where=NO_EXACT_KEY,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_entry_keys_weak_key", table_name="entry_keys")
    op.create_index("ix_entry_keys_weak_key", "entry_keys", ["weak_key"])
    op.create_index("ix_contact_entries_upload_pk", "contact_entries", ["book_pk", "upload_pk"])
    op.create_index("ix_contact_entries_user_id", "contact_entries", ["user_id"])
