"""The group stack shared by a test module: two group service replicas (each with consumers
and a scheduler) and one standalone scheduler process, on one database, Redis and NATS prefix;
against an in-test fake PaymentService (failure injection) and a fake OrderService pricing carts
from the sandbox merchant's catalogue, or the real payment and order services
(test_group_with_payment_service.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mppo.devstack import Infra, drop_database
from mppo.devstack.probes import free_port
from mppo.platform.messaging import connect, ensure_streams
from tests.integration.group.fake_payment import FakePaymentService, start_fake_payments
from tests.integration.group.harness import Stack
from tests.support.fake_orders import FakeOrderService, start_fake_orders
from tests.support.services import start_service, wait_serving

GROUP_ENV = {
    "MPPO_ENV": "test",
    "MPPO_GROUP_SCHEDULER_INTERVAL": "0.3",
    "MPPO_GROUP_HOST_GRACE_SECONDS": "3",
    "MPPO_GROUP_REMINDER_LEAD_SECONDS": "3",
    "MPPO_LOG_LEVEL": "INFO",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fake_payments() -> AsyncIterator[tuple[str, FakePaymentService]]:
    port = free_port()
    server, fake = await start_fake_payments(port)
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        await server.stop(grace=1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fake_orders() -> AsyncIterator[tuple[str, FakeOrderService]]:
    port = free_port()
    server, fake = await start_fake_orders(port)
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        await server.stop(grace=1)


@contextlib.asynccontextmanager
async def group_stack(
    infra: Infra,
    payment_addr: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    order_addr: str,
) -> AsyncIterator[Stack]:
    """Two group replicas and a standalone scheduler on a fresh database and NATS prefix."""
    name = f"g_{uuid.uuid4().hex[:10]}"
    database_url = await infra.create_database(name)
    prefix = f"t{uuid.uuid4().hex[:6]}"
    env = {
        **GROUP_ENV,
        "MPPO_PAYMENT_ADDR": payment_addr,
        "MPPO_ORDER_ADDR": order_addr,
        **(extra_env or {}),
    }
    common: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": infra.redis_url,
        "nats_url": infra.nats_url,
        "nats_prefix": prefix,
        "log_dir": log_dir,
    }
    first = start_service("group", env=env, **common)
    procs = [first]
    nats = None
    try:
        await wait_serving(first, within=40)  # migrates the database
        second = start_service("group", env=env, **common)
        sched_addr = f"127.0.0.1:{free_port()}"
        scheduler = start_service(
            "group",
            module="group_svc.standalone_scheduler",
            addr=sched_addr,
            env={**env, "MPPO_GROUP_SCHEDULER_ADDR": sched_addr},
            **common,
        )
        procs += [second, scheduler]
        await asyncio.gather(wait_serving(second, 40), wait_serving(scheduler, 40))
        nats = await connect(infra.nats_url, name="group-tests")
        js = nats.jetstream()
        await ensure_streams(js, prefix)
        built = Stack(procs=procs, nats=nats, js=js, prefix=prefix, database_url=database_url)
        yield built
        await built.close()
        nats = None
    finally:
        if nats is not None:
            await nats.close()
        for proc in procs:
            proc.stop()
        with contextlib.suppress(Exception):
            await drop_database(infra.postgres_server_url, name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    infra: Infra,
    fake_payments: tuple[str, FakePaymentService],
    fake_orders: tuple[str, FakeOrderService],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """The group stack against the in-test fake payment and order services."""
    async with group_stack(
        infra, fake_payments[0], tmp_path_factory.mktemp("group"), order_addr=fake_orders[0]
    ) as built:
        yield built
