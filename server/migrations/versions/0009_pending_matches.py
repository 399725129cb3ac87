"""an upload's batches record their keys, the final chunk matches them all at once;
SQLite never reuses a contact's id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 23:00:00

Before, every batch of an upload ran a restricted match over the keys it added: ~5 index
probes per key (the members' identities, the user's rows holding their keys, the members'
rows holding the user's keys, the pair's stored rows), three times over for a 10,000-contact
book. Now a non-final batch writes one ``pending_matches`` row (its keys, packed) and the
final chunk matches the union once: a whole-book pass when the keys are a large share of
the book (three range reads and one probe per member), the restricted match otherwise. A
stream that never reaches its final chunk is matched by the pending-match job.

On SQLite, contact_entries becomes AUTOINCREMENT: a plain INTEGER PRIMARY KEY gives a new
row the id of the highest deleted one, so an upload deleting the newest contact and adding
another handed out the deleted contact's name (users/u/contacts/N) again, and a replica
following the change feed applied "N changed" then "N deleted" and lost the new contact.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "pending_matches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_matches_user_id", "pending_matches", ["user_id"])
    op.create_index("ix_pending_matches_created_at", "pending_matches", ["created_at"])
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "contact_entries", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "contact_entries", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
    op.drop_index("ix_pending_matches_created_at", table_name="pending_matches")
    op.drop_index("ix_pending_matches_user_id", table_name="pending_matches")
    op.drop_table("pending_matches")
