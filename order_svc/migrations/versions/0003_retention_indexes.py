"""Indexes the pruner reads oldest rows through (sent outbox rows, inbox rows, completed
idempotency keys); see docs/retention.md.

Plain CREATE INDEX (IF NOT EXISTS): it blocks writes to each table while it builds, which takes
seconds on the tables as they are now; on a large deployment create them CONCURRENTLY by hand
first and this migration finds them there.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from mppo.platform.schema import create_retention_indexes, drop_retention_indexes

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the indexes that are missing."""
    create_retention_indexes(op.get_bind())


def downgrade() -> None:
    """Drop them."""
    drop_retention_indexes(op.get_bind())
