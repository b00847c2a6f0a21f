"""Each service process: migrates its database, reports health honestly, answers grpcurl,
and stops cleanly on SIGTERM. Runs the real `python -m <svc>` against real infrastructure."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from tests.support.services import (
    NOT_SERVING,
    SERVING,
    health_status,
    start_service,
    wait_for_status,
)

SERVICES = {
    "group": "mppo.group.v1.GroupService",
    "payment": "mppo.payment.v1.PaymentService",
    "order": "mppo.order.v1.OrderService",
    "notification": "mppo.notification.v1.NotificationService",
}
GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run the grpcurl operators use; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_service_serves_after_connecting_and_stops_on_sigterm(
    name: str, fresh_database: str, infra: Infra, nats_prefix: str, tmp_path: Path
) -> None:
    full_name = SERVICES[name]
    proc = start_service(
        name,
        database_url=fresh_database,
        redis_url=infra.redis_url,
        nats_url=infra.nats_url,
        nats_prefix=nats_prefix,
        log_dir=tmp_path,
    )
    addr = proc.addr
    try:
        status = await wait_for_status(addr, full_name, SERVING, within=30)
        assert status == SERVING, proc.log_text()
        assert await health_status(addr) == SERVING

        code, out, err = await grpcurl(addr, "list")
        assert code == 0, err
        assert set(out.split()) >= {full_name, "grpc.health.v1.Health"}
        code, out, err = await grpcurl(addr, "describe", full_name)
        assert code == 0, err
        assert f"service {full_name.rsplit('.', 1)[1]} {{" in out
        assert "rpc " in out

        conn = await asyncpg.connect(fresh_database)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        finally:
            await conn.close()
        assert {"outbox", "inbox", "idempotency_keys", "alembic_version"} <= {
            r["tablename"] for r in rows
        }
    finally:
        code = proc.stop()
    assert code == 0, proc.log_text()
    assert "stopped" in proc.log_text()
    assert "Cannot register" not in proc.log_text()  # handlers bound without late-add warnings


async def test_service_is_not_serving_while_a_dependency_is_missing(
    fresh_database: str, infra: Infra, nats_prefix: str, tmp_path: Path
) -> None:
    proc = start_service(
        "group",
        database_url=fresh_database,
        redis_url=infra.redis_url,
        nats_url=f"nats://127.0.0.1:{free_port()}",  # nothing listens there
        nats_prefix=nats_prefix,
        log_dir=tmp_path,
    )
    try:
        status = await wait_for_status(proc.addr, SERVICES["group"], NOT_SERVING, within=30)
        assert status == NOT_SERVING, proc.log_text()
        # still not serving a few seconds later: nothing pretends the dependency is there
        await asyncio.sleep(3)
        assert await health_status(proc.addr, SERVICES["group"]) == NOT_SERVING
        # its own methods answer UNAVAILABLE meanwhile, not UNIMPLEMENTED
        code, _, err = await grpcurl(
            "-d", '{"group_id":"x"}', proc.addr, f"{SERVICES['group']}/GetGroup"
        )
        assert code != 0
        assert "Unavailable" in err, err
    finally:
        code = proc.stop()
    assert code == 0, proc.log_text()
