"""The outbound webhook signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notification_svc.domain import signature
from notification_svc.domain.signature import SignatureError

SECRET = "whsec_test"
BODY = b'{"id":"n1"}'


def test_header_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = signature.sign(SECRET, 1_700_000_000, BODY)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


@given(body=st.binary(max_size=200), t=st.integers(min_value=0, max_value=2**33))
def test_sign_then_verify_round_trips(body: bytes, t: int) -> None:
    assert signature.verify(SECRET, signature.sign(SECRET, t, body), body, now=t) == t


@pytest.mark.parametrize(
    ("header", "body", "now", "why"),
    [
        (signature.sign(SECRET, 100, BODY), BODY + b" ", 100, "does not match"),
        (signature.sign("other", 100, BODY), BODY, 100, "does not match"),
        (signature.sign(SECRET, 100, BODY), BODY, 100 + 301, "tolerance"),
        (signature.sign(SECRET, 100, BODY), BODY, 100 - 301, "tolerance"),
        ("v1=abc", BODY, 100, "malformed"),
        ("t=100", BODY, 100, "malformed"),
        ("", BODY, 100, "malformed"),
    ],
)
def test_verify_rejects_tampered_stale_or_malformed(
    header: str, body: bytes, now: int, why: str
) -> None:
    with pytest.raises(SignatureError, match=why):
        signature.verify(SECRET, header, body, now=now)


def test_any_of_several_v1_values_may_match_for_secret_rotation() -> None:
    good = signature.compute(SECRET, 5, BODY)
    assert signature.verify(SECRET, f"t=5,v1=deadbeef,v1={good}", BODY, now=5) == 5
