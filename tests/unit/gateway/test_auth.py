"""JWT verification: signature, iss, aud, exp, nbf, pinned ES256, JWKS from a file."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import AuthError, JwksSource, JwtVerifier
from gateway.devkeys import DEV_AUDIENCE, DEV_ISSUER, dev_keys, jwks_for, mint_token

ISSUER = "https://issuer.test/"
AUDIENCE = "mppo-api"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def verifier(key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> JwtVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_for(key.public_key(), "k1")))
    return JwtVerifier(JwksSource(str(path)), ISSUER, AUDIENCE)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _token(key: Any, alg: str = "ES256", kid: str = "k1", **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_valid_token_gives_the_subject(
    verifier: JwtVerifier, key: ec.EllipticCurvePrivateKey
) -> None:
    identity = await verifier.verify(f"Bearer {_token(key)}")
    assert identity.user_id == "alice"


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not-bearer",
        "garbage",
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "no-exp",
        "no-sub",
        "alg-none",
        "hs256-with-public-key",
        "rs256",
        "other-key",
        "unknown-kid",
        "tampered-payload",
    ],
)
async def test_bad_tokens_are_rejected(
    verifier: JwtVerifier, key: ec.EllipticCurvePrivateKey, case: str
) -> None:
    now = int(time.time())
    other = ec.generate_private_key(ec.SECP256R1())
    header: str | None
    if case == "missing":
        header = None
    elif case == "not-bearer":
        header = f"Basic {_token(key)}"
    elif case == "garbage":
        header = "Bearer not.a.jwt"
    elif case == "expired":
        header = f"Bearer {_token(key, exp=now - 120, iat=now - 600, nbf=now - 600)}"
    elif case == "not-yet-valid":
        header = f"Bearer {_token(key, nbf=now + 600, exp=now + 900)}"
    elif case == "wrong-audience":
        header = f"Bearer {_token(key, aud='someone-else')}"
    elif case == "wrong-issuer":
        header = f"Bearer {_token(key, iss='https://evil.test/')}"
    elif case == "no-exp":
        header = f"Bearer {_token(key, exp=None)}"
    elif case == "no-sub":
        header = f"Bearer {_token(key, sub=None)}"
    elif case == "alg-none":
        head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
        body = _b64(json.dumps(_claims()).encode())
        header = f"Bearer {head}.{body}."
    elif case == "hs256-with-public-key":
        # Algorithm confusion: HMAC keyed with the (public) verification key.
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        body = _b64(json.dumps(_claims()).encode())
        import hashlib
        import hmac

        sig = hmac.new(_public_pem(key), f"{head}.{body}".encode(), hashlib.sha256).digest()
        header = f"Bearer {head}.{body}.{_b64(sig)}"
    elif case == "rs256":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        header = f"Bearer {_token(rsa_key, alg='RS256')}"
    elif case == "other-key":
        header = f"Bearer {_token(other)}"
    elif case == "unknown-kid":
        header = f"Bearer {_token(key, kid='k9')}"
    else:  # tampered-payload: valid signature over different claims
        head, _, signature = _token(key).split(".")
        forged = _b64(json.dumps(_claims(sub="mallory")).encode())
        header = f"Bearer {head}.{forged}.{signature}"
    with pytest.raises(AuthError):
        await verifier.verify(header)


async def test_jwks_ignores_private_and_non_p256_keys(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    assert "d" in private_jwk
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(p384.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**private_jwk, "kid": "k1"}, {**p384_jwk, "kid": "k2"}]}))
    verifier = JwtVerifier(JwksSource(str(path)), ISSUER, AUDIENCE)
    with pytest.raises(AuthError, match="unknown key"):
        await verifier.verify(f"Bearer {_token(key, kid='k1')}")


async def test_dev_token_verifies_against_the_dev_jwks(tmp_path: Path) -> None:
    token = mint_token(tmp_path, "bob", ttl_seconds=60)
    keys = dev_keys(tmp_path)
    assert keys.private_key_path.stat().st_mode & 0o777 == 0o600
    jwks = json.loads(keys.jwks_path.read_text())
    assert all("d" not in k for k in jwks["keys"]), "the JWKS must hold only public keys"
    verifier = JwtVerifier(JwksSource(str(keys.jwks_path)), DEV_ISSUER, DEV_AUDIENCE)
    assert (await verifier.verify(f"Bearer {token}")).user_id == "bob"
    # the same key pair is reused, not regenerated
    again = mint_token(tmp_path, "carol")
    assert (await verifier.verify(f"Bearer {again}")).user_id == "carol"
