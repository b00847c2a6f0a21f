"""Request signing between the order service and a merchant backend.

Header ``X-Mppo-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256(shared secret, ``<t>.<METHOD>.<path with query>.`` + raw body bytes). The
receiver recomputes it, compares in constant time and refuses timestamps more than
``TOLERANCE_SECONDS`` away from its clock (replay window). Method and path are signed so a
captured body cannot be replayed against another endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Mppo-Signature"
TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or wrong."""


def _digest(secret: bytes, timestamp: int, method: str, path: str, body: bytes) -> str:
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, path: str, body: bytes, *, now: float | None = None) -> str:
    """The header value for a request."""
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={_digest(secret, timestamp, method, path, body)}"


def verify(
    secret: bytes,
    header: str | None,
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless `header` signs this request within the tolerance."""
    if not header:
        raise SignatureError(f"missing {HEADER}")
    parts: dict[str, str] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key] = value
    if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
        raise SignatureError(f"malformed {HEADER}")
    timestamp = int(parts["t"])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("signature timestamp outside the tolerance")
    expected = _digest(secret, timestamp, method, path, body)
    if not hmac.compare_digest(expected, parts["v1"]):
        raise SignatureError("signature mismatch")
