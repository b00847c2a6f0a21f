"""`/openapi.json`: an OpenAPI 3.1 document generated from the same bindings the router serves.

Schemas follow the proto3 JSON mapping (camelCase names, 64-bit integers as `type: string`
with `format: int64`, enums by name, well-known types in their JSON form); descriptions are the
proto comments. Typed-SDK friendly: each proto enum is one shared component whose description
lists every value's comment; a message that only ever appears in responses lists as `required`
the fields the gateway always prints (those without presence); every operation declares its
error statuses (400, 401, 403, 404, 409, 429, 503) as google.rpc.Status.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway.descriptors import Catalog, HttpBinding
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
STATUS_SCHEMA: Json = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC status the call ended with.",
    "properties": {
        "code": {"type": "integer", "description": "google.rpc.Code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
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


def _reachable(descriptor: Descriptor, seen: set[str]) -> None:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for fld in descriptor.fields:
        if fld.message_type is not None:
            _reachable(fld.message_type, seen)


class _Builder:
    def __init__(self, catalog: Catalog, request_types: set[str] | None = None) -> None:
        self.catalog = catalog
        #: messages a client sends: no `required` from the response rule on them
        self.request_types = request_types or set()
        self.schemas: Json = {
            "google.rpc.Status": STATUS_SCHEMA,
            "google.protobuf.Any": _WKT["google.protobuf.Any"],
        }

    def ref(self, descriptor: Descriptor) -> Json:
        name = descriptor.full_name
        if name in _WKT:
            return dict(_WKT[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks recursion
            self.schemas[name] = self.message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, descriptor: Descriptor) -> Json:
        schema: Json = {"type": "object", "properties": {}}
        self._describe(schema, descriptor.full_name)
        for fld in descriptor.fields:
            prop = self.field(fld)
            self._describe(prop, f"{descriptor.full_name}.{fld.name}")
            schema["properties"][fld.json_name] = prop
        if descriptor.full_name not in self.request_types:
            always = [f.json_name for f in descriptor.fields if not f.has_presence]
            if always:
                schema["required"] = always
        return schema

    def field(self, fld: FieldDescriptor) -> Json:
        message_type = fld.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            value = message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(fld)
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
        comment = self.catalog.comments.get(full_name)
        if comment:
            schema["description"] = comment


def _openapi_path(template: str) -> tuple[str, list[str]]:
    """`/group/{group_id}` -> same, and the variable names (`{a=b/*}` -> `{a}`)."""
    names: list[str] = []

    def repl(found: re.Match[str]) -> str:
        name = found.group(1).split("=", 1)[0]
        names.append(name)
        return "{" + name + "}"

    return re.sub(r"\{([^}]*)\}", repl, template), names


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
            param: Json = {"name": name, "in": "query", "required": False, "schema": schema}
            if fld.is_repeated:
                param["explode"] = True
            if comment:
                param["description"] = comment
            params.append(param)

    walk(binding.method.input_type, "", 0)
    return params


def build_openapi(catalog: Catalog, bindings: list[HttpBinding]) -> Json:
    """The OpenAPI 3.1 document for `bindings` (the public ones the router serves)."""
    request_types: set[str] = set()
    for binding in bindings:
        _reachable(binding.method.input_type, request_types)
    builder = _Builder(catalog, request_types)
    paths: Json = {}
    seen: dict[str, int] = {}
    for binding in bindings:
        path, variables = _openapi_path(binding.template)
        method = binding.method
        count = seen.get(binding.full_method, 0)
        seen[binding.full_method] = count + 1
        op: Json = {
            "operationId": method.name + (f"{seen[binding.full_method]}" if count else ""),
            "tags": [binding.service],
            "summary": catalog.comments.get(binding.full_method, method.name),
            "x-grpc-method": binding.grpc_path,
            "parameters": [
                {"name": v, "in": "path", "required": True, "schema": {"type": "string"}}
                for v in variables
            ]
            + _query_parameters(builder, binding, set(variables)),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": builder.ref(method.output_type)}},
                },
                **{
                    status: {
                        "description": description,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                            }
                        },
                    }
                    for status, description in ERROR_STATUSES.items()
                },
                "default": {
                    "description": "Error (google.rpc.Status)",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                        }
                    },
                },
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
                content: Json = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
            elif body_type is not None:
                content = {"application/json": {"schema": builder.ref(body_type)}}
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
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (ES256)"}
            },
        },
        "security": [{"bearer": []}],
    }
