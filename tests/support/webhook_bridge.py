"""A stand-in for the REST gateway's webhook route, for tests until the gateway exists.

``POST /payments/webhook/{provider}`` (and ``/payments/webhook``) forwards the raw body as a
``google.api.HttpBody`` and every HTTP header as gRPC metadata (lower-cased keys), exactly as
Envoy's transcoder and our Python gateway do, to PaymentService.HandleWebhook, and maps the
gRPC status to an HTTP status (OK → 200, INVALID_ARGUMENT → 400, UNAUTHENTICATED → 401,
NOT_FOUND → 404, others → 503/500).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.api import httpbody_pb2

from mppo.devstack.probes import free_port
from mppo.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from mppo.platform.identity import SERVICE_KEY, USER_ID_KEY, service_metadata

_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAVAILABLE: 503,
}
# HTTP/2 pseudo or hop-by-hop headers gRPC metadata must not carry, and identity headers (the
# gateway drops those too: a webhook sender proves nothing about who it is)
_SKIP = {
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "te",
    "keep-alive",
    SERVICE_KEY,
    USER_ID_KEY,
}


@dataclass
class WebhookBridge:
    """A running bridge: its URL and a count of what it answered."""

    url: str
    answered: dict[int, int]

    def webhook_url(self, provider: str = "sandbox") -> str:
        """Where a provider should send its webhooks."""
        return f"{self.url}/payments/webhook/{provider}"


@contextlib.asynccontextmanager
async def webhook_bridge(payment_addr: str) -> AsyncIterator[WebhookBridge]:
    """Run the bridge on a free port until the block ends."""
    channel = grpc.aio.insecure_channel(payment_addr)
    stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
    answered: dict[int, int] = {}

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        # the gateway is known to the payment service as a service (by its certificate under
        # mutual TLS; in the tests' plaintext mode, by the metadata it sends)
        metadata = (
            *service_metadata("gateway"),
            *(
                (key.lower(), value)
                for key, value in request.headers.items()
                if key.lower() not in _SKIP and value.isprintable()
            ),
        )
        message = payment_service_pb2.HandleWebhookRequest(
            provider=request.match_info.get("provider", ""),
            body=httpbody_pb2.HttpBody(
                content_type=request.headers.get("Content-Type", ""), data=body
            ),
        )
        try:
            reply = await stub.HandleWebhook(message, metadata=metadata, timeout=15)
        except grpc.aio.AioRpcError as error:
            status = _HTTP_STATUS.get(error.code(), 500)
            answered[status] = answered.get(status, 0) + 1
            return web.json_response(
                {"error": {"code": error.code().name, "message": error.details()}}, status=status
            )
        answered[200] = answered.get(200, 0) + 1
        return web.json_response({"event_id": reply.event_id, "duplicate": reply.duplicate})

    app = web.Application()
    app.router.add_post("/payments/webhook/{provider}", forward)
    app.router.add_post("/payments/webhook", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield WebhookBridge(url=f"http://127.0.0.1:{port}", answered=answered)
    finally:
        await runner.cleanup()
        await channel.close(None)
