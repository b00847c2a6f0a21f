"""SQLAlchemy Core tables every service database holds: outbox, inbox and idempotency keys.

Services put them in their own Alembic migrations, either by adding them to their metadata
(``add_platform_tables(metadata)``, so autogenerate sees them) or by calling
``create_platform_tables(op.get_bind())`` from a migration's ``upgrade()``.

The ``RETENTION_INDEXES`` let the pruner (:mod:`mppo.platform.retention`) find the oldest
rows of each table without scanning it; databases created before they existed get them from
a migration calling ``create_retention_indexes(op.get_bind())`` (idempotent).
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
from sqlalchemy.schema import CreateIndex, DropIndex

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

#: what the pruner scans, oldest first: sent outbox rows, inbox rows, completed keys
RETENTION_INDEXES: tuple[Index, ...] = (
    Index(
        "ix_outbox_published",
        outbox.c.published_at,
        postgresql_where=outbox.c.published_at.is_not(None),
    ),
    Index("ix_inbox_processed", inbox.c.processed_at),
    Index(
        "ix_idempotency_keys_completed",
        idempotency_keys.c.created_at,
        postgresql_where=idempotency_keys.c.status == "completed",
    ),
)


def add_platform_tables(target: MetaData) -> None:
    """Copy the platform tables into a service's metadata (for Alembic autogenerate)."""
    for table in PLATFORM_TABLES:
        if table.name not in target.tables:
            table.to_metadata(target)


def create_platform_tables(connection: Connection) -> None:
    """Create the platform tables (for a migration's ``upgrade()``: ``op.get_bind()``)."""
    metadata.create_all(connection, tables=list(PLATFORM_TABLES))


def create_retention_indexes(connection: Connection) -> None:
    """Create the pruner's indexes where they are missing (for a migration's ``upgrade()``)."""
    for index in RETENTION_INDEXES:
        connection.execute(CreateIndex(index, if_not_exists=True))


def drop_retention_indexes(connection: Connection) -> None:
    """Drop them again (for that migration's ``downgrade()``)."""
    for index in RETENTION_INDEXES:
        connection.execute(DropIndex(index, if_exists=True))


def drop_platform_tables(connection: Connection) -> None:
    """Drop the platform tables (for a migration's ``downgrade()``)."""
    metadata.drop_all(connection, tables=list(PLATFORM_TABLES))
