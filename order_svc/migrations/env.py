"""Alembic environment of the order service's database."""

from mppo.platform.migrations import run_migrations_online
from order_svc.adapters.tables import metadata

run_migrations_online(metadata, url_env="MPPO_ORDER_DATABASE_URL")
