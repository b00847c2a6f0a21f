"""A database that goes away and comes back (issue 10 §3, and the price of dropping the
per-checkout ping in issue 11): while Postgres is down a service answers UNAVAILABLE, which
callers retry — never INTERNAL/UNKNOWN — and once it is back the service serves again by
itself, its pool of dead connections replaced after the first failure."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc

from mppo.devstack import FREE_PORTS, Infra, start_infra
from mppo.order.v1 import order_service_pb2 as os_pb
from mppo.order.v1 import order_service_pb2_grpc
from tests.support.services import start_service, wait_serving

AS_GROUP = (("x-mppo-service", "group"),)


async def _code(stub: order_service_pb2_grpc.OrderServiceAsyncStub) -> grpc.StatusCode:
    request = os_pb.GetOrderByGroupRequest(group_id=str(uuid.uuid4()))
    try:
        await stub.GetOrderByGroup(request, metadata=AS_GROUP, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_postgres_restart_is_unavailable_then_recovers(
    infra: Infra, tmp_path: Path, nats_prefix: str
) -> None:
    private = await start_infra(
        tmp_path / "pg",
        ports=FREE_PORTS,
        fsync=False,
        ephemeral=True,
        env={"MPPO_REDIS_URL": infra.redis_url, "MPPO_NATS_URL": infra.nats_url},
    )
    service = None
    try:
        (postgres,) = [p for p in private.processes if p.name == "postgres"]
        service = start_service(
            "order",
            database_url=await private.create_database("order_db"),
            redis_url=infra.redis_url,
            nats_url=infra.nats_url,
            nats_prefix=nats_prefix,
            log_dir=tmp_path / "logs",
            env={"MPPO_MERCHANT_ADDR": "127.0.0.1:9", "MPPO_MERCHANT_SECRET": "t"},
        )
        await wait_serving(service)
        async with grpc.aio.insecure_channel(service.addr) as channel:
            stub: order_service_pb2_grpc.OrderServiceAsyncStub = (
                order_service_pb2_grpc.OrderServiceStub(channel)
            )
            for _ in range(5):  # fill the pool with connections that are about to die
                assert await _code(stub) is grpc.StatusCode.NOT_FOUND

            await private.supervisor.stop(postgres)
            down = [await _code(stub) for _ in range(5)]
            assert set(down) == {grpc.StatusCode.UNAVAILABLE}, down

            await private.supervisor.start(postgres.spec)
            deadline = time.monotonic() + 20
            after: list[grpc.StatusCode] = []
            while time.monotonic() < deadline:
                after.append(await _code(stub))
                if after[-1] is grpc.StatusCode.NOT_FOUND:
                    break
                await asyncio.sleep(0.2)
            assert after[-1] is grpc.StatusCode.NOT_FOUND, after
            assert set(after) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}, after
            # the dead pool was replaced at once: no trickle of failures afterwards
            assert [await _code(stub) for _ in range(10)] == [grpc.StatusCode.NOT_FOUND] * 10
        assert "unhandled error" not in service.log_text()
    finally:
        if service is not None:
            service.stop()
        await private.stop()
