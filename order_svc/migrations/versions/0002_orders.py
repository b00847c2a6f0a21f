"""Orders, their lines, shares and saga steps.

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


def upgrade() -> None:
    """Create orders, order_items, order_shares and order_events."""
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("group_id", sa.Text, nullable=False),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("failure_reason", sa.Text, nullable=True),
        sa.Column("failure_detail", sa.Text, nullable=False, server_default=""),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("fees_minor", sa.BigInteger, nullable=False),
        sa.Column("tax_minor", sa.BigInteger, nullable=False),
        sa.Column("tip_minor", sa.BigInteger, nullable=False),
        sa.Column("reservation_id", sa.Text, nullable=False, server_default=""),
        sa.Column("merchant_order_id", sa.Text, nullable=False, server_default=""),
        sa.Column("merchant_cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("group_id", name="uq_orders_group_id"),
        sa.CheckConstraint(
            "status IN ('CREATED','VALIDATED','PLACED','CONFIRMED','COMPENSATING','FAILED')",
            name="ck_orders_status",
        ),
    )
    op.create_index(
        "ix_orders_due",
        "orders",
        ["next_attempt_at"],
        postgresql_where=sa.text("status NOT IN ('CONFIRMED', 'FAILED')"),
    )
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.Text, sa.ForeignKey("orders.order_id"), primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("line_id", sa.Text, nullable=False),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "order_shares",
        sa.Column("order_id", sa.Text, sa.ForeignKey("orders.order_id"), primary_key=True),
        sa.Column("payment_id", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
    )
    op.create_table(
        "order_events",
        sa.Column("event_no", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Text, sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_order_events_order", "order_events", ["order_id", "event_no"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("order_events")
    op.drop_table("order_shares")
    op.drop_table("order_items")
    op.drop_index("ix_orders_due", table_name="orders")
    op.drop_table("orders")
