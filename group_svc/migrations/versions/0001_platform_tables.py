"""Platform tables: outbox, inbox, idempotency keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from mppo.platform.schema import create_platform_tables, drop_platform_tables

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the outbox, inbox and idempotency_keys tables."""
    create_platform_tables(op.get_bind())


def downgrade() -> None:
    """Drop them."""
    drop_platform_tables(op.get_bind())
