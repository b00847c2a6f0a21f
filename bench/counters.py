"""What a checkout costs the infrastructure: committed Postgres transactions per service
database, outbox and inbox rows, and messages stored on the MPPO streams."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import nats

__all__ = ["InfraCounters", "read_counters", "webhook_received_at"]

SERVICE_DATABASES = ("group_db", "payment_db", "order_db", "notification_db")
STREAMS = ("MPPO_GROUP", "MPPO_PAYMENT", "MPPO_ORDER", "MPPO_DLQ")


@dataclass
class InfraCounters:
    xact_commit: dict[str, int] = field(default_factory=dict)
    outbox_rows: dict[str, int] = field(default_factory=dict)
    inbox_rows: dict[str, int] = field(default_factory=dict)
    stream_messages: dict[str, int] = field(default_factory=dict)

    def minus(self, before: InfraCounters) -> InfraCounters:
        def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: v - b.get(k, 0) for k, v in a.items()}

        return InfraCounters(
            diff(self.xact_commit, before.xact_commit),
            diff(self.outbox_rows, before.outbox_rows),
            diff(self.inbox_rows, before.inbox_rows),
            diff(self.stream_messages, before.stream_messages),
        )


def _db_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def read_counters(postgres_server_url: str, nats_url: str) -> InfraCounters:
    counters = InfraCounters()
    conn = await asyncpg.connect(postgres_server_url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT datname, xact_commit FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(SERVICE_DATABASES),
        )
        counters.xact_commit = {r["datname"]: int(r["xact_commit"]) for r in rows}
    finally:
        await conn.close()
    for name in SERVICE_DATABASES:
        db = await asyncpg.connect(_db_url(postgres_server_url, name))
        try:
            counters.outbox_rows[name] = int(await db.fetchval("SELECT count(*) FROM outbox"))
            counters.inbox_rows[name] = int(await db.fetchval("SELECT count(*) FROM inbox"))
        finally:
            await db.close()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            with contextlib.suppress(Exception):
                info = await js.stream_info(stream)
                counters.stream_messages[stream] = int(info.state.messages)
    finally:
        await nc.close()
    return counters


async def webhook_received_at(postgres_server_url: str) -> dict[str, datetime]:
    """payment id → when the payment service received its first verified webhook."""
    db = await asyncpg.connect(_db_url(postgres_server_url, "payment_db"))
    try:
        rows = await db.fetch(
            "SELECT payment_id, min(received_at) AS at FROM webhook_events"
            " WHERE payment_id IS NOT NULL GROUP BY payment_id"
        )
    finally:
        await db.close()
    return {str(r["payment_id"]): r["at"] for r in rows}
