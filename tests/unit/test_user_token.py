"""User tokens: what the gateway signs and services verify; every forgery is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mppo.platform.tls import mint_dev_pki
from mppo.platform.user_token import (
    USER_TOKEN_KEY,
    UserTokenAlgorithmError,
    UserTokenClaimsError,
    UserTokenError,
    UserTokenExpiredError,
    UserTokenMalformedError,
    UserTokenSignatureError,
    UserTokenSigner,
    UserTokenVerifier,
    load_signer,
    load_verifier,
    token_from_metadata,
)


def _keys() -> tuple[ed25519.Ed25519PrivateKey, bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, private_pem, public_pem


KEY, PRIVATE_PEM, PUBLIC_PEM = _keys()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "mppo-gateway",
        "aud": "mppo-services",
        "sub": "alice",
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_and_claims() -> None:
    token = UserTokenSigner(PRIVATE_PEM).sign("alice")
    assert UserTokenVerifier(PUBLIC_PEM).verify(token) == "alice"

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "mppo-gateway"
    assert claims["aud"] == "mppo-services"
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 60
    other = jwt.decode(
        UserTokenSigner(PRIVATE_PEM).sign("alice"), options={"verify_signature": False}
    )
    assert len(claims["jti"]) >= 16
    assert other["jti"] != claims["jti"]


def test_expired_token_is_refused() -> None:
    issued = time.time() - 120
    token = UserTokenSigner(PRIVATE_PEM, ttl=60, clock=lambda: issued).sign("alice")
    with pytest.raises(UserTokenExpiredError, match="expired"):
        UserTokenVerifier(PUBLIC_PEM, leeway=5).verify(token)
    # within the leeway it still passes; a moment later it does not
    now = time.time()
    fresh = UserTokenSigner(PRIVATE_PEM, ttl=1, clock=lambda: now).sign("alice")
    assert UserTokenVerifier(PUBLIC_PEM, leeway=5, clock=lambda: now + 5).verify(fresh) == "alice"
    with pytest.raises(UserTokenExpiredError):
        UserTokenVerifier(PUBLIC_PEM, leeway=5, clock=lambda: now + 7).verify(fresh)


def test_token_issued_in_the_future_is_refused() -> None:
    future = time.time() + 600
    token = UserTokenSigner(PRIVATE_PEM, clock=lambda: future).sign("alice")
    with pytest.raises(UserTokenExpiredError, match="future"):
        UserTokenVerifier(PUBLIC_PEM).verify(token)


def test_token_signed_with_another_key_is_refused() -> None:
    _, other_private, _ = _keys()
    token = UserTokenSigner(other_private).sign("alice")
    with pytest.raises(UserTokenSignatureError):
        UserTokenVerifier(PUBLIC_PEM).verify(token)


def test_altered_claims_break_the_signature() -> None:
    header, _, signature = UserTokenSigner(PRIVATE_PEM).sign("alice").split(".")
    forged = f"{header}.{_b64(json.dumps(_claims(sub='mallory')).encode())}.{signature}"
    with pytest.raises(UserTokenSignatureError):
        UserTokenVerifier(PUBLIC_PEM).verify(forged)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"aud": "mppo-api"}, "audience"),
        ({"iss": "https://auth.mppo.dev/"}, "issuer"),
        ({"sub": None}, "sub"),
        ({"jti": None}, "jti"),
        ({"exp": None}, "exp"),
        ({"sub": ""}, "subject"),
        ({"sub": "alice\n"}, "subject"),
        ({"sub": 42}, "(?i)subject"),
        ({"exp": "soon"}, "exp"),
    ],
)
def test_wrong_or_missing_claims_are_refused(overrides: dict[str, object], match: str) -> None:
    token = jwt.encode(_claims(**overrides), KEY, algorithm="EdDSA")
    with pytest.raises(UserTokenClaimsError, match=match):
        UserTokenVerifier(PUBLIC_PEM).verify(token)


def test_alg_none_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    with pytest.raises(UserTokenAlgorithmError, match="'none'"):
        UserTokenVerifier(PUBLIC_PEM).verify(unsigned)


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The classic confusion: HMAC keyed with the (public) verification key.
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(PUBLIC_PEM, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(UserTokenAlgorithmError, match="HS256"):
        UserTokenVerifier(PUBLIC_PEM).verify(f"{header}.{payload}.{_b64(mac)}")


def test_es256_token_is_refused() -> None:
    token = jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    with pytest.raises(UserTokenAlgorithmError):
        UserTokenVerifier(PUBLIC_PEM).verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "!!.??.##", "x" * 5000])
def test_garbage_is_refused_as_malformed(token: str) -> None:
    with pytest.raises(UserTokenMalformedError):
        UserTokenVerifier(PUBLIC_PEM).verify(token)


def test_every_refusal_is_a_user_token_error() -> None:
    for cls in (
        UserTokenExpiredError,
        UserTokenSignatureError,
        UserTokenClaimsError,
        UserTokenAlgorithmError,
        UserTokenMalformedError,
    ):
        assert issubclass(cls, UserTokenError)


def test_keys_of_the_wrong_kind_are_refused() -> None:
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="Ed25519 private key"):
        UserTokenSigner(ec_pem)
    ec_public = ec_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="Ed25519 public key"):
        UserTokenVerifier(ec_public)
    with pytest.raises(ValueError, match="user id"):
        UserTokenSigner(PRIVATE_PEM).sign(" alice")


def test_loaders_read_the_tls_dir_or_explicit_files(tmp_path: Path) -> None:
    assert load_signer({}) is None
    assert load_verifier({}) is None
    mint_dev_pki(tmp_path, [])
    env = {"MPPO_TLS_DIR": str(tmp_path)}
    signer, verifier = load_signer(env), load_verifier(env)
    assert signer is not None
    assert verifier is not None
    assert verifier.verify(signer.sign("bob")) == "bob"

    (tmp_path / "priv.pem").write_bytes(PRIVATE_PEM)
    (tmp_path / "pub.pem").write_bytes(PUBLIC_PEM)
    explicit = {
        **env,
        "MPPO_USER_TOKEN_PRIVATE_KEY_FILE": str(tmp_path / "priv.pem"),
        "MPPO_USER_TOKEN_PUBLIC_KEY_FILE": str(tmp_path / "pub.pem"),
    }
    signer, verifier = load_signer(explicit), load_verifier(explicit)
    assert signer is not None
    assert verifier is not None
    token = signer.sign("carol")
    assert UserTokenVerifier(PUBLIC_PEM).verify(token) == "carol"
    with pytest.raises(UserTokenSignatureError):
        UserTokenVerifier((tmp_path / "user-token.pub").read_bytes()).verify(token)

    with pytest.raises(ValueError, match="cannot read user-token key"):
        load_verifier({"MPPO_USER_TOKEN_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")})


def test_token_from_metadata() -> None:
    assert token_from_metadata(None) is None
    assert token_from_metadata((("x-mppo-user-id", "alice"),)) is None
    assert token_from_metadata((("a", "b"), (USER_TOKEN_KEY, " t.o.k "))) == "t.o.k"
