"""Fixtures shared by the gateway's integration tests: the four real services (plaintext,
MPPO_ENV=test, each on its own database, each knowing where the others are; the order service
prices carts at a sandbox merchant whose catalogue sells the tests' pizza, `p1` at 12.50 EUR)
and a JWT issuer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mppo.devstack import Infra
from mppo.devstack.probes import free_port
from order_svc.sandbox_merchant.catalogue import DEFAULT_CATALOGUE
from tests.integration.gateway.support import (
    AREAS,
    GatewayProcess,
    Issuer,
    gateway_env,
    start_gateway,
)
from tests.support.sandbox_merchant import TEST_SECRET, start_merchant
from tests.support.services import ServiceProcess, start_service, wait_serving

#: the pizza the gateway tests order, next to the sandbox merchant's default catalogue
PIZZA = {"sku": "p1", "name": "Pizza", "unit_price_minor": 1250, "currency": "EUR", "stock": 10**6}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, ServiceProcess]]:
    """The group, payment, order and notification services, SERVING."""
    logs = tmp_path_factory.mktemp("service-logs")
    prefix = f"t{uuid.uuid4().hex[:6]}"
    addrs = {area: f"127.0.0.1:{free_port()}" for area in AREAS}
    catalogue = logs / "catalogue.json"
    catalogue.write_text(json.dumps([*DEFAULT_CATALOGUE, PIZZA]))
    merchant = await start_merchant(logs, {"MPPO_MERCHANT_CATALOGUE": str(catalogue)})
    peers = {f"MPPO_{area.upper()}_ADDR": addr for area, addr in addrs.items()}
    peers |= {"MPPO_MERCHANT_ADDR": merchant.addr, "MPPO_MERCHANT_SECRET": TEST_SECRET}
    started: dict[str, ServiceProcess] = {}
    try:
        for area in AREAS:
            url = await infra.create_database(f"gw_{area}_{uuid.uuid4().hex[:8]}")
            started[area] = start_service(
                area,
                database_url=url,
                redis_url=infra.redis_url,
                nats_url=infra.nats_url,
                nats_prefix=prefix,
                log_dir=logs,
                addr=addrs[area],
                env=peers,
            )
        await asyncio.gather(*(wait_serving(p, within=60) for p in started.values()))
        yield started
    finally:
        for proc in started.values():
            proc.stop()
        merchant.stop()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    """Signs test JWTs; the gateways under test trust its JWKS file."""
    return Issuer.create(tmp_path_factory.mktemp("issuer"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    infra: Infra,
    services: dict[str, ServiceProcess],
    issuer: Issuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GatewayProcess]:
    """A gateway in front of the four real services (modules that need other limits or
    upstreams define their own `gateway`)."""
    env = gateway_env(issuer, infra.redis_url, {a: p.addr for a, p in services.items()})
    gw = await start_gateway(env, tmp_path_factory.mktemp("gateway-logs"))
    yield gw
    assert gw.stop() == 0, gw.log_text()
