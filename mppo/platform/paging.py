"""AIP-158 pagination shared by the list methods: the page size rule and opaque page tokens.

Every list takes `page_size` and `page_token` and answers `next_page_token` (empty on the last
page). A `page_size` of 0 asks for the method's default, one above the maximum is coerced to
the maximum (not refused), a negative one is INVALID_ARGUMENT.

A token carries a keyset position (the last row a page covered) and the fingerprint of the
query it continues: the request's method, every field but `page_size` and `page_token`, and
the caller. A token sent with any of those changed (another group, another filter, another
caller) is INVALID_ARGUMENT, as AIP-158 asks, rather than a page of some other listing. Tokens
are opaque to clients (base64url of a versioned JSON object); a hand-made position only moves
within what the caller may list anyway, since every list applies the caller's scope itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from google.protobuf.message import Message

from mppo.platform.errors import FieldViolation, InvalidArgumentError

#: the largest page any list returns
MAX_PAGE_SIZE = 100
#: the token layout; a token of another version is refused like a foreign one
_VERSION = 1
_PAGING_FIELDS = ("page_size", "page_token")


def page_size(requested: int, *, default: int = MAX_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The size of the page to return for a request's `page_size`."""
    if requested < 0:
        raise InvalidArgumentError(
            "page_size must not be negative", [FieldViolation("page_size", "0 or more")]
        )
    return min(requested or default, maximum)


def query_of(request: Message, caller: str) -> str:
    """The fingerprint of the listing `request` asks `caller` for: its method (the request's
    type), every field but the paging ones, and who asks."""
    rest = type(request)()
    rest.CopyFrom(request)
    for name in _PAGING_FIELDS:
        if name in rest.DESCRIPTOR.fields_by_name:
            rest.ClearField(name)
    digest = hashlib.sha256()
    for part in (rest.DESCRIPTOR.full_name, caller):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(rest.SerializeToString(deterministic=True))
    return digest.hexdigest()[:24]


def encode_token(query: str, *key: str) -> str:
    """An opaque token for the keyset position `key` of the listing `query` (`query_of`)."""
    body = {"v": _VERSION, "q": query, "k": list(key)}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_token() -> InvalidArgumentError:
    """The error for a page token that is not one of ours (also for a position a list finds
    malformed after decoding, e.g. a timestamp that does not parse)."""
    return InvalidArgumentError(
        "bad page token",
        [FieldViolation("page_token", "use a token from a response")],
        reason="PAGE_TOKEN_INVALID",
    )


def decode_token(token: str, query: str, length: int) -> list[str]:
    """The keyset position in `token` (from `encode_token` for `query` with `length` parts).

    INVALID_ARGUMENT on `page_token` when the token is not one of ours, or continues another
    listing (the request changed something besides the page size)."""
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        body = None
    key = body.get("k") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("v") != _VERSION
        or not isinstance(key, list)
        or len(key) != length
        or not all(isinstance(k, str) for k in key)
    ):
        raise invalid_token()
    if body.get("q") != query:
        raise InvalidArgumentError(
            "the page token continues another listing",
            [
                FieldViolation(
                    "page_token",
                    "it was issued for other parameters; send the same parameters as the first"
                    " page, or start again without a token",
                )
            ],
            reason="PAGE_TOKEN_MISMATCH",
        )
    return key
