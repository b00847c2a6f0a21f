"""Mutual TLS for real: a grpc.aio server with `server_credentials` knows its callers by their
certificates, refuses everyone else at the handshake, and takes the end user only from a
token the gateway signed. Also: grpcurl works against it, and `mppo dev up` hands every
process the dev PKI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from mppo.platform.tls import (
    TlsMaterial,
    channel_credentials,
    mint_dev_pki,
    peer_service,
    server_credentials,
)
from mppo.platform.user_token import (
    USER_TOKEN_KEY,
    UserTokenError,
    UserTokenSigner,
    token_from_metadata,
)
from tests.support.pki import Pki

GRPCURL = Path(sys.executable).parent / "grpcurl"
WHOAMI = "/mppo.test.Whoami/Who"


@dataclass
class Server:
    addr: str
    port: int


def _whoami_handler(pki: Pki) -> grpc.GenericRpcHandler[Any, Any]:
    verifier = pki.verifier()

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        user = ""
        token = token_from_metadata(context.invocation_metadata())
        if token is not None:
            try:
                user = verifier.verify(token)
            except UserTokenError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return json.dumps({"service": peer_service(context), "user": user}).encode()

    return grpc.method_handlers_generic_handler(
        "mppo.test.Whoami", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )


async def _start(credentials: grpc.ServerCredentials, pki: Pki) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_whoami_handler(pki)])
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    reflection.enable_server_reflection(
        [health.SERVICE_NAME, reflection.SERVICE_NAME, "mppo.test.Whoami"], server
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(pki: Pki) -> AsyncIterator[Server]:
    """A TLS server holding the `group` certificate, requiring client certificates."""
    srv, port = await _start(server_credentials(pki.material("group")), pki)
    yield Server(addr=f"127.0.0.1:{port}", port=port)
    await srv.stop(None)


def _raw(channel: grpc.aio.Channel) -> Any:
    """The Whoami method on `channel`, bytes in and out."""
    return channel.unary_unary(WHOAMI, None, None)


async def _who(
    target: str,
    credentials: grpc.ChannelCredentials,
    metadata: Sequence[tuple[str, str]] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        reply = await _raw(channel)(b"", metadata=tuple(metadata), timeout=5)
    result: dict[str, Any] = json.loads(reply)
    return result


async def _refused(target: str, credentials: grpc.ChannelCredentials, **kw: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _who(target, credentials, **kw)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    return caught.value.details() or ""


async def test_caller_is_known_by_its_certificate_not_its_metadata(
    server: Server, pki: Pki
) -> None:
    for name in ("payment", "gateway", "tests"):
        assert await _who(server.addr, pki.channel_credentials(name)) == {
            "service": name,
            "user": "",
        }
    lying = [("x-mppo-service", "order"), ("x-mppo-user-id", "alice")]
    assert await _who(server.addr, pki.channel_credentials("payment"), lying) == {
        "service": "payment",
        "user": "",
    }


async def test_localhost_verifies_by_dns_san(server: Server, pki: Pki) -> None:
    reply = await _who(f"localhost:{server.port}", pki.channel_credentials("order"))
    assert reply["service"] == "order"


async def test_client_without_certificate_fails_the_handshake(server: Server, pki: Pki) -> None:
    no_cert = grpc.ssl_channel_credentials(root_certificates=pki.material("tests").ca_pem)
    await _refused(server.addr, no_cert)
    async with grpc.aio.insecure_channel(server.addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _raw(channel)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_fails(server: Server, pki: Pki, tmp_path: Path) -> None:
    mint_dev_pki(tmp_path, ["payment"])
    foreign = TlsMaterial.load(tmp_path, "payment")
    # trusts our CA (so the server is fine) but presents a certificate we never issued
    impostor = TlsMaterial(
        ca_pem=pki.material("payment").ca_pem, cert_pem=foreign.cert_pem, key_pem=foreign.key_pem
    )
    await _refused(server.addr, channel_credentials(impostor))


async def test_client_verifies_the_server(server: Server, pki: Pki, tmp_path: Path) -> None:
    # a server whose certificate our CA did not sign
    mint_dev_pki(tmp_path, ["group"])
    rogue, port = await _start(server_credentials(TlsMaterial.load(tmp_path, "group")), pki)
    try:
        await _refused(f"127.0.0.1:{port}", pki.channel_credentials("payment"))
    finally:
        await rogue.stop(None)
    # and the server's name must be in its certificate
    await _refused(
        server.addr,
        pki.channel_credentials("payment"),
        options=[("grpc.ssl_target_name_override", "bank.example")],
    )


async def test_user_comes_only_from_a_gateway_signed_token(
    server: Server, pki: Pki, tmp_path: Path
) -> None:
    creds = pki.channel_credentials("gateway")
    assert await _who(server.addr, creds, pki.user_metadata("alice")) == {
        "service": "gateway",
        "user": "alice",
    }

    mint_dev_pki(tmp_path, [])
    forged = UserTokenSigner((tmp_path / "user-token.key").read_bytes()).sign("alice")
    expired = UserTokenSigner(
        (pki.directory / "user-token.key").read_bytes(), clock=lambda: 1_000_000.0
    ).sign("alice")
    for token, why in ((forged, "signature"), (expired, "expired"), ("alice", "not a JWT")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _who(server.addr, creds, [(USER_TOKEN_KEY, token)])
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert why in (caught.value.details() or "")


async def _grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_grpcurl_with_the_operator_certificate(server: Server, pki: Pki) -> None:
    d = pki.directory
    tls = ["-cacert", f"{d}/ca.pem", "-cert", f"{d}/operator.pem", "-key", f"{d}/operator.key"]
    code, out = await _grpcurl(*tls, server.addr, "list")
    assert code == 0, out
    assert set(out.split()) >= {"grpc.health.v1.Health", "mppo.test.Whoami"}

    code, out = await _grpcurl(*tls, server.addr, "grpc.health.v1.Health/Check")
    assert code == 0, out
    assert json.loads(out) == {"status": "SERVING"}

    code, out = await _grpcurl("-cacert", f"{d}/ca.pem", server.addr, "list")
    assert code != 0
    code, out = await _grpcurl("-plaintext", server.addr, "list")
    assert code != 0


async def test_health_check_through_channel_credentials(server: Server, pki: Pki) -> None:
    async with grpc.aio.secure_channel(server.addr, pki.channel_credentials("operator")) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------ mppo dev up


_ENV_DUMP = (
    "import json, os, sys, time\n"
    "out = os.environ['ENV_OUT']\n"
    "json.dump(dict(os.environ), open(out + '.tmp', 'w'))\n"
    "os.replace(out + '.tmp', out)\n"
    "time.sleep(600)\n"
)


def _mppo(*args: str) -> subprocess.CompletedProcess[str]:
    # embedded servers even if the session was pointed at external ones
    env = {**os.environ, "MPPO_POSTGRES_URL": "", "MPPO_REDIS_URL": "", "MPPO_NATS_URL": ""}
    env.pop("MPPO_TLS_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "mppo.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


async def test_dev_up_mints_the_pki_and_hands_it_to_every_process(tmp_path: Path) -> None:
    env_out = tmp_path / "env.json"
    services = tmp_path / "services.json"
    services.write_text(
        json.dumps(
            [
                {
                    "name": "envdump",
                    "command": ["{python}", "-c", _ENV_DUMP],
                    "port": 0,
                    "readiness": "none",
                    "env": {"ENV_OUT": str(env_out)},
                }
            ]
        )
    )
    state_dir = tmp_path / "state"
    up_args = [
        "--state-dir", str(state_dir),
        "--pg-port", "0", "--redis-port", "0", "--nats-port", "0",
        "--services", str(services),
        "--no-fsync", "--ephemeral",
    ]  # fmt: skip
    up = await asyncio.to_thread(_mppo, "dev", "up", "--detach", *up_args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pki = state_dir.resolve() / "pki"
        assert f"operator client cert {pki / 'operator.pem'}" in up.stdout
        for _ in range(100):
            if env_out.exists():
                break
            await asyncio.sleep(0.1)
        assert json.loads(env_out.read_text())["MPPO_TLS_DIR"] == str(pki)
        for name in ("group", "payment", "order", "notification", "gateway", "worker", "operator"):
            material = TlsMaterial.load(pki, name)
            assert b"BEGIN CERTIFICATE" in material.cert_pem
        assert (pki / "user-token.key").stat().st_mode & 0o077 == 0
        status = await asyncio.to_thread(_mppo, "dev", "status", "--state-dir", str(state_dir))
        assert str(pki / "operator.key") in status.stdout
    finally:
        down = await asyncio.to_thread(_mppo, "dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
