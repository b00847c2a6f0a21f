"""Prometheus metrics of the kernel: where a process serves them, RED per RPC through a real
grpc.aio server built by the runtime, RED per REST route, the sampled gauges and the pruner's
counts, all read back from the exposition a scrape gets."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mppo.platform import metrics
from mppo.platform.config import ConfigError
from mppo.platform.errors import NotFoundError
from mppo.platform.retention import Pruner, PruneTarget
from mppo.platform.runtime import ServiceSpec, build_server

SERVICE = "mppo.test.Meter"


def value(name: str, **labels: str) -> float:
    """The current value of one sample in the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("env", "process", "expected"),
    [
        ({}, "group", "127.0.0.1:9151"),
        ({}, "gateway", "127.0.0.1:9180"),
        ({"MPPO_METRICS_ADDR": "0.0.0.0:9000"}, "order", "0.0.0.0:9000"),
        ({"MPPO_METRICS_ADDR": "off"}, "payment", None),
        ({}, "some-tool", None),
    ],
)
def test_metrics_address_per_process(
    env: dict[str, str], process: str, expected: str | None
) -> None:
    assert metrics.metrics_addr(env, process) == expected


@pytest.mark.parametrize("bad", ["9151", "localhost:", "127.0.0.1:99999", "host:port"])
def test_malformed_metrics_address_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="MPPO_METRICS_ADDR"):
        metrics.metrics_addr({"MPPO_METRICS_ADDR": bad}, "group")


@pytest.fixture
def served() -> Iterator[metrics.MetricsServer]:
    server = metrics.serve_metrics("127.0.0.1:0", "tests")
    assert server is not None
    try:
        yield server
    finally:
        server.close()


def scrape(server: metrics.MetricsServer) -> dict[str, Any]:
    """Every metric family a scrape of `server` returns, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_a_taken_port_serves_nothing_but_does_not_stop_the_process(
    served: metrics.MetricsServer,
) -> None:
    assert metrics.serve_metrics(f"127.0.0.1:{served.port}", "tests") is None


async def _ok(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    return wrappers_pb2.StringValue(value="ok")


async def _missing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    raise NotFoundError("nothing here", "NOTHING")


async def _broken(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    raise RuntimeError("a bug")


def _handler(behaviour: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=wrappers_pb2.StringValue.FromString,
        response_serializer=wrappers_pb2.StringValue.SerializeToString,
    )


async def test_every_rpc_is_counted_by_code_and_timed(served: metrics.MetricsServer) -> None:
    spec = ServiceSpec(name="meter", grpc_services=[SERVICE], migrations=None, build=None)  # type: ignore[arg-type]
    server, _, late = build_server(spec)
    registrar: Any = late.registrar()
    registrar.add_registered_method_handlers(
        SERVICE, {"Ok": _handler(_ok), "Missing": _handler(_missing), "Broken": _handler(_broken)}
    )
    late.bound = True
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def handled(method: str, code: str) -> float:
        return value(
            "grpc_server_handled_total", grpc_service=SERVICE, grpc_method=method, grpc_code=code
        )

    before = {
        ("Ok", "OK"): handled("Ok", "OK"),
        ("Missing", "NOT_FOUND"): handled("Missing", "NOT_FOUND"),
        ("Broken", "INTERNAL"): handled("Broken", "INTERNAL"),
    }
    timed = value("grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="Ok")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

            def call(method: str) -> Any:
                return channel.unary_unary(
                    f"/{SERVICE}/{method}",
                    request_serializer=wrappers_pb2.StringValue.SerializeToString,
                    response_deserializer=wrappers_pb2.StringValue.FromString,
                )(wrappers_pb2.StringValue(value="x"), timeout=5)

            for _ in range(3):
                assert (await call("Ok")).value == "ok"
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call("Missing")
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await call("Broken")
            assert broken.value.code() is grpc.StatusCode.INTERNAL
    finally:
        await server.stop(None)

    assert handled("Ok", "OK") - before[("Ok", "OK")] == 3
    assert handled("Missing", "NOT_FOUND") - before[("Missing", "NOT_FOUND")] == 1
    assert handled("Broken", "INTERNAL") - before[("Broken", "INTERNAL")] == 1
    assert (
        value("grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="Ok") - timed
        == 3
    )
    # ... and a scrape sees them, with the histogram's buckets
    families = scrape(served)
    samples = families["grpc_server_handling_seconds"].samples
    assert any(
        s.name == "grpc_server_handling_seconds_bucket" and s.labels["grpc_method"] == "Broken"
        for s in samples
    )


def test_rest_requests_are_counted_per_route_template(served: metrics.MetricsServer) -> None:
    meter = metrics.HttpMeter()
    labels = {"route": "/group/{group_id}", "method": "GET"}
    ok_before = value("mppo_http_requests_total", **labels, status="200")
    failed_before = value("mppo_http_requests_total", **labels, status="503")
    meter.observe("/group/{group_id}", "GET", 200, 0.004)
    meter.observe("/group/{group_id}", "GET", 200, 0.2)
    meter.observe("/group/{group_id}", "GET", 503, 1.5)
    assert value("mppo_http_requests_total", **labels, status="200") - ok_before == 2
    assert value("mppo_http_requests_total", **labels, status="503") - failed_before == 1
    assert value("mppo_http_request_duration_seconds_bucket", **labels, le="0.005") >= 1
    assert "mppo_http_request_duration_seconds" in scrape(served)


class _Consumer:
    def __init__(self, durable: str, stream: str) -> None:
        self.durable = durable
        self.stream = stream


class _JetStream:
    """consumer_info and stream_info answers shaped as nats-py's."""

    def __init__(self) -> None:
        self.filters: list[str | None] = []

    async def consumer_info(self, stream: str, durable: str) -> Any:
        lag = {"t1-group-orders": 7, "t1-group-payments": 0}[durable]
        return SimpleNamespace(num_pending=lag, num_ack_pending=2, num_redelivered=1)

    async def stream_info(self, name: str, subjects_filter: str | None = None) -> Any:
        assert name == "T1_MPPO_DLQ"
        self.filters.append(subjects_filter)
        subjects = {
            "t1.dlq.t1-group-orders.order.confirmed": 2,
            "t1.dlq.t1-group-orders.order.failed": 1,
            "t1.dlq.someone-else.group.created": 5,
        }
        return SimpleNamespace(state=SimpleNamespace(subjects=subjects))


async def test_consumer_lag_and_dead_letters_are_sampled_per_consumer() -> None:
    js = _JetStream()
    consumers = [
        _Consumer("t1-group-orders", "T1_MPPO_ORDER"),
        _Consumer("t1-group-payments", "T1_MPPO_PAYMENT"),
    ]
    await metrics.consumer_sample(js, consumers, "t1")()  # type: ignore[arg-type]
    assert value("mppo_consumer_pending_messages", consumer="t1-group-orders") == 7
    assert value("mppo_consumer_pending_messages", consumer="t1-group-payments") == 0
    assert value("mppo_consumer_ack_pending_messages", consumer="t1-group-orders") == 2
    assert value("mppo_consumer_redelivered_messages", consumer="t1-group-orders") == 1
    assert value("mppo_dead_letter_messages", consumer="t1-group-orders") == 3
    assert value("mppo_dead_letter_messages", consumer="t1-group-payments") == 0
    assert js.filters == ["t1.dlq.>"]


async def test_a_failing_source_is_counted_and_the_others_still_read() -> None:
    read: list[str] = []

    async def broken() -> None:
        raise ConnectionError("postgres restarting")

    async def fine() -> None:
        read.append("fine")

    before = value("mppo_metrics_sample_failures_total", source="broken")
    sampler = metrics.Sampler({"broken": broken, "fine": fine}, interval=0.05)
    task = asyncio.create_task(sampler.run())
    try:
        for _ in range(100):
            if len(read) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        sampler.stop()
        await asyncio.wait_for(task, 5)
    assert len(read) >= 2
    assert value("mppo_metrics_sample_failures_total", source="broken") - before >= 2


def test_the_pruner_counts_are_exported(served: metrics.MetricsServer) -> None:
    pruner = Pruner(
        None,  # type: ignore[arg-type]  # never runs here: only its counts are read
        [PruneTarget("outbox_meter_test", "published_at", metrics_window())],
    )
    pruner.pruned["outbox_meter_test"] += 42
    pruner.table_bytes["outbox_meter_test"] = 8192
    pruner.stream_bytes["MPPO_METER_TEST"] = 1000
    pruner.stream_max_bytes["MPPO_METER_TEST"] = 4000
    metrics.watch_pruner(pruner)
    assert value("mppo_retention_rows_pruned_total", table="outbox_meter_test") == 42
    assert value("mppo_retention_table_bytes", table="outbox_meter_test") == 8192
    assert value("mppo_stream_bytes", stream="MPPO_METER_TEST") == 1000
    assert value("mppo_stream_max_bytes", stream="MPPO_METER_TEST") == 4000
    families = scrape(served)
    assert "mppo_retention_rows_pruned" in families
    assert "mppo_retention_cycles" in families
    del pruner  # a pruner that is gone is no longer exported


def metrics_window() -> Any:
    from datetime import timedelta

    return timedelta(days=3)
