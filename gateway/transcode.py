"""REST request -> protobuf request message, and protobuf response -> JSON, per google.api.http.

- Path variables set the fields they name (nested paths such as `{cart.merchant_id}` too).
- `body: "*"`: the JSON body is the request message; `body: "field"`: the JSON body is that
  field (a `google.api.HttpBody` field takes the raw bytes and content type instead); no body:
  nothing is read.
- Every field not bound by the path or body may come as a query parameter, by proto or JSON
  name, nested with dots (`amount.currency_code=EUR`), repeated by repeating the key, enums by
  name (or number). Unknown parameters are rejected, as Envoy does with
  `reject_unknown_query_parameters`.
- JSON follows the proto3 JSON mapping (`google.protobuf.json_format`): int64 values are
  written as strings and accepted as numbers or strings; fields with default values are
  printed (Envoy's `always_print_primitive_fields`).
- A JSON body must be UTF-8 and nested at most `MAX_JSON_DEPTH` arrays/objects deep; the depth
  is measured before parsing, so a 2,000-deep document is a 400, not a RecursionError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.descriptors import Catalog, HttpBinding

HTTP_BODY = "google.api.HttpBody"
MAX_JSON_DEPTH = 32
# A JSON string literal (escapes included), and anything that is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# What json_format may raise besides ParseError on hostile values (huge or odd numbers, ...).
_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError)
# Well-known types whose JSON form is a string or scalar, so a query parameter can hold them.
_SCALAR_WKT = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.BoolValue",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}


class BadRequestError(ValueError):
    """The request cannot become the RPC's message; `field` names where (JSON path)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _resolve(descriptor: Descriptor, dotted: str) -> list[FieldDescriptor]:
    """The chain of fields a dotted path names (proto or JSON names), or BadRequestError."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in dotted.split("."):
        if current is None:
            raise BadRequestError(dotted, "is not a message field, cannot select into it")
        fld = _field(current, part)
        if fld is None:
            raise BadRequestError(dotted, f"no such field in {descriptor.name}")
        chain.append(fld)
        current = fld.message_type
    return chain


def _scalar(fld: FieldDescriptor, text: str, where: str) -> Any:
    """A query/path string as the JSON value json_format expects for `fld`."""
    kind = fld.type
    if fld.message_type is not None:
        if fld.message_type.full_name in _SCALAR_WKT:
            return text
        raise BadRequestError(where, "a message field cannot be set from a query parameter")
    if kind == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise BadRequestError(where, f"{text!r} is not a boolean")
        return lowered in ("true", "1")
    if kind == FieldDescriptor.TYPE_ENUM and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _set_path(
    target: dict[str, Any], chain: list[FieldDescriptor], value: Any, *, append: bool
) -> None:
    node = target
    for fld in chain[:-1]:
        child = node.setdefault(fld.name, {})
        if not isinstance(child, dict):
            raise BadRequestError(".".join(f.name for f in chain), "conflicts with another value")
        node = child
    last = chain[-1]
    if last.is_repeated:
        node.setdefault(last.name, []).append(value)
    elif append and last.name in node:
        raise BadRequestError(".".join(f.name for f in chain), "given more than once")
    else:
        node[last.name] = value


def parse_failure(error: Exception) -> BadRequestError:
    """Turn a json_format error into a BadRequestError naming the field (JSON path)."""
    text = str(error)
    missing = re.search(r'has no field named "([^"]+)" at "([^"]+)"', text)
    if missing:
        scope = missing.group(2).partition(".")[2]
        return BadRequestError(f"{scope}.{missing.group(1)}" if scope else missing.group(1), text)
    located = re.search(r" at ([\w.\[\]]+)$", text.split("\n")[0].rstrip("."))
    if located and "." in located.group(1):
        return BadRequestError(located.group(1).rstrip(".").partition(".")[2], text)
    chain = re.findall(r"Failed to parse (\S+) field", text)
    return BadRequestError(".".join(chain), text)


class Transcoder:
    """Builds request messages and renders responses for the bindings of a catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def request(
        self,
        binding: HttpBinding,
        variables: Mapping[str, str],
        query: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str,
    ) -> Message:
        """The RPC's request message from path variables, query parameters and body."""
        descriptor = binding.method.input_type
        message = self.catalog.message_class(descriptor)()
        bound: set[str] = set()
        if binding.body == "*":
            self._parse_json(message, body, "")
            bound = {f.name for f in descriptor.fields}
        elif binding.body:
            fld = descriptor.fields_by_name[binding.body]
            bound.add(fld.name)
            target = getattr(message, fld.name)
            if fld.message_type is not None and fld.message_type.full_name == HTTP_BODY:
                target.content_type = content_type
                target.data = body
            elif fld.message_type is not None and not fld.is_repeated:
                self._parse_json(target, body, fld.json_name)
            else:
                self._parse_field_json(message, fld, body)
        fields: dict[str, Any] = {}
        for key, raw in query:
            chain = _resolve(descriptor, key)
            if chain[0].name in bound:
                raise BadRequestError(key, "is bound by the request body, not a query parameter")
            _set_path(fields, chain, _scalar(chain[-1], raw, key), append=True)
        for path, raw in variables.items():
            chain = _resolve(descriptor, path)
            _set_path(fields, chain, _scalar(chain[-1], raw, path), append=False)
        if fields:
            extra = self.catalog.message_class(descriptor)()
            try:
                json_format.ParseDict(fields, extra, descriptor_pool=self.catalog.pool)
            except _PARSE_ERRORS as exc:
                raise parse_failure(exc) from None
            for path in variables:
                _clear_path(message, path)
            message.MergeFrom(extra)
        return message

    def _parse_json(self, target: Message, body: bytes, where: str) -> None:
        value = _load_json(body, where)
        if not isinstance(value, dict):
            raise BadRequestError(where or "body", "must be a JSON object")
        try:
            json_format.ParseDict(value, target, descriptor_pool=self.catalog.pool)
        except _PARSE_ERRORS as exc:
            failure = parse_failure(exc)
            field = (
                f"{where}.{failure.field}" if where and failure.field else where or failure.field
            )
            raise BadRequestError(field, failure.description) from None

    def _parse_field_json(self, message: Message, fld: FieldDescriptor, body: bytes) -> None:
        value = _load_json(body, fld.json_name)
        try:
            json_format.ParseDict({fld.name: value}, message, descriptor_pool=self.catalog.pool)
        except _PARSE_ERRORS as exc:
            raise BadRequestError(fld.json_name, str(exc)) from None

    def response(self, binding: HttpBinding, message: Message) -> tuple[bytes, str]:
        """Body bytes and content type of the HTTP response for `message`."""
        if binding.response_body:
            fld = message.DESCRIPTOR.fields_by_name[binding.response_body]
            value = getattr(message, fld.name)
            if fld.message_type is not None and fld.message_type.full_name == HTTP_BODY:
                return bytes(value.data), value.content_type or "application/octet-stream"
            payload = json_format.MessageToDict(
                message,
                always_print_fields_with_no_presence=True,
                descriptor_pool=self.catalog.pool,
            ).get(fld.json_name)
            return json.dumps(payload).encode(), "application/json"
        if message.DESCRIPTOR.full_name == HTTP_BODY:
            data: bytes = message.data  # type: ignore[attr-defined]
            ctype: str = message.content_type  # type: ignore[attr-defined]
            return data, ctype or "application/octet-stream"
        text = json_format.MessageToJson(
            message,
            always_print_fields_with_no_presence=True,
            indent=None,
            descriptor_pool=self.catalog.pool,
        )
        return text.encode(), "application/json"


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply arrays/objects nest in `text`, counted up to `limit + 1` (then it stops).

    Strings are removed first (brackets inside them do not count); the rest is a scan of the
    brackets alone, so the cost is linear and no recursion happens whatever the input.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _load_json(body: bytes, where: str) -> Any:
    if not body.strip():
        return {}
    field = where or "body"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(field, f"not UTF-8 (byte {exc.start}: {exc.reason})") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequestError(field, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - json_depth refuses such documents first
        raise BadRequestError(field, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
        raise BadRequestError(field, f"malformed JSON: {exc}") from None


def _clear_path(message: Any, dotted: str) -> None:
    """Clear the field a path variable names, so the variable wins over the body."""
    *parents, last = dotted.split(".")
    node = message
    for part in parents:
        fld = _field(node.DESCRIPTOR, part)
        if fld is None or not node.HasField(fld.name):
            return
        node = getattr(node, fld.name)
    fld = _field(node.DESCRIPTOR, last)
    if fld is not None:
        node.ClearField(fld.name)
