"""Tables of the order service's own database: orders, their lines, shares and saga steps."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)

from mppo.platform.schema import add_platform_tables

metadata = MetaData()
add_platform_tables(metadata)

TERMINAL_STATUSES = ("CONFIRMED", "FAILED")

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("group_id", Text, nullable=False, unique=True),
    Column("merchant_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("failure_detail", Text, nullable=False, server_default=""),
    Column("currency", Text, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("fees_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("tip_minor", BigInteger, nullable=False),
    Column("reservation_id", Text, nullable=False, server_default=""),
    Column("merchant_order_id", Text, nullable=False, server_default=""),
    Column("merchant_cancelled", Boolean, nullable=False, server_default=text("false")),
    Column("version", Integer, nullable=False, server_default=text("0")),
    # saga scheduling: failed attempts, when to try next, and who holds the order right now
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index(
    "ix_orders_due",
    orders.c.next_attempt_at,
    postgresql_where=orders.c.status.notin_(TERMINAL_STATUSES),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", Text, ForeignKey("orders.order_id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("line_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
)

order_shares = Table(
    "order_shares",
    metadata,
    Column("order_id", Text, ForeignKey("orders.order_id"), primary_key=True),
    Column("payment_id", Text, primary_key=True),
    Column("line_no", Integer, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
)

order_events = Table(
    "order_events",
    metadata,
    Column("event_no", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", Text, ForeignKey("orders.order_id"), nullable=False),
    Column("step", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_order_events_order", order_events.c.order_id, order_events.c.event_no)
