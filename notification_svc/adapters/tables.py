"""Tables of the notification service's own database.

``notifications`` holds one row per (event, recipient, channel), enforced by a unique key and
written in the inbox transaction, with only non-personal facts (``params``); addresses are
fetched from the group service at delivery time. ``member_payments`` keeps the payment facts
that decide whether an expiry/cancellation notice says "hold released" or "refunded".
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from mppo.platform.schema import add_platform_tables

metadata = MetaData()
add_platform_tables(metadata)

notifications = Table(
    "notifications",
    metadata,
    Column("notification_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("group_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'PENDING'")),
    Column("params", JSONB, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=False, server_default=text("''")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("event_id", "member_id", "channel", name="uq_notifications_recipient"),
)
Index(
    "ix_notifications_due",
    notifications.c.next_attempt_at,
    postgresql_where=notifications.c.status == "PENDING",
)
Index("ix_notifications_group", notifications.c.group_id, notifications.c.created_at)

member_payments = Table(
    "member_payments",
    metadata,
    Column("payment_id", Text, primary_key=True),
    Column("group_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("secured", Boolean, nullable=False, server_default=text("false")),
    Column("captured", Boolean, nullable=False, server_default=text("false")),
    Column("voided", Boolean, nullable=False, server_default=text("false")),
    Column("refunded", Boolean, nullable=False, server_default=text("false")),
    Column("amount_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("currency", Text, nullable=False, server_default=text("''")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_member_payments_member", member_payments.c.group_id, member_payments.c.member_id)
