"""payments.provider_checkout_id (the checkout we created, which a webhook's new provider ids
must belong to) and webhook_events.detail (why an event was ignored or refused).

Existing payments get the first provider id recorded for them (the one mapped when their
checkout was created), else their current provider id.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_EMPTY = sa.text("''")


def upgrade() -> None:
    """Add the columns and fill provider_checkout_id."""
    op.add_column(
        "payments",
        sa.Column("provider_checkout_id", sa.Text, nullable=False, server_default=_EMPTY),
    )
    op.add_column(
        "webhook_events", sa.Column("detail", sa.Text, nullable=False, server_default=_EMPTY)
    )
    op.execute(
        """
        UPDATE payments p SET provider_checkout_id = COALESCE(
            (SELECT m.provider_payment_id FROM provider_payment_map m
              WHERE m.payment_id = p.payment_id AND m.provider = p.provider
              ORDER BY m.created_at, m.provider_payment_id LIMIT 1),
            p.provider_payment_id)
        WHERE p.provider_payment_id <> ''
        """
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("webhook_events", "detail")
    op.drop_column("payments", "provider_checkout_id")
