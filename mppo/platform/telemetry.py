"""OpenTelemetry tracing: provider set-up and trace context carried across gRPC metadata.

NATS messages carry the same W3C context in their headers (mppo.platform.events). The
exporter is chosen by MPPO_OTEL_EXPORTER: `none` (default; spans are still created so ids
reach the logs) or `console`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_TRACER_NAME = "mppo"


def configure_tracing(service: str, extra: SpanProcessor | None = None) -> TracerProvider:
    """Install a tracer provider for `service` (once per process) and return it."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"mppo-{service}"}))
    if os.environ.get("MPPO_OTEL_EXPORTER", "none") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if extra is not None:
        provider.add_span_processor(extra)
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    """The tracer our code creates spans with."""
    return trace.get_tracer(_TRACER_NAME)


def _carrier(metadata: Any) -> dict[str, str]:
    """The text entries of gRPC metadata, keys lower-cased, as a propagation carrier."""
    return {key.lower(): value for key, value in metadata or () if isinstance(value, str)}


class TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Continues the caller's trace (from `traceparent` metadata) in a server span per RPC."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap unary-unary handlers; streaming ones (health Watch, reflection) pass through."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        carrier = _carrier(handler_call_details.invocation_metadata)
        inner: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            parent = propagate.extract(carrier)
            with tracer().start_as_current_span(
                method, context=parent, kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}
            ) as span:
                try:
                    return await inner(request, context)
                finally:
                    code = context.code()
                    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
                        span.set_status(Status(StatusCode.ERROR, code.name))

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Starts a client span per call and sends its context as `traceparent` metadata."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Add the current trace context to the call's metadata."""
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        with tracer().start_as_current_span(name, kind=SpanKind.CLIENT):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            for key, value in carrier.items():
                metadata[key] = value
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            return await continuation(details, request)


def traced_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to a peer service whose calls carry the current trace context."""
    interceptor: Any = TracingClientInterceptor()
    return grpc.aio.insecure_channel(target, interceptors=[interceptor])
