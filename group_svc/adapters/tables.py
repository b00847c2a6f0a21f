"""Tables of the group service's own database (Alembic revision 0002 creates them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from mppo.platform.schema import add_platform_tables

metadata = MetaData()
add_platform_tables(metadata)

group_orders = Table(
    "group_orders",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("host_user_id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("items", JSONB, nullable=False),
    Column("fees_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("tip_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("split_mode", Text, nullable=False),
    Column("fallback_policy", Text, nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    # optimistic version: every save checks and increments it (rows are also locked)
    Column("version", BigInteger, nullable=False),
    Column("frozen_at", DateTime(timezone=True)),
    Column("order_id", Text, nullable=False, server_default=""),
    Column("close_reason", Text, nullable=False, server_default=""),
    Column("grace_deadline", DateTime(timezone=True)),
    Column("fallback_at", DateTime(timezone=True)),
    Column("fallback_notified_at", DateTime(timezone=True)),
    Column("reminder_sent_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # why the group became due before its deadline (a hold about to lapse)
    Column("due_reason", Text, nullable=False, server_default=""),
)
Index("ix_group_orders_host", group_orders.c.host_user_id, group_orders.c.created_at)
Index(
    "ix_group_orders_due",
    group_orders.c.deadline,
    postgresql_where=text("status IN ('DRAFT', 'OPEN')"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column(
        "group_id",
        Text,
        ForeignKey("group_orders.group_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column("role", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("user_id", Text, nullable=False, server_default=""),
    # AES-GCM ciphertexts (nonce || ciphertext+tag) under the key named by pii_key_id
    Column("email_enc", LargeBinary),
    Column("phone_enc", LargeBinary),
    Column("pii_key_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("share_spec", JSONB, nullable=False),
    Column("share_minor", BigInteger, nullable=False),
    Column("paid_minor", BigInteger, nullable=False),
    Column("required", Boolean, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("invite_token", Text, nullable=False),
    Column("joined_at", DateTime(timezone=True)),
    Column("paid_at", DateTime(timezone=True)),
    Column("provider", Text, nullable=False, server_default=""),
    UniqueConstraint("group_id", "position", name="uq_group_members_position"),
)
Index("ix_group_members_user", group_members.c.user_id)

group_payments_state = Table(
    "group_payments_state",
    metadata,
    Column("row_id", Text, primary_key=True),
    Column(
        "group_id",
        Text,
        ForeignKey("group_orders.group_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("member_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("payment_id", Text, nullable=False, server_default=""),
    Column("payment_link", Text, nullable=False, server_default=""),
    Column("captured", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_group_payments_group", group_payments_state.c.group_id)
Index(
    "uq_group_payments_payment_id",
    group_payments_state.c.payment_id,
    unique=True,
    postgresql_where=text("payment_id <> ''"),
)

group_status_history = Table(
    "group_status_history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("group_id", Text, nullable=False),
    Column("from_status", Text),
    Column("to_status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
Index("ix_group_status_history_group", group_status_history.c.group_id, group_status_history.c.id)

# Payments the group must not keep (late, superseded or surplus): the void worker releases
# them through the payment service (VoidPayment, or RefundPayment when already captured).
group_payment_voids = Table(
    "group_payment_voids",
    metadata,
    Column("payment_id", Text, primary_key=True),
    Column("group_id", Text, nullable=False),
    Column("captured", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),  # PENDING | DONE | REFUSED
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),  # back-off after a transient failure
)
Index(
    "ix_group_payment_voids_pending",
    group_payment_voids.c.created_at,
    postgresql_where=text("status = 'PENDING'"),
)
