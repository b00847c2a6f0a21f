"""Alembic environment of the notification service's database."""

from mppo.platform.migrations import run_migrations_online
from notification_svc.adapters.tables import metadata

run_migrations_online(metadata, url_env="MPPO_NOTIFICATION_DATABASE_URL")
