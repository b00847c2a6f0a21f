"""The real gateway in front of the four real service processes: every annotated RPC answers
on its REST path with the status the service itself gives for the same request over gRPC, and
grpcurl and the REST path return the same data for the same call."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format

from gateway.descriptors import Catalog
from gateway.errors import http_status
from gateway.routing import Router
from gateway.table import RestCase, rest_table
from gateway.transcode import Transcoder
from tests.integration.gateway.support import (
    GatewayProcess,
    Issuer,
)
from tests.support.services import ServiceProcess

CATALOG = Catalog.load()
# Path ids shaped like the ids services issue, so each service (not the hostile-input check)
# answers; the same check refuses other shapes identically over gRPC and REST.
SAMPLE_ID = "3f2b8c1e-4d5a-4b6c-9d7e-0f1a2b3c4d5e"
GRPCURL = Path(sys.executable).parent / "grpcurl"


async def _direct(addr: str, case: RestCase, request: Any, user: str) -> tuple[int, dict[str, Any]]:
    """(google.rpc code, JSON reply) of the same request sent straight to the service."""
    binding = case.binding
    reply_cls = CATALOG.message_class(binding.method.output_type)
    # as the gateway sends it: webhooks as the gateway itself, everything else as the user
    metadata = (("x-mppo-service", "gateway"),) if case.webhook else (("x-mppo-user-id", user),)
    async with grpc.aio.insecure_channel(addr) as channel:
        rpc = channel.unary_unary(
            binding.grpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_cls.FromString,
        )
        try:
            reply = await rpc(request, metadata=metadata, timeout=15)
        except grpc.aio.AioRpcError as exc:
            return exc.code().value[0], {"message": exc.details()}
    return 0, json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)


async def test_every_annotated_rpc_answers_like_the_service(
    gateway: GatewayProcess, services: dict[str, ServiceProcess], issuer: Issuer
) -> None:
    transcoder = Transcoder(CATALOG)
    router = Router(CATALOG.bindings)
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for case in rest_table(CATALOG, SAMPLE_ID):
            user = f"walker-{uuid.uuid4().hex[:8]}"
            headers = {} if case.webhook else issuer.auth(user)
            body = b"{}" if case.binding.body else b""
            async with http.request(
                case.verb, gateway.url + case.path, headers=headers, data=body
            ) as reply:
                status = reply.status
                payload = await reply.json()
            if case.internal:
                assert status == 404, f"internal {case.verb} {case.path} must be refused"
                continue
            # The service's own answer to the same request, over gRPC.
            match_vars = router.match(case.verb, case.path).variables
            request = transcoder.request(case.binding, match_vars, [], body, "")
            code, direct = await _direct(services[case.area].addr, case, request, user)
            assert status == http_status(code), (
                f"{case.verb} {case.path}: HTTP {status} {payload}, gRPC {code} {direct}"
            )
            if code:
                assert payload["code"] == code
                assert payload["message"] == direct["message"], case.path
            seen[case.grpc_path] = status
    assert len(seen) == len({c.grpc_path for c in rest_table(CATALOG) if not c.internal})


async def _grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


def _normalised(method: str, text: str) -> dict[str, Any]:
    """grpcurl prints proto field names; re-render its JSON with the gateway's options."""
    descriptor = CATALOG.pool.FindMethodByName(method).output_type
    message = json_format.Parse(text, CATALOG.message_class(descriptor)())
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


async def _compare(
    gateway: GatewayProcess,
    issuer: Issuer,
    user: str,
    addr: str,
    method: str,
    request: dict[str, Any],
    rest_path: str,
) -> dict[str, Any]:
    """Call `method` with grpcurl and its REST path; assert both give the same; the REST JSON."""
    code, out, err = await _grpcurl(
        "-emit-defaults",
        "-H",
        f"x-mppo-user-id: {user}",
        "-d",
        json.dumps(request),
        addr,
        method.replace("GroupService.", "GroupService/"),
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + rest_path, headers=issuer.auth(user)) as reply,
    ):
        status, rest = reply.status, await reply.json()
    if code == 0:
        assert status == 200, rest
        assert rest == _normalised(method, out)
    else:  # refused or not implemented yet: the same status and message either way
        name = _code_name(rest["code"])
        camel = "".join(part.title() for part in name.split("_"))
        assert f"Code: {camel}" in err, (err, rest)
        assert f"Message: {rest['message']}" in err, (err, rest)
        assert status == http_status(rest["code"])
    result: dict[str, Any] = rest
    return result


async def test_grpcurl_and_rest_return_the_same_data(
    gateway: GatewayProcess, services: dict[str, ServiceProcess], issuer: Issuer
) -> None:
    user = f"curl-{uuid.uuid4().hex[:8]}"
    addr = services["group"].addr
    create = {
        "merchantId": "m-1",
        "currencyCode": "EUR",
        "items": [
            {"lineId": "l1", "sku": "p1", "name": "Pizza", "quantity": 2, "unitPriceMinor": "1250"}
        ],
        "splitMode": "SPLIT_MODE_EQUAL",
        "fallbackPolicy": "FALLBACK_POLICY_CANCEL",
        # within every provider's hold window (a deadline beyond it is refused, issue 14)
        "deadline": (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"displayName": "Ann", "email": "ann@example.com"},
        "members": [{"displayName": "Bo", "email": "bo@example.com"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway.url + "/group", json=create, headers=issuer.auth(user)) as reply,
    ):
        created_status, created = reply.status, await reply.json()
    listed = await _compare(
        gateway, issuer, user, addr, "mppo.group.v1.GroupService.ListGroups", {}, "/group"
    )
    assert created_status == 200, created
    group_id = created["group"]["groupId"]
    assert [g["groupId"] for g in listed["groups"]] == [group_id]
    got = await _compare(
        gateway,
        issuer,
        user,
        addr,
        "mppo.group.v1.GroupService.GetGroup",
        {"groupId": group_id},
        f"/group/{group_id}",
    )
    assert got["group"]["groupId"] == group_id
    assert got["group"]["total"] == {"amountMinor": "2500", "currencyCode": "EUR"}
    # Another user's token: the group service re-checks membership (docs/design.md §8).
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.url}/group/{group_id}", headers=issuer.auth("stranger")) as reply,
    ):
        assert reply.status in (403, 404), await reply.text()
        assert (await reply.json())["code"] in (5, 7)


def _code_name(code: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == code)
