"""The aiohttp application: REST/JSON in, gRPC to the services, JSON (or raw) out.

Per request, in this order: request id and trace context; CORS; `/healthz`, `/openapi.json`;
per-IP rate limit; route (404 / 405 with `Allow`); JWT (not for webhooks; 401); per-caller rate
limit (429 with `Retry-After`; 503 with `Retry-After` when the limiter cannot decide); body size
(413); transcoding (400 naming the field: bad JSON, invalid UTF-8, nesting deeper than 32); the
hostile-input check every service also runs (`mppo.platform.validation.check_message`: control
characters, lengths, id shapes; 400 with `BadRequest` violations) -- so bad input never reaches
a service; the gRPC call, whose status becomes the HTTP status and a JSON `google.rpc.Status`
body. An upstream that is down or too slow (UNAVAILABLE, DEADLINE_EXCEEDED, connection refused)
is a 503 with `Retry-After`. Whatever else goes wrong inside the gateway is a JSON 500, never an
HTML page or a dropped connection.

Every response carries the RateLimit headers of the tightest bucket the request was checked
against (`X-RateLimit-Limit/-Remaining/-Reset`, as Envoy's local rate limit sends them, the same
un-prefixed, and the current IETF draft's `RateLimit-Policy` and `RateLimit`;
gateway.ratelimit); the gateway's own endpoints read the client address's bucket without
taking from it. Every error body carries a google.rpc.ErrorInfo with a reason
(`_status_response`). Field violations in an error, the gateway's and the services', name
fields as the REST client sent them (`field_names.RestFieldNames`). A 200 the service answered
with the stored response of an earlier call with the same Idempotency-Key (its
`idempotent-replayed` response metadata) says `Idempotent-Replayed: true`.

gRPC metadata sent upstream: `x-mppo-user-token` (a short-lived token the gateway signs for
the JWT's `sub`; `x-mppo-user-id` only in plaintext development mode; never a client header),
`idempotency-key`, `x-request-id`, `traceparent`, `tracestate`. Webhooks instead carry every
request header except hop-by-hop ones and our identity headers, lower-cased, so the payment
service can verify the provider's signature over the untouched body.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import grpc
import redis.asyncio as aioredis
from aiohttp import web
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry import trace
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway import group_page
from gateway.auth import AuthError, JwksSource, JwtVerifier
from gateway.config import GatewayConfig
from gateway.descriptors import Catalog
from gateway.errors import (
    http_status,
    make_status,
    rename_fields,
    status_from_rpc_error,
    status_json,
    with_error_info,
)
from gateway.field_names import RestFieldNames
from gateway.openapi import IDEMPOTENT_REPLAYED, public_document, serialize
from gateway.ratelimit import RATELIMIT_HEADERS, Decision, Limit, RateLimiter, tightest
from gateway.routing import Match, MethodNotAllowedError, RouteNotFoundError, Router
from gateway.transcode import BadRequestError, Transcoder
from gateway.upstream import Upstreams
from mppo.platform import telemetry
from mppo.platform.errors import InvalidArgumentError
from mppo.platform.idempotency import REPLAYED_KEY
from mppo.platform.identity import USER_JWT_KEY
from mppo.platform.metrics import HttpMeter
from mppo.platform.user_token import USER_TOKEN_KEY, UserTokenSigner
from mppo.platform.validation import check_message, rule_for, string_problem

logger = logging.getLogger(__name__)

USER_ID_KEY = "x-mppo-user-id"
SERVICE_KEY = "x-mppo-service"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Not hop-by-hop, but owned by HTTP/2 and gRPC themselves (gRPC refuses them as metadata);
# the content type travels inside the HttpBody.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "content-type", "user-agent"})
# A client never sets who is calling: dropped from the headers webhooks forward.
IDENTITY_HEADERS = frozenset({USER_ID_KEY, SERVICE_KEY, USER_TOKEN_KEY, USER_JWT_KEY})
CORS_ALLOWED_HEADERS = "authorization, content-type, idempotency-key, x-request-id, traceparent"
CORS_EXPOSED_HEADERS = ", ".join(
    ("X-Request-Id", "Retry-After", IDEMPOTENT_REPLAYED, *RATELIMIT_HEADERS)
)
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+\Z")
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")
# Upstream codes meaning "the service is down or did not answer in time": 503 + Retry-After.
UNAVAILABLE_CODES = frozenset({code_pb2.UNAVAILABLE, code_pb2.DEADLINE_EXCEEDED})
UPSTREAM_RETRY_AFTER = 1
_USER_ID_RULE = rule_for("user_id")
# For the HTTP errors aiohttp raises itself (bad requests, oversized bodies, ...).
_CODE_OF_HTTP = {
    400: code_pb2.INVALID_ARGUMENT,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    408: code_pb2.DEADLINE_EXCEEDED,
    413: code_pb2.INVALID_ARGUMENT,
    414: code_pb2.INVALID_ARGUMENT,
    431: code_pb2.INVALID_ARGUMENT,
}

#: the ErrorInfo reason of an error answered with one of these HTTP statuses when nothing more
#: specific is known (aiohttp's own refusals, above all)
_REASON_OF_HTTP = {
    404: "NO_ROUTE",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "BODY_TOO_LARGE",
    414: "URI_TOO_LONG",
    431: "HEADERS_TOO_LARGE",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the gateway's own endpoints, as route labels (everything else is a binding's template or
#: "unmatched", never a raw path: ids must not become label values)
_OWN_ROUTES = {"/healthz": "/healthz", "/openapi.json": "/openapi.json"}


class UserTokens:
    """The end user's identity as the services accept it: a token the gateway signs.

    Tokens live 60 s; one is reused for a user while it has more than half its life left, so
    a busy user costs one signature per 30 s, not one per request. Without a signer (plaintext
    development mode) the user id travels as `x-mppo-user-id`.
    """

    def __init__(self, signer: UserTokenSigner | None, size: int = 10_000) -> None:
        self._signer = signer
        self._size = size
        self._cache: dict[str, tuple[float, str]] = {}

    def identity(self, user_id: str) -> tuple[str, str]:
        """The metadata entry that tells a service who the user is."""
        if self._signer is None:
            return (USER_ID_KEY, user_id)
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return (USER_TOKEN_KEY, cached[1])
        token = self._signer.sign(user_id)
        if len(self._cache) >= self._size:
            self._cache.clear()
        self._cache[user_id] = (now + self._signer.ttl / 2, token)
        return (USER_TOKEN_KEY, token)


class Gateway:
    """The state behind the application: routes, verifier, limiter, upstream channels."""

    def __init__(self, config: GatewayConfig, catalog: Catalog, redis: aioredis.Redis) -> None:
        self.config = config
        self.catalog = catalog
        self.router = Router(catalog.bindings)
        self.transcoder = Transcoder(catalog)
        self.verifier = JwtVerifier(JwksSource(config.jwks), config.issuer, config.audience)
        self.limiter = RateLimiter(
            redis,
            config.rate_prefix,
            failure_mode=config.failure_mode,
            max_concurrency=config.redis_pool_size,
            wait_seconds=config.redis_pool_wait,
        )
        self.redis = redis
        self.upstreams = Upstreams(catalog, config.upstreams, config.upstream_timeout, config.trust)
        self.user_tokens = UserTokens(config.signer)
        self.http_meter = HttpMeter()
        self.openapi = serialize(public_document(catalog)).encode()

    # ------------------------------------------------------------------ responses

    def error(
        self,
        code: int,
        message: str,
        *,
        violations: tuple[tuple[str, str] | tuple[str, str, str], ...] = (),
        reason: str = "",
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        http: int | None = None,
        fields: RestFieldNames | None = None,
    ) -> web.Response:
        """An error the gateway answers itself (the group page's too): `reason` is its
        ErrorInfo reason (see `_status_response` when there is none)."""
        status = make_status(
            code, message, field_violations=violations, reason=reason, metadata=metadata
        )
        return self._status_response(status, headers=headers, http=http, fields=fields)

    def _status_response(
        self,
        status: status_pb2.Status,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        http: int | None = None,
        fields: RestFieldNames | None = None,
    ) -> web.Response:
        """The one place an error becomes a response (the gateway's own, the services', the
        group page's): a JSON google.rpc.Status that always carries an ErrorInfo. A status
        without one gets `reason` (with `metadata`), else the one of the `http` status asked
        for (`METHOD_NOT_ALLOWED`, `BODY_TOO_LARGE`, ...), else the gRPC code's name
        (`NOT_FOUND` for a service's NOT_FOUND that named no reason)."""
        if fields is not None:  # a REST request: its fields as the client named them
            status = rename_fields(status, fields)
        status = with_error_info(status, reason or _REASON_OF_HTTP.get(http or 0, ""), metadata)
        return web.Response(
            status=http or http_status(status.code),
            body=status_json(status),
            content_type="application/json",
            headers=headers,
        )

    # ------------------------------------------------------------------ handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every request that is not /healthz or /openapi.json."""
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request)
        decision = await self.take(request, "ip", self.config.ip_limit)
        if not decision.allowed:
            return self._refused(decision)
        try:
            match = self.router.match(request.method, request.rel_url.raw_path)
        except MethodNotAllowedError as exc:
            return self.error(
                code_pb2.UNIMPLEMENTED,
                f"method {request.method} not allowed on {request.path}",
                reason="METHOD_NOT_ALLOWED",
                headers={"Allow": ", ".join(exc.allowed)},
                http=405,
            )
        except RouteNotFoundError:
            return self.error(code_pb2.NOT_FOUND, f"no route for {request.path}", reason="NO_ROUTE")
        binding = match.route.binding
        request["route"] = binding.template
        span = trace.get_current_span()
        if span.is_recording():  # the root span (exporting): named after the route, not the path
            span.update_name(f"{request.method} {binding.template}")
            span.set_attribute("http.route", binding.template)
        user_id = ""
        if not binding.webhook:
            authorization = request.headers.get("Authorization")
            try:
                identity = await self.verifier.verify(authorization)
            except AuthError as exc:
                if _no_bearer_token(authorization):  # RFC 6750 §3.1: no error code then
                    return self.error(
                        code_pb2.UNAUTHENTICATED,
                        str(exc),
                        reason="MISSING_BEARER_TOKEN",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                return self.error(
                    code_pb2.UNAUTHENTICATED,
                    str(exc),
                    reason="INVALID_TOKEN",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            user_id = identity.user_id
            problem = string_problem(user_id, _USER_ID_RULE)
            if problem:  # it becomes gRPC metadata and a stored id: the same rule as user_id
                return self.error(
                    code_pb2.UNAUTHENTICATED,
                    f"token subject {problem}",
                    reason="INVALID_TOKEN",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            request["user_id"] = user_id
            decision = await self.take(request, f"user:{user_id}", self.config.caller_limit)
            if not decision.allowed:
                return self._refused(decision)
        return await self._forward(request, match, user_id)

    async def _forward(self, request: web.Request, match: Match, user_id: str) -> web.Response:
        binding = match.route.binding
        fields = RestFieldNames(binding, match.variables, request.query.keys())
        body = b""
        if binding.body:
            length = request.content_length
            if length is not None and length > self.config.max_body:
                return self._too_large()
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._too_large()
        try:
            message = self.transcoder.request(
                binding,
                match.variables,
                list(request.query.items()),
                body,
                request.headers.get("Content-Type", ""),
            )
        except BadRequestError as exc:
            return self.error(
                code_pb2.INVALID_ARGUMENT,
                str(exc),
                violations=((exc.field, exc.description, exc.reason),),
                reason=exc.info_reason,
                fields=fields,
            )
        try:
            check_message(message)
        except InvalidArgumentError as exc:
            return self.error(
                code_pb2.INVALID_ARGUMENT,
                exc.message,
                violations=tuple((v.field, v.description) for v in exc.violations),
                reason=exc.reason,
                fields=fields,
            )
        metadata = self._metadata(request, user_id, webhook=binding.webhook)
        if isinstance(metadata, web.Response):
            return metadata
        try:
            reply, replied = await self.upstreams.call_with_headers(binding, message, metadata)
        except grpc.aio.AioRpcError as exc:
            status = status_from_rpc_error(exc)
            if status.code not in UNAVAILABLE_CODES:
                return self._status_response(status, fields=fields)
            if not status.details:
                # Usually the channel, not the service: keep addresses out of the reply.
                logger.warning("upstream %s: %s", binding.area, status.message)
                status.message = (
                    f"the {binding.area} service is unavailable"
                    if status.code == code_pb2.UNAVAILABLE
                    else f"the {binding.area} service did not answer in time"
                )
            return self._status_response(
                status,
                reason=(
                    "SERVICE_UNAVAILABLE"
                    if status.code == code_pb2.UNAVAILABLE
                    else "SERVICE_TIMEOUT"
                ),
                metadata={"service": binding.area},
                headers={"Retry-After": str(_retry_after(status))},
                http=503,
            )
        payload, content_type = self.transcoder.response(binding, reply)
        response = web.Response(status=200, body=payload)
        response.headers["Content-Type"] = content_type
        if replied.get(REPLAYED_KEY) == "true":  # the service answered with a stored response
            response.headers[IDEMPOTENT_REPLAYED] = "true"
        return response

    def client_address(self, request: web.Request) -> str:
        """The address a request is metered by (see `client_address`)."""
        return client_address(
            request.remote or "unknown",
            request.headers.getall("X-Forwarded-For", []),
            self.config.trusted_proxies,
        )

    async def take(self, request: web.Request, bucket: str, limit: Limit) -> Decision:
        """A token from `bucket` (`ip`: the client's address) for this request; the decision is
        kept for the response's RateLimit headers."""
        if bucket == "ip":
            bucket = f"ip:{self.client_address(request)}"
        decision = await self.limiter.take(bucket, limit)
        request.setdefault("ratelimit", []).append(decision)
        return decision

    async def _ratelimit_headers(self, request: web.Request) -> dict[str, str]:
        """The RateLimit headers for the response: the tightest bucket this request took from,
        else (unmetered endpoints: /healthz, /openapi.json, the group page's files) what the
        client's address has left, read without taking."""
        decision = tightest(request.get("ratelimit", []))
        if decision is None:
            ip = f"ip:{self.client_address(request)}"
            decision = await self.limiter.peek(ip, self.config.ip_limit)
        return decision.headers()

    def _metadata(
        self, request: web.Request, user_id: str, *, webhook: bool
    ) -> list[tuple[str, str]] | web.Response:
        metadata: list[tuple[str, str]] = [("x-request-id", request["request_id"])]
        if not telemetry.exporting():  # exporting, the client interceptor sends its own span
            metadata.append(("traceparent", request["traceparent"]))
            tracestate = request.headers.get("tracestate", "")
            if tracestate and _PRINTABLE.match(tracestate):
                metadata.append(("tracestate", tracestate))
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if not key.strip() or len(key) > 255 or not _PRINTABLE.match(key):
                return self.error(
                    code_pb2.INVALID_ARGUMENT,
                    "Idempotency-Key must be 1-255 printable ASCII characters",
                    violations=(("Idempotency-Key", "1-255 printable ASCII characters"),),
                    reason="IDEMPOTENCY_KEY_INVALID",
                )
            metadata.append(("idempotency-key", key.strip()))
        if user_id:
            metadata.append(self.user_tokens.identity(user_id))
        else:
            metadata.append((SERVICE_KEY, "gateway"))  # e.g. webhooks: the gateway itself
        if webhook:
            metadata.extend(_webhook_headers(request))
        return metadata

    def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not self._origin_allowed(origin):
            return self.error(
                code_pb2.PERMISSION_DENIED, "origin not allowed", reason="ORIGIN_NOT_ALLOWED"
            )
        methods = self.router.allowed_methods(request.rel_url.raw_path)
        if not methods:
            return self.error(code_pb2.NOT_FOUND, f"no route for {request.path}", reason="NO_ROUTE")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ", ".join(methods),
                "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    def _origin_allowed(self, origin: str) -> bool:
        origins = self.config.cors_origins
        return bool(origin) and ("*" in origins or origin in origins)

    def _refused(self, decision: Decision) -> web.Response:
        headers = {"Retry-After": str(decision.retry_after)}
        if decision.undecided:  # Redis saturated or down: not the client's fault
            return self.error(
                code_pb2.UNAVAILABLE,
                "rate limiter unavailable, retry later",
                reason=decision.reason,
                headers=headers,
            )
        return self.error(
            code_pb2.RESOURCE_EXHAUSTED,
            "rate limit exceeded",
            reason="RATE_LIMITED",
            headers=headers,
        )

    def _too_large(self) -> web.Response:
        return self.error(
            code_pb2.INVALID_ARGUMENT,
            f"request body larger than {self.config.max_body} bytes",
            reason="BODY_TOO_LARGE",
            http=413,
        )

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id, the request's trace (the root span: the instrumentation's when traces
        are exported, else the caller's traceparent or a new one, current for the request so
        every line logged carries its id), CORS headers, RED metrics per route and one
        access-log line per request."""
        started = time.monotonic()
        request_id = request.headers.get("X-Request-Id", "")
        if not request_id or len(request_id) > 128 or not _PRINTABLE.match(request_id):
            request_id = uuid.uuid4().hex
        request["request_id"] = request_id
        root = trace.get_current_span().get_span_context()
        token = None
        if root.is_valid:  # the aiohttp instrumentation's server span
            traceparent = telemetry.traceparent(root)
        else:
            traceparent = request.headers.get("traceparent", "").strip().lower()
            if not _TRACEPARENT.match(traceparent):
                traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
            remote = telemetry.parse_traceparent(traceparent)
            token = telemetry.use_remote(remote) if remote is not None else None
        request["traceparent"] = traceparent
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                code = _CODE_OF_HTTP.get(exc.status, code_pb2.UNKNOWN)
                response = self.error(
                    code, exc.reason, reason=_REASON_OF_HTTP.get(exc.status, ""), http=exc.status
                )
            except Exception:
                logger.exception("request %s failed", request_id)
                response = self.error(
                    code_pb2.INTERNAL, "internal gateway error", reason="INTERNAL_ERROR"
                )
            response.headers["X-Request-Id"] = request_id
            try:
                response.headers.update(await self._ratelimit_headers(request))
            except Exception:  # headers are advice: never fail a response over them
                logger.exception("request %s: no RateLimit headers", request_id)
            origin = request.headers.get("Origin", "")
            if self._origin_allowed(origin):
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
                response.headers["Vary"] = "Origin"
            elapsed = time.monotonic() - started
            route = request.get("route") or _OWN_ROUTES.get(request.path, "unmatched")
            self.http_meter.observe(route, request.method, response.status, elapsed)
            logger.info(
                "%s %s -> %s in %.1f ms",
                request.method,
                request.path,
                response.status,
                elapsed * 1000,
                extra={
                    "request_id": request_id,
                    "user_id": request.get("user_id", ""),
                    "http.request.method": request.method,
                    "http.route": route,
                    "http.response.status_code": response.status,
                    "url.path": request.path,
                    "event.duration": int(elapsed * 1e9),
                },
            )
            return response
        finally:
            telemetry.end_trace(token)

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process serves HTTP and has its routes loaded."""
        return web.json_response({"status": "SERVING", "routes": len(self.router.routes)})

    async def openapi_json(self, request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document of the public REST API."""
        return web.Response(body=self.openapi, content_type="application/json")

    async def close(self) -> None:
        """Close the upstream channels and Redis."""
        await self.upstreams.close()
        await self.redis.aclose()


def client_address(
    peer: str, forwarded: Sequence[str], proxies: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The client's address: `peer`, or -- when the peer is a trusted proxy (Envoy in front of
    the group page, MPPO_GATEWAY_TRUSTED_PROXIES) -- the last X-Forwarded-For address that
    is not one of those proxies (the one the proxy appended; what a client wrote before it
    is not believed). A hop that is no address makes the header unbelievable: the peer."""
    if not proxies or not _within(peer, proxies):
        return peer
    for hop in reversed([h.strip() for h in ",".join(forwarded).split(",") if h.strip()]):
        inside = _within(hop, proxies)
        if inside is None:
            return peer
        if not inside:
            return hop
    return peer


def _within(address: str, networks: Sequence[IPv4Network | IPv6Network]) -> bool | None:
    """Whether `address` lies in one of `networks`; None when it is no IP address."""
    try:
        ip = ip_address(address)
    except ValueError:
        return None
    return any(ip in network for network in networks)


def _no_bearer_token(authorization: str | None) -> bool:
    """Whether an Authorization header carries no bearer token at all (absent, empty, another
    scheme, or the scheme without a token), as opposed to a token that is not valid."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return scheme.lower() != "bearer" or not token.strip()


def _retry_after(status: status_pb2.Status) -> int:
    """Seconds from a RetryInfo detail the service sent, else UPSTREAM_RETRY_AFTER."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay = float(info.retry_delay.seconds) + float(info.retry_delay.nanos) / 1e9
                return max(1, min(3600, math.ceil(delay)))
    return UPSTREAM_RETRY_AFTER


def _webhook_headers(request: web.Request) -> list[tuple[str, str]]:
    connection_named = {
        token.strip().lower() for token in request.headers.get("Connection", "").split(",")
    }
    forwarded: list[tuple[str, str]] = []
    for name, value in request.headers.items():
        key = name.lower()
        if key in HOP_BY_HOP or key in connection_named or key in TRANSPORT_HEADERS:
            continue
        if key in IDENTITY_HEADERS or key.startswith(("grpc-", ":")) or key.endswith("-bin"):
            continue
        if key in ("x-request-id", "traceparent", "tracestate", "idempotency-key"):
            continue  # already set from the checked values
        if not _METADATA_KEY.match(key) or not _PRINTABLE.match(value):
            logger.warning("webhook header %r not forwardable as gRPC metadata; dropped", key)
            continue
        forwarded.append((key, value))
    return forwarded


def build_app(config: GatewayConfig, catalog: Catalog | None = None) -> web.Application:
    """The aiohttp application for `config`."""
    catalog = catalog or Catalog.load(config.descriptors)
    # No client-side retries: a limiter that waits seconds for Redis is worse than none.
    # The pool is as large as the limiter's concurrency: a full pool is load, not an outage.
    redis = aioredis.Redis.from_url(
        config.redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        max_connections=config.redis_pool_size,
    )
    gateway = Gateway(config, catalog, redis)
    # exporting traces, the maintained aiohttp middleware goes first: it opens the root span
    traced = telemetry.http_middleware()
    middlewares = [traced, gateway.middleware] if traced is not None else [gateway.middleware]
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body)
    app.router.add_get("/healthz", gateway.healthz)
    app.router.add_get("/openapi.json", gateway.openapi_json)
    group_page.add_routes(app, gateway)  # the members' group page, /g/... (no JWT)
    # Every path, control characters included (`.` would stop at a newline), reaches `handle`.
    app.router.add_route("*", r"/{tail:[\s\S]*}", gateway.handle)

    async def on_cleanup(_: web.Application) -> None:
        await gateway.close()

    app.on_cleanup.append(on_cleanup)
    app["gateway"] = gateway
    return app


def describe(config: GatewayConfig) -> dict[str, Any]:
    """What the gateway serves, for the start-up log line."""
    return {
        "addr": f"{config.host}:{config.port}",
        "upstreams": dict(config.upstreams),
        "jwks": config.jwks,
        "issuer": config.issuer,
        "audience": config.audience,
        "caller_limit": f"{config.caller_limit.rate}/{config.caller_limit.burst}",
        "ip_limit": f"{config.ip_limit.rate}/{config.ip_limit.burst}",
        "env": config.environment,
        "ratelimit_failure_mode": config.failure_mode.value,
        "redis_pool_size": config.redis_pool_size,
    }


__all__ = ["Gateway", "Limit", "build_app", "describe"]
