"""A trace started in a request continues in the consumer of the event that request caused:
the context is captured into the outbox row, carried in NATS headers, and restored."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mppo.devstack import Infra
from mppo.group.v1 import group_events_pb2
from mppo.platform.db import create_engine, create_sessionmaker
from mppo.platform.event_types import new_event
from mppo.platform.inbox import EventConsumer
from mppo.platform.messaging import connect, ensure_streams
from mppo.platform.outbox import OutboxRelay, add_to_outbox
from mppo.platform.schema import create_platform_tables
from mppo.platform.telemetry import tracer
from mppo.platform.unit_of_work import UnitOfWork


async def test_consumer_span_joins_the_producer_trace(
    infra: Infra, fresh_database: str, nats_prefix: str, span_exporter: InMemorySpanExporter
) -> None:
    engine = create_engine(fresh_database)
    nc = await connect(infra.nats_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(create_platform_tables)
        js = nc.jetstream()
        await ensure_streams(js, nats_prefix)

        with tracer().start_as_current_span("POST /group") as request_span:
            event = new_event("g-1", group_events_pb2.GroupCreated(group_id="g-1"))
            async with engine.begin() as conn:
                await add_to_outbox(conn, event)
        producer_trace = request_span.get_span_context().trace_id

        seen: list[int] = []
        handled = asyncio.Event()

        async def handler(message: group_events_pb2.GroupCreated, uow: UnitOfWork) -> None:
            seen.append(trace.get_current_span().get_span_context().trace_id)
            handled.set()

        relay = OutboxRelay(engine, js, prefix=nats_prefix, poll_interval=0.1)
        assert await relay.run_once() == 1
        sessions = create_sessionmaker(engine)
        consumer = EventConsumer(
            js,
            uow=lambda: UnitOfWork(sessions),
            durable="trace-test",
            stream="MPPO_GROUP",
            handlers={group_events_pb2.GroupCreated: handler},
            prefix=nats_prefix,
        )
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(handled.wait(), 30)
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 10)
    finally:
        await nc.close()
        await engine.dispose()

    assert seen == [producer_trace]
    consumer_spans = [
        s for s in span_exporter.get_finished_spans() if s.name == "consume group.created"
    ]
    assert len(consumer_spans) == 1
    assert consumer_spans[0].kind is trace.SpanKind.CONSUMER
    assert consumer_spans[0].parent is not None
    assert consumer_spans[0].parent.span_id == request_span.get_span_context().span_id
