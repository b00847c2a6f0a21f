"""Notifications (one per event, recipient and channel) and the payment facts they report.

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


def upgrade() -> None:
    """Create notifications and member_payments."""
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'PENDING'")),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("event_id", "member_id", "channel", name="uq_notifications_recipient"),
        sa.CheckConstraint("status IN ('PENDING','SENT','FAILED')", name="ck_notifications_status"),
        sa.CheckConstraint("channel IN ('EMAIL','WEBHOOK')", name="ck_notifications_channel"),
    )
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_index("ix_notifications_group", "notifications", ["group_id", "created_at"])
    op.create_table(
        "member_payments",
        sa.Column("payment_id", sa.Text, primary_key=True),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("secured", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("captured", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("voided", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("refunded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("amount_minor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_member_payments_member", "member_payments", ["group_id", "member_id"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("member_payments")
    op.drop_table("notifications")
