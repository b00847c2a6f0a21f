"""What a typed SDK needs from /openapi.json (issue 14 part 4): short operation ids and tags,
the Idempotency-Key header where a service honours it, RateLimit and replay headers, a valid
example for every request body; Envoy serving the very same document; and field violations
named as the REST client wrote them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from google.rpc import code_pb2, error_details_pb2
from openapi_spec_validator import validate

from gateway.descriptors import IDEMPOTENT_METHODS, Catalog
from gateway.errors import make_status, rename_fields
from gateway.field_names import RestFieldNames, json_path
from gateway.openapi import (
    ENVOY_YAML,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    INTEGER_RANGES,
    envoy_with_document,
    main,
    public_document,
    serialize,
)
from gateway.openapi_examples import EXAMPLES
from gateway.ratelimit import RATELIMIT_HEADERS, Decision, Limit
from gateway.routing import Router

CATALOG = Catalog.load()
DOC = public_document(CATALOG)
OPS = {(verb.upper(), path): op for path, item in DOC["paths"].items() for verb, op in item.items()}


def _binding(verb: str, template: str) -> Any:
    return next(b for b in CATALOG.bindings if (b.verb, b.template) == (verb, template))


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOC)  # raises, naming the offending part, if it is not


def test_operation_ids_are_short_and_every_operation_is_tagged_by_service() -> None:
    by_grpc = {op["x-grpc-method"]: op for op in OPS.values()}
    assert by_grpc["/mppo.group.v1.GroupService/CreateGroup"]["operationId"] == "createGroup"
    assert by_grpc["/mppo.payment.v1.PaymentService/GetPayment"]["operationId"] == "getPayment"
    assert by_grpc["/mppo.order.v1.OrderService/GetOrderByGroup"]["operationId"] == (
        "getOrderByGroup"
    )
    for op in OPS.values():
        assert op["operationId"][0].islower(), op
        assert op["operationId"].isalnum(), op
    tags = {op["tags"][0] for op in OPS.values()}
    assert tags == {"groups", "payments", "orders", "notifications"}
    assert {t["name"] for t in DOC["tags"]} == tags
    assert OPS[("GET", "/notifications")]["tags"] == ["notifications"]


def test_idempotency_key_is_declared_exactly_where_a_service_honours_it() -> None:
    for (verb, path), op in OPS.items():
        refs = [p.get("$ref") for p in op["parameters"]]
        declared = f"#/components/parameters/{IDEMPOTENCY_KEY}" in refs
        honoured = op["x-grpc-method"].strip("/").replace("/", ".") in IDEMPOTENT_METHODS
        assert declared == honoured, (verb, path)
        ok_headers = op["responses"]["200"]["headers"]
        assert (IDEMPOTENT_REPLAYED in ok_headers) == honoured, (verb, path)
    # every POST a user may send that changes a group honours it
    group_posts = [op for (verb, _), op in OPS.items() if verb == "POST" and "groups" in op["tags"]]
    assert len(group_posts) == 7
    param = DOC["components"]["parameters"][IDEMPOTENCY_KEY]
    assert (param["in"], param["required"]) == ("header", False)
    for status in ("429", "503"):
        assert "Retry-After" in OPS[("POST", "/group")]["responses"][status]["headers"]


def _closed(node: Any) -> Any:
    """Schemas with unknown properties refused (as the gateway's JSON parser refuses them)."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    root = {"components": _closed(copy.deepcopy(DOC["components"])), **_closed(schema)}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def test_every_request_body_has_an_example_valid_against_its_schema() -> None:
    bodies = [(key, op["requestBody"]) for key, op in OPS.items() if "requestBody" in op]
    assert len(bodies) >= 10
    for key, body in bodies:
        ((media_type, media),) = body["content"].items()
        assert "example" in media, key
        if media_type == "application/json":
            _validator(media["schema"]).validate(media["example"])
    assert set(EXAMPLES) <= set(DOC["components"]["schemas"]), "an example for no body"
    # the validation has teeth: a misspelt field, a number for an int64, an unknown enum value
    create = OPS[("POST", "/group")]["requestBody"]["content"]["application/json"]
    validator = _validator(create["schema"])
    for broken in (
        {**create["example"], "merchant_idd": "x"},
        {**create["example"], "taxMinor": 101},
        {**create["example"], "splitMode": "SPLIT_MODE_NONE"},
    ):
        assert not validator.is_valid(broken), broken


def _envoy_openapi(text: str) -> str:
    config = yaml.safe_load(text)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (route,) = [r for r in routes if r["match"].get("path") == "/openapi.json"]
    body: str = route["direct_response"]["body"]["inline_string"]
    return body


def test_envoy_serves_the_document_the_gateway_generates(tmp_path: Path) -> None:
    served = _envoy_openapi(ENVOY_YAML.read_text(encoding="utf-8"))
    assert served == serialize(DOC), "stale: run python -m gateway.openapi"
    assert json.loads(served)["paths"].keys() == DOC["paths"].keys()
    assert main(["--check", str(ENVOY_YAML)]) == 0
    # --check notices a stale copy, and a write brings it up to date
    stale = tmp_path / "envoy.yaml"
    stale.write_text(envoy_with_document(ENVOY_YAML.read_text(encoding="utf-8"), {"x": "it's"}))
    assert _envoy_openapi(stale.read_text(encoding="utf-8")) == '{"x": "it\'s"}'
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == ENVOY_YAML.read_text(encoding="utf-8")


# ---------------------------------------------------------------- field names


@pytest.mark.parametrize(
    ("proto", "rest"),
    [
        ("host.display_name", "host.displayName"),
        ("members[1].display_name", "members[1].displayName"),
        ("members[0].share_spec.amount_minor", "members[0].shareSpec.amountMinor"),
        ("items[12].unit_price_minor", "items[12].unitPriceMinor"),
        ("merchant_id", "merchantId"),
        ("deadline", "deadline"),
        ("host.displayName", "host.displayName"),  # already JSON (the transcoder's own errors)
        ("Idempotency-Key", "Idempotency-Key"),  # not a field: as it is
        ("host.nickname.x", "host.nickname.x"),  # unknown from there on: the rest as it is
        ("", ""),
    ],
)
def test_proto_paths_become_json_paths(proto: str, rest: str) -> None:
    descriptor = CATALOG.pool.FindMessageTypeByName("mppo.group.v1.CreateGroupRequest")
    assert json_path(descriptor, proto) == rest


def test_path_and_query_values_keep_the_name_the_client_used() -> None:
    add = RestFieldNames(_binding("POST", "/group/{group_id}/members"), ["group_id"], [])
    assert add("group_id") == "group_id"
    assert add("members[1].display_name") == "members[1].displayName"
    listing = _binding("GET", "/group")
    assert RestFieldNames(listing, [], ["page_token"])("page_token") == "page_token"
    assert RestFieldNames(listing, [], ["pageToken"])("page_token") == "pageToken"
    assert RestFieldNames(listing, [], [])("page_size") == "page_size"  # as OpenAPI names it


def test_violations_and_message_are_renamed_for_rest() -> None:
    status = make_status(
        code_pb2.INVALID_ARGUMENT,
        "invalid host.display_name: required (and 1 more)",
        field_violations=(("host.display_name", "required"), ("group_id", "not a uuid")),
        reason="INVALID_INPUT",
    )
    binding = _binding("POST", "/group")
    renamed = rename_fields(status, RestFieldNames(binding, [], []))
    assert renamed.message == "invalid host.displayName: required (and 1 more)"
    bad = error_details_pb2.BadRequest()
    (packed,) = [d for d in renamed.details if d.Is(bad.DESCRIPTOR)]
    packed.Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["host.displayName", "group_id"]
    assert len(renamed.details) == len(status.details)  # ErrorInfo kept
    assert status.message.startswith("invalid host.display_name")  # the original untouched


def test_ratelimit_headers_of_a_decision() -> None:
    decision = Decision(True, limit=40, remaining=39, reset=1, policy="user", window=2)
    assert decision.headers() == {
        # draft 03, as Envoy's local_ratelimit sends them
        "X-RateLimit-Limit": "40",
        "X-RateLimit-Remaining": "39",
        "X-RateLimit-Reset": "1",
        # the same, un-prefixed (draft-ietf-httpapi-ratelimit-headers 00-06)
        "RateLimit-Limit": "40",
        "RateLimit-Remaining": "39",
        "RateLimit-Reset": "1",
        # the current draft's structured fields
        "RateLimit-Policy": '"user";q=40;w=2',
        "RateLimit": '"user";r=39;t=1',
    }
    # failing open: nothing known of what is left, so no Remaining, Reset nor RateLimit
    assert Decision(True, limit=40, policy="ip", window=2).headers() == {
        "X-RateLimit-Limit": "40",
        "RateLimit-Limit": "40",
        "RateLimit-Policy": '"ip";q=40;w=2',
    }
    # a policy name is written as an RFC 8941 string, whatever it holds
    odd = Decision(True, limit=1, remaining=0, policy='a"b\\c\n')
    assert odd.headers()["RateLimit"] == '"a\\"b\\\\c";r=0'


@pytest.mark.parametrize(
    ("text", "window"), [("20/40", 2), ("100/200", 2), ("0.5/1", 2), ("3/10", 4), ("50/1", 1)]
)
def test_the_policy_window_is_the_seconds_an_empty_bucket_takes_to_fill(
    text: str, window: int
) -> None:
    assert Limit.parse(text).window == window


def test_every_response_declares_every_ratelimit_header() -> None:
    declared = DOC["components"]["headers"]
    assert set(RATELIMIT_HEADERS) <= set(declared)
    for name in RATELIMIT_HEADERS:
        if not name.startswith("X-"):  # Envoy's local_ratelimit cannot send these
            assert "Envoy edge sends only" in declared[name]["description"], name
    for op in OPS.values():
        for status, response in op["responses"].items():
            assert set(RATELIMIT_HEADERS) <= set(response["headers"]), (op["operationId"], status)


def test_integer_parameters_declare_the_range_the_services_hold_them_to() -> None:
    from group_svc.domain.split import BASIS_POINTS_TOTAL
    from group_svc.entrypoints.parsing import MAX_QUANTITY

    page_sizes = [
        p for op in OPS.values() for p in op["parameters"] if p.get("name") == "page_size"
    ]
    assert len(page_sizes) == 4  # groups, history, payments, notifications
    assert all(p["schema"]["minimum"] == 0 for p in page_sizes)  # negatives are refused
    assert all("maximum" not in p["schema"] for p in page_sizes)  # more is read as the max
    schemas = DOC["components"]["schemas"]
    quantity = schemas["mppo.common.v1.LineItem"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, MAX_QUANTITY)
    points = schemas["mppo.group.v1.ShareSpec"]["properties"]["basisPoints"]
    assert (points["minimum"], points["maximum"]) == (0, BASIS_POINTS_TOTAL)
    # every range named is of a field the document has
    fields = {
        f"{name}.{prop}"
        for name, schema in schemas.items()
        for prop in schema.get("properties", {})
    }
    for full_name in INTEGER_RANGES:
        message, _, field = full_name.rpartition(".")
        descriptor = CATALOG.pool.FindMessageTypeByName(message)
        assert f"{message}.{descriptor.fields_by_name[field].json_name}" in fields or (
            field == "page_size"
        ), full_name


def test_path_and_query_parameters_are_described_as_what_they_are() -> None:
    by_query = {p["name"]: p for p in OPS[("POST", "/payments/webhook")]["parameters"]}
    by_path = {p["name"]: p for p in OPS[("POST", "/payments/webhook/{provider}")]["parameters"]}
    assert by_query["provider"]["in"] == "query"
    assert by_path["provider"]["in"] == "path"
    for param in (by_query["provider"], by_path["provider"]):
        text = param["description"]
        assert "query parameter" in text
        assert "/payments/webhook/{provider}" in text
        assert "Provider name in the path" not in text
    # every path parameter says what it is, from the comment of the field it binds
    for op in OPS.values():
        for param in op["parameters"]:
            if param.get("in") == "path":
                assert param.get("description"), (op["operationId"], param["name"])


def test_router_and_document_agree_on_public_routes() -> None:
    public = {r.binding.grpc_path for r in Router(CATALOG.bindings).routes}
    assert {op["x-grpc-method"] for op in OPS.values()} == public
