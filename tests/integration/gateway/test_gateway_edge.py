"""The real gateway process in front of a recording gRPC upstream: every REST binding reaches
its RPC (walked from the descriptor set), webhooks pass byte-exact with their headers, JWTs are
enforced, bursts get 429, bad JSON 400, big bodies 413, hostile input 400 without reaching a
service, a down or slow upstream 503 with Retry-After, and errors keep their details."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from yarl import URL

from gateway.descriptors import Catalog
from gateway.table import RestCase, rest_table
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from tests.integration.gateway.support import (
    AREAS,
    AUDIENCE,
    DOWN_ORDER,
    ISSUER,
    MISSING_ORDER,
    SLOW_ORDER,
    GatewayProcess,
    Issuer,
    RecordingUpstream,
    gateway_env,
    start_gateway,
)

CATALOG = Catalog.load()
BURST = 8
SAMPLE_ID = "3f2b8c1e-4d5a-4b6c-9d7e-0f1a2b3c4d5e"
UPSTREAM_TIMEOUT = 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream(CATALOG)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    infra: Infra,
    upstream: RecordingUpstream,
    issuer: Issuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GatewayProcess]:
    env = gateway_env(
        issuer,
        infra.redis_url,
        dict.fromkeys(AREAS, upstream.addr),
        MPPO_GATEWAY_RATE_LIMIT=f"2/{BURST}",
        MPPO_GATEWAY_IP_RATE_LIMIT="1000/2000",
        MPPO_GATEWAY_UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT),
    )
    gw = await start_gateway(env, tmp_path_factory.mktemp("gateway-logs"))
    yield gw
    code = gw.stop()
    assert code == 0, gw.log_text()
    assert "gateway stopped" in gw.log_text()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sub() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def _reasons(status: dict[str, Any]) -> list[str]:
    """The reasons of the ErrorInfo details of a google.rpc.Status body (domain checked)."""
    infos = [d for d in status["details"] if d["@type"].endswith("/google.rpc.ErrorInfo")]
    assert all(i["domain"] == "mppo.dev" for i in infos), infos
    return [i["reason"] for i in infos]


def _violated(status: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest field violation of a google.rpc.Status body."""
    return [
        (v["field"], v["reason"])
        for d in status["details"]
        if d["@type"].endswith("/google.rpc.BadRequest")
        for v in d["fieldViolations"]
    ]


async def _send(
    http: aiohttp.ClientSession,
    gw: GatewayProcess,
    case: RestCase,
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, dict[str, Any]]:
    async with http.request(case.verb, gw.url + case.path, headers=headers, data=body) as reply:
        text = await reply.read()
        return reply.status, json.loads(text) if text else {}


async def test_every_binding_reaches_its_rpc(
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    cases = rest_table(CATALOG, SAMPLE_ID)
    assert len(cases) >= 15, "expected the whole API in the descriptor set"
    for case in cases:
        sub = _sub()
        headers = {} if case.webhook else issuer.auth(sub)
        body = b"{}" if case.binding.body else b""
        before = len(upstream.calls)
        status, reply = await _send(http, gateway, case, headers, body)
        if case.internal:
            assert status == 404, f"internal {case.verb} {case.path} must be refused"
            assert len(upstream.calls) == before, "an internal route reached a service"
            continue
        assert status == 200, f"{case.verb} {case.path}: {status} {reply}"
        assert len(upstream.calls) == before + 1
        call = upstream.calls[-1]
        assert call.method == case.grpc_path, f"{case.verb} {case.path} reached {call.method}"
        request = json_format.MessageToDict(call.request, preserving_proto_field_name=True)
        for variable in case.binding.template.split("{")[1:]:
            field = variable.split("}")[0].split("=")[0]
            node: Any = request
            for part in field.split("."):
                node = node[part]
            assert node == SAMPLE_ID, f"{case.template}: {field} not bound from the path"
        if case.webhook:
            assert "x-mppo-user-id" not in call.metadata
        else:
            assert call.metadata["x-mppo-user-id"] == sub


async def test_webhook_passes_raw_bytes_and_headers(
    gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    # Not canonical JSON on purpose: odd spacing, key order, a trailing newline and a non-UTF-8
    # byte. A signature over these exact bytes only verifies if nothing re-encodes them.
    raw = b'{ "type":"payment_intent.succeeded",  "id" : "evt_1", "x": "\xff" }\n'
    signature = "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
    headers = {
        "Stripe-Signature": signature,
        "X-Razorpay-Signature": "abc123",
        "Content-Type": "application/json; charset=utf-8",
        "X-Mppo-User-Id": "mallory",
        "X-Mppo-Service": "payment",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "dropped",
        "X-Request-Id": "req-webhook-1",
    }
    for path, provider in (("/payments/webhook/stripe", "stripe"), ("/payments/webhook", "")):
        async with http.post(gateway.url + path, data=raw, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            body = await reply.json()
            assert reply.headers["X-Request-Id"] == "req-webhook-1"
        assert body["eventId"] == hashlib.sha256(raw).hexdigest()
        call = upstream.calls_to("/mppo.payment.v1.PaymentService/HandleWebhook")[-1]
        assert call.request.body.data == raw  # type: ignore[attr-defined]
        assert call.request.body.content_type == "application/json; charset=utf-8"  # type: ignore[attr-defined]
        assert call.request.provider == provider  # type: ignore[attr-defined]
        assert call.metadata["stripe-signature"] == signature
        assert call.metadata["x-razorpay-signature"] == "abc123"
        assert call.metadata["x-request-id"] == "req-webhook-1"
        for stripped in ("x-mppo-user-id", "x-hop", "connection"):
            assert stripped not in call.metadata, f"{stripped} reached the service"
        # the client's claim never arrives; the gateway names itself (its certificate, under
        # mutual TLS, is what the service believes)
        assert call.metadata.get("x-mppo-service") == "gateway"
    # GET on the webhook path is not exempt from JWT (it would be GetPayment("webhook")).
    async with http.get(gateway.url + "/payments/webhook") as reply:
        assert reply.status == 401


@pytest.mark.parametrize(
    "case", ["missing", "expired", "wrong-audience", "alg-none", "wrong-signature", "hs256"]
)
async def test_bad_tokens_get_401(
    case: str,
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    now = int(time.time())
    headers: dict[str, str] = {}
    if case == "expired":
        headers = issuer.auth("alice", exp=now - 300, iat=now - 900, nbf=now - 900)
    elif case == "wrong-audience":
        headers = issuer.auth("alice", aud="another-api")
    elif case == "alg-none":
        head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "test-key-1"}).encode())
        claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}
        headers = {"Authorization": f"Bearer {head}.{_b64(json.dumps(claims).encode())}."}
    elif case == "wrong-signature":
        impostor = Issuer(ec.generate_private_key(ec.SECP256R1()), issuer.jwks_path)
        headers = impostor.auth("alice")  # same kid, another key
    elif case == "hs256":
        # Algorithm confusion: HMAC keyed with the public JWKS an attacker can fetch.
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test-key-1"}).encode())
        claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}
        payload = _b64(json.dumps(claims).encode())
        secret = issuer.jwks_path.read_bytes()
        mac = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        headers = {"Authorization": f"Bearer {head}.{payload}.{_b64(mac)}"}
    before = len(upstream.calls)
    async with http.get(gateway.url + "/group", headers=headers) as reply:
        assert reply.status == 401
        challenge = reply.headers["WWW-Authenticate"]
        body = await reply.json()
    assert body["code"] == 16  # UNAUTHENTICATED
    if case == "missing":  # RFC 6750 §3.1: no error code when no token was sent
        assert (challenge, _reasons(body)) == ("Bearer", ["MISSING_BEARER_TOKEN"])
    else:
        assert (challenge, _reasons(body)) == ('Bearer error="invalid_token"', ["INVALID_TOKEN"])
    assert len(upstream.calls) == before, "an unauthenticated request reached a service"


async def test_identity_comes_only_from_the_token(
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    headers = {
        **issuer.auth("alice"),
        "X-Mppo-User-Id": "bob",
        "X-Mppo-Service": "group",
        "Idempotency-Key": "idem-42",
        "X-Request-Id": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    async with http.get(gateway.url + f"/payments/{SAMPLE_ID}", headers=headers) as reply:
        assert reply.status == 200
        assert reply.headers["X-Request-Id"] == "req-1"
        body = await reply.json()
    assert body["payment"]["paymentId"] == SAMPLE_ID
    assert body["payment"]["amount"]["amountMinor"] == str(2**53 + 7)  # int64 as a string
    assert body["payment"]["status"] == "PAYMENT_STATUS_UNSPECIFIED"  # defaults printed
    call = upstream.calls[-1]
    assert call.metadata["x-mppo-user-id"] == "alice"
    assert "x-mppo-service" not in call.metadata
    assert call.metadata["idempotency-key"] == "idem-42"
    assert call.metadata["x-request-id"] == "req-1"
    assert call.metadata["traceparent"] == headers["traceparent"]
    # Without a request id or trace context the gateway makes them.
    other = str(uuid.uuid4())
    async with http.get(gateway.url + f"/payments/{other}", headers=issuer.auth("alice")) as reply:
        generated = reply.headers["X-Request-Id"]
    assert upstream.calls[-1].metadata["x-request-id"] == generated
    assert upstream.calls[-1].metadata["traceparent"].startswith("00-")


async def test_burst_over_the_limit_gets_429(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    headers = issuer.auth(_sub())

    async def one() -> tuple[int, str | None]:
        async with http.get(gateway.url + "/notifications", headers=headers) as reply:
            return reply.status, reply.headers.get("Retry-After")

    results = await asyncio.gather(*(one() for _ in range(3 * BURST)))
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(ok) + len(limited) == len(results)
    assert BURST <= len(ok) <= BURST + 3, results  # the burst, plus what refilled meanwhile
    assert limited
    assert all(retry is not None and int(retry) >= 1 for _, retry in limited)
    # Another caller is not affected by this one's bucket.
    async with http.get(gateway.url + "/notifications", headers=issuer.auth(_sub())) as reply:
        assert reply.status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"feesMinor": "lots"}', "feesMinor"),
        (b'{"merchantId": 5}', "merchantId"),
        (b'{"splitMode": "SPLIT_MODE_NOPE"}', "splitMode"),
        (b'{"nonsense": 1}', "nonsense"),
        (b'{"merchantId": ', "body"),
    ],
)
async def test_malformed_json_is_400_naming_the_field(
    body: bytes, field: str, gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    headers = {**issuer.auth(_sub()), "Content-Type": "application/json"}
    async with http.post(gateway.url + "/group", data=body, headers=headers) as reply:
        assert reply.status == 400
        status = await reply.json()
    assert status["code"] == 3
    violations = [
        v
        for d in status["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["fieldViolations"]
    ]
    assert [v["field"] for v in violations] == [field]


async def test_oversized_body_is_413(
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    big = b'{"merchantId": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    before = len(upstream.calls)
    async with http.post(gateway.url + "/group", data=big, headers=issuer.auth(_sub())) as reply:
        assert reply.status == 413
        assert (await reply.json())["message"].startswith("request body larger than")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(32):
            yield b"y" * 65536

    async with http.post(gateway.url + "/payments/webhook/stripe", data=chunks()) as reply:
        assert reply.status == 413
    assert len(upstream.calls) == before


async def test_unknown_path_404_wrong_method_405(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    headers = issuer.auth(_sub())
    async with http.get(gateway.url + "/nowhere", headers=headers) as reply:
        assert reply.status == 404
        assert (await reply.json())["code"] == 5
    async with http.delete(gateway.url + "/group", headers=headers) as reply:
        assert reply.status == 405
        assert reply.headers["Allow"] == "GET, POST"
    async with http.get(gateway.url + "/group?bogus=1", headers=headers) as reply:
        assert reply.status == 400


async def test_service_error_keeps_status_and_details(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/order/{MISSING_ORDER}"
    async with http.get(url, headers=issuer.auth(_sub())) as reply:
        assert reply.status == 404
        status = await reply.json()
    assert status["code"] == 5
    assert status["message"] == "no such order"
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "ORDER_NOT_FOUND",
            "domain": "mppo.dev",
            "metadata": {},
        }
    ]


async def test_cors_openapi_and_health(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with http.options(gateway.url + "/group/g1/members", headers=preflight) as reply:
        assert reply.status == 204
        assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in reply.headers["Access-Control-Allow-Methods"]
        assert "idempotency-key" in reply.headers["Access-Control-Allow-Headers"]
    evil = {**preflight, "Origin": "https://evil.example"}
    async with http.options(gateway.url + "/group", headers=evil) as reply:
        assert reply.status == 403
        assert "Access-Control-Allow-Origin" not in reply.headers
    async with http.get(gateway.url + "/openapi.json") as reply:
        assert reply.status == 200
        doc = await reply.json()
    assert doc["openapi"] == "3.1.0"
    served = {op["x-grpc-method"] for item in doc["paths"].values() for op in item.values()}
    assert served == {c.grpc_path for c in rest_table(CATALOG) if not c.internal}
    async with http.get(gateway.url + "/healthz") as reply:
        assert reply.status == 200


def _violations(status: dict[str, Any]) -> list[str]:
    return [
        v["field"]
        for d in status.get("details", [])
        if d["@type"].endswith("BadRequest")
        for v in d["fieldViolations"]
    ]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/group/%00", "group_id"),
        ("/payments/%00", "payment_id"),
        ("/order/by-group/%00", "group_id"),
        (f"/group/{SAMPLE_ID}%0A", "group_id"),
        ("/group/x1", "group_id"),
        (f"/group/{SAMPLE_ID.upper()}", "group_id"),
        ("/group/%FF%FE", "group_id"),  # not UTF-8
        ("/group/%2500", "group_id"),  # decoded once: "%00", not NUL, and still no UUID
        (f"/group/{SAMPLE_ID}/members/%7F", "member_id"),
        ("/notifications?group_id=%01", "group_id"),
        ("/group?page_token=a%00b", "page_token"),
        ("/group?page_token=" + "t" * 300, "page_token"),
    ],
)
async def test_hostile_path_and_query_values_are_400_before_any_upstream_call(
    path: str,
    field: str,
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    verb = "DELETE" if "/members/" in path else "GET"
    before = len(upstream.calls)
    url = URL(gateway.url + path, encoded=True)
    async with http.request(verb, url, headers=issuer.auth(_sub())) as reply:
        assert reply.status == 400, await reply.text()
        status = await reply.json()
    assert status["code"] == 3
    assert _violations(status) == [field], status
    assert len(upstream.calls) == before, "hostile input reached a service"


async def test_path_values_are_percent_decoded_exactly_once(
    gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    url = URL(gateway.url + "/payments/webhook/str%2569pe", encoded=True)
    async with http.post(url, data=b"{}") as reply:
        assert reply.status == 200, await reply.text()
    call = upstream.calls_to("/mppo.payment.v1.PaymentService/HandleWebhook")[-1]
    assert call.request.provider == "str%69pe"  # type: ignore[attr-defined]


def _cart(**host: Any) -> dict[str, Any]:
    return {
        "merchantId": "m-1",
        "currencyCode": "EUR",
        "items": [{"lineId": "l1", "sku": "p1", "name": "Pizza", "quantity": 1}],
        "host": {"displayName": "Ann", **host},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (json.dumps(_cart(displayName="Ann\u0000")).encode(), "host.displayName"),
        (
            json.dumps({**_cart(), "items": [{"lineId": "l1", "sku": "p\u00001"}]}).encode(),
            "items[0].sku",
        ),
        (json.dumps(_cart(displayName="A" * 1_000_000)).encode(), "host.displayName"),
        (json.dumps(_cart(displayName="Ann\u001b[2J")).encode(), "host.displayName"),
        (json.dumps({**_cart(), "merchantId": "m 1"}).encode(), "merchantId"),
        (b'{"merchantId": ' + b"[" * 2000 + b"]" * 2000 + b"}", "body"),
        (b"[" * 100_000, "body"),
        (b'{"merchantId": "caf\xe9"}', "body"),  # Latin-1, not UTF-8
        (json.dumps(_cart()).encode("utf-16"), "body"),
        (b'{"feesMinor": ' + b"9" * 5000 + b"}", "body"),  # longer than int() converts
        (b'{"merchantId": "\\ud800"}', "merchantId"),  # an unpaired surrogate
    ],
)
async def test_hostile_bodies_are_400_before_any_upstream_call(
    body: bytes,
    field: str,
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    before = len(upstream.calls)
    headers = {**issuer.auth(_sub()), "Content-Type": "application/json"}
    async with http.post(gateway.url + "/group", data=body, headers=headers) as reply:
        assert reply.status == 400, await reply.text()
        status = await reply.json()
    assert status["code"] == 3
    assert _violations(status) == [field], status
    assert len(upstream.calls) == before, "hostile input reached a service"


@pytest.mark.parametrize("sub", ["alice\u0000", "ann smith", "zoë", "x" * 200])
async def test_a_token_subject_unfit_for_an_id_is_401(
    sub: str,
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    before = len(upstream.calls)
    async with http.get(gateway.url + "/group", headers=issuer.auth(sub)) as reply:
        assert reply.status == 401, await reply.text()
        assert (await reply.json())["message"].startswith("token subject ")
    assert len(upstream.calls) == before


async def test_a_down_or_slow_upstream_is_503_with_retry_after(
    infra: Infra,
    gateway: GatewayProcess,
    issuer: Issuer,
    http: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    headers = issuer.auth(_sub())
    # The service says it cannot serve now, and when to come back.
    async with http.get(f"{gateway.url}/order/{DOWN_ORDER}", headers=headers) as reply:
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "7"
        status = await reply.json()
    assert (status["code"], status["message"]) == (14, "merchant down")
    # The service does not answer within the gateway's deadline.
    started = time.monotonic()
    async with http.get(f"{gateway.url}/order/{SLOW_ORDER}", headers=headers) as reply:
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "1"
        status = await reply.json()
    assert time.monotonic() - started < UPSTREAM_TIMEOUT + 2
    assert status["code"] == 4  # DEADLINE_EXCEEDED, kept in the body
    assert status["message"] == "the order service did not answer in time"
    # Nothing listens at the upstream address at all.
    dead = f"127.0.0.1:{free_port()}"
    env = gateway_env(issuer, infra.redis_url, dict.fromkeys(AREAS, dead))
    lonely = await start_gateway(env, tmp_path_factory.mktemp("gateway-dead-upstream"))
    try:
        url = f"{lonely.url}/order/{SAMPLE_ID}"
        async with http.get(url, headers=issuer.auth(_sub())) as reply:
            assert reply.status == 503
            assert reply.headers["Retry-After"] == "1"
            status = await reply.json()
        assert status == {
            "code": 14,
            "message": "the order service is unavailable",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_UNAVAILABLE",
                    "domain": "mppo.dev",
                    "metadata": {"service": "order"},
                }
            ],
        }
    finally:
        assert lonely.stop() == 0, lonely.log_text()


async def test_every_error_kind_carries_an_error_info_with_its_reason(
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    """Clients switch on ErrorInfo.reason: every error the edge answers has one, specific to
    what went wrong (not `"details": []`)."""
    user = issuer.auth(_sub())
    asker = issuer.auth(_sub())  # the query cases: another caller, so `user` stays in its burst
    json_user = {**user, "Content-Type": "application/json"}
    big = b'{"merchantId": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    duplicated = b'{"members": [{"displayName": "A"}], "members": [{"displayName": "B"}]}'

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length
        for _ in range(32):
            yield b"y" * 65536

    cases: list[tuple[str, str, dict[str, str], Any, int, str]] = [
        ("GET", "/group", {}, None, 401, "MISSING_BEARER_TOKEN"),
        ("GET", "/group", {"Authorization": "Basic YTpi"}, None, 401, "MISSING_BEARER_TOKEN"),
        ("GET", "/group", {"Authorization": "Bearer "}, None, 401, "MISSING_BEARER_TOKEN"),
        ("GET", "/group", {"Authorization": "Bearer not.a.jwt"}, None, 401, "INVALID_TOKEN"),
        ("GET", "/nowhere", user, None, 404, "NO_ROUTE"),
        ("DELETE", "/group", user, None, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/group", json_user, big, 413, "BODY_TOO_LARGE"),
        ("POST", "/payments/webhook/stripe", {}, "chunked", 413, "BODY_TOO_LARGE"),
        (
            "POST",
            f"/group/{SAMPLE_ID}/open",
            {**json_user, "Idempotency-Key": "k" * 256},
            b"{}",
            400,
            "IDEMPOTENCY_KEY_INVALID",
        ),
        ("POST", f"/group/{SAMPLE_ID}/members", json_user, duplicated, 400, "BAD_REQUEST_BODY"),
        ("GET", "/group?x=1", asker, None, 400, "BAD_QUERY_PARAMETER"),
        ("GET", "/group?page_size=ten", asker, None, 400, "BAD_QUERY_PARAMETER"),
        ("GET", f"/order/{MISSING_ORDER}", user, None, 404, "ORDER_NOT_FOUND"),  # the service's
        ("GET", f"/order/{DOWN_ORDER}", user, None, 503, "SERVICE_UNAVAILABLE"),
        (
            "OPTIONS",
            "/group",
            {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            None,
            403,
            "ORIGIN_NOT_ALLOWED",
        ),
        (
            "OPTIONS",
            "/nowhere",
            {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            None,
            404,
            "NO_ROUTE",
        ),
    ]
    before = len(upstream.calls)
    for method, path, headers, body, expected, reason in cases:
        data = chunks() if body == "chunked" else body
        async with http.request(method, gateway.url + path, headers=headers, data=data) as reply:
            assert reply.status == expected, (method, path, await reply.text())
            status = await reply.json()
            assert reply.headers["RateLimit-Policy"], (method, path)  # errors too
        assert _reasons(status) == [reason], (method, path, status)
    # calls that never reach a service: only the two /order reads did
    assert len(upstream.calls) == before + 2
    # the bad header and the duplicated key are also named as field violations
    async with http.post(
        f"{gateway.url}/group/{SAMPLE_ID}/open",
        headers={**json_user, "Idempotency-Key": "k" * 256},
        data=b"{}",
    ) as reply:
        assert _violated(await reply.json()) == [("Idempotency-Key", "IDEMPOTENCY_KEY_INVALID")]
    async with http.post(
        f"{gateway.url}/group/{SAMPLE_ID}/members", headers=json_user, data=duplicated
    ) as reply:
        assert _violated(await reply.json()) == [("members", "DUPLICATE_FIELD")]
    # a query parameter the RPC does not have: named as the client sent it, in plain words
    async with http.get(f"{gateway.url}/group?x=1", headers=asker) as reply:
        unknown = await reply.json()
    assert _violated(unknown) == [("x", "BAD_QUERY_PARAMETER")]
    assert unknown["message"].startswith("x: unknown query parameter"), unknown
    assert "body" not in unknown["message"].lower()
    # 429: a caller past its burst
    hasty = issuer.auth(_sub())
    refused: dict[str, Any] = {}
    for _ in range(3 * BURST):
        async with http.get(gateway.url + "/notifications", headers=hasty) as reply:
            if reply.status == 429:
                refused = await reply.json()
                break
    assert _reasons(refused) == ["RATE_LIMITED"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"members": [], "members": [{"displayName": "B"}]}', "members"),
        (
            b'{"members": [{"displayName": "A", "email": "a@x.test", "email": "b@x.test"}]}',
            "members[0].email",
        ),
        (
            b'{"members": [{"displayName": "A", "shareSpec": {"weight": "1", "weight": "2"}}]}',
            "members[0].shareSpec.weight",
        ),
    ],
)
async def test_a_key_given_twice_is_400_naming_its_path(
    body: bytes,
    field: str,
    gateway: GatewayProcess,
    upstream: RecordingUpstream,
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    before = len(upstream.calls)
    headers = {**issuer.auth(_sub()), "Content-Type": "application/json"}
    url = f"{gateway.url}/group/{SAMPLE_ID}/members"
    async with http.post(url, headers=headers, data=body) as reply:
        assert reply.status == 400
        status = await reply.json()
    assert status["code"] == 3  # INVALID_ARGUMENT
    assert _violated(status) == [(field, "DUPLICATE_FIELD")]
    assert len(upstream.calls) == before, "a body with a duplicated key reached a service"
