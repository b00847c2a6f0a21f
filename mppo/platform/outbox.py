"""Transactional outbox: write events with the state change, relay them to JetStream.

:func:`add_to_outbox` inserts in the caller's transaction. :class:`OutboxRelay` claims unpublished
rows with ``FOR UPDATE SKIP LOCKED`` (several relays may run; rows committed out of order are
never skipped), publishes each with ``Nats-Msg-Id`` = event id and waits for the JetStream ack,
then marks them published in the same transaction. A crash between publish and commit republishes
the row later; JetStream de-duplication and the consumers' inbox absorb the repeat.

Fault injection (tests only, off by default): ``MPPO_FAULT=<point>`` makes :func:`fault_point`
end the process with ``os._exit(137)`` at that point. Points: ``relay_after_publish`` (here),
``consumer_after_commit`` (inbox.py).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mppo.platform.events import Event
from mppo.platform.messaging import publish, subject_for
from mppo.platform.schema import outbox
from mppo.platform.worker import LoopWorker

logger = logging.getLogger(__name__)

FAULT_ENV = "MPPO_FAULT"
_MAX_ERROR_LENGTH = 2000


def fault_point(name: str) -> None:
    """Die abruptly here if ``MPPO_FAULT`` names this point (crash tests only)."""
    if os.environ.get(FAULT_ENV) == name:
        logger.critical("fault injection: exiting at %s", name)
        os._exit(137)


NOTIFY_CHANNEL = "mppo_outbox"


#: every event of a commit in one statement, the relays' wake-up in the same round trip: the
#: rows come as parallel arrays (one fixed statement text, so it is prepared once per
#: connection whatever the number of events), and the data-modifying CTE runs although only
#: the NOTIFY is selected. The NOTIFY is delivered only if the transaction commits.
_ADD_TO_OUTBOX = text(
    f"""
    WITH added AS (
        INSERT INTO outbox
            (event_id, event_type, subject, aggregate_id, payload, headers, occurred_at)
        SELECT e.id, e.type, e.type, e.aggregate, e.payload, e.headers::jsonb, e.occurred
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:aggregates AS text[]),
            CAST(:payloads AS bytea[]), CAST(:headers AS text[]),
            CAST(:occurred AS timestamptz[])
        ) AS e(id, type, aggregate, payload, headers, occurred)
        RETURNING 1
    )
    SELECT pg_notify('{NOTIFY_CHANNEL}', '')
    """
)


async def add_to_outbox(conn: AsyncSession | AsyncConnection, *events: Event) -> None:
    """Insert ``events`` into the outbox within the caller's open transaction (one round
    trip), with a ``NOTIFY`` that Postgres delivers only if the transaction commits: a wake-up
    hint for the relays (the poll interval stays the guarantee)."""
    if not events:
        return
    await conn.execute(
        _ADD_TO_OUTBOX,
        {
            "ids": [event.event_id for event in events],
            "types": [event.event_type for event in events],
            "aggregates": [event.aggregate_id for event in events],
            "payloads": [event.payload for event in events],
            "headers": [json.dumps(event.to_headers()) for event in events],
            "occurred": [event.occurred_at for event in events],
        },
    )


# The relay's two statements, built once (it runs a round after every commit that wrote events).
_CLAIM_DUE = text(
    "SELECT event_id, subject, aggregate_id, payload, headers FROM outbox"
    " WHERE published_at IS NULL ORDER BY occurred_at LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL"
    " WHERE event_id = ANY(CAST(:ids AS uuid[]))"
)


class OutboxRelay(LoopWorker):
    """Publishes committed outbox rows to JetStream; safe to run in every replica."""

    name = "outbox relay"

    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        *,
        prefix: str = "",
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_timeout: float = 2.0,
        max_failures_per_batch: int = 3,
    ) -> None:
        super().__init__(poll_interval=poll_interval, listen=(engine, NOTIFY_CHANNEL))
        self._engine = engine
        self._js = js
        self._prefix = prefix
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._max_failures = max_failures_per_batch

    async def work(self) -> bool:
        """One batch; True when a full batch went out (more may be waiting)."""
        return await self.run_once() >= self._batch_size

    async def run_once(self) -> int:
        """Claim up to ``batch_size`` unpublished rows, publish and mark them; return the count."""
        async with self._engine.connect() as conn, conn.begin():
            rows = (await conn.execute(_CLAIM_DUE, {"limit": self._batch_size})).all()
            published: list[str] = []
            blocked: set[str] = set()
            failures = 0
            for row in rows:
                if row.aggregate_id in blocked:
                    continue  # keep per-aggregate order behind a failed row
                try:
                    await self._publish(row.subject, row.payload, row.headers)
                except Exception as exc:
                    failures += 1
                    blocked.add(row.aggregate_id)
                    await self._record_failure(conn, str(row.event_id), exc)
                    if failures >= self._max_failures:
                        break
                    continue
                fault_point("relay_after_publish")
                published.append(str(row.event_id))
            if published:
                await conn.execute(_MARK_PUBLISHED, {"ids": published})
        if published:
            logger.debug("outbox relay published %s events", len(published))
        return len(published)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, Any]) -> None:
        await publish(
            self._js,
            subject_for(subject, self._prefix),
            payload,
            {str(k): str(v) for k, v in headers.items()},
            ack_timeout=self._publish_timeout,
        )

    async def _record_failure(self, conn: AsyncConnection, event_id: str, exc: Exception) -> None:
        logger.warning("outbox event %s not published: %r", event_id, exc)
        await conn.execute(
            update(outbox)
            .where(outbox.c.event_id == event_id)
            .values(attempts=outbox.c.attempts + 1, last_error=repr(exc)[:_MAX_ERROR_LENGTH])
        )
