"""The operator's view on ``mppo dev up --observability``: a real Prometheus (Debian's) scrapes
every process of the stack, each on its own /metrics port recorded in devstack.json; a
checkout driven through the gateway is then read back through Prometheus's HTTP API — the
checkout counted with its end-to-end latency, the REST route and the RPCs it took, the events
the consumers applied, the saga's steps, the outbox and consumer gauges sampled, the pruner's
stream sizes — and the alert rules are loaded, none firing on a healthy stack."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from mppo.devstack.prometheus import SCRAPE_INTERVAL
from tests.support.e2e import PIZZA, Api, GroupOrder, Person, cart, create_body, eventually

SCRAPE_SECONDS = float(SCRAPE_INTERVAL.removesuffix("s"))
#: every process that serves metrics in the default stack
SCRAPED = {"group", "payment", "order", "notification", "gateway"}


class Prometheus:
    """Prometheus's HTTP API (/api/v1)."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as reply:
            body = await reply.json()
        assert reply.status == 200, body
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> dict[str, float]:
        """An instant vector as {service label (or ''): value}."""
        data = await self.get("query", query=promql)
        assert data["resultType"] == "vector", data
        return {r["metric"].get("service", ""): float(r["value"][1]) for r in data["result"]}

    async def scalar(self, promql: str) -> float:
        """The one value of an aggregated query (0 when the vector is empty)."""
        values = await self.query(promql)
        return sum(values.values())


async def test_prometheus_scrapes_every_process_and_counts_a_checkout(api: Api) -> None:
    state = api.stack.state
    prometheus = Prometheus(state["endpoints"]["prometheus"], api.http)
    metrics_addrs = {
        name: svc["metrics"] for name, svc in state["services"].items() if svc.get("metrics")
    }
    assert set(metrics_addrs) == SCRAPED
    assert len(set(metrics_addrs.values())) == len(SCRAPED)  # each process its own port

    async def targets() -> list[Any]:
        active: list[Any] = (await prometheus.get("targets"))["activeTargets"]
        return active

    scraped = await eventually(
        targets,
        lambda found: {t["labels"]["service"] for t in found if t["health"] == "up"} == SCRAPED,
        within=30,
        what="every process scraped and up",
    )
    assert {t["labels"]["instance"] for t in scraped} == set(metrics_addrs.values())
    assert {t["labels"]["job"] for t in scraped} == {"mppo"}

    checkouts = 'sum(mppo_checkout_duration_seconds_count{outcome="confirmed"})'
    before = await prometheus.scalar(checkouts)

    order = GroupOrder(api, Person.new("Ines"), [Person.new("Jo")])
    await order.create(create_body(order.host, cart((PIZZA, 2))))
    await order.open()
    outcomes = await order.pay(order.people)
    assert [o["outcome"] for o in outcomes] == ["requires_capture"] * 2
    await order.wait("CONFIRMED")

    # the checkout, counted once Prometheus has scraped the group service again; then one
    # scrape interval more, so every other process has been scraped since it took part
    await eventually(
        lambda: prometheus.scalar(checkouts),
        lambda now: now >= before + 1,
        within=30,
        what="the checkout counted in Prometheus",
    )
    await asyncio.sleep(SCRAPE_SECONDS + 1)
    latency = await prometheus.scalar(
        'sum(mppo_checkout_duration_seconds_sum{outcome="confirmed"})'
    )
    assert latency > 0

    # RED per REST route at the gateway, RED per RPC at the services
    created = await prometheus.query(
        'sum by (service) (mppo_http_requests_total{route="/group",method="POST",status="200"})'
    )
    assert created.get("gateway", 0) >= 1, created
    rpcs = await prometheus.query(
        'sum by (service) (grpc_server_handled_total{grpc_code="OK",'
        'grpc_method=~"CreateGroup|CreatePaymentIntent|CreateOrder|CapturePayment"})'
    )
    assert {"group", "payment", "order"} <= set(rpcs), rpcs
    timed = await prometheus.query("sum by (service) (grpc_server_handling_seconds_count)")
    assert {"group", "payment", "order"} <= set(timed), timed

    # events applied by the consumers of every consuming service, the saga's steps
    applied = await prometheus.query(
        'sum by (service) (mppo_consumer_events_total{outcome="applied"})'
    )
    assert {"group", "payment", "order", "notification"} <= set(applied), applied

    async def steps() -> set[str]:
        data = await prometheus.get(
            "query", query='mppo_order_saga_step_duration_seconds_count{outcome="ok"} > 0'
        )
        return {r["metric"]["step"] for r in data["result"]}

    # each target is scraped on its own schedule: the order service's next scrape may come
    # after the group service's
    await eventually(
        steps,
        lambda names: {"validate", "reserve", "place", "capture"} <= names,
        within=15,
        what="the saga's steps in Prometheus",
    )

    # the sampled gauges: outbox (each service), consumer lag, holds, the pruner's streams
    backlog = await prometheus.query("max by (service) (mppo_outbox_backlog_events)")
    assert {"group", "payment", "order", "notification"} <= set(backlog), backlog
    lag = await prometheus.query("max by (service) (mppo_consumer_pending_messages)")
    assert {"group", "payment", "order", "notification"} <= set(lag), lag
    holds = await prometheus.query("max by (service) (mppo_payment_holds_outstanding)")
    assert set(holds) == {"payment"}, holds
    streams = await prometheus.query('max by (service) (mppo_stream_bytes{stream=~".*MPPO_GROUP"})')
    assert {"group", "payment", "order", "notification"} <= set(streams), streams
    limits = await prometheus.query(
        'max by (service) (mppo_stream_max_bytes{stream=~".*MPPO_GROUP"})'
    )
    assert min(limits.values()) > 0, limits  # dev streams have a byte limit

    # the alert rules are loaded; a healthy stack fires none of the outage alerts
    groups = (await prometheus.get("rules"))["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"MppoOutboxLag", "MppoDeadLettersPresent", "MppoConsumerLag"} <= loaded
    firing = await prometheus.get("alerts")
    assert [
        a["labels"]["alertname"]
        for a in firing["alerts"]
        if a["state"] == "firing"
        and a["labels"]["alertname"] in {"MppoTargetDown", "MppoOutboxLag"}
    ] == []
