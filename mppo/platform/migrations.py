"""Run a service's Alembic migrations programmatically, on the async engine.

A service keeps ``<svc>/migrations/`` (``env.py``, ``script.py.mako``, ``versions/``) and its
``env.py`` is just::

    from mppo.platform.migrations import run_migrations_online
    from group_svc.adapters.orm import metadata  # includes add_platform_tables(metadata)

    run_migrations_online(metadata, url_env="MPPO_GROUP_DATABASE_URL")

A version script creates the platform tables with
``create_platform_tables(op.get_bind())`` (see :mod:`mppo.platform.schema`). Services, tests
and ``mppo dev up`` then call ``await upgrade_head("group_svc/migrations", database_url)``;
the ``alembic`` command line works too, with the URL from ``url_env``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text

from mppo.platform.db import create_engine, to_async_url

_CONNECTION_KEY = "connection"
#: the advisory lock key migrations hold (one database per service, so one key is enough)
MIGRATION_LOCK = 0x4D50504F_4D494752  # "MPPO" "MIGR"


def alembic_config(script_location: str | Path, database_url: str | None = None) -> Config:
    """An in-memory Alembic config (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def upgrade_head(
    script_location: str | Path, database_url: str, *, revision: str = "head"
) -> None:
    """``alembic upgrade head`` for ``script_location`` against ``database_url``.

    Replicas starting together migrate one at a time: the migration's transaction first takes
    a transaction-level advisory lock, so the next replica waits for the commit and then finds
    the database at head (instead of racing to create the same tables)."""
    config = alembic_config(script_location, database_url)
    engine = create_engine(database_url, application_name="mppo-migrations", pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            await conn.run_sync(_upgrade, config, revision)
    finally:
        await engine.dispose()


def upgrade_head_sync(script_location: str | Path, database_url: str) -> None:
    """Blocking variant of :func:`upgrade_head` for scripts (not inside a running loop)."""
    asyncio.run(upgrade_head(script_location, database_url))


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes[_CONNECTION_KEY] = connection
    command.upgrade(config, revision)


def run_migrations_online(target_metadata: MetaData | None, *, url_env: str | None = None) -> None:
    """The body of a service's ``env.py``.

    Uses the connection handed over by :func:`upgrade_head` when there is one; otherwise (the
    ``alembic`` CLI) connects to ``sqlalchemy.url`` or the ``url_env`` environment variable.
    Offline mode (``--sql``) renders SQL for that URL.
    """
    config = context.config
    connection = config.attributes.get(_CONNECTION_KEY)
    if isinstance(connection, Connection):
        _run(connection, target_metadata)
        return
    url = config.get_main_option("sqlalchemy.url") or (os.environ.get(url_env) if url_env else None)
    if not url:
        raise RuntimeError(f"no database URL: set sqlalchemy.url or {url_env or 'url_env'}")
    if context.is_offline_mode():
        context.configure(
            url=to_async_url(url).set(drivername="postgresql"),
            target_metadata=target_metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url, target_metadata))


async def _run_async(url: str, target_metadata: MetaData | None) -> None:
    engine = create_engine(url, application_name="mppo-migrations", pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run, target_metadata)
    finally:
        await engine.dispose()


def _run(connection: Connection, target_metadata: MetaData | None) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
