"""SQLAlchemy Core tables every service database holds: outbox, inbox and idempotency keys.

Services put them in their own Alembic migrations, either by adding them to their metadata
(``add_platform_tables(metadata)``, so autogenerate sees them) or by calling
``create_platform_tables(op.get_bind())`` from a migration's ``upgrade()``.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

outbox = Table(
    "outbox",
    metadata,
    Column("event_id", Uuid(as_uuid=False), nullable=False),
    Column("event_type", Text, nullable=False),
    # Subject without the deployment prefix; the relay adds MPPO_NATS_PREFIX when publishing.
    Column("subject", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    PrimaryKeyConstraint("event_id", name="pk_outbox"),
)
Index(
    "ix_outbox_unpublished",
    outbox.c.occurred_at,
    postgresql_where=outbox.c.published_at.is_(None),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("response", LargeBinary, nullable=True),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
)

PLATFORM_TABLES: tuple[Table, ...] = (outbox, inbox, idempotency_keys)


def add_platform_tables(target: MetaData) -> None:
    """Copy the platform tables into a service's metadata (for Alembic autogenerate)."""
    for table in PLATFORM_TABLES:
        if table.name not in target.tables:
            table.to_metadata(target)


def create_platform_tables(connection: Connection) -> None:
    """Create the platform tables (for a migration's ``upgrade()``: ``op.get_bind()``)."""
    metadata.create_all(connection, tables=list(PLATFORM_TABLES))


def drop_platform_tables(connection: Connection) -> None:
    """Drop the platform tables (for a migration's ``downgrade()``)."""
    metadata.drop_all(connection, tables=list(PLATFORM_TABLES))
