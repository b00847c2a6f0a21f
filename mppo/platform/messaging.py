"""NATS JetStream plumbing: connection, stream provisioning, subject names, reliable publish.

Names follow docs/conventions.md: subjects get ``<prefix>.`` in front and streams
``<PREFIX>_`` when ``MPPO_NATS_PREFIX`` is set. :func:`publish` retries a timed-out publish
with the same ``Nats-Msg-Id`` so JetStream's duplicate window absorbs a double send (the
inbox table still guards consumers when it cannot).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from mppo.platform.events import HEADER_MSG_ID, Event

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0
STREAMS: Mapping[str, tuple[str, ...]] = {
    "MPPO_GROUP": ("group.>", "member.>"),
    "MPPO_PAYMENT": ("payment.>",),
    "MPPO_ORDER": ("order.>",),
    "MPPO_DLQ": ("dlq.>",),
}

_RETRYABLE = (
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)


def subject_for(event_type: str, prefix: str = "") -> str:
    """The NATS subject of an event type (``t42.group.created`` with prefix ``t42``)."""
    return f"{prefix}.{event_type}" if prefix else event_type


def stream_name(base: str, prefix: str = "") -> str:
    """The stream name (``T42_MPPO_GROUP`` for ``MPPO_GROUP`` with prefix ``t42``)."""
    return f"{prefix.upper()}_{base}" if prefix else base


def dlq_subject(durable: str, event_type: str, prefix: str = "") -> str:
    """Where a consumer's dead letters go: ``dlq.<durable>.<event type>`` (prefixed)."""
    return subject_for(f"dlq.{durable}.{event_type}", prefix)


async def connect(url: str, *, name: str = "mppo", connect_timeout: int = 5) -> Client:
    """Connect to NATS, reconnecting forever with a short wait (callers own ``close()``)."""

    async def on_error(exc: Exception) -> None:
        logger.warning("nats error: %s", exc)

    async def on_disconnected() -> None:
        logger.warning("nats disconnected")

    async def on_reconnected() -> None:
        logger.info("nats reconnected")

    return await nats.connect(
        url,
        name=name,
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        ping_interval=10,
        max_outstanding_pings=3,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )


async def ensure_streams(
    js: JetStreamContext,
    prefix: str = "",
    *,
    duplicate_window: float = DUPLICATE_WINDOW_SECONDS,
    num_replicas: int = 1,
) -> None:
    """Create or update the MPPO streams (file storage, de-duplication window)."""
    for base, subjects in STREAMS.items():
        config = StreamConfig(
            name=stream_name(base, prefix),
            subjects=[subject_for(s, prefix) for s in subjects],
            storage=StorageType.FILE,
            duplicate_window=duplicate_window,
            num_replicas=num_replicas,
        )
        try:
            await js.stream_info(config.name or "")
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            logger.info("created stream %s", config.name)
        else:
            await js.update_stream(config)
            logger.debug("updated stream %s", config.name)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    headers: Mapping[str, str],
    *,
    ack_timeout: float = 2.0,
    attempts: int = 4,
    backoff: float = 0.25,
    max_backoff: float = 2.0,
) -> PubAck:
    """Publish and await the JetStream ack, retrying transient failures with the same headers.

    ``headers`` should carry ``Nats-Msg-Id``: a retry after a lost ack is then de-duplicated.
    """
    if HEADER_MSG_ID not in headers:
        raise ValueError(f"publish to {subject} without {HEADER_MSG_ID}")
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            ack = await js.publish(subject, payload, timeout=ack_timeout, headers=dict(headers))
        except _RETRYABLE as exc:
            if attempt == attempts:
                raise
            logger.warning(
                "publish to %s (msg id %s) failed on attempt %s: %r; retrying in %.2fs",
                subject,
                headers[HEADER_MSG_ID],
                attempt,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
        else:
            if ack.duplicate:
                logger.debug("duplicate publish of %s absorbed", headers[HEADER_MSG_ID])
            return ack
    raise AssertionError("unreachable")


async def publish_event(
    js: JetStreamContext, event: Event, prefix: str = "", *, ack_timeout: float = 2.0
) -> PubAck:
    """Publish one event on its subject with its conventional headers."""
    return await publish(
        js,
        subject_for(event.event_type, prefix),
        event.payload,
        event.to_headers(),
        ack_timeout=ack_timeout,
    )
