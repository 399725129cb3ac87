"""two-way sync: contact provenance and etags, change feed, merge plans and merges

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:50:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("contact_entries") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(
            sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("change_origin", sa.SmallInteger(), server_default="1", nullable=False)
        )
        batch.add_column(
            sa.Column("change_device", sa.String(length=128), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("changed_fields", sa.String(length=400), server_default="", nullable=False)
        )
    op.create_index(
        "ix_contact_entries_changes", "contact_entries", ["user_id", "change_seq", "id"]
    )
    op.create_table(
        "change_counters",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "contact_tombstones",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("book_pk", BigId, nullable=False),
        sa.Column("entry_pk", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.String(length=128), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("change_origin", sa.SmallInteger(), nullable=False),
        sa.Column("change_device", sa.String(length=128), nullable=False),
        sa.Column("deleted_at", When, nullable=False),
        sa.ForeignKeyConstraint(["book_pk"], ["address_books.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_contact_tombstones_changes", "contact_tombstones", ["user_id", "change_seq", "id"]
    )
    op.create_index("ix_contact_tombstones_deleted_at", "contact_tombstones", ["deleted_at"])
    op.create_table(
        "feed_watermarks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sync_settings",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("sync_pictures", sa.Boolean(), nullable=False),
        sa.Column("default_network_source", sa.SmallInteger(), nullable=False),
        sa.Column("default_target", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "merge_plans",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("device_book_pk", BigId, nullable=False),
        sa.Column("network_source", sa.SmallInteger(), nullable=False),
        sa.Column("source_book_pk", BigId, nullable=False),
        sa.Column("target", sa.SmallInteger(), nullable=False),
        sa.Column("include_pictures", sa.Boolean(), nullable=False),
        sa.Column("inputs_seq", sa.BigInteger(), nullable=False),
        sa.Column("matched_count", sa.Integer(), nullable=False),
        sa.Column("addition_count", sa.Integer(), nullable=False),
        sa.Column("unmatched_device_count", sa.Integer(), nullable=False),
        sa.Column("unmatched_network_count", sa.Integer(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.ForeignKeyConstraint(["device_book_pk"], ["address_books.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_book_pk"], ["address_books.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("plan_id"),
    )
    op.create_index("ix_merge_plans_user_id", "merge_plans", ["user_id"])
    op.create_table(
        "merge_plan_items",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_pk", BigId, nullable=False),
        sa.Column("item_no", sa.Integer(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("device_entry_pk", sa.BigInteger(), nullable=True),
        sa.Column("network_entry_pk", sa.BigInteger(), nullable=True),
        sa.Column("basis", sa.SmallInteger(), nullable=False),
        sa.Column("matched_kind", sa.SmallInteger(), nullable=False),
        sa.Column("matched_value", sa.String(length=320), nullable=False),
        sa.Column("additions", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["plan_pk"], ["merge_plans.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("plan_pk", "item_no", name="uq_merge_plan_items_plan_item"),
    )
    op.create_table(
        "merges",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("merge_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=False),
        sa.Column("contacts_updated", sa.Integer(), nullable=False),
        sa.Column("field_additions", sa.Integer(), nullable=False),
        sa.Column("contacts_created", sa.Integer(), nullable=False),
        sa.Column("applied_at", When, nullable=False),
        sa.Column("undone_at", When, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merge_id"),
    )
    op.create_index("ix_merges_user_id", "merges", ["user_id"])
    op.create_table(
        "merge_contacts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("merge_pk", BigId, nullable=False),
        sa.Column("entry_pk", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["merge_pk"], ["merges.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_merge_contacts_merge_pk", "merge_contacts", ["merge_pk"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_merge_contacts_merge_pk", table_name="merge_contacts")
    op.drop_table("merge_contacts")
    op.drop_index("ix_merges_user_id", table_name="merges")
    op.drop_table("merges")
    op.drop_table("merge_plan_items")
    op.drop_index("ix_merge_plans_user_id", table_name="merge_plans")
    op.drop_table("merge_plans")
    op.drop_table("sync_settings")
    op.drop_table("feed_watermarks")
    op.drop_index("ix_contact_tombstones_deleted_at", table_name="contact_tombstones")
    op.drop_index("ix_contact_tombstones_changes", table_name="contact_tombstones")
    op.drop_table("contact_tombstones")
    op.drop_table("change_counters")
    op.drop_index("ix_contact_entries_changes", table_name="contact_entries")
    with op.batch_alter_table("contact_entries") as batch:
        for column in (
            "changed_fields",
            "change_device",
            "change_origin",
            "change_seq",
            "version",
            "provenance",
        ):
            batch.drop_column(column)
