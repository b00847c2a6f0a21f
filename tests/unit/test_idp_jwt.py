"""The shared IdP JWT verifier (mppo.platform.idp_jwt) as the services use it: the raw token
(with or without `Bearer `), a short cache of verified tokens, JWKS reads shared by concurrent
calls, settings from the environment; and what Trust and `mppo dev pki` make of them."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import auth as gateway_auth
from gateway.app import _webhook_headers
from gateway.devkeys import jwks_for
from mppo.cli import main
from mppo.platform import idp_jwt, trust
from mppo.platform.config import ConfigError
from mppo.platform.errors import UnauthenticatedError
from mppo.platform.identity import Caller
from mppo.platform.idp_jwt import (
    AuthError,
    JwksSource,
    JwtVerifier,
    bearer_token,
    load_jwt_verifier,
)
from mppo.platform.tls import DEV_NAMES, TlsMaterial, service_from_certificate
from tests.support.pki import Pki

ISSUER = "https://idp.test/"
AUDIENCE = "mppo-api"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks_file(key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_for(key.public_key(), "k1")))
    return path


def _token(key: Any, sub: str = "alice", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + 300}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


class CountingJwks(JwksSource):
    """Counts how often a verification needed a key (a cache hit needs none)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.asked = 0
        self.reads = 0

    async def key(self, kid: str) -> Any:
        self.asked += 1
        return await super().key(kid)

    async def _read(self) -> dict[str, Any]:
        self.reads += 1
        await asyncio.sleep(0.01)
        return await super()._read()


def test_gateway_auth_re_exports_the_shared_verifier() -> None:
    assert gateway_auth.JwtVerifier is JwtVerifier
    assert gateway_auth.AuthError is AuthError
    assert gateway_auth.ALGORITHM == idp_jwt.ALGORITHM == "ES256"


def test_bearer_token() -> None:
    assert bearer_token("Bearer a.b.c") == "a.b.c"
    assert bearer_token("bearer   a.b.c ") == "a.b.c"
    assert bearer_token("a.b.c") == "a.b.c"
    assert bearer_token("Basic a.b.c") == "Basic a.b.c"  # then fails verification


async def test_verified_tokens_are_cached_by_hash_never_past_exp(
    key: ec.EllipticCurvePrivateKey, jwks_file: Path
) -> None:
    now = [1_000.0]
    source = CountingJwks(str(jwks_file))
    verifier = JwtVerifier(source, ISSUER, AUDIENCE, cache_seconds=30, clock=lambda: now[0])
    token = _token(key, exp=int(time.time()) + 300)
    for _ in range(5):
        assert (await verifier.verify_token(token)).user_id == "alice"
    assert source.asked == 1, "a verified token is remembered"
    now[0] += 31
    await verifier.verify_token(token)
    assert source.asked == 2, "and re-verified after cache_seconds"
    # a bad token is never remembered
    for _ in range(2):
        with pytest.raises(AuthError, match="audience"):
            await verifier.verify_token(_token(key, aud="other"))
    assert source.asked == 4


async def test_cache_ends_at_the_token_expiry(
    key: ec.EllipticCurvePrivateKey, jwks_file: Path
) -> None:
    source = CountingJwks(str(jwks_file))
    exp = int(time.time()) + 5
    now = [float(exp - 1)]
    verifier = JwtVerifier(source, ISSUER, AUDIENCE, cache_seconds=30, clock=lambda: now[0])
    token = _token(key, exp=exp)
    await verifier.verify_token(token)
    now[0] = exp + 1.0
    await verifier.verify_token(token)  # within PyJWT's leeway, but verified again
    assert source.asked == 2


async def test_cache_is_bounded(key: ec.EllipticCurvePrivateKey, jwks_file: Path) -> None:
    verifier = JwtVerifier(
        JwksSource(str(jwks_file)), ISSUER, AUDIENCE, cache_seconds=30, cache_size=3
    )
    for n in range(10):
        await verifier.verify_token(_token(key, sub=f"user{n}"))
    assert len(verifier._verified) == 3


async def test_the_gateway_caches_nothing(key: ec.EllipticCurvePrivateKey, jwks_file: Path) -> None:
    source = CountingJwks(str(jwks_file))
    verifier = JwtVerifier(source, ISSUER, AUDIENCE)
    token = _token(key)
    await verifier.verify(f"Bearer {token}")
    await verifier.verify(f"Bearer {token}")
    assert source.asked == 2


async def test_concurrent_calls_read_the_jwks_once(
    key: ec.EllipticCurvePrivateKey, jwks_file: Path
) -> None:
    source = CountingJwks(str(jwks_file))
    verifier = JwtVerifier(source, ISSUER, AUDIENCE)
    tokens = [_token(key, sub=f"u{n}") for n in range(20)]
    users = await asyncio.gather(*(verifier.verify_token(t) for t in tokens))
    assert [u.user_id for u in users] == [f"u{n}" for n in range(20)]
    assert source.reads == 1


async def test_oversized_and_empty_tokens(key: ec.EllipticCurvePrivateKey, jwks_file: Path) -> None:
    verifier = JwtVerifier(JwksSource(str(jwks_file)), ISSUER, AUDIENCE, cache_seconds=30)
    with pytest.raises(AuthError, match="too long"):
        await verifier.verify_token("a" * (idp_jwt.MAX_TOKEN_LENGTH + 1))
    with pytest.raises(AuthError, match="missing"):
        await verifier.verify_token("")


def test_settings_from_the_environment(jwks_file: Path) -> None:
    assert load_jwt_verifier({}) is None
    verifier = load_jwt_verifier(
        {
            "MPPO_JWT_JWKS": str(jwks_file),
            "MPPO_JWT_ISSUER": ISSUER,
            "MPPO_JWT_AUDIENCE": AUDIENCE,
        }
    )
    assert verifier is not None
    assert (verifier.issuer, verifier.audience) == (ISSUER, AUDIENCE)
    assert verifier.cache_seconds == idp_jwt.SERVICE_CACHE_SECONDS
    with pytest.raises(ValueError, match="MPPO_JWT_AUDIENCE must be set"):
        load_jwt_verifier({"MPPO_JWT_JWKS": str(jwks_file), "MPPO_JWT_ISSUER": ISSUER})
    with pytest.raises(ValueError, match="MPPO_JWT_JWKS must be set"):
        load_jwt_verifier({"MPPO_JWT_ISSUER": ISSUER})
    with pytest.raises(ValueError, match="dev"):
        load_jwt_verifier(
            {"MPPO_JWT_JWKS": "dev", "MPPO_JWT_ISSUER": ISSUER, "MPPO_JWT_AUDIENCE": AUDIENCE}
        )


def test_trust_reads_the_jwt_settings_only_for_tls_services(pki: Pki, jwks_file: Path) -> None:
    jwt_env = {
        "MPPO_JWT_JWKS": str(jwks_file),
        "MPPO_JWT_ISSUER": ISSUER,
        "MPPO_JWT_AUDIENCE": AUDIENCE,
    }
    prod = {"MPPO_ENV": "prod", **pki.env()}
    assert trust.Trust.from_env(prod, "group").user_jwt is None
    assert trust.Trust.from_env({**prod, **jwt_env}, "group").user_jwt is not None
    # the gateway process serves no gRPC
    assert trust.Trust.from_env({**prod, **jwt_env}, "gateway", serving=False).user_jwt is None
    # plaintext development: identities come from metadata, no JWT is verified
    plain = {"MPPO_ENV": "test", "MPPO_GRPC_PLAINTEXT": "1", **jwt_env}
    assert trust.Trust.from_env(plain, "group").user_jwt is None
    with pytest.raises(ConfigError, match="JWT settings: MPPO_JWT_ISSUER"):
        trust.Trust.from_env({**prod, "MPPO_JWT_JWKS": str(jwks_file)}, "group")


def test_a_user_is_passed_on_with_the_credential_they_came_with(pki: Pki) -> None:
    previous = trust._trust
    trust.configure(trust.Trust.from_env({"MPPO_ENV": "prod", **pki.env()}, "payment"))
    try:
        with pytest.raises(UnauthenticatedError, match="no verified user credential"):
            trust.outbound_metadata(Caller(user_id="alice"))
        assert trust.outbound_metadata(Caller(user_id="alice", token="t")) == (
            ("x-mppo-user-token", "t"),
        )
        assert trust.outbound_metadata(Caller(user_id="alice", jwt="j")) == (
            ("x-mppo-user-jwt", "j"),
        )
    finally:
        trust._trust = previous


def test_dev_pki_command_writes_the_compose_secrets(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "secrets"
    assert main(["dev", "pki", "--out", str(target)], out) == 0
    assert "DEVELOPMENT-ONLY" in out.getvalue()
    for name in DEV_NAMES:
        material = TlsMaterial.load(target, name)
        assert service_from_certificate(x509.load_pem_x509_certificate(material.cert_pem)) == name
        assert (target / f"{name}.key").stat().st_mode & 0o077 == 0
    assert (target / "user-token.pub").exists()
    # idempotent, and --names adds only what is asked
    before = (target / "group.pem").read_bytes()
    assert main(["dev", "pki", "--out", str(target), "--names", "group,extra"], io.StringIO()) == 0
    assert (target / "group.pem").read_bytes() == before
    assert (target / "extra.pem").exists()
    assert main(["dev", "pki", "--out", str(target), "--names", "bad name"], io.StringIO()) == 2


def test_the_python_gateway_forwards_no_client_identity_header_from_webhooks() -> None:
    request = make_mocked_request(
        "POST",
        "/payments/webhook/stripe",
        headers={
            "Stripe-Signature": "t=1,v1=abc",
            "X-Mppo-User-Jwt": "Bearer a.b.c",
            "X-Mppo-User-Token": "t",
            "X-Mppo-User-Id": "mallory",
            "X-Mppo-Service": "order",
        },
    )
    assert _webhook_headers(request) == [("stripe-signature", "t=1,v1=abc")]
