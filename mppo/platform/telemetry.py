"""OpenTelemetry tracing: one provider per process, the maintained instrumentations when spans
are exported, and trace ids that reach every log line either way.

**Exporting** is on when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set — OTLP over gRPC, or over HTTP with
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; headers, timeouts and certificates come from the
other standard ``OTEL_EXPORTER_OTLP_*`` variables, sampling from ``OTEL_TRACES_SAMPLER`` —
or when ``MPPO_OTEL_EXPORTER=console``. Only then are the maintained instrumentations switched
on: the grpc.aio server interceptor and client interceptors, asyncpg, redis and the aiohttp
client (:func:`instrument_libraries`), and the aiohttp server middleware in the gateway
(:func:`http_middleware`). Health checks are never traced; a span with no parent that is a
database, cache or HTTP call (a worker's poll) is dropped, so an idle service exports nothing.

**Without an exporter** nothing is recorded and no instrumentation runs (an RPC pays for a
header lookup, not for a span): the provider samples nothing, so spans are non-recording, but
their ids still flow — the gateway's ``traceparent`` reaches every service in gRPC metadata
(:func:`trace_metadata`) and NATS headers (mppo.platform.events), each RPC continues it
(:func:`continue_trace`, called by the runtime), and every log line carries the request's
trace id (mppo.platform.logs).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)

_TRACER_NAME = "mppo"
EXPORTER_VAR = "MPPO_OTEL_EXPORTER"
OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TRACEPARENT = "traceparent"

_state = {"exporting": False}


def exporting() -> bool:
    """Whether spans leave this process (and the instrumentations are on)."""
    return _state["exporting"]


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = next((env[v].strip() for v in OTLP_PROTOCOL_VARS if env.get(v, "").strip()), "")
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter()


class QuietBackground(Sampler):
    """Drops a span with no parent that is a client call other than gRPC (a worker polling
    its database, Redis or a provider); anything else is decided by ``delegate``."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """DROP background client spans; otherwise the delegate's decision."""
        if kind is SpanKind.CLIENT and not name.startswith("/"):
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """For the SDK's debug output."""
        return f"QuietBackground{{{self._delegate.get_description()}}}"


def _configured_sampler() -> Sampler:
    try:
        from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

        sampler: Sampler = _get_from_env_or_default()
    except Exception:  # pragma: no cover - a bad OTEL_TRACES_SAMPLER falls back
        sampler = ParentBased(ALWAYS_ON)
    return sampler


def configure_tracing(
    service: str, extra: SpanProcessor | None = None, env: Mapping[str, str] | None = None
) -> TracerProvider:
    """Install the tracer provider of `service` (once per process) and return it.

    Spans are exported when an OTLP endpoint or the console exporter is configured, or when
    `extra` (tests) is given; otherwise the provider records nothing (ids only)."""
    source = os.environ if env is None else env
    exporters: list[Any] = []
    if any(source.get(v, "").strip() for v in OTLP_ENDPOINT_VARS):
        exporters.append(_otlp_exporter(source))
    if source.get(EXPORTER_VAR, "none").strip().lower() == "console":
        exporters.append(ConsoleSpanExporter())
    exports = bool(exporters) or extra is not None
    resource = Resource.create(
        {
            "service.name": f"mppo-{service}",
            "service.namespace": "mppo",
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    sampler = QuietBackground(_configured_sampler()) if exports else ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if extra is not None:
        provider.add_span_processor(extra)
    trace.set_tracer_provider(provider)
    _state["exporting"] = exports
    if exporters:
        logger.info("traces exported to %s", ", ".join(type(e).__module__ for e in exporters))
    return provider


def instrument_libraries() -> None:
    """Switch on the asyncpg, redis and aiohttp-client instrumentations (exporting only;
    called once by a process's entry point)."""
    if not exporting():
        return
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentors: list[Any] = [
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
        RedisInstrumentor(),
        AioHttpClientInstrumentor(),
    ]
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def tracer() -> trace.Tracer:
    """The tracer our own spans (event consumers) are created with."""
    return trace.get_tracer(_TRACER_NAME)


def _not_health(details: Any) -> bool:
    method = getattr(details, "method", b"")
    name = method.decode() if isinstance(method, bytes) else str(method)
    return not name.startswith("/grpc.health.v1.Health/")


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The maintained grpc.aio server interceptor when exporting, else none."""
    if not exporting():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: Any = aio_server_interceptor(filter_=_not_health)  # type: ignore[no-untyped-call]
    return [interceptor]


def client_interceptors() -> list[Any]:
    """The maintained grpc.aio client interceptors when exporting, else none."""
    if not exporting():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[Any] = aio_client_interceptors(filter_=_not_health)  # type: ignore[no-untyped-call]
    return interceptors


def http_middleware() -> Any:
    """The maintained aiohttp server middleware (the gateway's root span) when exporting."""
    if not exporting():
        return None
    # the liveness probe is no request of anybody's (read when the module is imported)
    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", "healthz")
    from opentelemetry.instrumentation import aiohttp_server

    return aiohttp_server.create_aiohttp_middleware()


def traced_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel whose calls carry the trace (development tools and tests)."""
    return grpc.aio.insecure_channel(target, interceptors=client_interceptors() or None)


def traceparent(span_context: SpanContext) -> str:
    """The W3C ``traceparent`` of `span_context`."""
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` names, or None when malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the current trace to a peer. Exporting, the client interceptor
    sends it (with its own client span), so this is empty."""
    if _state["exporting"]:
        return ()
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return ()
    return ((TRACEPARENT, traceparent(span_context)),)


def continue_trace(metadata: Any) -> object | None:
    """Make the caller's trace (its ``traceparent`` metadata) current; a token for
    :func:`end_trace`, or None when the call carried none. Used when not exporting (the
    server interceptor does it, with a span, otherwise)."""
    for key, value in metadata or ():
        if key == TRACEPARENT and isinstance(value, str):
            remote = parse_traceparent(value)
            if remote is None:
                return None
            return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    return None


def end_trace(token: object | None) -> None:
    """Undo :func:`continue_trace`."""
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def use_remote(span_context: SpanContext) -> object:
    """Make `span_context` current (a non-recording span); a token for :func:`end_trace`."""
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))


def untraced() -> contextvars.Context:
    """A context in which the instrumentations record nothing, for a platform loop (relay,
    pruner, sampler, health watchdog) started with ``asyncio.create_task(..., context=...)``."""
    ctx = contextvars.copy_context()
    ctx.run(otel_context.attach, otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    return ctx
