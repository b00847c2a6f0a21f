"""Client-side round robin for real: a channel from ``trust.channel`` to a list of replicas
(mutual TLS, the certificate checked against the first address) spreads calls over every
replica, keeps answering when one goes away and takes it back when it returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from mppo.devstack.probes import free_port
from mppo.platform import trust
from mppo.platform.tls import peer_service
from tests.support.pki import Pki

CHECK = "/grpc.health.v1.Health/Check"


class _Counting(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts the calls a replica serves, and who made them (by certificate)."""

    def __init__(self, name: str, calls: Counter[str], callers: set[str]) -> None:
        self.name = name
        self.calls = calls
        self.callers = callers

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if details.method != CHECK or handler is None:
            return handler
        inner = handler.unary_unary

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.calls[self.name] += 1
            self.callers.add(peer_service(context) or "")
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Replicas:
    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.ports = [free_port(), free_port()]
        self.calls: Counter[str] = Counter()
        self.callers: set[str] = set()
        self.servers: dict[int, grpc.aio.Server] = {}
        self.health: dict[int, HealthServicer] = {}

    @property
    def target(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    async def start(self, index: int) -> None:
        server = grpc.aio.server(interceptors=[_Counting(f"r{index}", self.calls, self.callers)])
        self.health[index] = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health[index], server)
        server.add_secure_port(
            f"127.0.0.1:{self.ports[index]}", self.pki.server_credentials("group")
        )
        await server.start()
        self.servers[index] = server

    async def stop(self, index: int) -> None:
        await self.servers.pop(index).stop(grace=None)


@pytest.fixture
async def replicas(pki: Pki) -> AsyncIterator[Replicas]:
    previous = trust._trust
    trust.configure(trust.Trust.from_env({"MPPO_ENV": "test", **pki.env()}, "tests"))
    running = Replicas(pki)
    await running.start(0)
    await running.start(1)
    try:
        yield running
    finally:
        for index in list(running.servers):
            await running.stop(index)
        trust._trust = previous


async def _checks(channel: grpc.aio.Channel, count: int) -> int:
    """``count`` health checks; how many answered (a call racing a replica's stop may not)."""
    stub = health_pb2_grpc.HealthStub(channel)
    answered = 0
    for _ in range(count):
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
            answered += 1
    return answered


async def test_calls_spread_over_every_replica_and_survive_one_leaving(
    replicas: Replicas,
) -> None:
    channel = trust.channel(replicas.target)
    try:
        assert await _checks(channel, 40) == 40
        # round robin: both replicas served, evenly (pick_first would send all 40 to one)
        assert replicas.calls["r0"] >= 15, replicas.calls
        assert replicas.calls["r1"] >= 15, replicas.calls
        assert replicas.callers == {"tests"}  # mutual TLS against each replica

        await replicas.stop(0)
        replicas.calls.clear()
        assert await _checks(channel, 20) >= 19
        assert replicas.calls["r0"] == 0
        assert replicas.calls["r1"] >= 19

        await replicas.start(0)  # back on the same address
        replicas.calls.clear()
        deadline = asyncio.get_running_loop().time() + 30
        while replicas.calls["r0"] == 0:
            assert asyncio.get_running_loop().time() < deadline, "r0 never taken back"
            await _checks(channel, 5)
            await asyncio.sleep(0.2)
    finally:
        await channel.close(None)


def _probe(pki: Pki, addr: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")}
    return subprocess.run(
        [sys.executable, "-m", "mppo.platform.healthcheck", addr, "--as", "group", *extra],
        env={**env, **pki.env()},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_probe_command_speaks_mutual_tls(replicas: Replicas, pki: Pki) -> None:
    addr = f"127.0.0.1:{replicas.ports[0]}"
    ready = await asyncio.to_thread(_probe, pki, addr)
    assert ready.returncode == 0, ready.stderr
    assert replicas.callers == {"group"}  # it presented the pod's own certificate
    await replicas.health[0].set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_ready = await asyncio.to_thread(_probe, pki, addr)
    assert not_ready.returncode == 1
    assert "NOT_SERVING" in not_ready.stderr
    # alive all the same: a dependency outage is no reason to restart the process
    assert (await asyncio.to_thread(_probe, pki, addr, "--live")).returncode == 0
    await replicas.stop(0)
    gone = await asyncio.to_thread(_probe, pki, addr, "--live", "--timeout", "1")
    assert gone.returncode == 1
    assert "no answer" in gone.stderr
