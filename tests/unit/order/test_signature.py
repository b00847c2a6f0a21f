"""Merchant request signing."""

from __future__ import annotations

import pytest

from order_svc.adapters.merchant_signature import SignatureError, sign, verify

SECRET = b"s3cret"


def test_round_trip() -> None:
    header = sign(SECRET, "POST", "/v1/orders", b"{}", now=1_700_000_000)
    verify(SECRET, header, "POST", "/v1/orders", b"{}", now=1_700_000_100)


@pytest.mark.parametrize(
    ("method", "path", "body", "secret"),
    [
        ("POST", "/v1/orders", b"{ }", SECRET),
        ("GET", "/v1/orders", b"{}", SECRET),
        ("POST", "/v1/reservations", b"{}", SECRET),
        ("POST", "/v1/orders", b"{}", b"other"),
    ],
)
def test_any_change_breaks_it(method: str, path: str, body: bytes, secret: bytes) -> None:
    header = sign(SECRET, "POST", "/v1/orders", b"{}", now=1_700_000_000)
    with pytest.raises(SignatureError, match="mismatch"):
        verify(secret, header, method, path, body, now=1_700_000_000)


def test_stale_missing_and_malformed() -> None:
    header = sign(SECRET, "POST", "/p", b"", now=1_700_000_000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, header, "POST", "/p", b"", now=1_700_000_301)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, None, "POST", "/p", b"")
    with pytest.raises(SignatureError, match="malformed"):
        verify(SECRET, "v1=abc", "POST", "/p", b"")
