"""The end user's identity between our processes: a short-lived token the gateway signs.

The gateway verifies the end user's JWT, then signs a token of its own for the calls it makes
on the user's behalf and sends it as gRPC metadata ``x-mppo-user-token``. A service believes a
user id only from a token that verifies against the gateway's public key, so a process on the
network cannot become a user by sending a name. The token is a JWT::

    header  {"alg": "EdDSA", "typ": "JWT"}          (Ed25519; the algorithm is pinned)
    claims  {"iss": "mppo-gateway", "aud": "mppo-services", "sub": <user id>,
             "iat": <now>, "exp": <now + 60 s>, "jti": <random>}

API::

    signer = UserTokenSigner(private_key_pem, ttl=60.0)   # gateway
    metadata = ((USER_TOKEN_KEY, signer.sign(user_id)),)
    verifier = UserTokenVerifier(public_key_pem, leeway=5.0)   # services
    user_id = verifier.verify(token)      # raises a UserTokenError subclass when refused
    token = token_from_metadata(context.invocation_metadata())   # None when absent

A service that calls another on the user's behalf forwards the token it received, unchanged
(only the gateway holds the private key). Tokens are not single-use: ``jti`` is there for
logs; the short ``exp`` bounds replay, and mTLS keeps them off the wire for anyone else.

``UserTokenError`` subclasses: ``UserTokenExpiredError`` (past ``exp``, or ``iat`` in the
future), ``UserTokenSignatureError`` (signed with another key or altered),
``UserTokenClaimsError`` (wrong ``aud``/``iss``, a missing claim, a malformed ``sub``),
``UserTokenAlgorithmError`` (any ``alg`` but EdDSA: ``none``, HS256, ES256...),
``UserTokenMalformedError`` (not a JWT). Map every one of them to UNAUTHENTICATED.

Keys (:func:`load_signer`, :func:`load_verifier`): ``MPPO_USER_TOKEN_PRIVATE_KEY_FILE`` /
``MPPO_USER_TOKEN_PUBLIC_KEY_FILE`` (PEM, PKCS#8 / SubjectPublicKeyInfo), defaulting to
``user-token.key`` / ``user-token.pub`` in ``MPPO_TLS_DIR`` (written by
:func:`mppo.platform.tls.mint_dev_pki`). Both return None when neither is configured.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mppo.platform.tls import ENV_TLS_DIR, USER_TOKEN_PRIVATE_FILE, USER_TOKEN_PUBLIC_FILE

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "DEFAULT_LEEWAY",
    "DEFAULT_TTL",
    "ENV_USER_TOKEN_PRIVATE_KEY_FILE",
    "ENV_USER_TOKEN_PUBLIC_KEY_FILE",
    "ISSUER",
    "USER_TOKEN_KEY",
    "UserTokenAlgorithmError",
    "UserTokenClaimsError",
    "UserTokenError",
    "UserTokenExpiredError",
    "UserTokenMalformedError",
    "UserTokenSignatureError",
    "UserTokenSigner",
    "UserTokenVerifier",
    "load_signer",
    "load_verifier",
    "token_from_metadata",
]

USER_TOKEN_KEY = "x-mppo-user-token"
ALGORITHM = "EdDSA"
AUDIENCE = "mppo-services"
ISSUER = "mppo-gateway"
DEFAULT_TTL = 60.0
DEFAULT_LEEWAY = 5.0
MAX_USER_ID_LENGTH = 255
_MAX_TOKEN_LENGTH = 4096
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti"]

ENV_USER_TOKEN_PRIVATE_KEY_FILE = "MPPO_USER_TOKEN_PRIVATE_KEY_FILE"
ENV_USER_TOKEN_PUBLIC_KEY_FILE = "MPPO_USER_TOKEN_PUBLIC_KEY_FILE"


class UserTokenError(Exception):
    """A user token was refused; the message says why (safe to return to the caller)."""


class UserTokenExpiredError(UserTokenError):
    """The token is past its expiry (or claims to be issued in the future)."""


class UserTokenSignatureError(UserTokenError):
    """The signature does not verify with the gateway's public key."""


class UserTokenClaimsError(UserTokenError):
    """Wrong audience or issuer, a required claim missing, or a malformed subject."""


class UserTokenAlgorithmError(UserTokenError):
    """The token names an algorithm other than EdDSA (``none``, HS256, ...)."""


class UserTokenMalformedError(UserTokenError):
    """Not a compact JWS at all."""


def _valid_user_id(user_id: object) -> bool:
    return (
        isinstance(user_id, str)
        and 0 < len(user_id) <= MAX_USER_ID_LENGTH
        and user_id == user_id.strip()
        and user_id.isprintable()
    )


class UserTokenSigner:
    """Signs user tokens with the gateway's Ed25519 private key (PEM, unencrypted PKCS#8)."""

    def __init__(
        self,
        private_key_pem: bytes,
        ttl: float = DEFAULT_TTL,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem, None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("the user-token signing key must be an Ed25519 private key")
        if ttl <= 0:
            raise ValueError("the user-token ttl must be positive")
        self._key = key
        self._ttl = ttl
        self._clock = clock

    @property
    def ttl(self) -> float:
        """Seconds a token lives."""
        return self._ttl

    def sign(self, user_id: str) -> str:
        """A token saying the gateway verified ``user_id``, valid for ``ttl`` seconds."""
        if not _valid_user_id(user_id):
            raise ValueError("user id must be 1-255 printable characters without edge spaces")
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "iat": now,
            "exp": now + max(1, round(self._ttl)),
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)


def _header(token: str) -> dict[str, Any]:
    try:
        segment = token.split(".")[0]
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (ValueError, binascii.Error) as exc:
        raise UserTokenMalformedError("user token is not a JWT") from exc
    if not isinstance(header, dict):
        raise UserTokenMalformedError("user token is not a JWT")
    return header


class UserTokenVerifier:
    """Verifies user tokens with the gateway's Ed25519 public key (PEM SubjectPublicKeyInfo)."""

    def __init__(
        self,
        public_key_pem: bytes,
        leeway: float = DEFAULT_LEEWAY,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("the user-token verification key must be an Ed25519 public key")
        self._key = key
        self._leeway = leeway
        self._clock = clock

    def verify(self, token: str) -> str:
        """The user id the token carries; a :class:`UserTokenError` subclass when refused."""
        if not token or len(token) > _MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise UserTokenMalformedError("user token is not a JWT")
        alg = _header(token).get("alg")
        if alg != ALGORITHM:
            raise UserTokenAlgorithmError(f"user token algorithm {alg!r} is not {ALGORITHM}")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise UserTokenSignatureError("user token signature does not verify") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise UserTokenAlgorithmError(f"user token algorithm is not {ALGORITHM}") from exc
        except jwt.InvalidAudienceError as exc:
            raise UserTokenClaimsError(f"user token audience is not {AUDIENCE}") from exc
        except jwt.InvalidIssuerError as exc:
            raise UserTokenClaimsError(f"user token issuer is not {ISSUER}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise UserTokenClaimsError(f"user token lacks the {exc.claim} claim") from exc
        except jwt.DecodeError as exc:
            raise UserTokenMalformedError("user token is not a JWT") from exc
        except jwt.InvalidTokenError as exc:
            raise UserTokenClaimsError(f"user token refused: {exc}") from exc
        self._check_times(claims)
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or not _valid_user_id(user_id):
            raise UserTokenClaimsError("user token subject is not a valid user id")
        return user_id

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        # Checked here, against the injectable clock, rather than by PyJWT's wall clock.
        exp, iat = claims.get("exp"), claims.get("iat")
        if type(exp) is not int or type(iat) is not int:
            raise UserTokenClaimsError("user token exp/iat must be integers")
        now = self._clock()
        if exp + self._leeway <= now:
            raise UserTokenExpiredError("user token has expired")
        if iat - self._leeway > now:
            raise UserTokenExpiredError("user token is issued in the future")


def token_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The ``x-mppo-user-token`` value in gRPC metadata, or None."""
    for key, value in metadata or ():
        if key.lower() == USER_TOKEN_KEY and isinstance(value, str):
            return value.strip()
    return None


def _key_path(env: Mapping[str, str], explicit_key: str, default_file: str) -> Path | None:
    explicit = env.get(explicit_key, "").strip()
    if explicit:
        return Path(explicit)
    directory = env.get(ENV_TLS_DIR, "").strip()
    return Path(directory) / default_file if directory else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read user-token key {path}: {exc.strerror}") from exc


def load_signer(env: Mapping[str, str], ttl: float = DEFAULT_TTL) -> UserTokenSigner | None:
    """The gateway's signer from ``MPPO_USER_TOKEN_PRIVATE_KEY_FILE`` (else
    ``$MPPO_TLS_DIR/user-token.key``); None when neither is set, ValueError if unreadable."""
    path = _key_path(env, ENV_USER_TOKEN_PRIVATE_KEY_FILE, USER_TOKEN_PRIVATE_FILE)
    return None if path is None else UserTokenSigner(_read(path), ttl)


def load_verifier(
    env: Mapping[str, str], leeway: float = DEFAULT_LEEWAY
) -> UserTokenVerifier | None:
    """A service's verifier from ``MPPO_USER_TOKEN_PUBLIC_KEY_FILE`` (else
    ``$MPPO_TLS_DIR/user-token.pub``); None when neither is set, ValueError if unreadable."""
    path = _key_path(env, ENV_USER_TOKEN_PUBLIC_KEY_FILE, USER_TOKEN_PUBLIC_FILE)
    return None if path is None else UserTokenVerifier(_read(path), leeway)
