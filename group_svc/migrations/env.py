"""Alembic environment of the group service's database."""

from group_svc.adapters.tables import metadata
from mppo.platform.migrations import run_migrations_online

run_migrations_online(metadata, url_env="MPPO_GROUP_DATABASE_URL")
