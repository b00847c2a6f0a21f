"""Reading a verified webhook body without trusting its shape.

A signature proves who sent a body, not that it has the shape we expect. Every adapter reads
its events through these helpers, so a body that is not JSON, nests too deep, or has a field of
the wrong type, length or content is a :class:`WebhookVerificationError` (the service answers
INVALID_ARGUMENT and records it), never a ``KeyError``/``TypeError``/``RecursionError`` that
would become INTERNAL and make the provider redeliver it forever.

Absent (or ``null``) optional fields read as empty; present fields of the wrong type are
refused. Ids are bounded and printable ASCII; free text is bounded and has no control
characters other than tab and newline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from payment_svc.adapters.providers.base import WebhookVerificationError

#: deepest JSON nesting accepted (real events nest below 10)
MAX_DEPTH = 32
#: longest id accepted (provider ids, event ids, our payment id echoed back)
MAX_ID = 255
#: longest free text accepted (failure messages, descriptions)
MAX_TEXT = 5000
#: largest integer accepted (amounts, timestamps): a Postgres BIGINT
MAX_INT = (1 << 63) - 1

Json = dict[str, Any]

_ID = re.compile(r"[\x21-\x7e]*")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def malformed(what: str) -> WebhookVerificationError:
    """The error for a body of the wrong shape."""
    return WebhookVerificationError(f"malformed webhook: {what}")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_object(body: bytes, what: str) -> Json:
    """The body as a JSON object of bounded depth."""
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise malformed(f"{what} nests deeper than {MAX_DEPTH}") from exc
    except ValueError as exc:  # includes UnicodeDecodeError and oversized integers
        raise malformed(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise malformed(f"{what} is not a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise malformed(f"{what} nests deeper than {MAX_DEPTH}")
    return value


def obj(parent: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> Json:
    """``parent[key]`` as an object ({} when absent or null, unless required)."""
    value = parent.get(key)
    if value is None:
        if required:
            raise malformed(f"{where}.{key} is missing")
        return {}
    if not isinstance(value, dict):
        raise malformed(f"{where}.{key} must be an object")
    return value


def items(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """``parent[key]`` as a list ([] when absent or null)."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(f"{where}.{key} must be a list")
    return value


def ident(parent: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    """``parent[key]`` as an id: a string of printable ASCII, at most MAX_ID long."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise malformed(f"{where}.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise malformed(f"{where}.{key} must be a string")
    if len(value) > MAX_ID or not _ID.fullmatch(value):
        raise malformed(f"{where}.{key} is not an id (printable ASCII, at most {MAX_ID})")
    return value


def text(parent: Mapping[str, Any], key: str, where: str) -> str:
    """``parent[key]`` as free text ("" when absent or null)."""
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise malformed(f"{where}.{key} must be a string")
    if len(value) > MAX_TEXT or _CONTROL_IN_TEXT.search(value):
        raise malformed(f"{where}.{key} is too long or has control characters")
    return value


def integer(parent: Mapping[str, Any], key: str, where: str) -> int:
    """``parent[key]`` as a non-negative integer (0 when absent or null)."""
    value = parent.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise malformed(f"{where}.{key} must be a non-negative integer")
    return value


def claim(parent: Mapping[str, Any], key: str, where: str) -> str:
    """A reference the event echoes back (metadata, notes, custom id): a string, or "" when
    it cannot be one of our ids (other integrations on the same account write what they
    like there; that is no reason to refuse the event)."""
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise malformed(f"{where}.{key} must be a string")
    return value if len(value) <= MAX_ID and _ID.fullmatch(value) else ""


def reference(parent: Mapping[str, Any], key: str, where: str) -> str:
    """An id given either as a string or as an expanded object with an ``id``."""
    value = parent.get(key)
    if isinstance(value, dict):
        return ident(value, "id", f"{where}.{key}")
    return ident(parent, key, where)
