"""Group tables: group_orders, group_members, group_payments_state, group_status_history,
group_payment_voids.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the group service's tables."""
    op.create_table(
        "group_orders",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("host_user_id", sa.Text, nullable=False),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("items", JSONB, nullable=False),
        sa.Column("fees_minor", sa.BigInteger, nullable=False),
        sa.Column("tax_minor", sa.BigInteger, nullable=False),
        sa.Column("tip_minor", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("split_mode", sa.Text, nullable=False),
        sa.Column("fallback_policy", sa.Text, nullable=False),
        sa.Column("deadline", TS, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("frozen_at", TS),
        sa.Column("order_id", sa.Text, nullable=False, server_default=""),
        sa.Column("close_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("grace_deadline", TS),
        sa.Column("fallback_at", TS),
        sa.Column("fallback_notified_at", TS),
        sa.Column("reminder_sent_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_group_orders_host", "group_orders", ["host_user_id", "created_at"])
    op.create_index(
        "ix_group_orders_due",
        "group_orders",
        ["deadline"],
        postgresql_where=sa.text("status IN ('DRAFT', 'OPEN')"),
    )
    op.create_table(
        "group_members",
        sa.Column("member_id", sa.Text, primary_key=True),
        sa.Column(
            "group_id",
            sa.Text,
            sa.ForeignKey("group_orders.group_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False, server_default=""),
        sa.Column("email_enc", sa.LargeBinary),
        sa.Column("phone_enc", sa.LargeBinary),
        sa.Column("pii_key_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("share_spec", JSONB, nullable=False),
        sa.Column("share_minor", sa.BigInteger, nullable=False),
        sa.Column("paid_minor", sa.BigInteger, nullable=False),
        sa.Column("required", sa.Boolean, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("invite_token", sa.Text, nullable=False),
        sa.Column("joined_at", TS),
        sa.Column("paid_at", TS),
        sa.UniqueConstraint("group_id", "position", name="uq_group_members_position"),
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id"])
    op.create_table(
        "group_payments_state",
        sa.Column("row_id", sa.Text, primary_key=True),
        sa.Column(
            "group_id",
            sa.Text,
            sa.ForeignKey("group_orders.group_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("payment_id", sa.Text, nullable=False, server_default=""),
        sa.Column("payment_link", sa.Text, nullable=False, server_default=""),
        sa.Column("captured", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_group_payments_group", "group_payments_state", ["group_id"])
    op.create_index(
        "uq_group_payments_payment_id",
        "group_payments_state",
        ["payment_id"],
        unique=True,
        postgresql_where=sa.text("payment_id <> ''"),
    )
    op.create_table(
        "group_status_history",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("from_status", sa.Text),
        sa.Column("to_status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
    )
    op.create_index("ix_group_status_history_group", "group_status_history", ["group_id", "id"])
    op.create_table(
        "group_payment_voids",
        sa.Column("payment_id", sa.Text, primary_key=True),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("captured", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS),
    )
    op.create_index(
        "ix_group_payment_voids_pending",
        "group_payment_voids",
        ["created_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )


def downgrade() -> None:
    """Drop them."""
    for table in (
        "group_payment_voids",
        "group_status_history",
        "group_payments_state",
        "group_members",
        "group_orders",
    ):
        op.drop_table(table)
