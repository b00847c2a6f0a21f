"""The gateway crosses the trust boundary the way the services demand (issue 10 §2): over
mutual TLS with its own certificate, the end user as a token it signs for the JWT's subject,
never as an id a client could write; and a production gateway refuses to start with
development settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from gateway.descriptors import Catalog
from mppo.platform.user_token import USER_TOKEN_KEY
from tests.integration.gateway.support import (
    AREAS,
    Issuer,
    RecordingUpstream,
    gateway_env,
    start_gateway,
)
from tests.support.pki import Pki

CATALOG = Catalog.load()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tls_upstream(pki: Pki) -> AsyncIterator[RecordingUpstream]:
    server = RecordingUpstream(CATALOG, tls=pki)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def jwt_issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer.create(tmp_path_factory.mktemp("idp"))


def _prod_env(
    issuer: Issuer, redis_url: str, upstream: RecordingUpstream, pki: Pki
) -> dict[str, str]:
    return gateway_env(
        issuer,
        redis_url,
        dict.fromkeys(AREAS, upstream.addr),
        MPPO_ENV="prod",
        MPPO_GRPC_PLAINTEXT="",
        **pki.env(),
    )


async def test_gateway_calls_services_over_mtls_with_a_signed_user_token(
    jwt_issuer: Issuer,
    redis_url: str,
    tls_upstream: RecordingUpstream,
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = _prod_env(jwt_issuer, redis_url, tls_upstream, pki)
    gw = await start_gateway(env, tmp_path_factory.mktemp("gw-mtls"))
    try:
        before = len(tls_upstream.calls)
        forged = {
            "x-mppo-user-id": "mallory",
            "x-mppo-user-token": "forged",
            "x-mppo-service": "order",
        }
        async with aiohttp.ClientSession() as http:
            headers = jwt_issuer.auth("ann") | forged
            async with http.get(gw.url + "/notifications", headers=headers) as reply:
                assert reply.status == 200, await reply.text()
        call = tls_upstream.calls[before]
        assert call.peer == "gateway"  # the gateway's certificate, verified by the upstream
        assert "x-mppo-user-id" not in call.metadata
        assert call.metadata.get("x-mppo-service", "gateway") == "gateway"
        assert pki.verifier().verify(call.metadata[USER_TOKEN_KEY]) == "ann"  # not mallory
    finally:
        assert gw.stop() == 0, gw.log_text()


def _start_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")} | env
    return subprocess.run(
        [sys.executable, "-m", "gateway"], env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"MPPO_TLS_DIR": "", "MPPO_GRPC_PLAINTEXT": "1"}, "mutual TLS is required"),
        ({"MPPO_JWT_JWKS": "dev"}, "MPPO_JWT_JWKS=dev"),
        ({"MPPO_USER_TOKEN_PRIVATE_KEY_FILE": "/nonexistent/user-token.key"}, "user-token key"),
    ],
)
async def test_production_gateway_refuses_development_settings(
    jwt_issuer: Issuer,
    redis_url: str,
    tls_upstream: RecordingUpstream,
    pki: Pki,
    change: dict[str, str],
    named: str,
) -> None:
    env = _prod_env(jwt_issuer, redis_url, tls_upstream, pki) | change
    done = await asyncio.to_thread(_start_fails, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stdout + done.stderr


def test_pki_fixture_holds_a_gateway_identity(pki: Pki) -> None:
    assert Path(pki.directory, "gateway.pem").exists()
