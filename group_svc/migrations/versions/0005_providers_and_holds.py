"""A provider per member (group_members.provider: "" is the payment service's default) and why
a group became due before its deadline (group_orders.due_reason: a hold about to lapse).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the columns (constant defaults: no table rewrite)."""
    op.add_column(
        "group_members", sa.Column("provider", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "group_orders", sa.Column("due_reason", sa.Text(), nullable=False, server_default="")
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("group_orders", "due_reason")
    op.drop_column("group_members", "provider")
