"""Tables of the payment service's own database (SQLAlchemy Core).

``payments`` holds one row per member attempt (unique per group, member and attempt);
``provider_payment_map`` maps every provider id we recorded for a payment (checkout session,
payment intent, order, link: at checkout, or proven by re-reading the provider) to our payment
id, and ``payments.provider_checkout_id`` names the checkout we created; ``webhook_events``
keeps each verified provider event once per (provider, event id), with its outcome (and, for a
malformed one, only a hash of the body); ``payment_status_history`` records every transition;
``closed_groups`` remembers groups that expired, were cancelled or whose order failed, so
every hold of theirs is voided and every capture refunded, even ones that arrive later.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from mppo.platform.schema import add_platform_tables

metadata = MetaData()
add_platform_tables(metadata)

_EMPTY = text("''")
_ZERO = text("0")

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Text, nullable=False),
    Column("group_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("provider_payment_id", Text, nullable=False, server_default=_EMPTY),
    Column("provider_checkout_id", Text, nullable=False, server_default=_EMPTY),
    Column("payment_link", Text, nullable=False, server_default=_EMPTY),
    Column("description", Text, nullable=False, server_default=_EMPTY),
    Column("return_url", Text, nullable=False, server_default=_EMPTY),
    Column("payer_user_id", Text, nullable=False, server_default=_EMPTY),
    Column("amount_authorized_minor", BigInteger, nullable=False, server_default=_ZERO),
    Column("amount_captured_minor", BigInteger, nullable=False, server_default=_ZERO),
    Column("amount_refunded_minor", BigInteger, nullable=False, server_default=_ZERO),
    Column("failure_reason", Text, nullable=False, server_default=_EMPTY),
    Column("authorization_expires_at", DateTime(timezone=True), nullable=True),
    Column("expiry_warned_at", DateTime(timezone=True), nullable=True),
    Column("compensate_reason", Text, nullable=False, server_default=_EMPTY),
    Column("next_check_at", DateTime(timezone=True), nullable=True),
    Column("checks", Integer, nullable=False, server_default=_ZERO),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("payment_id", name="pk_payments"),
    UniqueConstraint("group_id", "member_id", "attempt", name="uq_payments_attempt"),
)
Index("ix_payments_group", payments.c.group_id, payments.c.created_at)
Index(
    "ix_payments_due",
    payments.c.next_check_at,
    postgresql_where=payments.c.next_check_at.is_not(None),
)
# the reconciler's hold-lapse scan (migration 0005): unwarned authorized holds only
Index(
    "ix_payments_hold_lapse",
    payments.c.authorization_expires_at,
    postgresql_where=text(
        "status = 'authorized' AND expiry_warned_at IS NULL"
        " AND authorization_expires_at IS NOT NULL"
    ),
)

provider_payment_map = Table(
    "provider_payment_map",
    metadata,
    Column("provider", Text, nullable=False),
    Column("provider_payment_id", Text, nullable=False),
    Column("payment_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("provider", "provider_payment_id", name="pk_provider_payment_map"),
)
Index("ix_provider_payment_map_payment", provider_payment_map.c.payment_id)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("provider", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("provider_payment_id", Text, nullable=False, server_default=_EMPTY),
    Column("payment_id", Text, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=_EMPTY),
    Column("body", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("provider", "event_id", name="pk_webhook_events"),
)
#: the pruner's way to the oldest records (docs/retention.md)
Index("ix_webhook_events_received", webhook_events.c.received_at)

payment_status_history = Table(
    "payment_status_history",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("payment_id", Text, nullable=False),
    Column("from_status", Text, nullable=True),
    Column("to_status", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=_EMPTY),
    Column("actor", Text, nullable=False, server_default=_EMPTY),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("id", name="pk_payment_status_history"),
)
Index("ix_payment_status_history_payment", payment_status_history.c.payment_id)

closed_groups = Table(
    "closed_groups",
    metadata,
    Column("group_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("compensate", Boolean, nullable=False, server_default=text("true")),
    PrimaryKeyConstraint("group_id", name="pk_closed_groups"),
)
