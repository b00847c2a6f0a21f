"""Hostile-input checks for any protobuf message, run at the edge of every RPC.

`check_message(msg)` walks a message (nested messages, repeated and map fields too) and raises
`InvalidArgumentError` with one `FieldViolation` per bad field, named by its proto path
(`host.display_name`, `items[0].sku`, `labels["k"]`) like the services' own violations:

- strings: at most `MAX_STRING` characters (`MAX_TEXT` for free-text fields, `MAX_URL` for URL
  fields); no control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) and no
  unpaired surrogates. Free-text fields (`FREE_TEXT_FIELDS`) may contain tab, LF and CR.
- ids (a field named `id`, ending in `_id`, or a repeated field ending in `_ids`): the ids we
  issue (`UUID_ID_FIELDS`: `str(uuid.uuid4())`, lower-case 8-4-4-4-12 hex) must have exactly
  that shape; every other id (merchant ids, JWT subjects, client-chosen line ids, provider ids)
  1 to `MAX_ID` visible ASCII characters (U+0021-U+007E). An empty id is "not set": whether it is
  required is the service's business.
- bytes: at most `MAX_BYTES`.
- nesting: at most `MAX_DEPTH` messages deep.

Pure and cheap (it runs on every call): one pass over the set fields (`ListFields`), a length
check and one precompiled regex per string, the rule of each field cached by its descriptor;
field paths are only built for the fields at fault.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from mppo.platform.errors import FieldViolation, InvalidArgumentError

MAX_STRING = 256
MAX_TEXT = 2000
MAX_URL = 2048
MAX_ID = 128
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
REASON = "INVALID_INPUT"

#: Ids our services issue, all `str(uuid.uuid4())`.
UUID_ID_FIELDS = frozenset({"group_id", "member_id", "payment_id", "order_id", "notification_id"})
#: Human-written text shown to people: longer, and may span lines.
FREE_TEXT_FIELDS = frozenset({"description", "reason", "close_reason", "last_error", "detail"})

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class _Rule:
    """How the strings of one field are checked."""

    max_length: int
    forbidden: re.Pattern[str]
    shape: re.Pattern[str] | None = None
    shape_text: str = ""


_DEFAULT = _Rule(MAX_STRING, _CONTROL)
_TEXT = _Rule(MAX_TEXT, _CONTROL_IN_TEXT)
_URL = _Rule(MAX_URL, _CONTROL)
_UUID_ID = _Rule(36, _CONTROL, _UUID, "must be an id as we issue it (a lower-case UUID)")
_OTHER_ID = _Rule(
    MAX_ID, _CONTROL, _VISIBLE_ASCII, "must be visible ASCII characters (no spaces or controls)"
)

# Per field descriptor: (kind, rule, is_map); kind is _MSG, _STR, _BYTES or 0 (not checked).
_MSG, _STR, _BYTES = 1, 2, 3
_FIELDS: dict[FieldDescriptor, tuple[int, _Rule, bool]] = {}


def rule_for(name: str, *, repeated: bool = False) -> _Rule:
    """The string rule for a field with proto name `name`."""
    if repeated and name.endswith("_ids"):
        name = name[:-1]
    if name == "id" or name.endswith("_id"):
        return _UUID_ID if name in UUID_ID_FIELDS else _OTHER_ID
    if name in FREE_TEXT_FIELDS:
        return _TEXT
    if name.endswith(("_url", "_link")) or name in ("url", "link"):
        return _URL
    return _DEFAULT


def _field(fld: FieldDescriptor) -> tuple[int, _Rule, bool]:
    kind = 0
    is_map = False
    if fld.type == FieldDescriptor.TYPE_MESSAGE:
        kind = _MSG
        entry = fld.message_type
        is_map = bool(fld.is_repeated and entry is not None and entry.GetOptions().map_entry)
    elif fld.type == FieldDescriptor.TYPE_STRING:
        kind = _STR
    elif fld.type == FieldDescriptor.TYPE_BYTES:
        kind = _BYTES
    found = (kind, rule_for(fld.name, repeated=fld.is_repeated), is_map)
    _FIELDS[fld] = found
    return found


def string_problem(value: str, rule: _Rule) -> str:
    """What is wrong with `value` under `rule`, or "" if nothing."""
    if len(value) > rule.max_length:
        return f"longer than {rule.max_length} characters ({len(value)})"
    bad = rule.forbidden.search(value)
    if bad is not None:
        char = bad.group()
        what = "an unpaired surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        return f"contains {what} (U+{ord(char):04X}) at position {bad.start()}"
    if rule.shape is not None and value and rule.shape.fullmatch(value) is None:
        return rule.shape_text
    return ""


def _bad(value: str, rule: _Rule) -> bool:
    return (
        len(value) > rule.max_length
        or rule.forbidden.search(value) is not None
        or (rule.shape is not None and value != "" and rule.shape.fullmatch(value) is None)
    )


def _check_bytes(value: bytes, path: str, out: list[FieldViolation]) -> None:
    if len(value) > MAX_BYTES:
        out.append(FieldViolation(path, f"larger than {MAX_BYTES} bytes ({len(value)})"))


def _key(key: Any) -> str:
    if not isinstance(key, str):
        return str(key)
    return json.dumps(key if len(key) <= 64 else key[:61] + "...")


def _walk(msg: Message, prefix: str, depth: int, out: list[FieldViolation]) -> None:
    if depth > MAX_DEPTH:
        out.append(FieldViolation(prefix.rstrip("."), f"nested deeper than {MAX_DEPTH} messages"))
        return
    for fld, value in msg.ListFields():
        kind, rule, is_map = _FIELDS.get(fld) or _field(fld)
        if kind == _STR:
            if fld.is_repeated:
                for i, item in enumerate(value):
                    if _bad(item, rule):
                        path = f"{prefix}{fld.name}[{i}]"
                        out.append(FieldViolation(path, string_problem(item, rule)))
            elif _bad(value, rule):
                out.append(FieldViolation(prefix + fld.name, string_problem(value, rule)))
        elif kind == _MSG:
            if is_map:
                _walk_map(fld, value, prefix + fld.name, depth, out)
            elif fld.is_repeated:
                for i, item in enumerate(value):
                    _walk(item, f"{prefix}{fld.name}[{i}].", depth + 1, out)
            else:
                _walk(value, f"{prefix}{fld.name}.", depth + 1, out)
        elif kind == _BYTES:
            if fld.is_repeated:
                for i, item in enumerate(value):
                    _check_bytes(item, f"{prefix}{fld.name}[{i}]", out)
            else:
                _check_bytes(value, prefix + fld.name, out)


def _walk_map(
    fld: FieldDescriptor, value: Any, path: str, depth: int, out: list[FieldViolation]
) -> None:
    entry = fld.message_type
    assert entry is not None  # a map field's type is its entry message
    string_keys = entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING
    value_field = entry.fields_by_name["value"]
    value_kind, value_rule, _ = _FIELDS.get(value_field) or _field(value_field)
    for key, item in value.items():
        where = f"{path}[{_key(key)}]"
        if string_keys and _bad(key, _DEFAULT):
            out.append(FieldViolation(where, f"key {string_problem(key, _DEFAULT)}"))
        if value_kind == _MSG:
            _walk(item, where + ".", depth + 1, out)
        elif value_kind == _STR and _bad(item, value_rule):
            out.append(FieldViolation(where, string_problem(item, value_rule)))
        elif value_kind == _BYTES:
            _check_bytes(item, where, out)


def violations(msg: Message) -> list[FieldViolation]:
    """Every hostile-input violation in `msg` (empty when it is acceptable)."""
    found: list[FieldViolation] = []
    _walk(msg, "", 0, found)
    return found


def check_message(msg: Message) -> None:
    """Raise InvalidArgumentError naming every bad field of `msg`; return if there is none."""
    found = violations(msg)
    if not found:
        return
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise InvalidArgumentError(
        f"invalid {first.field}: {first.description}{more}", found, reason=REASON
    )
