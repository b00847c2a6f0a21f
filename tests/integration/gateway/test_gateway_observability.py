"""The real gateway process serves its metrics on its own port: RED per REST route template
(never per raw path, so ids do not explode the series), its own 404s and an upstream outage
(503) counted by status; and the gateway is where a request's trace starts: the trace id it
logs on the access line is the one the upstream service receives."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from gateway.descriptors import Catalog
from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from tests.integration.gateway.support import (
    AREAS,
    DOWN_ORDER,
    Call,
    GatewayProcess,
    Issuer,
    RecordingUpstream,
    gateway_env,
    start_gateway,
)

CATALOG = Catalog.load()
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream(CATALOG)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def observed(
    infra: Infra,
    upstream: RecordingUpstream,
    issuer: Issuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[GatewayProcess, str]]:
    metrics_addr = f"127.0.0.1:{free_port()}"
    env = gateway_env(
        issuer,
        infra.redis_url,
        dict.fromkeys(AREAS, upstream.addr),
        MPPO_METRICS_ADDR=metrics_addr,
        MPPO_GATEWAY_IP_RATE_LIMIT="1000/2000",
    )
    gw = await start_gateway(env, tmp_path_factory.mktemp("gateway-observed"))
    yield gw, metrics_addr
    assert gw.stop() == 0, gw.log_text()


async def scrape(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the gateway's /metrics: (name, sorted labels) → value."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{addr}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get_order_calls(upstream: RecordingUpstream, order_id: str) -> list[Call]:
    """The GetOrder calls the upstream received for `order_id`."""
    calls = upstream.calls_to("/mppo.order.v1.OrderService/GetOrder")
    return [c for c in calls if c.request.order_id == order_id]  # type: ignore[attr-defined]


def requests(samples: dict[Any, float], route: str, method: str, status: str) -> float:
    key = ("mppo_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


async def test_rest_requests_are_counted_per_route_and_status(
    observed: tuple[GatewayProcess, str], issuer: Issuer
) -> None:
    gw, metrics_addr = observed
    sub = f"user-{uuid.uuid4().hex[:8]}"
    before = await scrape(metrics_addr)
    async with aiohttp.ClientSession(headers=issuer.auth(sub)) as http:
        for order_id in (str(uuid.uuid4()), str(uuid.uuid4())):
            async with http.get(f"{gw.url}/order/{order_id}") as reply:
                assert reply.status == 200, await reply.text()
        async with http.get(f"{gw.url}/order/{DOWN_ORDER}") as reply:
            assert reply.status == 503
        async with http.get(f"{gw.url}/no/such/route") as reply:
            assert reply.status == 404
        async with http.get(f"{gw.url}/healthz") as reply:
            assert reply.status == 200
    after = await scrape(metrics_addr)

    def grew(route: str, status: str) -> float:
        return requests(after, route, "GET", status) - requests(before, route, "GET", status)

    assert grew("/order/{order_id}", "200") == 2
    assert grew("/order/{order_id}", "503") == 1
    assert grew("unmatched", "404") == 1
    assert grew("/healthz", "200") == 1
    # one series per template: no raw path (with its id) ever becomes a label
    assert not any("/order/0" in str(labels) for _, labels in after)
    timed = (
        "mppo_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/order/{order_id}")),
    )
    assert after[timed] - before.get(timed, 0.0) == 3


async def test_the_access_line_logs_the_trace_the_upstream_receives(
    observed: tuple[GatewayProcess, str], upstream: RecordingUpstream, issuer: Issuer
) -> None:
    gw, _ = observed
    order_id = str(uuid.uuid4())
    async with (
        aiohttp.ClientSession(headers=issuer.auth(f"user-{uuid.uuid4().hex[:8]}")) as http,
        http.get(f"{gw.url}/order/{order_id}") as reply,
    ):
        assert reply.status == 200
        request_id = reply.headers["X-Request-Id"]
    (call,) = get_order_calls(upstream, order_id)
    trace_id = call.metadata["traceparent"].split("-")[1]
    access = [
        json.loads(line)
        for line in gw.log_text().splitlines()
        if line.startswith("{") and request_id in line
    ]
    (line,) = [entry for entry in access if entry.get("request_id") == request_id]
    assert line["trace.id"] == trace_id
    assert line["trace_id"] == trace_id
    assert line["http.response.status_code"] == 200

    # a caller's own trace is continued, not replaced
    traceparent = f"00-{TRACE}-00f067aa0ba902b7-01"
    other = str(uuid.uuid4())
    async with (
        aiohttp.ClientSession(headers=issuer.auth(f"user-{uuid.uuid4().hex[:8]}")) as http,
        http.get(f"{gw.url}/order/{other}", headers={"traceparent": traceparent}) as reply,
    ):
        assert reply.status == 200
    (call,) = get_order_calls(upstream, other)
    assert call.metadata["traceparent"].split("-")[1] == TRACE
