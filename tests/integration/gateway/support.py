"""Helpers for the gateway's integration tests: the real `python -m gateway` process, a JWT
issuer with its JWKS file, and a recording gRPC upstream.

The recording upstream is a real grpc.aio server that accepts every method of our four
services (a generic handler, decoding with the descriptor set), remembers each call (method
path, request, metadata) and answers: HandleWebhook with the SHA-256 of the body bytes it got
(proving byte-exact passthrough until the payment service verifies real signatures), GetPayment
with the payment id asked for, GetOrder(MISSING_ORDER) with a rich NOT_FOUND status,
GetOrder(DOWN_ORDER) with UNAVAILABLE and a RetryInfo of 7 s, GetOrder(SLOW_ORDER) only after
SLOW_SECONDS, and every other method with an empty response of its type.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.descriptors import Catalog
from gateway.devkeys import jwks_for
from mppo.devstack.probes import free_port
from mppo.platform.tls import peer_service
from tests.support.pki import Pki
from tests.support.services import ChildProcess

ISSUER = "https://issuer.gateway-test/"
AUDIENCE = "mppo-api"
KID = "test-key-1"
AREAS = ("group", "payment", "order", "notification")
# Well-formed order ids (ids we issue are UUIDs) the recording upstream answers specially.
MISSING_ORDER = "00000000-0000-4000-8000-00000000dead"
DOWN_ORDER = "00000000-0000-4000-8000-000000000503"
SLOW_ORDER = "00000000-0000-4000-8000-000000000504"
SLOW_SECONDS = 6.0


@dataclass
class Issuer:
    """Signs test tokens; its public key is in `jwks_path`."""

    key: ec.EllipticCurvePrivateKey
    jwks_path: Path

    @classmethod
    def create(cls, directory: Path) -> Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        path = directory / "jwks.json"
        path.write_text(json.dumps(jwks_for(key.public_key(), KID)))
        return cls(key, path)

    def token(self, sub: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": KID})

    def auth(self, sub: str, **overrides: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **overrides)}"}


@dataclass
class GatewayProcess(ChildProcess):
    """A running `python -m gateway`."""

    url: str


def gateway_env(
    issuer: Issuer, redis_url: str, upstreams: Mapping[str, str], **extra: str
) -> dict[str, str]:
    """Environment for a gateway process (a unique rate-limit prefix each time); plaintext
    test mode unless `extra` says otherwise (e.g. MPPO_ENV=prod with a PKI's MPPO_TLS_DIR)."""
    env = {
        "MPPO_ENV": "test",
        "MPPO_GRPC_PLAINTEXT": "1",
        "MPPO_REDIS_URL": redis_url,
        "MPPO_JWT_JWKS": str(issuer.jwks_path),
        "MPPO_JWT_ISSUER": ISSUER,
        "MPPO_JWT_AUDIENCE": AUDIENCE,
        "MPPO_GATEWAY_RATE_PREFIX": f"gwtest:{uuid.uuid4().hex[:8]}:",
        "MPPO_GATEWAY_CORS_ORIGINS": "https://app.example",
        "MPPO_LOG_LEVEL": "INFO",
        # its own free metrics port: several gateways may run at once
        "MPPO_METRICS_ADDR": "127.0.0.1:0",
    }
    env.update({f"MPPO_{area.upper()}_ADDR": addr for area, addr in upstreams.items()})
    env.update(extra)
    return env


def _spawn_gateway(env: Mapping[str, str], log_dir: Path) -> GatewayProcess:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"gateway-{port}.log"
    full_env = {**os.environ, **env, "MPPO_GATEWAY_ADDR": f"127.0.0.1:{port}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return GatewayProcess(process=process, log=log, url=f"http://127.0.0.1:{port}")


async def start_gateway(env: Mapping[str, str], log_dir: Path) -> GatewayProcess:
    """Start the gateway on a free port and wait until /healthz answers 200."""
    gw = await asyncio.to_thread(_spawn_gateway, env, log_dir)
    process = gw.process
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"gateway exited ({process.returncode}):\n{gw.log_text()}")
            try:
                async with session.get(f"{gw.url}/healthz") as reply:
                    if reply.status == 200:
                        return gw
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    gw.stop()
    raise AssertionError(f"gateway not ready:\n{gw.log_text()}")


@dataclass
class Call:
    """One call the recording upstream received."""

    method: str
    request: Message
    metadata: dict[str, str]
    #: the caller's identity from its verified client certificate (None over plaintext)
    peer: str | None = None


@dataclass
class RecordingUpstream:
    """A gRPC server answering every method of the descriptor set's services."""

    catalog: Catalog
    calls: list[Call] = field(default_factory=list)
    server: grpc.aio.Server | None = None
    addr: str = ""
    #: serve mutual TLS with this PKI's "group" certificate (None: plaintext)
    tls: Pki | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((_Handler(self),))
        if self.tls is not None:
            port = self.server.add_secure_port("127.0.0.1:0", self.tls.server_credentials("group"))
        else:
            port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{port}"
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


class _Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, upstream: RecordingUpstream) -> None:
        self.upstream = upstream

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        _, service_name, method_name = method.split("/")
        try:
            descriptor = self.upstream.catalog.pool.FindMethodByName(
                f"{service_name}.{method_name}"
            )
        except KeyError:
            return None
        catalog = self.upstream.catalog
        request_cls = catalog.message_class(descriptor.input_type)
        response_cls = catalog.message_class(descriptor.output_type)

        async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            request = request_cls.FromString(raw)
            metadata = {str(k): str(v) for k, v in context.invocation_metadata() or ()}
            self.upstream.calls.append(Call(method, request, metadata, peer_service(context)))
            reply: Any = response_cls()
            if method_name == "HandleWebhook":
                reply.event_id = hashlib.sha256(request.body.data).hexdigest()  # type: ignore[attr-defined]
            elif method_name == "GetPayment":
                reply.payment.payment_id = request.payment_id  # type: ignore[attr-defined]
                reply.payment.amount.amount_minor = 2**53 + 7
                reply.payment.amount.currency_code = "EUR"
            elif method_name == "GetOrder" and request.order_id == MISSING_ORDER:  # type: ignore[attr-defined]
                info = error_details_pb2.ErrorInfo(reason="ORDER_NOT_FOUND", domain="mppo.dev")
                status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such order")
                status.details.add().Pack(info)
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    status.message,
                    trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
                )
            elif method_name == "GetOrder" and request.order_id == DOWN_ORDER:  # type: ignore[attr-defined]
                retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7))
                status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="merchant down")
                status.details.add().Pack(retry)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    status.message,
                    trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
                )
            elif method_name == "GetOrder" and request.order_id == SLOW_ORDER:  # type: ignore[attr-defined]
                await asyncio.sleep(SLOW_SECONDS)
            data: bytes = reply.SerializeToString()
            return data

        return grpc.unary_unary_rpc_method_handler(handle)
