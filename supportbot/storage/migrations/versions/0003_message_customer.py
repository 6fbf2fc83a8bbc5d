"""messages.customer_id: whose turn each message is, for per-customer history in shared threads

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.String(length=255), nullable=True))
    # a customer's own turns are theirs; earlier bot turns stay NULL (the first customer's)
    op.execute("UPDATE messages SET customer_id = author WHERE role = 'user'")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("customer_id")
