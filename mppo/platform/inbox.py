"""Idempotent event consumers: durable pull consumer + inbox table + dead letters.

A consumer maps payload classes to handlers of the one handler shape, ``handler(message, uow)``
(the typed payload and an open :class:`~mppo.platform.unit_of_work.UnitOfWork`); its filter
subjects are the subjects those classes declare. For each message, one unit of work records
``(consumer, event_id)`` in the inbox and, if that row is new, runs the handler and commits
(outbox rows and after-commit callbacks included); the message is acked only after commit.
A redelivery of an event already recorded is acked without effect. A handler failure rolls
back and naks with backoff; once the delivery count reaches ``max_deliver`` the message is copied to
``dlq.<durable>.<event type>`` (with ``Mppo-Dead-Letter-Reason`` / ``-Consumer`` headers) and
terminated. Infrastructure failures (database down) are retried without limit instead.

Fault injection point: ``MPPO_FAULT=consumer_after_commit`` (see :mod:`mppo.platform.outbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from mppo.platform.event_types import subject_of
from mppo.platform.events import HEADER_EVENT_ID, HEADER_MSG_ID, Event, MalformedEventError
from mppo.platform.logs import bind_ids
from mppo.platform.messaging import dlq_subject, publish, stream_name, subject_for
from mppo.platform.metrics import ConsumerMeter
from mppo.platform.outbox import fault_point
from mppo.platform.telemetry import tracer
from mppo.platform.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

HEADER_DEAD_LETTER_REASON = "Mppo-Dead-Letter-Reason"
HEADER_DEAD_LETTER_CONSUMER = "Mppo-Dead-Letter-Consumer"

Handler = Callable[[Any, Any], Awaitable[None]]
"""``handler(message, uow)``: applies one typed event payload inside the inbox's unit of work."""

_UNSAFE_HEADER_CHARS = re.compile(r"[\r\n]+")


class _HandlerError(Exception):
    """Wraps an exception raised by the handler itself (counts towards dead-lettering)."""


class EventConsumer:
    """Runs one durable pull consumer; replicas sharing ``durable`` split the messages."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        uow: Callable[[], UnitOfWork],
        durable: str,
        stream: str,
        handlers: Mapping[type[Message], Handler],
        prefix: str = "",
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        batch: int = 10,
        fetch_timeout: float = 1.0,
        nak_backoff: float = 0.5,
        max_nak_backoff: float = 30.0,
        stale_check_after: int = 3,
    ) -> None:
        """``stream`` is unprefixed (``MPPO_PAYMENT``); ``handlers`` name the events consumed."""
        self._uow = uow
        self._js = js
        self._durable = durable
        self._stream = stream_name(stream, prefix)
        self._handlers = {subject_of(cls): (cls, fn) for cls, fn in handlers.items()}
        if "" in self._handlers:
            raise ValueError("every handled class must declare its (event_subject)")
        self._filters = [subject_for(s, prefix) for s in sorted(self._handlers)]
        self._prefix = prefix
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._nak_backoff = nak_backoff
        self._max_nak_backoff = max_nak_backoff
        self._stale_check_after = stale_check_after
        self._stopping = asyncio.Event()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._meter = ConsumerMeter(durable)

    @property
    def durable(self) -> str:
        """The durable consumer's name (shared by the replicas)."""
        return self._durable

    @property
    def stream(self) -> str:
        """The stream it consumes (prefixed)."""
        return self._stream
        self._fetching: asyncio.Future[list[Msg]] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return now (a fetch waiting for messages is abandoned; a
        message being handled is finished first)."""
        self._stopping.set()
        if self._fetching is not None:
            self._fetching.cancel()

    async def run(self) -> None:
        """Fetch and handle messages until :meth:`stop`."""
        logger.info("consumer %s on %s started", self._durable, self._stream)
        empty_fetches = 0
        try:
            while not self._stopping.is_set():
                try:
                    sub = await self._subscription()
                    self._fetching = asyncio.ensure_future(
                        sub.fetch(self._batch, timeout=self._fetch_timeout)
                    )
                    msgs = await self._fetching
                    self._fetching = None
                except asyncio.CancelledError:
                    if self._stopping.is_set():
                        break  # stop() abandoned the fetch
                    raise
                except (nats.errors.TimeoutError, TimeoutError):
                    empty_fetches += 1  # nothing there (or a dead subscription, checked below)
                    if empty_fetches >= self._stale_check_after:
                        empty_fetches = 0
                        await self._check_subscription()
                    continue
                except Exception as exc:
                    logger.warning("consumer %s fetch failed: %r", self._durable, exc)
                    await self._resubscribe()
                    await self._pause(1.0)
                    continue
                empty_fetches = 0
                for msg in msgs:
                    try:
                        await self.handle(msg)
                    except Exception:
                        # e.g. the ack could not be sent: the message will be redelivered
                        logger.exception("consumer %s: message handling failed", self._durable)
        finally:
            await self._unsubscribe()
            logger.info("consumer %s stopped", self._durable)

    async def handle(self, msg: Msg) -> None:
        """Apply one message exactly once, then ack (or nak / dead-letter on failure)."""
        try:
            event = Event.from_msg(msg)
        except MalformedEventError as exc:
            await self._dead_letter(msg, "unknown", f"malformed event: {exc}")
            return
        meter = self._meter
        try:
            redelivered = msg.metadata.num_delivered > 1
        except Exception:  # not a JetStream delivery (tests feeding messages by hand)
            redelivered = False
        if redelivered:
            meter.redelivered.inc()
        route = self._handlers.get(event.event_type)
        if route is None:
            logger.info("consumer %s: no handler for %s; acked", self._durable, event.event_type)
            await msg.ack()
            meter.ignored.inc()
            return
        cls, handler = route
        try:
            message = cls.FromString(event.payload)
        except DecodeError as exc:
            await self._dead_letter(msg, event.event_type, f"malformed payload: {exc}")
            return
        try:
            applied = await self._apply(event, message, handler)
        except _HandlerError as exc:
            await self._handler_failed(msg, event, exc.__cause__ or exc)
            return
        except Exception as exc:
            delay = self._backoff(msg)
            logger.warning(
                "consumer %s: event %s not applied (%r); retry in %.1fs",
                self._durable,
                event.event_id,
                exc,
                delay,
            )
            await msg.nak(delay=delay)
            meter.retried.inc()
            return
        fault_point("consumer_after_commit")
        await msg.ack()
        (meter.applied if applied else meter.duplicate).inc()
        if not applied:
            logger.info("consumer %s: duplicate event %s acked", self._durable, event.event_id)

    async def _apply(self, event: Event, message: Message, handler: Handler) -> bool:
        with (
            tracer().start_as_current_span(
                f"consume {event.event_type}",
                context=event.trace_context(),
                kind=SpanKind.CONSUMER,
                attributes={"messaging.consumer": self._durable, "mppo.event_id": event.event_id},
            ),
            bind_ids(event_id=event.event_id, aggregate_id=event.aggregate_id),
        ):
            async with self._uow() as uow:
                if not await uow.record_inbox(self._durable, event):
                    return False
                try:
                    await handler(message, uow)
                except Exception as exc:
                    raise _HandlerError(repr(exc)) from exc
                await uow.commit()
            return True

    async def _handler_failed(self, msg: Msg, event: Event, exc: BaseException) -> None:
        delivered = msg.metadata.num_delivered
        if delivered >= self._max_deliver:
            await self._dead_letter(msg, event.event_type, f"{type(exc).__name__}: {exc}")
            return
        delay = self._backoff(msg)
        logger.warning(
            "consumer %s: handler failed for event %s (delivery %s/%s): %r; retry in %.1fs",
            self._durable,
            event.event_id,
            delivered,
            self._max_deliver,
            exc,
            delay,
        )
        await msg.nak(delay=delay)
        self._meter.retried.inc()

    async def _dead_letter(self, msg: Msg, event_type: str, reason: str) -> None:
        headers = dict(msg.headers or {})
        event_id = headers.get(HEADER_EVENT_ID) or headers.get(HEADER_MSG_ID) or msg.reply
        # A distinct msg id: the same event may be dead-lettered by several consumers.
        headers[HEADER_MSG_ID] = f"{self._durable}:{event_id}"
        headers[HEADER_DEAD_LETTER_REASON] = _UNSAFE_HEADER_CHARS.sub(" ", reason)[:1000]
        headers[HEADER_DEAD_LETTER_CONSUMER] = self._durable
        subject = dlq_subject(self._durable, event_type, self._prefix)
        try:
            await publish(self._js, subject, msg.data, headers)
        except Exception as exc:
            logger.error("consumer %s: dead-letter publish failed: %r", self._durable, exc)
            await msg.nak(delay=self._backoff(msg))
            return
        await msg.term()
        self._meter.dead_lettered.inc()
        logger.error(
            "consumer %s: event %s dead-lettered to %s: %s",
            self._durable,
            event_id,
            subject,
            reason,
        )

    def _backoff(self, msg: Msg) -> float:
        try:
            delivered = msg.metadata.num_delivered
        except Exception:
            delivered = 1
        return float(min(self._nak_backoff * 2 ** max(delivered - 1, 0), self._max_nak_backoff))

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._durable,
            name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait,
            max_deliver=-1,  # dead-lettering is ours; the server must keep redelivering
            filter_subjects=self._filters,
        )

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is None:
            await self._js.add_consumer(self._stream, config=self._consumer_config())
            self._sub = await self._js.pull_subscribe_bind(
                durable=self._durable, stream=self._stream
            )
            logger.info("consumer %s subscribed to %s", self._durable, self._stream)
        return self._sub

    async def _check_subscription(self) -> None:
        """After idle fetches: resubscribe if the consumer vanished or holds undelivered work."""
        if self._sub is None:
            return
        try:
            info = await self._js.consumer_info(self._stream, self._durable)
        except nats.js.errors.NotFoundError:
            logger.warning("consumer %s vanished; recreating", self._durable)
            await self._resubscribe()
            return
        except Exception as exc:
            logger.warning("consumer %s: info failed: %r", self._durable, exc)
            return
        if (info.num_pending or 0) > 0:
            logger.warning(
                "consumer %s idle with %s pending messages; resubscribing",
                self._durable,
                info.num_pending,
            )
            await self._resubscribe()

    async def _resubscribe(self) -> None:
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                logger.debug("consumer %s: unsubscribe failed: %r", self._durable, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
