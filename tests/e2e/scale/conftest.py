"""The production shape on one machine: ``mppo dev up --replicas 2 --nats-cluster 3`` with
the group scheduler as its own worker role — two copies of every service and of the worker,
three nats-servers with every stream on three replicas — shared by this package's tests (one
start-up: it is the most expensive stack of the suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from mppo.devstack.services import DEFAULT_SERVICES, with_worker_role
from tests.support.e2e import Api, Stack, start_stack, until_down

SCALED = ("group", "group-scheduler", "payment", "order", "notification", "gateway")


@pytest.fixture(scope="package")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("scaled-stack"),
        services=with_worker_role(DEFAULT_SERVICES),
        replicas=2,
        nats_cluster=3,
    )
    # replicas are killed on purpose here: the supervisor's restarts are expected
    yield from until_down(running, restarts_expected=True)


@pytest_asyncio.fixture(loop_scope="session")
async def scaled_api(scaled: Stack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = Api(scaled, http)
        await client.sandbox_faults(reset=True)
        yield client
