"""`/openapi.json`: an OpenAPI 3.1 document generated from the same bindings the router serves.

Schemas follow the proto3 JSON mapping (camelCase names, 64-bit integers as `type: string`
with `format: int64`, enums by name, well-known types in their JSON form); descriptions are the
proto comments. Typed-SDK friendly: each proto enum is one shared component whose description
lists every value's comment; a message that only ever appears in responses lists as `required`
the fields the gateway always prints (those without presence, the resource a response
carries, `resource_field`, and the message fields the services always set, `ALWAYS_SET`); a
request message lists the fields its service refuses it without (`REQUIRED_REQUEST`, also
making such a query parameter required), and a request body leaves out the fields its path
binds. Every operation declares its error statuses (400, 401, 403, 404, 409, 429, 503) as
google.rpc.Status, whose `code`, `message` and `details` are required and whose details are
one of the error detail types the edge sends (`DETAIL_SCHEMAS`, told apart by `@type`).
Operations have short camelCase ids (`createGroup`, `getPayment`; another binding of the same
RPC adds what its path binds: `handleWebhookByProvider`) and one tag per service (`groups`,
`payments`, ...); every request body has an example (gateway/openapi_examples.py). Operations whose
service honours an idempotency key (descriptors.IDEMPOTENT_METHODS) declare the
`Idempotency-Key` header, and their 200 the `Idempotent-Replayed` header; every response
declares the RateLimit headers (X-RateLimit-Limit/-Remaining/-Reset, RateLimit-Limit/
-Remaining/-Reset, RateLimit-Policy and RateLimit; gateway.ratelimit) and X-Request-Id.

Envoy serves the same bytes from a direct response in gateway/envoy.yaml: `python -m
gateway.openapi` writes the document there, `--check` fails when it is stale (a unit test
compares it with what the gateway generates).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.descriptors import Catalog, HttpBinding
from gateway.openapi_examples import EXAMPLES, WEBHOOK_EXAMPLE
from gateway.ratelimit import (
    IETF_LIMIT_HEADER,
    IETF_REMAINING_HEADER,
    IETF_RESET_HEADER,
    LIMIT_HEADER,
    POLICY_HEADER,
    RATELIMIT_HEADERS,
    REMAINING_HEADER,
    RESET_HEADER,
    STATE_HEADER,
)
from gateway.routing import Router
from gateway.transcode import HTTP_BODY

Json = dict[str, Any]

_SCALARS: dict[int, Json] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WKT: dict[str, Json] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "integer", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}
_TYPE_URL = "type.googleapis.com/"


def _detail(name: str, description: str, properties: Json, required: list[str]) -> Json:
    """A google.rpc error detail as sent in `details` (proto3 JSON of an Any: `@type` first)."""
    return {
        "type": "object",
        "description": description,
        "properties": {"@type": {"type": "string", "enum": [_TYPE_URL + name]}, **properties},
        "required": ["@type", *required],
    }


#: the error details the gateway and the services send (gateway/errors.py, gateway/app.py,
#: mppo/platform/rpc_status.py), by full name; `details` items are one of them
DETAIL_SCHEMAS: dict[str, Json] = {
    "google.rpc.BadRequest": _detail(
        "google.rpc.BadRequest",
        "The fields of the request that are wrong (INVALID_ARGUMENT).",
        {
            "fieldViolations": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/google.rpc.BadRequest.FieldViolation"},
            }
        },
        ["fieldViolations"],
    ),
    "google.rpc.BadRequest.FieldViolation": {
        "type": "object",
        "description": "One bad field.",
        "properties": {
            "field": {
                "type": "string",
                "description": "The field as the client named it: JSON names with indexes for"
                " a body (`items[0].quantity`), the parameter's name for a path or query value.",
            },
            "description": {"type": "string", "description": "What is wrong, for a human."},
            "reason": {
                "type": "string",
                "description": "What is wrong, for a program (UPPER_SNAKE_CASE, e.g."
                " `INVALID_TYPE`, `UNKNOWN_FIELD`, `INVALID_INPUT`).",
            },
        },
        "required": ["field", "description", "reason"],
    },
    "google.rpc.ErrorInfo": _detail(
        "google.rpc.ErrorInfo",
        "Why the call failed, as a stable machine-readable reason.",
        {
            "reason": {"type": "string", "description": "UPPER_SNAKE_CASE, e.g. NOT_FOUND."},
            "domain": {"type": "string", "description": "`mppo.dev`."},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        ["reason", "domain", "metadata"],
    ),
    "google.rpc.PreconditionFailure": _detail(
        "google.rpc.PreconditionFailure",
        "What state stands in the way (FAILED_PRECONDITION, ABORTED).",
        {
            "violations": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/google.rpc.PreconditionFailure.Violation"},
            }
        },
        ["violations"],
    ),
    "google.rpc.PreconditionFailure.Violation": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "subject": {"type": "string"},
            "description": {"type": "string"},
        },
        "required": ["type", "subject", "description"],
    },
    "google.rpc.RetryInfo": _detail(
        "google.rpc.RetryInfo",
        "When to try again (UNAVAILABLE, RESOURCE_EXHAUSTED).",
        {"retryDelay": dict(_WKT["google.protobuf.Duration"])},
        [],
    ),
}
_DETAIL_TYPES = [name for name in DETAIL_SCHEMAS if not name.endswith("Violation")]
STATUS_SCHEMA: Json = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC status the call ended with.",
    "properties": {
        "code": {"type": "integer", "description": "google.rpc.Code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in _DETAIL_TYPES],
                "discriminator": {
                    "propertyName": "@type",
                    "mapping": {
                        _TYPE_URL + name: f"#/components/schemas/{name}" for name in _DETAIL_TYPES
                    },
                },
            },
        },
    },
    "required": ["code", "message", "details"],
}

#: response fields with presence (messages, in proto3) that the services always set; listed
#: as `required` so a typed client needs no `Unset` check. Each is read by
#: tests/e2e/sdk_checkout_driver.py against the live services. The times are those of rows
#: whose columns are NOT NULL, and every public answer carrying the message reads the row:
#: groups (group_svc/adapters/proto_mapping.py group_to_proto), status changes
#: (GetGroupHistory: group_status_history.changed_at), payments (payment_svc
#: service_layer/messages.py to_proto: GetPayment and ListPayments read the payments row, a new
#: one gets its times from the INSERT's RETURNING), orders and their steps (order_svc
#: service_layer/messages.py: orders.created_at/updated_at, order_events.created_at) and
#: notifications (notification_svc to_proto: notifications.created_at). Left out because the
#: services set them only sometimes: GroupOrder.grace_deadline, Member.joined_at, paid_at and
#: share_spec, Payment.authorization_expire_time, Notification.sent_time.
ALWAYS_SET = frozenset(
    {
        "mppo.group.v1.GroupOrder.total",
        "mppo.group.v1.GroupOrder.deadline",
        "mppo.group.v1.GroupOrder.amount_secured",
        "mppo.group.v1.GroupOrder.create_time",
        "mppo.group.v1.GroupOrder.update_time",
        "mppo.group.v1.Member.share",
        "mppo.group.v1.Member.amount_paid",
        "mppo.group.v1.StatusChange.change_time",
        "mppo.payment.v1.Payment.amount",
        "mppo.payment.v1.Payment.amount_captured",
        "mppo.payment.v1.Payment.amount_refunded",
        "mppo.payment.v1.Payment.create_time",
        "mppo.payment.v1.Payment.update_time",
        "mppo.order.v1.Order.total",
        "mppo.order.v1.Order.create_time",
        "mppo.order.v1.Order.update_time",
        "mppo.order.v1.OrderShare.amount",
        "mppo.order.v1.OrderStep.step_time",
        "mppo.notification.v1.Notification.create_time",
    }
)
#: the range the services hold an integer field to (a request out of it is refused with 400),
#: declared as `minimum`/`maximum` wherever the field appears (body schemas and query
#: parameters): every list's `page_size` (mppo/platform/paging.py: 0 asks for the default,
#: a negative one is refused, one above the maximum is read as the maximum, so no maximum),
#: a cart line's quantity (group_svc/entrypoints/parsing.py MAX_QUANTITY) and a share's basis
#: points (group_svc/domain/split.py BASIS_POINTS_TOTAL)
INTEGER_RANGES: dict[str, tuple[int | None, int | None]] = {
    "mppo.group.v1.ListGroupsRequest.page_size": (0, None),
    "mppo.group.v1.GetGroupHistoryRequest.page_size": (0, None),
    "mppo.payment.v1.ListPaymentsRequest.page_size": (0, None),
    "mppo.notification.v1.ListNotificationsRequest.page_size": (0, None),
    "mppo.common.v1.LineItem.quantity": (1, 10_000),
    "mppo.group.v1.ShareSpec.basis_points": (0, 10_000),
}
#: request fields a service refuses a request without (group_svc/entrypoints/parsing.py and
#: grpc_servicer.py, the list methods' group): `required` in the request's schema, or a
#: required query parameter
REQUIRED_REQUEST = frozenset(
    {
        *(
            f"mppo.group.v1.CreateGroupRequest.{name}"
            for name in (
                "merchant_id",
                "currency_code",
                "items",
                "split_mode",
                "fallback_policy",
                "host",
            )
        ),
        "mppo.group.v1.MemberInput.display_name",
        "mppo.common.v1.LineItem.line_id",
        "mppo.common.v1.LineItem.quantity",
        "mppo.common.v1.LineItem.unit_price_minor",
        "mppo.group.v1.AddMembersRequest.members",
        "mppo.group.v1.JoinGroupRequest.invite_token",
        "mppo.group.v1.UpdateSplitRequest.split_mode",
        "mppo.payment.v1.ListPaymentsRequest.group_id",
        "mppo.notification.v1.ListNotificationsRequest.group_id",
    }
)
#: notes added to a field's proto comment in the document
FIELD_NOTES: dict[str, str] = {
    "mppo.group.v1.CreateGroupRequest.deadline": "It must also lie within the shortest hold"
    " window of the payment providers in play (by default 7 days for Stripe and the sandbox,"
    " 3 for Razorpay and PayPal; MPPO_HOLD_WINDOW_*_SECONDS) less the hold margin (1 hour by"
    " default) and, under HOST_PAYS_REMAINING, the host's grace, or the group is refused with"
    " reason DEADLINE_BEYOND_HOLD. The example leaves it out (the default applies), so it can"
    " be sent as it stands.",
}


#: the error statuses every operation declares (the gRPC codes the gateway maps to them)
ERROR_STATUSES: dict[str, str] = {
    "400": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE (details: BadRequest)",
    "401": "UNAUTHENTICATED: no valid token",
    "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND",
    "409": "ABORTED or ALREADY_EXISTS (details: ErrorInfo with the reason)",
    "429": "RESOURCE_EXHAUSTED: rate limited (Retry-After)",
    "503": "UNAVAILABLE: retry with the same Idempotency-Key",
}


IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
ENVOY_YAML = Path(__file__).resolve().parent / "envoy.yaml"

_NOT_ENVOY = (
    " Sent by the Python gateway; the Envoy edge sends only the X-RateLimit-* names (its"
    " local rate limit knows no other)."
)
_HEADERS: Json = {
    LIMIT_HEADER: {
        "description": "Requests a client may send in a burst (the token bucket's size).",
        "schema": {"type": "integer"},
    },
    REMAINING_HEADER: {
        "description": "Requests left in the bucket now (absent when the limiter could not"
        " be asked and let the request through).",
        "schema": {"type": "integer"},
    },
    RESET_HEADER: {
        "description": "Seconds until the bucket is full again.",
        "schema": {"type": "integer"},
    },
    IETF_LIMIT_HEADER: {
        "description": f"The same value as {LIMIT_HEADER}, under the name of"
        " draft-ietf-httpapi-ratelimit-headers (drafts 00-06)." + _NOT_ENVOY,
        "schema": {"type": "integer"},
    },
    IETF_REMAINING_HEADER: {
        "description": f"The same value as {REMAINING_HEADER} (absent with it)." + _NOT_ENVOY,
        "schema": {"type": "integer"},
    },
    IETF_RESET_HEADER: {
        "description": f"The same value as {RESET_HEADER}." + _NOT_ENVOY,
        "schema": {"type": "integer"},
    },
    POLICY_HEADER: {
        "description": "The quota policy (draft-ietf-httpapi-ratelimit-headers, drafts 07"
        ' and later; an RFC 8941 list), e.g. `"user";q=40;w=2`: the policy\'s name (`ip`: per'
        " client address, `user`: per caller), its quota `q` (the burst) and window `w` (the"
        " seconds an empty bucket takes to fill)." + _NOT_ENVOY,
        "schema": {"type": "string"},
    },
    STATE_HEADER: {
        "description": "What is left of the policy's quota (draft-ietf-httpapi-ratelimit-"
        'headers, drafts 07 and later; an RFC 8941 list), e.g. `"user";r=39;t=1`: requests'
        " remaining `r` and seconds `t` until the quota is whole again (absent when the"
        " limiter could not be asked and let the request through)." + _NOT_ENVOY,
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "The request's id (the client's X-Request-Id, or one made up).",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "schema": {"type": "integer"},
    },
    IDEMPOTENT_REPLAYED: {
        "description": "`true` when this is the stored answer of an earlier request with the"
        " same Idempotency-Key and body (nothing was done again).",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_PARAMETERS: Json = {
    IDEMPOTENCY_KEY: {
        "name": IDEMPOTENCY_KEY,
        "in": "header",
        "required": False,
        "description": "Makes the request safe to send again: a retry with the same key and"
        " body gets the first answer (with `Idempotent-Replayed: true`) and changes nothing;"
        " the same key with another body is refused. Keys are per caller and operation and"
        " kept at least 24 hours.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    }
}
_ALWAYS = (*RATELIMIT_HEADERS, "X-Request-Id")


def _headers(*names: str) -> Json:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in (*_ALWAYS, *names)}


def operation_id(method_name: str, variables: list[str] | None = None) -> str:
    """`CreateGroup` -> `createGroup`; with `variables` (another binding of the same RPC that
    binds more of the path): `HandleWebhook`, [`provider`] -> `handleWebhookByProvider`."""
    base = method_name[:1].lower() + method_name[1:]
    if not variables:
        return base
    words = [w for v in variables for w in re.split(r"[._]", v) if w]
    return base + "By" + "".join(w[:1].upper() + w[1:] for w in words)


def tag(service: str) -> str:
    """`mppo.group.v1.GroupService` -> `groups`."""
    noun = service.rsplit(".", 1)[-1].removesuffix("Service").lower() or "default"
    if noun.endswith("s"):
        return noun
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def _reachable(descriptor: Descriptor, seen: set[str]) -> None:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for fld in descriptor.fields:
        if fld.message_type is not None:
            _reachable(fld.message_type, seen)


def resource_field(output: Descriptor) -> FieldDescriptor | None:
    """The resource an RPC's response carries (`CreateGroupResponse.group`): its one singular
    message field. Our services always set it (they answer with the resource or fail), so it
    is listed as required although proto3 gives message fields presence."""
    singular = [
        f
        for f in output.fields
        if f.message_type is not None
        and not f.is_repeated
        and f.message_type.full_name not in _WKT
        and f.containing_oneof is None
    ]
    return singular[0] if len(singular) == 1 else None


class _Builder:
    def __init__(self, catalog: Catalog, request_types: set[str] | None = None) -> None:
        self.catalog = catalog
        #: messages a client sends: no `required` from the response rule on them
        self.request_types = request_types or set()
        #: fields the services always set although they have presence (`resource_field`)
        self.resources: set[str] = set()
        self.schemas: Json = {"google.rpc.Status": STATUS_SCHEMA, **DETAIL_SCHEMAS}

    def ref(self, descriptor: Descriptor, exclude: frozenset[str] = frozenset()) -> Json:
        """A reference to `descriptor`'s schema; `exclude`: top-level fields left out (those
        a request body's path binds)."""
        name = descriptor.full_name
        if name in _WKT:
            return dict(_WKT[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks recursion
            self.schemas[name] = self.message(descriptor, exclude)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, descriptor: Descriptor, exclude: frozenset[str] = frozenset()) -> Json:
        schema: Json = {"type": "object", "properties": {}}
        self._describe(schema, descriptor.full_name)
        fields = [f for f in descriptor.fields if f.name not in exclude]
        for fld in fields:
            prop = self.field(fld)
            self._describe(prop, fld.full_name)
            schema["properties"][fld.json_name] = prop
        if descriptor.full_name in self.request_types:
            always = [f.json_name for f in fields if f.full_name in REQUIRED_REQUEST]
        else:
            always = [
                f.json_name
                for f in fields
                if not f.has_presence or f.full_name in self.resources or f.full_name in ALWAYS_SET
            ]
        if always:
            schema["required"] = always
        return schema

    def field(self, fld: FieldDescriptor) -> Json:
        message_type = fld.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            value = message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(fld)
        low, high = INTEGER_RANGES.get(fld.full_name, (None, None))
        if low is not None:
            single["minimum"] = low
        if high is not None:
            single["maximum"] = high
        return {"type": "array", "items": single} if fld.is_repeated else single

    def single(self, fld: FieldDescriptor) -> Json:
        if fld.message_type is not None:
            return self.ref(fld.message_type)
        if fld.enum_type is not None:
            return self.enum(fld.enum_type)
        return dict(_SCALARS[fld.type])

    def enum(self, enum: EnumDescriptor) -> Json:
        """A shared component per proto enum; each value's comment in its description."""
        name = enum.full_name
        if name not in self.schemas:
            schema: Json = {"type": "string", "enum": [v.name for v in enum.values]}
            notes = {
                v.name: self.catalog.comments.get(f"{enum.full_name}.{v.name}", "")
                for v in enum.values
            }
            parts = [self.catalog.comments.get(name, "")]
            parts += [f"- `{value}`: {note}" for value, note in notes.items() if note]
            if any(parts):
                schema["description"] = "\n".join(p for p in parts if p)
            schema["x-enum-descriptions"] = list(notes.values())
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def _describe(self, schema: Json, full_name: str) -> None:
        text = " ".join(
            part
            for part in (self.catalog.comments.get(full_name), FIELD_NOTES.get(full_name))
            if part
        )
        if text:
            schema["description"] = text


def _openapi_path(template: str) -> tuple[str, list[str]]:
    """`/group/{group_id}` -> same, and the variable names (`{a=b/*}` -> `{a}`)."""
    names: list[str] = []

    def repl(found: re.Match[str]) -> str:
        name = found.group(1).split("=", 1)[0]
        names.append(name)
        return "{" + name + "}"

    return re.sub(r"\{([^}]*)\}", repl, template), names


def _path_parameter(catalog: Catalog, request: Descriptor, variable: str) -> Json:
    """A path parameter, described by the comment of the field it binds (`a.b`: of `b`)."""
    param: Json = {"name": variable, "in": "path", "required": True, "schema": {"type": "string"}}
    descriptor: Descriptor | None = request
    comment = ""
    for part in variable.split("."):
        fld = descriptor.fields_by_name.get(part) if descriptor is not None else None
        if fld is None:
            return param
        comment = catalog.comments.get(fld.full_name, "")
        descriptor = fld.message_type
    if comment:
        param["description"] = comment
    return param


def _query_parameters(builder: _Builder, binding: HttpBinding, bound: set[str]) -> list[Json]:
    params: list[Json] = []
    if binding.body == "*":
        return params

    def walk(descriptor: Descriptor, prefix: str, depth: int) -> None:
        for fld in descriptor.fields:
            name = f"{prefix}{fld.name}"
            if name in bound or (not prefix and fld.name == binding.body):
                continue
            msg = fld.message_type
            if msg is not None and msg.full_name not in _WKT:
                if depth < 2 and not fld.is_repeated and not msg.GetOptions().map_entry:
                    walk(msg, f"{name}.", depth + 1)
                continue
            schema = builder.field(fld)
            comment = builder.catalog.comments.get(f"{descriptor.full_name}.{fld.name}")
            required = not prefix and fld.full_name in REQUIRED_REQUEST
            param: Json = {"name": name, "in": "query", "required": required, "schema": schema}
            if fld.is_repeated:
                param["explode"] = True
            if comment:
                param["description"] = comment
            params.append(param)

    walk(binding.method.input_type, "", 0)
    return params


def _error_response(description: str, *headers: str) -> Json:
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}
        },
    }


def build_openapi(catalog: Catalog, bindings: list[HttpBinding]) -> Json:
    """The OpenAPI 3.1 document for `bindings` (the public ones the router serves)."""
    request_types: set[str] = set()
    for binding in bindings:
        _reachable(binding.method.input_type, request_types)
    builder = _Builder(catalog, request_types)
    for binding in bindings:
        resource = resource_field(binding.method.output_type)
        if resource is not None:
            builder.resources.add(resource.full_name)
    paths: Json = {}
    tags: dict[str, str] = {}
    # the binding of an RPC that binds the fewest path variables keeps the plain operation id
    plain: dict[str, HttpBinding] = {}
    for binding in bindings:
        first = plain.get(binding.full_method)
        fewer = len(_openapi_path(binding.template)[1])
        if first is None or fewer < len(_openapi_path(first.template)[1]):
            plain[binding.full_method] = binding
    for binding in bindings:
        path, variables = _openapi_path(binding.template)
        method = binding.method
        op_id = operation_id(
            method.name, None if plain[binding.full_method] is binding else variables
        )
        tags.setdefault(tag(binding.service), catalog.comments.get(binding.service, ""))
        parameters: list[Json] = [_path_parameter(catalog, method.input_type, v) for v in variables]
        parameters += _query_parameters(builder, binding, set(variables))
        if binding.idempotent:
            parameters.append({"$ref": f"#/components/parameters/{IDEMPOTENCY_KEY}"})
        ok_headers = (IDEMPOTENT_REPLAYED,) if binding.idempotent else ()
        op: Json = {
            "operationId": op_id,
            "tags": [tag(binding.service)],
            "summary": catalog.comments.get(binding.full_method, method.name),
            "x-grpc-method": binding.grpc_path,
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "OK",
                    "headers": _headers(*ok_headers),
                    "content": {"application/json": {"schema": builder.ref(method.output_type)}},
                },
                **{
                    status: _error_response(
                        description, *(("Retry-After",) if status in ("429", "503") else ())
                    )
                    for status, description in ERROR_STATUSES.items()
                },
                "default": _error_response("Error (google.rpc.Status)"),
            },
        }
        if binding.webhook:
            op["security"] = []
            op["description"] = "Authenticated by the provider's signature, not a JWT."
        if binding.body:
            body_type: Descriptor | None = method.input_type
            if binding.body != "*":
                body_type = method.input_type.fields_by_name[binding.body].message_type
            if body_type is not None and body_type.full_name == HTTP_BODY:
                # Any content type is passed on byte for byte; declared as octet-stream, the
                # raw-bytes type typed SDK generators know (`*/*` makes them skip the call).
                raw: Json = {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "The raw body, any content type, passed on unchanged.",
                    }
                }
                if binding.webhook:
                    raw["example"] = WEBHOOK_EXAMPLE
                content: Json = {"application/octet-stream": raw}
            elif body_type is not None:
                # fields the path binds are not in the body's schema (a body that names one
                # with another value is refused)
                bound = frozenset(v.split(".", 1)[0] for v in variables)
                media = {
                    "schema": builder.ref(body_type, bound if binding.body == "*" else frozenset())
                }
                if body_type.full_name in EXAMPLES:
                    media["example"] = EXAMPLES[body_type.full_name]
                content = {"application/json": media}
            else:
                fld = method.input_type.fields_by_name[binding.body]
                content = {"application/json": {"schema": builder.field(fld)}}
            op["requestBody"] = {"required": True, "content": content}
        paths.setdefault(path, {})[binding.verb.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MPPO API",
            "version": "v1",
            "description": "Generated from the google.api.http annotations in proto/.",
        },
        "tags": [
            {"name": name, **({"description": text} if text else {})} for name, text in tags.items()
        ],
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (ES256)"}
            },
        },
        "security": [{"bearer": []}],
    }


def public_document(catalog: Catalog | None = None) -> Json:
    """The document the gateway serves for `catalog` (default: gateway/descriptors.binpb)."""
    catalog = catalog or Catalog.load()
    public = [r.binding for r in Router(catalog.bindings).routes]
    order = {id(b): i for i, b in enumerate(catalog.bindings)}
    public.sort(key=lambda b: order[id(b)])
    return build_openapi(catalog, public)


def serialize(document: Json) -> str:
    """The bytes both edges serve (the Python gateway, and Envoy from envoy.yaml)."""
    return json.dumps(document)


_ENVOY_MARK = "# generated: python -m gateway.openapi"


def envoy_with_document(envoy_yaml: str, document: Json) -> str:
    """`envoy_yaml` with the `/openapi.json` direct response's `inline_string` (the line after
    the `# generated: python -m gateway.openapi` comment) set to `document`."""
    lines = envoy_yaml.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip().startswith(_ENVOY_MARK)]
    if len(marks) != 1 or marks[0] + 1 >= len(lines):
        raise ValueError(f"envoy.yaml needs exactly one {_ENVOY_MARK!r} line")
    target = lines[marks[0] + 1]
    indent = target[: len(target) - len(target.lstrip())]
    if not target.strip().startswith("inline_string:"):
        raise ValueError(f"the line after {_ENVOY_MARK!r} must be `inline_string: ...`")
    quoted = "'" + serialize(document).replace("'", "''") + "'"  # a YAML single-quoted scalar
    lines[marks[0] + 1] = f"{indent}inline_string: {quoted}"
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the document into gateway/envoy.yaml's /openapi.json route (or ENVOY_YAML), or
    with --check fail when it is not what the gateway generates."""
    parser = argparse.ArgumentParser(prog="python -m gateway.openapi", description=main.__doc__)
    parser.add_argument("envoy_yaml", nargs="?", type=Path, default=ENVOY_YAML)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    target: Path = args.envoy_yaml
    current = target.read_text(encoding="utf-8")
    wanted = envoy_with_document(current, public_document())
    if args.check:
        if current != wanted:
            sys.stderr.write(f"{target}: /openapi.json is stale; run python -m gateway.openapi\n")
            return 1
        return 0
    target.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
