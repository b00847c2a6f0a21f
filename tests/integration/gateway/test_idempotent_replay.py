"""What the gateway adds for a typed client, against the four real services (issue 14 part 4):

- a replay (same Idempotency-Key, same body) is answered with `Idempotent-Replayed: true`,
  known from the service (it answered with the stored response and said so in its initial
  metadata, which gRPC callers see too), never guessed; the first call and a call without a
  key carry no such header, and the key reused with another body is refused;
- field violations name fields as the REST client wrote them (`host.displayName`,
  `members[1].displayName`) while gRPC callers get proto paths;
- every response carries the RateLimit headers, 429s and errors included.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from gateway.descriptors import IDEMPOTENT_METHODS, Catalog
from mppo.devstack import Infra
from mppo.platform.idempotency import REPLAYED_KEY
from tests.integration.gateway.support import (
    GatewayProcess,
    Issuer,
    gateway_env,
    start_gateway,
)
from tests.support.services import ServiceProcess

CATALOG = Catalog.load()
REPLAYED = "Idempotent-Replayed"
RATELIMIT = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
IETF_RATELIMIT = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
# the current draft's structured fields: `"policy";q=QUOTA;w=WINDOW` and `"policy";r=LEFT;t=S`
POLICY = re.compile(r'"(ip|user)";q=(\d+);w=(\d+)\Z')
STATE = re.compile(r'"(ip|user)";r=(\d+);t=(\d+)\Z')
Json = dict[str, Any]


def _group(**host: str) -> Json:
    deadline = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "merchantId": "m-1",
        "currencyCode": "EUR",
        "items": [
            {"lineId": "l1", "sku": "p1", "name": "Pizza", "quantity": 2, "unitPriceMinor": "1250"}
        ],
        "splitMode": "SPLIT_MODE_EQUAL",
        "fallbackPolicy": "FALLBACK_POLICY_CANCEL",
        "deadline": deadline,
        "host": {"displayName": "Ann", "email": "ann@example.com", **host},
    }


def _user() -> str:
    return f"replay-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Reply:
    def __init__(self, status: int, headers: Any, body: Json) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def replayed(self) -> bool:
        return bool(self.headers.get(REPLAYED) == "true")


async def _call(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    url: str,
    user: str,
    body: Json | None = None,
    *,
    key: str | None = None,
    method: str = "POST",
) -> Reply:
    headers = issuer.auth(user)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.request(method, url, json=body, headers=headers) as reply:
        for name in RATELIMIT:  # every answer says how much of the rate limit is left
            assert name in reply.headers, (url, reply.status, dict(reply.headers))
        return Reply(reply.status, reply.headers, await reply.json())


def _violations(status: Json) -> list[str]:
    return [
        v["field"]
        for d in status.get("details", [])
        if d["@type"].endswith("BadRequest")
        for v in d["fieldViolations"]
    ]


async def test_a_replay_says_so_and_a_first_call_does_not(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    url, user, key = gateway.url + "/group", _user(), str(uuid.uuid4())
    body = _group()
    first = await _call(http, issuer, url, user, body, key=key)
    assert first.status == 200, first.body
    assert REPLAYED not in first.headers
    again = await _call(http, issuer, url, user, body, key=key)
    assert again.status == 200, again.body
    assert again.replayed
    assert again.body == first.body
    other = await _call(http, issuer, url, user, _group(displayName="Eve"), key=key)
    assert other.status == 400, other.body
    assert REPLAYED not in other.headers
    assert "IDEMPOTENCY_KEY_REUSED" in str(other.body["details"])
    unkeyed = await _call(http, issuer, url, user, body)
    assert unkeyed.status == 200, unkeyed.body
    assert REPLAYED not in unkeyed.headers
    assert unkeyed.body["group"]["groupId"] != first.body["group"]["groupId"]
    # another caller's call with the same key is its own first call
    stranger = await _call(http, issuer, url, _user(), body, key=key)
    assert stranger.status == 200, stranger.body
    assert REPLAYED not in stranger.headers


async def test_each_group_change_is_replayed_from_the_service(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    host, guest = _user(), _user()
    created = await _call(http, issuer, gateway.url + "/group", host, _group())
    group_id = created.body["group"]["groupId"]
    base = f"{gateway.url}/group/{group_id}"
    checked: set[str] = set()

    async def twice(
        rpc: str, path: str, user: str, body: Json | None, method: str = "POST"
    ) -> Json:
        key = str(uuid.uuid4())
        first = await _call(http, issuer, base + path, user, body, key=key, method=method)
        assert first.status == 200, (rpc, first.body)
        assert not first.replayed, rpc
        again = await _call(http, issuer, base + path, user, body, key=key, method=method)
        assert again.status == 200, (rpc, again.body)
        assert again.replayed, rpc
        assert again.body == first.body, rpc
        checked.add(f"mppo.group.v1.GroupService.{rpc}")
        return first.body

    members = [
        {"displayName": "Bo", "email": "bo@example.com"},
        {"displayName": "Cy", "email": "cy@example.com"},
    ]
    added = await twice("AddMembers", "/members", host, {"members": members})
    by_email = {m["email"]: m for m in added["group"]["members"]}
    await twice("UpdateSplit", "/split", host, {"splitMode": "SPLIT_MODE_EQUAL"}, "PUT")
    token = by_email["bo@example.com"]["inviteToken"]
    joined = await twice("JoinGroup", "/join", guest, {"inviteToken": token})
    assert joined["memberId"] == by_email["bo@example.com"]["memberId"]
    cy = by_email["cy@example.com"]["memberId"]
    await twice("RemoveMember", f"/members/{cy}", host, None, "DELETE")
    cancelled = await twice("CancelGroup", "/cancel", host, {"reason": "plans changed"})
    assert cancelled["group"]["status"] == "GROUP_STATUS_CANCELLED"
    # OpenGroup, ForceFinalize and RetryPayment need payments: tests/e2e/test_typed_sdk.py
    # replays them against the whole stack
    assert checked <= IDEMPOTENT_METHODS
    assert len(checked) == 5


async def test_grpc_callers_see_the_replay_and_proto_field_names(
    services: dict[str, ServiceProcess],
) -> None:
    descriptor = CATALOG.pool.FindMessageTypeByName("mppo.group.v1.CreateGroupRequest")
    request_cls = CATALOG.message_class(descriptor)
    reply_cls = CATALOG.message_class(
        CATALOG.pool.FindMessageTypeByName("mppo.group.v1.CreateGroupResponse")
    )
    user, key = _user(), str(uuid.uuid4())
    async with grpc.aio.insecure_channel(services["group"].addr) as channel:
        rpc = channel.unary_unary(
            "/mppo.group.v1.GroupService/CreateGroup",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_cls.FromString,
        )
        request = json_format.Parse(_dumps(_group()), request_cls())
        metadata = (("x-mppo-user-id", user), ("idempotency-key", key))
        answers = []
        for _ in range(2):
            call = rpc(request, metadata=metadata, timeout=15)
            await call
            answers.append(dict(await call.initial_metadata() or ()))
        assert REPLAYED_KEY not in answers[0]
        assert answers[1].get(REPLAYED_KEY) == "true"

        nameless = json_format.Parse(_dumps(_group(displayName="")), request_cls())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rpc(nameless, metadata=(("x-mppo-user-id", user),), timeout=15)
    assert _grpc_violations(refused.value) == ["host.display_name"]


def _dumps(body: Json) -> str:
    return json.dumps(body)


def _grpc_violations(error: grpc.aio.AioRpcError) -> list[str]:
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            bad = error_details_pb2.BadRequest()
            return [v.field for d in status.details if d.Unpack(bad) for v in bad.field_violations]
    return []


async def test_field_violations_name_what_the_rest_client_sent(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    user = _user()
    # the service's own check (a required field left empty)
    nameless = await _call(http, issuer, gateway.url + "/group", user, _group(displayName=""))
    assert nameless.status == 400, nameless.body
    assert _violations(nameless.body) == ["host.displayName"]
    assert "host.display_name" not in nameless.body["message"]
    created = await _call(http, issuer, gateway.url + "/group", user, _group())
    group_id = created.body["group"]["groupId"]
    members = [{"displayName": "Bo", "email": "bo@example.com"}, {"email": "cy@example.com"}]
    add = await _call(
        http, issuer, f"{gateway.url}/group/{group_id}/members", user, {"members": members}
    )
    assert add.status == 400, add.body
    assert _violations(add.body) == ["members[1].displayName"]
    # the gateway's own hostile-input check
    hostile = await _call(
        http, issuer, gateway.url + "/group", user, _group(displayName="Ann\u0007")
    )
    assert hostile.status == 400, hostile.body
    assert _violations(hostile.body) == ["host.displayName"]
    assert "host.displayName" in hostile.body["message"]
    # path and query values keep the names the client used
    async with http.get(
        gateway.url + "/group?page_token=a%00b", headers=issuer.auth(user)
    ) as reply:
        assert reply.status == 400
        assert _violations(await reply.json()) == ["page_token"]
    async with http.get(gateway.url + "/group/x1", headers=issuer.auth(user)) as reply:
        assert reply.status == 400
        assert _violations(await reply.json()) == ["group_id"]


async def test_every_response_carries_the_ratelimit_headers(
    gateway: GatewayProcess,
    infra: Infra,
    services: dict[str, ServiceProcess],
    issuer: Issuer,
    http: aiohttp.ClientSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    user = issuer.auth(_user())
    # the tighter of the buckets asked: the caller's (burst 40) once the token is known, else
    # the address's (burst 200; read without taking for the unmetered endpoints)
    for method, path, headers, expected, burst in (
        ("GET", "/group", user, 200, "40"),
        ("GET", "/group", {}, 401, "200"),
        ("GET", "/nowhere", user, 404, "200"),
        ("DELETE", "/group", user, 405, "200"),
        ("POST", "/group", {**user, "Content-Type": "application/json"}, 400, "40"),
        ("GET", "/healthz", {}, 200, "200"),
        ("GET", "/openapi.json", {}, 200, "200"),
        ("GET", "/g/assets/group-page.js", {}, 200, "200"),  # the members' group page
        ("GET", "/g/not-a-group", {}, 404, "200"),
    ):
        async with http.request(method, gateway.url + path, headers=headers, data=b"{") as reply:
            assert reply.status == expected, (method, path, await reply.text())
            values = {name: reply.headers.get(name, "") for name in RATELIMIT + IETF_RATELIMIT}
            policy = POLICY.match(reply.headers.get("RateLimit-Policy", ""))
            state = STATE.match(reply.headers.get("RateLimit", ""))
        assert all(v.isdigit() for v in values.values()), (path, values)
        assert values["X-RateLimit-Limit"] == burst, (path, values)
        for name in RATELIMIT:  # the un-prefixed names say the same as Envoy's
            assert values[name.removeprefix("X-")] == values[name], (path, values)
        # the policy: the bucket's kind, its burst as the quota, the seconds it takes to fill
        assert policy is not None, (path, reply.headers)
        kind = "user" if burst == "40" else "ip"
        assert policy.groups() == (kind, burst, "2"), path  # 20/s to 40, 100/s to 200
        assert state is not None, (path, reply.headers)
        assert state.groups() == (kind, values["RateLimit-Remaining"], values["RateLimit-Reset"])
    # a caller over its limit: 429 with the headers saying nothing is left, and when
    env = gateway_env(
        issuer,
        infra.redis_url,
        {a: p.addr for a, p in services.items()},
        MPPO_GATEWAY_RATE_LIMIT="0.5/2",
    )
    tight = await start_gateway(env, tmp_path_factory.mktemp("tight-gateway"))
    try:
        seen = []
        for _ in range(3):
            async with http.get(tight.url + "/group", headers=user) as reply:
                seen.append((reply.status, dict(reply.headers)))
    finally:
        assert tight.stop() == 0, tight.log_text()
    assert [status for status, _ in seen] == [200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h in seen] == ["1", "0", "0"]
    assert [h["RateLimit-Remaining"] for _, h in seen] == ["1", "0", "0"]
    assert {h["X-RateLimit-Limit"] for _, h in seen} == {"2"}
    assert {h["RateLimit-Policy"] for _, h in seen} == {'"user";q=2;w=4'}
    assert seen[2][1]["RateLimit"].startswith('"user";r=0;t=')
    refused = seen[2][1]
    assert int(refused["X-RateLimit-Reset"]) >= int(refused["Retry-After"]) >= 1
    assert int(refused["X-RateLimit-Reset"]) <= 4  # the whole bucket refills in 4 s


async def test_an_oversize_page_size_is_coerced_on_every_list(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    """AIP-158: a page_size above the maximum gets the maximum, on every list, over REST."""
    user = _user()
    created = await _call(http, issuer, gateway.url + "/group", user, _group())
    group_id = created.body["group"]["groupId"]
    lists = {
        "/group": "groups",
        f"/group/{group_id}/history": "changes",
        f"/payments?group_id={group_id}": "payments",
        f"/notifications?group_id={group_id}": "notifications",
    }
    assert len(lists) == sum(
        1
        for b in CATALOG.bindings
        if b.verb == "GET" and "page_size" in b.method.input_type.fields_by_name
    )
    for path, items in lists.items():
        joiner = "&" if "?" in path else "?"
        # beyond int32 too: read as the largest, never "Value out of range"
        for size in ("100000", "2147483647", "99999999999999", "9" * 30):
            url = f"{gateway.url}{path}{joiner}page_size={size}"
            async with http.get(url, headers=issuer.auth(user)) as reply:
                assert reply.status == 200, (path, size, await reply.text())
                body = await reply.json()
            assert isinstance(body[items], list), (path, body)
            assert "nextPageToken" in body, (path, body)


def _bad_request(body: Json) -> list[Json]:
    """The field violations of a 400's google.rpc.Status."""
    assert set(body) == {"code", "message", "details"}, body
    found: list[Json] = []
    for detail in body["details"]:
        if detail["@type"] == "type.googleapis.com/google.rpc.BadRequest":
            found += detail["fieldViolations"]
    return found


async def test_type_errors_read_as_plain_words_with_json_paths(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    """What the client sent wrong is named as it wrote it (indexes included), in words, with
    a reason; never the parser's own text."""
    user = _user()
    cases: list[tuple[Json, str, str, str]] = [
        (
            {"items": [{**_group()["items"][0], "quantity": "two"}]},
            "items[0].quantity",
            "must be an integer",
            "INVALID_TYPE",
        ),
        ({"host": {"displayName": 5}}, "host.displayName", "must be a string", "INVALID_TYPE"),
        (
            {"deadline": "not-a-date"},
            "deadline",
            "must be an RFC 3339 timestamp, e.g. 2030-01-15T18:00:00Z",
            "INVALID_TIMESTAMP",
        ),
        ({"colour": "red"}, "colour", "unknown field", "UNKNOWN_FIELD"),
    ]
    for change, field, description, reason in cases:
        reply = await _call(http, issuer, gateway.url + "/group", user, {**_group(), **change})
        assert reply.status == 400, reply.body
        violations = _bad_request(reply.body)
        assert violations == [{"field": field, "description": description, "reason": reason}]
        for leak in ("invalid literal", "bytes-like", "strptime", "Available Fields"):
            assert leak not in json.dumps(reply.body), reply.body
    # a violation the service found has a reason too
    reply = await _call(http, issuer, gateway.url + "/group", user, {**_group(), "items": []})
    assert reply.status == 400, reply.body
    assert all(v["reason"] for v in _bad_request(reply.body)), reply.body


async def test_a_body_contradicting_the_path_is_refused_and_service_only_routes_hidden(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    user = _user()
    created = await _call(http, issuer, gateway.url + "/group", user, _group())
    group_id = created.body["group"]["groupId"]
    other = str(uuid.uuid4())
    url = f"{gateway.url}/group/{group_id}/members"
    member = {"displayName": "Bo", "email": "bo@example.com"}
    refused = await _call(http, issuer, url, user, {"groupId": other, "members": [member]})
    assert refused.status == 400, refused.body
    assert [v["field"] for v in _bad_request(refused.body)] == ["groupId"]
    assert [v["reason"] for v in _bad_request(refused.body)] == ["PATH_MISMATCH"]
    same = await _call(http, issuer, url, user, {"groupId": group_id, "members": [member]})
    assert same.status == 200, same.body
    # CreatePaymentIntent is for the group service only: not there for a user at all
    intent = {"groupId": group_id, "memberId": str(uuid.uuid4()), "attempt": 2}
    hidden = await _call(http, issuer, gateway.url + "/payments/intents", user, intent)
    assert hidden.status == 404, hidden.body
