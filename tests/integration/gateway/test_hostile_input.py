"""Hostile input through the real gateway against the four real services (docs/design.md §8:
bad input is a 4xx with a clear message, never a 5xx, never stored).

The property test walks the gateway's route table: for every public REST operation it sends
hostile values (control characters, huge strings, odd Unicode, wrong JSON types, deep nesting,
huge numbers, percent-encoding garbage) in its path parameters, query parameters and body
fields, starting from a valid body so that the rest of the request would be accepted. Then:
no reply is a 5xx; whatever carries a value the hostile-input rules refuse is a 4xx; the
services still report SERVING; and no group stored for the caller holds a refused value.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.descriptors import Catalog
from gateway.table import RestCase, rest_table
from mppo.devstack import Infra
from mppo.platform.validation import MAX_STRING, MAX_URL
from tests.integration.gateway.support import GatewayProcess, Issuer, gateway_env, start_gateway
from tests.support.services import ServiceProcess

CATALOG = Catalog.load()
OPERATIONS = [c for c in rest_table(CATALOG) if not c.internal]
USER = f"hostile-{uuid.uuid4().hex[:8]}"
# Characters no stored string may hold (tab, LF and CR are allowed in free text only).
REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _valid_group() -> dict[str, Any]:
    # within every provider's hold window (a deadline beyond it is refused, issue 14)
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
        "host": {"displayName": "Ann", "email": "ann@example.com"},
        "members": [{"displayName": "Bo", "email": "bo@example.com"}],
    }


# ---------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Raw:
    """JSON text put into the body as it is (deep nesting, numbers json.dumps cannot write)."""

    text: str


CONTROL = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"])
WEIRD = st.sampled_from(
    [
        "\u202e",  # right-to-left override
        "\u200b",  # zero width space
        "\ufeff",  # byte order mark
        "\u2028",  # line separator
        "\u0301",  # a lone combining accent
        "\uffff",  # a noncharacter
        "\U0010ffff",
        "\U0001f355",
        "𝕏",
        "ﷺ",
        "Ω",
    ]
)
GARBAGE = st.sampled_from(
    [
        "%00",
        "%",
        "%ff%fe",
        "../../etc/passwd",
        "' OR 1=1 --",
        "${jndi:ldap://x/a}",
        "\\",
        "null",
        "",
        " ",
        "-1",
        "9" * 30,
        "\ud800",  # an unpaired surrogate (sent as the JSON escape)
        "\U0001f355" * 300,
    ]
)
HUGE = st.sampled_from([MAX_STRING + 1, 1000, MAX_URL + 1, 70_000, 1_000_000]).map(
    lambda n: "x" * n
)
WITH_CONTROL = st.builds(
    lambda head, char, tail: head + char + tail, st.text(max_size=8), CONTROL, st.text(max_size=8)
)
ODD_BUT_FINE = st.one_of(
    st.lists(WEIRD, min_size=1, max_size=6).map("".join),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40),
)
HOSTILE_TEXT = st.one_of(
    WITH_CONTROL,
    HUGE,
    GARBAGE,
    ODD_BUT_FINE,
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
# In a URL: long, but not so long that the HTTP server refuses the request line itself (aiohttp
# reads at most 8190 bytes of URL, and a template may bind two values: 2 x 4000 stays below).
PATH_TEXT = st.one_of(
    WITH_CONTROL,
    st.sampled_from([MAX_STRING + 1, 1000, 4000]).map(lambda n: "x" * n),
    GARBAGE,
    ODD_BUT_FINE,
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
WRONG_TYPE = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
RAW_JSON = st.sampled_from(
    [
        Raw("[" * 2000 + "]" * 2000),
        Raw('{"a":' * 40 + "1" + "}" * 40),
        Raw("9" * 5000),
        Raw("1e999999"),
        Raw("-0"),
        Raw("NaN"),
        Raw('"\\u0000"'),
    ]
)
HOSTILE_VALUE = st.one_of(HOSTILE_TEXT, HOSTILE_TEXT, WRONG_TYPE, RAW_JSON)
RAW_BODY = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"\xff\xfe{}",
            b'{"merchantId": "caf\xe9"}',
            json.dumps(_valid_group()).encode("utf-16"),
            b"[" * 100_000,
            b"[]",
            b'"just a string"',
            b'{"a": 1',
            b"\x00" * 16,
        ]
    ),
)


def _field_paths(
    descriptor: Descriptor, prefix: tuple[str | int, ...] = (), depth: int = 0
) -> list[tuple[str | int, ...]]:
    """JSON-name paths into a request message (repeated fields at index 0), two levels deep."""
    paths: list[tuple[str | int, ...]] = []
    for fld in descriptor.fields:
        here = (*prefix, fld.json_name, 0) if fld.is_repeated else (*prefix, fld.json_name)
        paths.append((*prefix, fld.json_name))
        if fld.is_repeated:
            paths.append(here)
        if fld.type == FieldDescriptor.TYPE_MESSAGE and depth < 2:
            assert fld.message_type is not None
            if not fld.message_type.full_name.startswith("google.protobuf."):
                paths.extend(_field_paths(fld.message_type, here, depth + 1))
    return paths


def _put(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set `value` at `path`, creating what is missing; a path that crosses a value of the
    other kind (an index into an object, a name into a list) puts nothing."""
    node: Any = body
    for step, following in itertools.pairwise(path):
        if isinstance(step, int) != isinstance(node, list):
            return
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append(empty)
            if not isinstance(node[step], (dict, list)):
                node[step] = empty
        elif not isinstance(node.get(step), (dict, list)):
            node[step] = empty
        node = node[step]
    last = path[-1]
    if isinstance(last, int) != isinstance(node, list):
        return
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def _dumps(body: Any) -> bytes:
    """JSON with every Raw value spliced in as written."""
    raws: list[str] = []

    def default(value: Any) -> str:
        raws.append(value.text)
        return f"__raw_{len(raws) - 1}__"

    text = json.dumps(body, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"__raw_{i}__"', raw)
    return text.encode("utf-8", "surrogatepass")


def _refused(node: Any) -> bool:
    """Whether the hostile-input rules must refuse a body holding `node`, wherever it is."""
    if isinstance(node, Raw):
        return "[[[[" in node.text or "\\u0000" in node.text
    if isinstance(node, str):
        return REFUSED.search(node) is not None or len(node) > MAX_URL
    if isinstance(node, dict):
        return any(_refused(k) or _refused(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_refused(v) for v in node)
    return False


@dataclass
class Attempt:
    """One hostile request and whether the rules must refuse it."""

    case: RestCase
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    must_refuse: bool = False
    note: str = ""


def _quote(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    case = draw(st.sampled_from(OPERATIONS))
    binding = case.binding
    descriptor = binding.method.input_type
    must_refuse = False
    notes: list[str] = []
    # Path parameters: a well-formed id, or garbage.
    path = binding.template
    for variable in re.findall(r"\{([^}=]+)[^}]*\}", binding.template):
        if draw(st.booleans()):
            value = "stripe" if variable == "provider" else str(uuid.uuid4())
        else:
            value = draw(PATH_TEXT) or "x"
            if ANY_CONTROL.search(value):
                must_refuse = True
            notes.append(f"{variable}={value[:40]!r}")
        path = re.sub(r"\{" + re.escape(variable) + r"[^}]*\}", _quote(value), path, count=1)
    query: list[tuple[str, str]] = []
    body = b""
    if not binding.body:
        bound = set(re.findall(r"\{([^}=.]+)", binding.template))
        names = [f.json_name for f in descriptor.fields if f.name not in bound]
        add_query: bool = draw(st.booleans())
        if names and add_query:
            name = draw(st.sampled_from(names))
            value = draw(PATH_TEXT)
            query.append((name, value))
            must_refuse = must_refuse or ANY_CONTROL.search(value) is not None
            notes.append(f"?{name}={value[:40]!r}")
    elif binding.body == "body":  # a webhook: raw bytes, signature checked by the service
        body = draw(RAW_BODY)
    elif draw(st.integers(0, 9)) == 0:
        body = draw(RAW_BODY)
        must_refuse = True
        notes.append(f"raw body {body[:40]!r}")
    else:
        doc: dict[str, Any] = _valid_group() if case.grpc_path.endswith("/CreateGroup") else {}
        paths = _field_paths(descriptor)
        for _ in range(draw(st.integers(1, 2))):
            where = draw(st.sampled_from(paths))
            value = draw(HOSTILE_VALUE)
            _put(doc, where, value)
            shown = value.text[:40] if isinstance(value, Raw) else repr(value)[:40]
            notes.append(f"{'.'.join(map(str, where))}={shown}")
        body = _dumps(doc)
        must_refuse = must_refuse or _refused(doc)
    return Attempt(case, path, query, body, must_refuse, "; ".join(notes))


# ---------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    infra: Infra,
    services: dict[str, ServiceProcess],
    issuer: Issuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[GatewayProcess]:
    env = gateway_env(
        issuer,
        infra.redis_url,
        {a: p.addr for a, p in services.items()},
        MPPO_GATEWAY_RATE_LIMIT="1000/2000",
        MPPO_GATEWAY_IP_RATE_LIMIT="1000/2000",
    )
    gw = await start_gateway(env, tmp_path_factory.mktemp("gateway-logs"))
    yield gw
    assert gw.stop() == 0, gw.log_text()
    assert "Traceback" not in gw.log_text(), gw.log_text()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _send(
    http: aiohttp.ClientSession, gateway: GatewayProcess, issuer: Issuer, attempt: Attempt
) -> tuple[int, bytes, str]:
    url = URL(gateway.url + attempt.path, encoded=True)
    if attempt.query:
        url = url.with_query(attempt.query)
    headers = {"Content-Type": "application/json"}
    if not attempt.case.webhook:
        headers.update(issuer.auth(USER))
    async with http.request(attempt.case.verb, url, headers=headers, data=attempt.body) as reply:
        return reply.status, await reply.read(), reply.headers.get("Content-Type", "")


# ---------------------------------------------------------------------------- tests


async def test_what_the_issue_found_is_400_now(
    gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    """The requests of issue 10 §3, each once 500, 503 or 200-and-stored."""
    headers = issuer.auth(USER)
    for path in ("/group/%00", "/payments/%00", "/order/by-group/%00"):
        async with http.get(URL(gateway.url + path, encoded=True), headers=headers) as reply:
            assert reply.status == 400, (path, await reply.text())
    nul_name = _valid_group()
    nul_name["host"]["displayName"] = "Ann\u0000"
    nul_sku = _valid_group()
    nul_sku["items"][0]["sku"] = "p\u00001"
    big_name = _valid_group()
    big_name["host"]["displayName"] = "A" * 1_000_000
    deep = _dumps({**_valid_group(), "members": Raw("[" * 2000 + "]" * 2000)})
    weird = _valid_group()  # odd but harmless text is kept as sent
    weird["host"]["displayName"] = "Zoë \u202e\U0001f355 山田\u200b"
    async with http.post(gateway.url + "/group", json=weird, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        created = await reply.json()
    assert created["group"]["members"][0]["displayName"] == weird["host"]["displayName"]
    for body, field_name in (
        (_dumps(nul_name), "host.displayName"),
        (_dumps(nul_sku), "items[0].sku"),
        (_dumps(big_name), "host.displayName"),
        (deep, "body"),
    ):
        async with http.post(gateway.url + "/group", data=body, headers=headers) as reply:
            assert reply.status == 400, await reply.text()
            status = await reply.json()
        violations = [
            v["field"]
            for d in status["details"]
            if d["@type"].endswith("BadRequest")
            for v in d["fieldViolations"]
        ]
        assert violations == [field_name], status


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(attempt=attempts())
async def test_hostile_requests_never_get_a_5xx(
    attempt: Attempt, gateway: GatewayProcess, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    status, payload, content_type = await _send(http, gateway, issuer, attempt)
    event(f"HTTP {status}")  # --hypothesis-show-statistics: how far the attempts got
    where = f"{attempt.case.verb} {attempt.case.template} [{attempt.note}]"
    assert status < 500, f"{where}: {status} {payload[:300]!r}"
    if attempt.must_refuse:
        assert 400 <= status < 500, f"{where}: accepted ({status}) {payload[:300]!r}"
    if content_type.startswith("application/json") and status >= 400:
        error = json.loads(payload)
        assert isinstance(error["code"], int), error
        assert error["code"] > 0, error
        assert error["message"], error


async def test_services_stay_healthy_and_nothing_hostile_was_stored(
    gateway: GatewayProcess,
    services: dict[str, ServiceProcess],
    issuer: Issuer,
    http: aiohttp.ClientSession,
) -> None:
    for proc in services.values():
        assert proc.process.poll() is None, f"{proc.name} died:\n{proc.log_text()}"
        async with grpc.aio.insecure_channel(proc.addr) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, proc.name
    async with http.get(gateway.url + "/healthz") as reply:
        assert reply.status == 200
    groups: list[dict[str, Any]] = []
    token = ""
    while True:
        query = {"pageSize": "100", **({"pageToken": token} if token else {})}
        async with http.get(
            gateway.url + "/group", params=query, headers=issuer.auth(USER)
        ) as reply:
            assert reply.status == 200, await reply.text()
            page = await reply.json()
        groups.extend(page["groups"])
        token = page["nextPageToken"]
        if not token:
            break
    assert groups, "no CreateGroup attempt was accepted: the test proves nothing about storage"

    def strings(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [s for v in node.values() for s in strings(v)]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return []

    for group in groups:
        for text in strings(group):
            assert not REFUSED.search(text), f"stored {text[:60]!r} in {group['groupId']}"
            assert len(text) <= MAX_URL, f"stored {len(text)} characters in {group['groupId']}"
