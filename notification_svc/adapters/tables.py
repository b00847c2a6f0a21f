"""Tables of the notification service's own database."""

from __future__ import annotations

from sqlalchemy import MetaData

from mppo.platform.schema import add_platform_tables

metadata = MetaData()
add_platform_tables(metadata)
