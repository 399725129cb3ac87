"""PostgreSQL: buddies pages keep a tenth free, so a row rewritten in place stays on its
page with its index entries untouched (a HOT update)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 21:50:00

An upload turns the one-way rows that name its uploader into full ones (1,400 rows among 1M
in the upload benchmark), and every match re-points rows at their entries: UPDATEs that
change no indexed column. On full pages PostgreSQL writes each new row version elsewhere
and inserts it into all three indexes of the table; with free room on the page it does
neither. 1,400 random rows of 1M updated by primary key: 86 ms of database CPU on full
pages, 37 ms with fillfactor 90. The setting applies to pages written from now on (a
``VACUUM FULL`` rewrites the old ones). SQLite has no such setting.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE buddies SET (fillfactor = 90)")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE buddies RESET (fillfactor)")
