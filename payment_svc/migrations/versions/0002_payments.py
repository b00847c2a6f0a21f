"""Payments, provider id map, webhook events, status history, closed groups.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_EMPTY = sa.text("''")
_ZERO = sa.text("0")


def _now() -> sa.sql.elements.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    """Create the payment tables."""
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.Text, nullable=False),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("payment_link", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("description", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("return_url", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("payer_user_id", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("amount_authorized_minor", sa.BigInteger, nullable=False, server_default=_ZERO),
        sa.Column("amount_captured_minor", sa.BigInteger, nullable=False, server_default=_ZERO),
        sa.Column("amount_refunded_minor", sa.BigInteger, nullable=False, server_default=_ZERO),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("authorization_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expiry_warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compensate_reason", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checks", sa.Integer, nullable=False, server_default=_ZERO),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payments"),
        sa.UniqueConstraint("group_id", "member_id", "attempt", name="uq_payments_attempt"),
        sa.CheckConstraint("amount_minor > 0", name="ck_payments_amount_positive"),
    )
    op.create_index("ix_payments_group", "payments", ["group_id", "created_at"])
    op.create_index(
        "ix_payments_due",
        "payments",
        ["next_check_at"],
        postgresql_where=sa.text("next_check_at IS NOT NULL"),
    )
    op.create_table(
        "provider_payment_map",
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.Text, nullable=False),
        sa.Column("payment_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("provider", "provider_payment_id", name="pk_provider_payment_map"),
    )
    op.create_index("ix_provider_payment_map_payment", "provider_payment_map", ["payment_id"])
    op.create_table(
        "webhook_events",
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("payment_id", sa.Text, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("provider", "event_id", name="pk_webhook_events"),
    )
    op.create_table(
        "payment_status_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("payment_id", sa.Text, nullable=False),
        sa.Column("from_status", sa.Text, nullable=True),
        sa.Column("to_status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("actor", sa.Text, nullable=False, server_default=_EMPTY),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_payment_status_history"),
    )
    op.create_index("ix_payment_status_history_payment", "payment_status_history", ["payment_id"])
    op.create_table(
        "closed_groups",
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("compensate", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.PrimaryKeyConstraint("group_id", name="pk_closed_groups"),
    )


def downgrade() -> None:
    """Drop them."""
    for table in (
        "closed_groups",
        "payment_status_history",
        "webhook_events",
        "provider_payment_map",
        "payments",
    ):
        op.drop_table(table)
