"""phonebook buddies are derived from the books, no longer stored

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:30:00

A phonebook buddy is a contact none of whose keys belongs to a member; the buddy list now
computes them from the books and the member registry when it is read
(``befriend.server.services.matching.phonebook_buddies``), so ``buddies`` keeps member
matches only. The stored phonebook rows (about two thirds of the rows an upload wrote) go,
and with them the key index that only served "whose phonebook row is this key".
A downgrade restores the index; the old code's next refresh re-creates the phonebook rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(sa.text("DELETE FROM buddies WHERE other_id IS NULL"))
    op.drop_index("ix_buddies_key", table_name="buddies")


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index("ix_buddies_key", "buddies", ["key"])
