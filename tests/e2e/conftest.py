"""One whole system for the end-to-end tests: ``mppo dev up`` of every default service on
free ports in a temporary state directory, shared by every test of this package, and
``mppo dev down`` once the package's last test is done (so it does not idle under the other
test tiers of the same session). It runs with ``--observability``: a real Prometheus scrapes
every process (tests/e2e/test_observability_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from tests.support.e2e import Api, Stack, start_stack, until_down


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The running stack; afterwards dev down leaves no process behind and none died."""
    yield from until_down(start_stack(tmp_path_factory.mktemp("e2e-stack"), observability=True))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed (for the log tails below)."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()
LOGGED = ("group", "payment", "order", "notification", "gateway", "sandbox", "merchant")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    """A REST client for one test, with the sandbox's webhook faults cleared around it. When
    the test fails, the end of every service's log is added to its report."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = Api(stack, http)
        await client.sandbox_faults(reset=True)
        try:
            yield client
        finally:
            await client.sandbox_faults(reset=True)
            await client.sandbox_release("in_order")
            if request.node.stash.get(FAILED, False):
                for name in LOGGED:
                    request.node.add_report_section(
                        "teardown", f"{name} log (tail)", stack.log_tail(name, 30)
                    )
