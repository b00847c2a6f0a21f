"""The reconciler's hold-lapse scan (authorized payments whose hold lapses soon and were not
yet warned, `_EXPIRING` in payment_svc/adapters/repository.py) reads a partial index instead
of every payment: only unwarned authorized holds are in it, so it stays as small as the holds
open right now.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the index (IF NOT EXISTS: one built CONCURRENTLY by hand first is kept)."""
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_payments_hold_lapse ON payments (authorization_expires_at)"
        " WHERE status = 'authorized' AND expiry_warned_at IS NULL"
        " AND authorization_expires_at IS NOT NULL"
    )


def downgrade() -> None:
    """Drop it."""
    op.execute("DROP INDEX IF EXISTS ix_payments_hold_lapse")
