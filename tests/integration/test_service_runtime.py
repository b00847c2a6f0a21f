"""Each service process: migrates its database, reports health honestly, answers grpcurl,
and stops cleanly on SIGTERM. Runs the real `python -m <svc>` against real infrastructure."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mppo.devstack import Infra
from mppo.devstack.probes import free_port

SERVICES = {
    "group": "mppo.group.v1.GroupService",
    "payment": "mppo.payment.v1.PaymentService",
    "order": "mppo.order.v1.OrderService",
    "notification": "mppo.notification.v1.NotificationService",
}
GRPCURL = Path(sys.executable).parent / "grpcurl"


def start_service(
    name: str, database_url: str, redis_url: str, nats_url: str, prefix: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m <name>_svc` on a free port; returns the process and its address."""
    addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        f"MPPO_{name.upper()}_DATABASE_URL": database_url,
        f"MPPO_{name.upper()}_ADDR": addr,
        "MPPO_REDIS_URL": redis_url,
        "MPPO_NATS_URL": nats_url,
        "MPPO_NATS_PREFIX": prefix,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"{name}_svc"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return process, addr


async def health_status(addr: str, service: str = "") -> int | None:
    """The health status of `service` at `addr`, or None when nothing answers."""
    async with grpc.aio.insecure_channel(addr) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.aio.AioRpcError:
            return None
    return int(reply.status)


async def wait_for_status(addr: str, service: str, wanted: int, within: float) -> int | None:
    """Poll until the health status is `wanted` or `within` seconds pass; the last status seen."""
    deadline = asyncio.get_running_loop().time() + within
    status = None
    while asyncio.get_running_loop().time() < deadline:
        status = await health_status(addr, service)
        if status == wanted:
            return status
        await asyncio.sleep(0.2)
    return status


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run the grpcurl operators use; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (SIGKILL after 15 s so a hang fails the test)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_service_serves_after_connecting_and_stops_on_sigterm(
    name: str, fresh_database: str, infra: Infra, nats_prefix: str, tmp_path: Path
) -> None:
    full_name = SERVICES[name]
    process, addr = start_service(
        name, fresh_database, infra.redis_url, infra.nats_url, nats_prefix, tmp_path / "svc.log"
    )
    try:
        status = await wait_for_status(
            addr, full_name, health_pb2.HealthCheckResponse.SERVING, within=30
        )
        assert status == health_pb2.HealthCheckResponse.SERVING, (tmp_path / "svc.log").read_text()
        assert await health_status(addr) == health_pb2.HealthCheckResponse.SERVING

        code, out, err = await grpcurl(addr, "list")
        assert code == 0, err
        assert set(out.split()) >= {full_name, "grpc.health.v1.Health"}
        code, out, err = await grpcurl(addr, "describe", full_name)
        assert code == 0, err
        assert f"service {full_name.rsplit('.', 1)[1]} {{" in out
        assert "rpc " in out
        # an RPC this issue does not build answers a clear UNIMPLEMENTED, not a fake result
        method = out.split("rpc ", 1)[1].split("(", 1)[0].strip()
        code, out, err = await grpcurl("-d", "{}", addr, f"{full_name}/{method}")
        assert code != 0
        assert "Unimplemented" in err, err

        conn = await asyncpg.connect(fresh_database)
        try:
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
        finally:
            await conn.close()
        assert {"outbox", "inbox", "idempotency_keys", "alembic_version"} <= tables
    finally:
        code = stop(process)
    assert code == 0, (tmp_path / "svc.log").read_text()
    assert "stopped" in (tmp_path / "svc.log").read_text()


async def test_service_is_not_serving_while_a_dependency_is_missing(
    fresh_database: str, infra: Infra, nats_prefix: str, tmp_path: Path
) -> None:
    dead_nats = f"nats://127.0.0.1:{free_port()}"
    process, addr = start_service(
        "group", fresh_database, infra.redis_url, dead_nats, nats_prefix, tmp_path / "svc.log"
    )
    try:
        status = await wait_for_status(
            addr, SERVICES["group"], health_pb2.HealthCheckResponse.NOT_SERVING, within=30
        )
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        # still not serving a few seconds later: nothing pretends the dependency is there
        await asyncio.sleep(3)
        assert await health_status(addr, SERVICES["group"]) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
    finally:
        code = stop(process)
    assert code == 0, (tmp_path / "svc.log").read_text()
