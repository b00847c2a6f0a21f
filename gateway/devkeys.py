"""Development JWT keys: what `mppo token` signs with and the gateway trusts under `mppo dev up`.

On first use an ES256 (P-256) key pair is generated into `<state dir>/jwt/` (default
`.mppo/jwt/`, git-ignored): `dev-private.pem` (mode 0600, never committed) and `jwks.json`
(the public key). The gateway reads that JWKS when `MPPO_JWT_JWKS=dev`, which `mppo dev up`
sets; issuer and audience default to the dev values below. Delete the folder to rotate.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.auth import ALGORITHM

DEV_ISSUER = "https://auth.mppo.dev/"
DEV_AUDIENCE = "mppo-api"
DEV_KID = "mppo-dev-1"


@dataclass(frozen=True)
class DevKeys:
    """Where the development key pair lives."""

    directory: Path

    @property
    def private_key_path(self) -> Path:
        return self.directory / "dev-private.pem"

    @property
    def jwks_path(self) -> Path:
        return self.directory / "jwks.json"


def dev_keys(state_dir: Path) -> DevKeys:
    """The dev keys under `state_dir`, generated on first use."""
    keys = DevKeys(state_dir / "jwt")
    if keys.private_key_path.exists() and keys.jwks_path.exists():
        return keys
    keys.directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = keys.private_key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.replace(tmp, keys.private_key_path)
    keys.jwks_path.write_text(json.dumps(jwks_for(private.public_key(), DEV_KID), indent=2))
    return keys


def jwks_for(public_key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, object]:
    """A JWKS document holding one ES256 public key."""
    jwk = json.loads(ECAlgorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return {"keys": [jwk]}


def mint_token(
    state_dir: Path,
    subject: str,
    *,
    ttl_seconds: int = 3600,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
) -> str:
    """A development token for `subject`, signed with the dev key."""
    keys = dev_keys(state_dir)
    private = serialization.load_pem_private_key(keys.private_key_path.read_bytes(), None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{keys.private_key_path} is not an EC private key")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": DEV_KID})
