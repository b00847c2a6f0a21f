"""The signature on outbound webhooks: ``Mppo-Signature: t=<unix>,v1=<hex>``.

``v1`` is the hex HMAC-SHA256 of ``f"{t}.{body}"`` (body = the exact request bytes) under
the shared secret ``MPPO_NOTIFY_WEBHOOK_SECRET``. A receiver recomputes it, compares in
constant time and rejects timestamps more than ``tolerance`` seconds away from its clock
(replay protection), the same scheme as Stripe's ``Stripe-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Mppo-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match."""


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check ``header`` against ``body``; returns the signed timestamp or raises SignatureError.

    Any of several ``v1=`` values may match (a sender rotating secrets sends one per secret).
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("malformed signature header")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance")
    expected = compute(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
    return timestamp
