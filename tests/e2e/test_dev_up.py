"""`mppo dev up` runs the whole real system: every process of DEFAULT_SERVICES is up, gRPC
services answer grpcurl and report SERVING, HTTP ones answer their health path. The shared
stack is started exactly as `make run` starts it (on free ports), and its fixture checks that
`mppo dev down` leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from mppo.devstack.services import DEFAULT_SERVICES
from tests.support.e2e import Stack
from tests.support.services import SERVING, health_status

BIN = Path(sys.executable).parent


async def grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "grpcurl"), *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def grpcurl_list(addr: str, pki: Path) -> set[str]:
    """The README's operator command: grpcurl with the development operator certificate."""
    code, out = await grpcurl(
        "-cacert", str(pki / "ca.pem"),
        "-cert", str(pki / "operator.pem"),
        "-key", str(pki / "operator.key"),
        addr, "list",
    )  # fmt: skip
    assert code == 0, out
    return set(out.split())


async def test_dev_up_brings_every_default_service_up(stack: Stack) -> None:
    assert {p["name"] for p in stack.state["processes"]} >= {s.name for s in DEFAULT_SERVICES}
    pki = Path(stack.state["pki"])
    for svc in DEFAULT_SERVICES:
        addr = stack.addr(svc.name)
        if svc.readiness == "grpc":
            assert await health_status(addr, tls_dir=pki) == SERVING, svc.name
            # mutual TLS only: no plaintext, no TLS without our client certificate
            assert await health_status(addr) is None, svc.name
            code, out = await grpcurl("-plaintext", addr, "list")
            assert code != 0, out
            code, out = await grpcurl("-cacert", str(pki / "ca.pem"), addr, "list")
            assert code != 0, out
            listed = await grpcurl_list(addr, pki)
            assert "grpc.health.v1.Health" in listed
            assert any(name.startswith("mppo.") for name in listed), listed
        elif svc.readiness == "http":
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{addr}{svc.health_path}") as resp,
            ):
                assert resp.status == 200, svc.name


async def test_an_operator_can_make_a_users_call_with_grpcurl(stack: Stack) -> None:
    # the README's recipe: the gateway's development certificate and a development JWT, as
    # the edge would forward it; the service verifies the JWT itself
    pki = Path(stack.state["pki"])
    user = "grpcurl-alice"
    as_gateway = (
        "-cacert", str(pki / "ca.pem"),
        "-cert", str(pki / "gateway.pem"),
        "-key", str(pki / "gateway.key"),
    )  # fmt: skip
    call = ("-d", "{}", stack.addr("group"), "mppo.group.v1.GroupService/ListGroups")
    code, out = await grpcurl(*as_gateway, "-H", f"x-mppo-user-jwt: {stack.token(user)}", *call)
    assert code == 0, out
    assert json.loads(out).get("groups", []) == []  # a new user: no groups, and no error
    # a token that is no JWT is refused; the operator's certificate may not forward one
    code, out = await grpcurl(*as_gateway, "-H", "x-mppo-user-jwt: not.a.jwt", *call)
    assert code != 0, out
    assert "Unauthenticated" in out, out
    operator = (
        "-cacert", str(pki / "ca.pem"),
        "-cert", str(pki / "operator.pem"),
        "-key", str(pki / "operator.key"),
    )  # fmt: skip
    code, out = await grpcurl(*operator, "-H", f"x-mppo-user-jwt: {stack.token(user)}", *call)
    assert code != 0, out
    assert "PermissionDenied" in out, out
