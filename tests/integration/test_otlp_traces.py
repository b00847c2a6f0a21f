"""Traces leave a real service process over OTLP when the standard OTEL_EXPORTER_OTLP_ENDPOINT
is set: a collector stand-in (OTLP/HTTP protobuf) receives the server span of an RPC in the
caller's trace, made by the maintained grpc instrumentation, with the database and cache work
of that RPC under it (the asyncpg and redis instrumentations); health checks and the
platform's background polls export nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mppo.devstack import Infra
from mppo.group.v1 import group_service_pb2, group_service_pb2_grpc
from tests.support.services import start_service, wait_serving

TRACE = uuid.uuid4().hex
PARENT = "00f067aa0ba902b7"


@dataclass
class Collector:
    """Receives OTLP/HTTP trace exports; keeps every span with its resource attributes."""

    spans: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    url: str = ""

    async def receive(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest_asyncio.fixture(loop_scope="session")
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", found.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}"
    yield found
    await runner.cleanup()


def attributes(span: Any) -> dict[str, str]:
    return {a.key: a.value.string_value or str(a.value.int_value or "") for a in span.attributes}


async def test_an_rpc_is_exported_as_a_trace_with_its_database_work(
    infra: Infra, fresh_database: str, nats_prefix: str, collector: Collector, tmp_path: Path
) -> None:
    proc = start_service(
        "group",
        database_url=fresh_database,
        redis_url=infra.redis_url,
        nats_url=infra.nats_url,
        nats_prefix=nats_prefix,
        log_dir=tmp_path,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        await wait_serving(proc)
        await asyncio.sleep(1.0)  # some idle polls of the relay, pruner and workers
        async with grpc.aio.insecure_channel(proc.addr) as channel:
            stub = group_service_pb2_grpc.GroupServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetGroup(
                    group_service_pb2.GetGroupRequest(group_id=str(uuid.uuid4())),
                    metadata=(
                        ("x-mppo-user-id", "alice"),
                        ("traceparent", f"00-{TRACE}-{PARENT}-01"),
                    ),
                    timeout=10,
                )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND

        def ours() -> list[tuple[dict[str, Any], Any]]:
            return [(r, s) for r, s in collector.spans if s.trace_id.hex() == TRACE]

        for _ in range(100):
            if any(s.kind == s.SPAN_KIND_SERVER for _, s in ours()) and len(ours()) > 1:
                break
            await asyncio.sleep(0.1)
    finally:
        assert proc.stop() == 0, proc.log_text()

    in_trace = ours()
    (server,) = [s for _, s in in_trace if s.kind == s.SPAN_KIND_SERVER]
    assert server.name == "/mppo.group.v1.GroupService/GetGroup"
    assert server.parent_span_id.hex() == PARENT
    resource = in_trace[0][0]
    assert resource["service.name"] == "mppo-group"
    systems = {attributes(s).get("db.system", "") for _, s in in_trace}
    assert systems & {"postgresql", "redis"}, [(s.name, attributes(s)) for _, s in in_trace]
    # nothing else was exported: no health checks, no trace per background poll
    names = {s.name for _, s in collector.spans}
    assert not any("grpc.health" in name for name in names), names
    strays = [s.name for _, s in collector.spans if s.trace_id.hex() != TRACE]
    assert strays == [], strays
