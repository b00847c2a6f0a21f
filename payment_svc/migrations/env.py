"""Alembic environment of the payment service's database."""

from mppo.platform.migrations import run_migrations_online
from payment_svc.adapters.tables import metadata

run_migrations_online(metadata, url_env="MPPO_PAYMENT_DATABASE_URL")
