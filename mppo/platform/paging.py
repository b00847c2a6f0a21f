"""AIP-158 pagination shared by the list methods: the page size rule and opaque page tokens.

Every list takes `page_size` and `page_token` and answers `next_page_token` (empty on the last
page). A `page_size` of 0 asks for the method's default, one above the maximum is coerced to
the maximum (not refused), a negative one is INVALID_ARGUMENT. Tokens are keyset positions
(the last row a page covered), opaque to clients: base64url of a JSON list of strings.
"""

from __future__ import annotations

import base64
import binascii
import json

from mppo.platform.errors import FieldViolation, InvalidArgumentError

#: the largest page any list returns
MAX_PAGE_SIZE = 100


def page_size(requested: int, *, default: int = MAX_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The size of the page to return for a request's `page_size`."""
    if requested < 0:
        raise InvalidArgumentError(
            "page_size must not be negative", [FieldViolation("page_size", "0 or more")]
        )
    return min(requested or default, maximum)


def encode_token(*key: str) -> str:
    """An opaque token for the keyset position `key`."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_token(token: str, length: int) -> list[str]:
    """The keyset position in `token` (from `encode_token` with `length` parts)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != length or not all(isinstance(k, str) for k in key):
        raise InvalidArgumentError(
            "bad page token", [FieldViolation("page_token", "use a token from a response")]
        )
    return key
