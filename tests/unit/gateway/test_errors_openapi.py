"""gRPC status -> HTTP mapping and JSON bodies; the OpenAPI document from the annotations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from openapi_spec_validator import validate

from gateway.descriptors import Catalog
from gateway.errors import http_status, make_status, status_json, with_error_info
from gateway.openapi import build_openapi
from gateway.routing import Router
from gateway.table import rest_table


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (code_pb2.OK, 200),
        (code_pb2.CANCELLED, 499),
        (code_pb2.INVALID_ARGUMENT, 400),
        (code_pb2.FAILED_PRECONDITION, 400),
        (code_pb2.OUT_OF_RANGE, 400),
        (code_pb2.UNAUTHENTICATED, 401),
        (code_pb2.PERMISSION_DENIED, 403),
        (code_pb2.NOT_FOUND, 404),
        (code_pb2.ALREADY_EXISTS, 409),
        (code_pb2.ABORTED, 409),
        (code_pb2.RESOURCE_EXHAUSTED, 429),
        (code_pb2.UNKNOWN, 500),
        (code_pb2.INTERNAL, 500),
        (code_pb2.DATA_LOSS, 500),
        (code_pb2.UNIMPLEMENTED, 501),
        (code_pb2.UNAVAILABLE, 503),
        (code_pb2.DEADLINE_EXCEEDED, 504),
    ],
)
def test_grpc_code_to_http(code: int, http: int) -> None:
    assert http_status(code) == http


def test_status_body_has_typed_details() -> None:
    status = make_status(
        code_pb2.INVALID_ARGUMENT,
        "bad",
        field_violations=[("items[0].quantity", "must be positive")],
        reason="INVALID",
    )
    body = json.loads(status_json(status))
    assert body["code"] == 3
    assert body["message"] == "bad"
    types = [d["@type"] for d in body["details"]]
    assert types == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
    ]
    assert body["details"][1]["fieldViolations"][0]["field"] == "items[0].quantity"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


@pytest.mark.parametrize("which", ["mppo", "library"])
def test_openapi_covers_public_bindings_and_resolves(
    which: str, mppo: Catalog, library: Catalog
) -> None:
    catalog = mppo if which == "mppo" else library
    public = [r.binding for r in Router(catalog.bindings).routes]
    doc = build_openapi(catalog, public)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # valid OpenAPI 3.1, for either catalog
    ops = {
        (verb.upper(), path): op for path, item in doc["paths"].items() for verb, op in item.items()
    }
    methods = {op["x-grpc-method"] for op in ops.values()}
    expected = {c.grpc_path for c in rest_table(catalog) if not c.internal}
    assert methods == expected
    assert len({op["operationId"] for op in ops.values()}) == len(ops)
    for ref in _refs(doc):
        section, _, name = ref.removeprefix("#/components/").partition("/")
        assert name in doc["components"][section], ref
    for op in ops.values():  # every response says how much of the rate limit is left
        for status, response in op["responses"].items():
            assert {
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
                "RateLimit",
            } <= set(response["headers"]), (op["operationId"], status)
    if which == "mppo":
        assert ("POST", "/order") not in ops, "internal route leaked into OpenAPI"
        webhook = ops[("POST", "/payments/webhook/{provider}")]
        assert webhook["security"] == []
        assert "application/octet-stream" in webhook["requestBody"]["content"]
        create = ops[("POST", "/group")]
        assert create["summary"].startswith("Creates a group order")
        schemas = doc["components"]["schemas"]
        for op in ops.values():
            for status in ("400", "401", "403", "404", "409", "429", "503"):
                body = op["responses"][status]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/google.rpc.Status"}
        # int64 is a string in proto3 JSON; enums are shared, their values described
        amount = schemas["mppo.common.v1.Money"]["properties"]["amountMinor"]
        assert (amount["type"], amount["format"]) == ("string", "int64")
        status = schemas["mppo.group.v1.GroupStatus"]
        assert "GROUP_STATUS_OPEN" in status["enum"]
        assert "- `GROUP_STATUS_OPEN`: " in status["description"]
        group = schemas["mppo.group.v1.GroupOrder"]
        assert (
            group["properties"]["status"]["$ref"]
            == "#/components/schemas/mppo.group.v1.GroupStatus"
        )
        # response-only messages list what the gateway always prints
        assert {"groupId", "status", "members", "version"} <= set(group["required"])
        listed = schemas["mppo.payment.v1.ListPaymentsResponse"]
        assert set(listed["required"]) == {"payments", "nextPageToken"}
        # fields with presence the services always set are required too (issue 14 part 4)
        assert {"total", "deadline", "createTime", "updateTime", "amountSecured"} <= set(
            group["required"]
        )
        member = schemas["mppo.group.v1.Member"]
        assert {"share", "amountPaid"} <= set(member["required"])
        payment = schemas["mppo.payment.v1.Payment"]
        assert {"amount", "amountCaptured", "amountRefunded"} <= set(payment["required"])
        # every answer carrying these reads a row whose times are NOT NULL
        assert {"createTime", "updateTime"} <= set(payment["required"])
        assert "authorizationExpireTime" not in payment["required"]  # only once authorized
        order = schemas["mppo.order.v1.Order"]
        assert {"total", "createTime", "updateTime"} <= set(order["required"])
        assert "amount" in schemas["mppo.order.v1.OrderShare"]["required"]
        assert "stepTime" in schemas["mppo.order.v1.OrderStep"]["required"]
        assert "changeTime" in schemas["mppo.group.v1.StatusChange"]["required"]
        notification = schemas["mppo.notification.v1.Notification"]
        assert "createTime" in notification["required"]
        assert "sentTime" not in notification["required"]  # only once sent
        assert "graceDeadline" not in group["required"]  # only under HOST_PAYS_REMAINING
        assert not {"joinedAt", "paidAt"} & set(member["required"])
        assert set(schemas["mppo.common.v1.Money"]["required"]) == {"amountMinor", "currencyCode"}
        # requests list what the service refuses them without
        create = schemas["mppo.group.v1.CreateGroupRequest"]
        assert set(create["required"]) == {
            "merchantId",
            "currencyCode",
            "items",
            "splitMode",
            "fallbackPolicy",
            "host",
        }  # the deadline is optional: 24 hours after creation by default
        assert "DEADLINE_BEYOND_HOLD" in create["properties"]["deadline"]["description"]
        assert schemas["mppo.group.v1.JoinGroupRequest"]["required"] == ["inviteToken"]
        # fields the path binds are not in the body (AddMembers, Join, Open, ...)
        for name in ("AddMembers", "JoinGroup", "OpenGroup", "CancelGroup", "UpdateSplit"):
            assert "groupId" not in schemas[f"mppo.group.v1.{name}Request"]["properties"], name
        assert "memberId" not in schemas["mppo.group.v1.RetryPaymentRequest"]["properties"]
        # the group a list is of is a required query parameter
        for path in ("/payments", "/notifications"):
            params = {p["name"]: p for p in ops[("GET", path)]["parameters"] if "name" in p}
            assert params["group_id"]["required"] is True, path
            assert params["page_size"]["required"] is False, path
        # service-only methods are neither in the document nor reachable
        assert ("POST", "/payments/intents") not in ops
        assert "mppo.payment.v1.CreatePaymentIntentRequest" not in schemas
        # each webhook route has its own meaningful id
        assert ops[("POST", "/payments/webhook")]["operationId"] == "handleWebhook"
        assert ops[("POST", "/payments/webhook/{provider}")]["operationId"] == (
            "handleWebhookByProvider"
        )
        # errors: code, message and details always; details typed by their @type
        status_schema = schemas["google.rpc.Status"]
        assert set(status_schema["required"]) == {"code", "message", "details"}
        items = status_schema["properties"]["details"]["items"]
        mapping = items["discriminator"]["mapping"]
        assert items["discriminator"]["propertyName"] == "@type"
        assert set(mapping) == {
            f"type.googleapis.com/google.rpc.{name}"
            for name in ("BadRequest", "ErrorInfo", "PreconditionFailure", "RetryInfo")
        }
        assert [o["$ref"] for o in items["oneOf"]] == list(mapping.values())
        bad = schemas["google.rpc.BadRequest"]
        assert set(bad["required"]) == {"@type", "fieldViolations"}
        violation = schemas["google.rpc.BadRequest.FieldViolation"]
        assert set(violation["required"]) == {"field", "description", "reason"}
    else:
        search = ops[("GET", "/v1/shelves/{shelf}/books:search")]
        names = {p["name"] for p in search["parameters"]}
        assert {"shelf", "words", "filter.genres", "filter.max_price_minor", "after"} <= names
        book = doc["components"]["schemas"]["test.library.v1.Book"]
        assert book["description"] == "A book."
        assert book["properties"]["priceMinor"]["type"] == "string"
        assert book["properties"]["priceMinor"]["format"] == "int64"
        assert book["properties"]["published"]["format"] == "date-time"
        update = ops[("PATCH", "/v1/{book.name}")]
        assert update["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/test.library.v1.Book"
        }


def test_an_error_echoing_hostile_text_can_always_be_written() -> None:
    # a JSON parser naming the value it refused: a lone surrogate, and a lot of it
    status = make_status(
        code_pb2.INVALID_ARGUMENT,
        "bad value \ud800" + "x" * 5000,
        field_violations=(("items[0].sku\ud800", "refused \udfff"),),
    )
    body = json.loads(status_json(status))
    assert body["message"].startswith("bad value \\ud800")
    assert len(body["message"]) <= 500
    assert "\\udfff" in json.dumps(body["details"])


def _infos(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]


def test_an_error_without_error_info_gets_one() -> None:
    # a service's status with no detail at all: the reason asked for, with metadata
    bare = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="down")
    body = json.loads(status_json(with_error_info(bare, "SERVICE_UNAVAILABLE", {"service": "x"})))
    assert _infos(body) == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "SERVICE_UNAVAILABLE",
            "domain": "mppo.dev",
            "metadata": {"service": "x"},
        }
    ]
    assert not bare.details, "the status given is not changed"
    # no reason asked for: the code's name, never an empty reason
    (info,) = _infos(json.loads(status_json(with_error_info(bare))))
    assert info["reason"] == "UNAVAILABLE"
    # other details are kept, the ErrorInfo comes after them
    retry = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="later")
    retry.details.add().Pack(error_details_pb2.RetryInfo())
    types = [d["@type"] for d in json.loads(status_json(with_error_info(retry, "R")))["details"]]
    assert types == [
        "type.googleapis.com/google.rpc.RetryInfo",
        "type.googleapis.com/google.rpc.ErrorInfo",
    ]


def test_a_service_error_info_is_kept_and_an_empty_reason_filled() -> None:
    own = make_status(code_pb2.NOT_FOUND, "no such order", reason="ORDER_NOT_FOUND")
    (info,) = _infos(json.loads(status_json(with_error_info(own, "NO_ROUTE"))))
    assert info["reason"] == "ORDER_NOT_FOUND"
    empty = status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone")
    empty.details.add().Pack(error_details_pb2.ErrorInfo(metadata={"k": "v"}))
    (info,) = _infos(json.loads(status_json(with_error_info(empty, "GONE"))))
    assert (info["reason"], info["domain"], info["metadata"]) == ("GONE", "mppo.dev", {"k": "v"})


def test_an_undecodable_detail_is_dropped_alone() -> None:
    status = with_error_info(status_pb2.Status(code=code_pb2.INTERNAL, message="x"), "BOOM")
    status.details.add(type_url="type.googleapis.com/acme.Unknown", value=b"\x08\x01")
    body = json.loads(status_json(status))
    assert [d["@type"] for d in body["details"]] == ["type.googleapis.com/google.rpc.ErrorInfo"]
    assert _infos(body)[0]["reason"] == "BOOM"
