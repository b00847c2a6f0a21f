"""Config fails fast, logs are JSON with ids and no surprises, trace context crosses gRPC."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from google.protobuf import wrappers_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mppo.platform.config import ConfigError, InfraConfig, ServiceConfig
from mppo.platform.logs import JsonFormatter, bind_ids
from mppo.platform.telemetry import (
    exporting,
    server_interceptors,
    traced_channel,
    tracer,
)

GOOD_ENV = {
    "MPPO_GROUP_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/group_db",
    "MPPO_REDIS_URL": "redis://127.0.0.1:6379/0",
    "MPPO_NATS_URL": "nats://127.0.0.1:4222",
}


def test_service_config_reads_environment_with_defaults() -> None:
    config = ServiceConfig.from_env("group", GOOD_ENV)
    assert config.addr == "127.0.0.1:50051"
    assert config.infra.database_url.endswith("/group_db")
    assert config.infra.nats_prefix == ""
    assert config.log_level == "INFO"
    custom = ServiceConfig.from_env("group", {**GOOD_ENV, "MPPO_GROUP_ADDR": "0.0.0.0:6000"})
    assert custom.addr == "0.0.0.0:6000"


@pytest.mark.parametrize("missing", sorted(GOOD_ENV))
def test_missing_setting_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in GOOD_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        InfraConfig.from_env("group", env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MPPO_GROUP_ADDR", "nonsense"),
        ("MPPO_GROUP_ADDR", "127.0.0.1:99999"),
        ("MPPO_GROUP_DATABASE_URL", "mysql://x/y"),
        ("MPPO_NATS_PREFIX", "bad prefix!"),
    ],
)
def test_malformed_settings_are_rejected(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ServiceConfig.from_env("group", {**GOOD_ENV, name: value})


def test_json_log_line_carries_bound_ids_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("group"))
    log = logging.getLogger("tests.json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with bind_ids(group_id="g-1", payment_id="p-9"):
            log.info("member %s paid", "m-2", extra={"attempt": 3})
        log.info("outside")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "member m-2 paid"
    assert first["group_id"] == "g-1"
    assert first["payment_id"] == "p-9"
    assert first["attempt"] == 3
    assert first["service"] == "group"
    assert first["level"] == "INFO"
    assert "group_id" not in second


async def _echo(request: wrappers_pb2.StringValue, context: object) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=request.value)


class _Echo(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[object, object] | None:
        if handler_call_details.method != "/mppo.test.Echo/Echo":
            return None
        return grpc.unary_unary_rpc_method_handler(
            _echo,
            request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.StringValue.SerializeToString,
        )


async def test_trace_context_crosses_a_real_grpc_call(span_exporter: InMemorySpanExporter) -> None:
    """Exporting, the maintained grpc.aio interceptors make a client and a server span of one
    trace."""
    exporter = span_exporter
    assert exporting()
    server = grpc.aio.server(interceptors=server_interceptors())
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with traced_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(
                "/mppo.test.Echo/Echo",
                request_serializer=wrappers_pb2.StringValue.SerializeToString,
                response_deserializer=wrappers_pb2.StringValue.FromString,
            )
            with tracer().start_as_current_span("caller") as caller:
                reply = await echo(wrappers_pb2.StringValue(value="hi"), timeout=5)
            caller_trace = caller.get_span_context().trace_id
    finally:
        await server.stop(None)
    assert reply.value == "hi"
    spans = exporter.get_finished_spans()
    (server_span,) = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    assert server_span.name == "/mppo.test.Echo/Echo"
    assert server_span.context is not None
    assert server_span.context.trace_id == caller_trace
    client_spans = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    assert len(client_spans) == 1
    assert server_span.parent is not None
    assert client_spans[0].context is not None
    assert server_span.parent.span_id == client_spans[0].context.span_id
