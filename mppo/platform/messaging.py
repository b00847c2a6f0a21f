"""NATS JetStream plumbing: connection, stream provisioning, subject names, reliable publish.

Names follow docs/conventions.md: subjects get ``<prefix>.`` in front and streams
``<PREFIX>_`` when ``MPPO_NATS_PREFIX`` is set. :func:`publish` retries a timed-out publish
with the same ``Nats-Msg-Id`` so JetStream's duplicate window absorbs a double send (the
inbox table still guards consumers when it cannot).

Stream limits (:class:`StreamLimits`, docs/retention.md): the event streams keep messages for
``max_age`` (limits retention) up to ``max_bytes`` with **discard new** — a full stream refuses
the publish (:class:`StreamFullError`; the outbox keeps the row and retries) instead of
silently dropping the oldest events, which a slow consumer may not have read yet. The
dead-letter stream has no age limit: it keeps its messages until an operator acts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig

from mppo.platform.events import HEADER_MSG_ID, Event

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600.0
DLQ_STREAM = "MPPO_DLQ"
STREAMS: Mapping[str, tuple[str, ...]] = {
    "MPPO_GROUP": ("group.>", "member.>"),
    "MPPO_PAYMENT": ("payment.>",),
    "MPPO_ORDER": ("order.>",),
    DLQ_STREAM: ("dlq.>",),
}
#: JetStream's "store failed" error code; with "... exceeded" it means the stream is full
_STORE_FAILED = 10077


@dataclass(frozen=True)
class StreamLimits:
    """How much the MPPO streams keep (docs/retention.md); sizes in bytes, 0 = no byte limit.

    Event streams: limits retention, ``max_age``, ``max_bytes``, discard **new**. The
    dead-letter stream: no ``max_age`` (kept until an operator acts), ``dlq_max_bytes``,
    discard new (a dead letter that does not fit stays in its source stream and is retried).
    """

    max_age: float = STREAM_MAX_AGE_SECONDS
    duplicate_window: float = DUPLICATE_WINDOW_SECONDS
    max_bytes: int = 0
    dlq_max_bytes: int = 0

    def max_bytes_of(self, base: str) -> int:
        """The byte limit of stream ``base`` (unprefixed); 0 when there is none."""
        return self.dlq_max_bytes if base == DLQ_STREAM else self.max_bytes

    def config(self, base: str, prefix: str = "", *, num_replicas: int = 1) -> StreamConfig:
        """The full configuration of stream ``base`` (unprefixed) under these limits."""
        max_bytes = self.max_bytes_of(base)
        return StreamConfig(
            name=stream_name(base, prefix),
            subjects=[subject_for(s, prefix) for s in STREAMS[base]],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            max_age=0.0 if base == DLQ_STREAM else self.max_age,
            max_bytes=max_bytes if max_bytes > 0 else -1,
            max_msgs=-1,
            duplicate_window=self.duplicate_window,
            num_replicas=num_replicas,
        )


class StreamFullError(RuntimeError):
    """JetStream refused a publish because the stream reached a limit (discard new).

    Not retried by :func:`publish`: the caller keeps the message (the outbox row stays
    unpublished, a dead letter stays in its source stream) and tries again later.
    """


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


def server_urls(url: str) -> list[str]:
    """The servers of ``MPPO_NATS_URL``: one URL, or a cluster's as a comma-separated list."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, *, name: str = "mppo", connect_timeout: int = 5) -> Client:
    """Connect to NATS, reconnecting forever with a short wait (callers own ``close()``).

    ``url`` may list a cluster's servers separated by commas (any one is enough to connect;
    the client learns the others from the cluster and fails over to them)."""

    async def on_error(exc: Exception) -> None:
        logger.warning("nats error: %s", exc)

    async def on_disconnected() -> None:
        logger.warning("nats disconnected")

    async def on_reconnected() -> None:
        logger.info("nats reconnected")

    return await nats.connect(
        server_urls(url),
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
    limits: StreamLimits | None = None,
    num_replicas: int = 1,
) -> list[str]:
    """Create the MPPO streams, or bring existing ones to ``limits``; idempotent.

    A stream whose configuration already matches is left alone; one that differs is updated
    in place (``update_stream``: raising a limit keeps every message; lowering ``max_age``
    drops what is older at once). Returns the names of the streams created or updated.
    """
    limits = limits or StreamLimits()
    changed: list[str] = []
    for base in STREAMS:
        config = limits.config(base, prefix, num_replicas=num_replicas)
        name = config.name or ""
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            logger.info("created stream %s (%s)", name, _describe(config))
            changed.append(name)
            continue
        differences = _differences(info.config, config)
        if differences:
            await js.update_stream(config)
            logger.info("updated stream %s: %s", name, "; ".join(differences))
            changed.append(name)
    return changed


_COMPARED = (
    "subjects",
    "retention",
    "discard",
    "max_age",
    "max_bytes",
    "max_msgs",
    "duplicate_window",
    "num_replicas",
)


def _normalized(field: str, value: Any) -> Any:
    """A setting as compared: enums by value, durations rounded, "no limit" as -1."""
    if isinstance(value, DiscardPolicy | RetentionPolicy):
        return value.value
    if field in ("max_age", "duplicate_window"):
        return round(float(value or 0.0), 6)  # nanoseconds on the wire
    if field in ("max_bytes", "max_msgs"):
        return -1 if value is None or int(value) <= 0 else int(value)
    if field == "subjects":
        return sorted(value or [])
    return value


def _differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """``field: old -> new`` for every compared setting that differs."""
    found = []
    for field in _COMPARED:
        old = _normalized(field, getattr(current, field))
        new = _normalized(field, getattr(wanted, field))
        if old != new:
            found.append(f"{field} {old} -> {new}")
    return found


def _describe(config: StreamConfig) -> str:
    return ", ".join(f"{field}={_normalized(field, getattr(config, field))}" for field in _COMPARED)


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
            if _stream_full(exc):
                raise StreamFullError(
                    f"stream refused {subject} (msg id {headers[HEADER_MSG_ID]}): "
                    f"{getattr(exc, 'description', exc)}"
                ) from exc
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


def _stream_full(exc: BaseException) -> bool:
    """Whether JetStream refused a publish because a stream limit is reached."""
    description = str(getattr(exc, "description", "") or "")
    return getattr(exc, "err_code", None) == _STORE_FAILED and "exceeded" in description


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
