"""REST request -> protobuf request message, and protobuf response -> JSON, per google.api.http.

- Path variables set the fields they name (nested paths such as `{cart.merchant_id}` too).
- `body: "*"`: the JSON body is the request message; `body: "field"`: the JSON body is that
  field (a `google.api.HttpBody` field takes the raw bytes and content type instead); no body:
  nothing is read.
- Every field not bound by the path or body may come as a query parameter, by proto or JSON
  name, nested with dots (`amount.currency_code=EUR`), repeated by repeating the key, enums by
  name (or number). Unknown parameters are rejected, as Envoy does with
  `reject_unknown_query_parameters`: a query parameter's problem (unknown, bound by the body,
  a bad value) is a 400 whose ErrorInfo reason is `BAD_QUERY_PARAMETER` and whose field
  violation names the parameter (`x: unknown query parameter ...`), a body's
  `BAD_REQUEST_BODY`.
- JSON follows the proto3 JSON mapping (`google.protobuf.json_format`): int64 values are
  written as strings and accepted as numbers or strings; fields with default values are
  printed (Envoy's `always_print_primitive_fields`).
- A JSON body must be UTF-8 and nested at most `MAX_JSON_DEPTH` arrays/objects deep; the depth
  is measured before parsing, so a 2,000-deep document is a 400, not a RecursionError.
- An object that names a key twice (`{"members": [...], "members": [...]}`, at any depth), or
  one field by both its names (`displayName` and `display_name`), is refused
  (`DUPLICATE_FIELD`, naming the key's JSON path) rather than read as one of the values:
  which one a parser keeps differs, so the client's intent is unknown.
- Before json_format parses it, the JSON is checked against the descriptors
  (`check_message_json`): a wrong type, an unknown field, an unknown enum name, an integer out
  of range or a malformed timestamp is a BadRequestError naming the field as JSON with indexes
  (`items[0].quantity`), in plain words, with a reason; the parser's own text is never sent.
- A body field that a path variable also binds may be left out or equal the path's value;
  another value is refused (`PATH_MISMATCH`) rather than silently overridden.
- `page_size` beyond its field's range is read as the field's largest value (AIP-158: the
  service coerces an oversize page size to its maximum).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.descriptors import Catalog, HttpBinding
from gateway.field_names import field_named, json_path

logger = logging.getLogger(__name__)

HTTP_BODY = "google.api.HttpBody"
MAX_JSON_DEPTH = 32
# A JSON string literal (escapes included), and anything that is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# What json_format may raise besides ParseError on hostile values (huge or odd numbers, ...).
_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError)


#: ErrorInfo reason of a body (or path value) the RPC's message cannot be built from
BAD_REQUEST_BODY = "BAD_REQUEST_BODY"
#: ErrorInfo reason of a query parameter that is unknown, bound elsewhere, or of a bad value
BAD_QUERY_PARAMETER = "BAD_QUERY_PARAMETER"


class BadRequestError(ValueError):
    """The request cannot become the RPC's message; `field` names where (JSON path, indexes
    included: `items[0].quantity`; the parameter's name for a query parameter), `reason` says
    what is wrong for a program (the field violation's), `info_reason` which part of the
    request is at fault (the ErrorInfo's: `BAD_REQUEST_BODY` or `BAD_QUERY_PARAMETER`)."""

    def __init__(
        self,
        field: str,
        description: str,
        reason: str = BAD_REQUEST_BODY,
        *,
        info_reason: str = BAD_REQUEST_BODY,
    ) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description
        self.reason = reason
        self.info_reason = info_reason

    def in_query(self) -> BadRequestError:
        """The same problem, found in a query parameter."""
        return BadRequestError(
            self.field,
            self.description,
            BAD_QUERY_PARAMETER if self.reason == BAD_REQUEST_BODY else self.reason,
            info_reason=BAD_QUERY_PARAMETER,
        )


_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
_WRAPPERS = {
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
# Well-known types whose JSON form is a string or scalar, so a query parameter can hold them.
_SCALAR_WKT = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    *_WRAPPERS,
}
_ANY_JSON = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
_MAX_ENUM_NAMES = 12


def _integer(value: Any) -> int | None:
    """`value` as proto3 JSON reads an integer (a number without fraction or a decimal
    string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,40}", value.strip()):
        return int(value.strip())
    return None


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return True
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def check_value(fld: FieldDescriptor, value: Any, where: str) -> None:
    """BadRequestError, in words a client understands, when `value` (JSON) cannot be the
    value of `fld` (one element of it when repeated); `where` is the JSON path to it."""
    message = fld.message_type
    if message is not None:
        check_message_json(message, value, where)
        return
    if fld.enum_type is not None:
        if _integer(value) is not None and not isinstance(value, str):
            return
        names = [v.name for v in fld.enum_type.values]
        if isinstance(value, str) and value in names:
            return
        shown = ", ".join(names[:_MAX_ENUM_NAMES]) + (
            ", ..." if len(names) > _MAX_ENUM_NAMES else ""
        )
        raise BadRequestError(where, f"must be one of {shown}", "INVALID_ENUM_VALUE")
    kind = fld.type
    if kind in _INT_RANGES:
        number = _integer(value)
        if number is None:
            raise BadRequestError(where, "must be an integer", "INVALID_TYPE")
        low, high = _INT_RANGES[kind]
        if not low <= number <= high:
            raise BadRequestError(where, f"must be an integer from {low} to {high}", "OUT_OF_RANGE")
    elif kind in _FLOATS:
        if not _number(value):
            raise BadRequestError(where, "must be a number", "INVALID_TYPE")
    elif kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise BadRequestError(where, "must be true or false", "INVALID_TYPE")
    elif kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise BadRequestError(where, "must be a string", "INVALID_TYPE")
    elif kind == FieldDescriptor.TYPE_BYTES and not isinstance(value, str):
        raise BadRequestError(where, "must be a base64 string", "INVALID_TYPE")


def check_message_json(descriptor: Descriptor, value: Any, where: str) -> None:
    """BadRequestError naming the first value in `value` (the JSON of a `descriptor`
    message at `where`) that cannot be parsed, with a plain description and a reason."""
    name = descriptor.full_name
    if value is None or name in _ANY_JSON or name == "google.protobuf.Any":
        return
    if name == "google.protobuf.Timestamp":
        if not isinstance(value, str) or not _parses(Timestamp(), value):
            raise BadRequestError(
                where,
                "must be an RFC 3339 timestamp, e.g. 2030-01-15T18:00:00Z",
                "INVALID_TIMESTAMP",
            )
        return
    if name == "google.protobuf.Duration":
        if not isinstance(value, str) or not _parses(Duration(), value):
            raise BadRequestError(
                where, "must be a duration in seconds, e.g. 3.5s", "INVALID_DURATION"
            )
        return
    if name == "google.protobuf.FieldMask":
        if not isinstance(value, str):
            raise BadRequestError(
                where, "must be a string of comma-separated paths", "INVALID_TYPE"
            )
        return
    if name in _WRAPPERS:
        check_value(descriptor.fields_by_name["value"], value, where)
        return
    if not isinstance(value, dict):
        raise BadRequestError(where or "body", "must be a JSON object", "INVALID_TYPE")
    if descriptor.GetOptions().map_entry:  # pragma: no cover - maps are checked by the field
        return
    given: set[str] = set()
    for key, item in value.items():
        here = f"{where}.{key}" if where else str(key)
        fld = field_named(descriptor, key) if isinstance(key, str) else None
        if fld is None:
            raise BadRequestError(here, "unknown field", "UNKNOWN_FIELD")
        if fld.name in given:  # once by its proto name, once by its JSON name
            raise BadRequestError(
                here, "given more than once in one object (by two names)", "DUPLICATE_FIELD"
            )
        given.add(fld.name)
        here = f"{where}.{fld.json_name}" if where else fld.json_name
        if item is None:
            continue
        entry = fld.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if not isinstance(item, dict):
                raise BadRequestError(here, "must be a JSON object", "INVALID_TYPE")
            for map_key, map_value in item.items():
                check_value(
                    entry.fields_by_name["value"], map_value, f"{here}[{json.dumps(map_key)}]"
                )
        elif fld.is_repeated:
            if not isinstance(item, list):
                raise BadRequestError(here, "must be a JSON array", "INVALID_TYPE")
            for i, element in enumerate(item):
                if element is None:
                    raise BadRequestError(f"{here}[{i}]", "must not be null", "INVALID_TYPE")
                check_value(fld, element, f"{here}[{i}]")
        else:
            check_value(fld, item, here)


def _parses(target: Timestamp | Duration, text: str) -> bool:
    try:
        target.FromJsonString(text)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _resolve(descriptor: Descriptor, dotted: str, unknown: str = "") -> list[FieldDescriptor]:
    """The chain of fields a dotted path names (proto or JSON names), or BadRequestError
    (`unknown`: what to say when no field has the name)."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in dotted.split("."):
        if current is None:
            raise BadRequestError(dotted, "is not a message field, cannot select into it")
        fld = field_named(current, part)
        if fld is None:
            raise BadRequestError(dotted, unknown or f"no such field in {descriptor.name}")
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
    if fld.name == "page_size" and kind in _INT_RANGES and re.fullmatch(r"\d+", text.strip()):
        # AIP-158: a page size above the maximum is read as the maximum (the service coerces
        # what fits the field; beyond the field's range it is the field's largest value)
        return str(min(int(text.strip()), _INT_RANGES[kind][1]))
    check_value(fld, text, where)
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
    """A json_format error the checks before it did not foresee, as a BadRequestError naming
    the field where it can be told; the library's own text is logged, not sent."""
    text = str(error)
    logger.info("request JSON refused by json_format: %s", text[:500])
    missing = re.search(r'has no field named "([^"]+)" at "([^"]+)"', text)
    if missing:
        scope = missing.group(2).partition(".")[2]
        field = f"{scope}.{missing.group(1)}" if scope else missing.group(1)
        return BadRequestError(field, "unknown field", "UNKNOWN_FIELD")
    located = re.search(r" at ([\w.\[\]]+)$", text.split("\n")[0].rstrip("."))
    if located and "." in located.group(1):
        field = located.group(1).rstrip(".").partition(".")[2]
        return BadRequestError(field, "invalid value", "INVALID_VALUE")
    chain = re.findall(r"Failed to parse (\S+) field", text)
    return BadRequestError(".".join(chain), "invalid value", "INVALID_VALUE")


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
            self._parse_json(message, descriptor, body, "")
            bound = {f.name for f in descriptor.fields}
        elif binding.body:
            fld = descriptor.fields_by_name[binding.body]
            bound.add(fld.name)
            target = getattr(message, fld.name)
            if fld.message_type is not None and fld.message_type.full_name == HTTP_BODY:
                target.content_type = content_type
                target.data = body
            elif fld.message_type is not None and not fld.is_repeated:
                self._parse_json(target, fld.message_type, body, fld.json_name)
            else:
                self._parse_field_json(message, descriptor, fld, body)
        fields: dict[str, Any] = {}
        for key, raw in query:
            try:
                chain = _resolve(
                    descriptor, key, f"unknown query parameter (no such field in {descriptor.name})"
                )
                if chain[0].name in bound:
                    raise BadRequestError(
                        key, "is bound by the request body, not a query parameter"
                    )
                _set_path(fields, chain, _scalar(chain[-1], raw, key), append=True)
            except BadRequestError as exc:
                raise exc.in_query() from None
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
                sent = _get_path(message, path)
                if sent not in (None, "", _get_path(extra, path)):
                    raise BadRequestError(
                        json_path(descriptor, path),
                        "contradicts the value in the path; leave it out of the body",
                        "PATH_MISMATCH",
                    )
                _clear_path(message, path)
            message.MergeFrom(extra)
        return message

    def _parse_json(self, target: Message, descriptor: Descriptor, body: bytes, where: str) -> None:
        value = _load_json(body, where)
        if not isinstance(value, dict):
            raise BadRequestError(where or "body", "must be a JSON object", "INVALID_TYPE")
        check_message_json(descriptor, value, where)
        try:
            json_format.ParseDict(value, target, descriptor_pool=self.catalog.pool)
        except _PARSE_ERRORS as exc:
            failure = parse_failure(exc)
            field = (
                f"{where}.{failure.field}" if where and failure.field else where or failure.field
            )
            raise BadRequestError(field, failure.description) from None

    def _parse_field_json(
        self, message: Message, descriptor: Descriptor, fld: FieldDescriptor, body: bytes
    ) -> None:
        value = _load_json(body, fld.json_name)
        check_message_json(descriptor, {fld.name: value}, "")
        try:
            json_format.ParseDict({fld.name: value}, message, descriptor_pool=self.catalog.pool)
        except _PARSE_ERRORS as exc:
            failure = parse_failure(exc)
            raise BadRequestError(fld.json_name, failure.description, failure.reason) from None

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
        value = json.loads(text, object_pairs_hook=_object)
    except RecursionError:  # pragma: no cover - json_depth refuses such documents first
        raise BadRequestError(field, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
        raise BadRequestError(field, f"malformed JSON: {exc}") from None
    duplicate = _first_duplicate(value, where)
    if duplicate is not None:
        raise BadRequestError(duplicate, "given more than once in one object", "DUPLICATE_FIELD")
    return value


class _Object(dict[str, Any]):
    """A JSON object as parsed, remembering the first key it named twice."""

    duplicate: str | None = None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook: the object, marked when a key occurs twice in it."""
    found = _Object(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                found.duplicate = key
                break
            seen.add(key)
    return found


def _first_duplicate(value: Any, where: str) -> str | None:
    """The JSON path (`members[1].displayName`, keys as sent) of the first key named twice
    in one object of `value`, in document order, or None. Depth is bounded by json_depth."""
    if isinstance(value, _Object):
        if value.duplicate is not None:
            return _member(where, value.duplicate)
        for key, item in value.items():
            found = _first_duplicate(item, _member(where, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_duplicate(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _member(where: str, key: str) -> str:
    """The path of `key` inside the object at `where` (a key that is no plain name is quoted,
    as map keys are: `labels["a b"]`)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{where}[{json.dumps(key)}]"
    return f"{where}.{key}" if where else key


def _get_path(message: Any, dotted: str) -> Any:
    """The value at a path variable's field in `message` (None when a parent is unset)."""
    *parents, last = dotted.split(".")
    node = message
    for part in parents:
        fld = field_named(node.DESCRIPTOR, part)
        if fld is None or not node.HasField(fld.name):
            return None
        node = getattr(node, fld.name)
    fld = field_named(node.DESCRIPTOR, last)
    return None if fld is None or fld.message_type is not None else getattr(node, fld.name)


def _clear_path(message: Any, dotted: str) -> None:
    """Clear the field a path variable names, so the variable wins over the body."""
    *parents, last = dotted.split(".")
    node = message
    for part in parents:
        fld = field_named(node.DESCRIPTOR, part)
        if fld is None or not node.HasField(fld.name):
            return
        node = getattr(node, fld.name)
    fld = field_named(node.DESCRIPTOR, last)
    if fld is not None:
        node.ClearField(fld.name)
