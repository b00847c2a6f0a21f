"""The end user's JWT from our identity provider: verified the same way at the edge and in
the services (docs/design.md §8, docs/security.md).

The Python gateway verifies the ``Authorization: Bearer <jwt>`` of every REST call; in
production Envoy verifies it (``jwt_authn``) and forwards it, raw, to the services as gRPC
metadata ``x-mppo-user-jwt``, where :func:`mppo.platform.trust.authenticate` verifies it again
with this module (accepted only from the gateway's certificate). The rules:

- The algorithm is pinned to ES256 (ECDSA P-256): a token whose header names any other
  algorithm (`none`, HS256 signed with the public key, RS256, ...) is rejected before any key
  is used, and only EC P-256 public keys from the JWKS are ever loaded.
- Keys come from a JWKS document: a file path or an https/http URL (``MPPO_JWT_JWKS``),
  cached and re-read at most every ``refresh_seconds`` (sooner when a token names an unknown
  ``kid``, but never more than once per ``min_refresh_seconds``).
- ``iss``, ``aud``, ``exp`` (required), ``nbf`` and ``iat`` are checked with a small clock-skew
  leeway; ``sub`` is required and becomes the caller's identity.
- A service may remember a verified token for a few seconds (``cache_seconds``, keyed by its
  SHA-256, never past its ``exp``) so a user's burst of calls costs one signature check.

API::

    verifier = JwtVerifier(JwksSource(location), issuer, audience, cache_seconds=30)
    identity = await verifier.verify("Bearer <jwt>")   # the gateway: an Authorization header
    identity = await verifier.verify_token("<jwt>")    # a service: the raw token
    verifier = load_jwt_verifier(os.environ)           # None unless MPPO_JWT_JWKS is set

Every refusal is an :class:`AuthError` whose message is safe to return to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from jwt.algorithms import ECAlgorithm

__all__ = [
    "ALGORITHM",
    "ENV_JWT_AUDIENCE",
    "ENV_JWT_ISSUER",
    "ENV_JWT_JWKS",
    "LEEWAY_SECONDS",
    "MAX_TOKEN_LENGTH",
    "SERVICE_CACHE_SECONDS",
    "AuthError",
    "Identity",
    "JwksSource",
    "JwtVerifier",
    "bearer_token",
    "load_jwt_verifier",
]

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
LEEWAY_SECONDS = 30
#: longer tokens are refused before any parsing
MAX_TOKEN_LENGTH = 16384
#: how long a service remembers a verified token (the gateway caches nothing)
SERVICE_CACHE_SECONDS = 30.0
_CACHE_SIZE = 4096

ENV_JWT_JWKS = "MPPO_JWT_JWKS"
ENV_JWT_ISSUER = "MPPO_JWT_ISSUER"
ENV_JWT_AUDIENCE = "MPPO_JWT_AUDIENCE"


class AuthError(Exception):
    """The request carries no acceptable token; the message says why (safe to show)."""


@dataclass(frozen=True)
class Identity:
    """A verified caller."""

    user_id: str
    claims: dict[str, Any]


def _keys_from_jwks(document: dict[str, Any]) -> dict[str, Any]:
    """kid -> public key, for the EC P-256 signing keys of a JWKS (others are ignored)."""
    keys: dict[str, Any] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("kty") != "EC" or entry.get("crv") != "P-256":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        if "d" in entry:
            logger.error("JWKS entry %s holds a private key; ignored", entry.get("kid", "?"))
            continue
        try:
            keys[str(entry.get("kid", ""))] = ECAlgorithm.from_jwk(json.dumps(entry))
        except (jwt.InvalidKeyError, ValueError, TypeError):
            logger.warning("unusable JWKS entry %s ignored", entry.get("kid", "?"))
    return keys


class JwksSource:
    """Public keys from a JWKS file or URL, cached."""

    def __init__(
        self, location: str, *, refresh_seconds: float = 300.0, min_refresh_seconds: float = 10.0
    ) -> None:
        self.location = location
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, Any] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Any:
        """The key for `kid` ("" when the token names none and the JWKS has one key)."""
        now = time.monotonic()
        stale = now - self._loaded_at > self.refresh_seconds
        unknown = kid not in self._keys and now - self._loaded_at > self.min_refresh_seconds
        if stale or unknown:
            await self._reload(asked_at=now)
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthError("token signed with an unknown key")

    async def _reload(self, asked_at: float) -> None:
        async with self._lock:
            if self._loaded_at >= asked_at:
                return  # another call re-read it while this one waited
            try:
                document = await self._read()
                self._keys = _keys_from_jwks(document)
            except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
                logger.error("cannot read JWKS from %s: %s", self.location, exc)
            self._loaded_at = time.monotonic()

    async def _read(self) -> dict[str, Any]:
        if self.location.startswith(("https://", "http://")):
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.location) as reply,
            ):
                reply.raise_for_status()
                data: dict[str, Any] = await reply.json(content_type=None)
                return data
        text = await asyncio.to_thread(Path(self.location).read_text, encoding="utf-8")
        loaded: dict[str, Any] = json.loads(text)
        return loaded


def bearer_token(value: str) -> str:
    """The token in ``Bearer <jwt>`` (any case), or `value` itself when it has no scheme."""
    scheme, _, rest = value.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return value.strip()


class JwtVerifier:
    """Checks bearer tokens against one issuer, audience and JWKS."""

    def __init__(
        self,
        jwks: JwksSource,
        issuer: str,
        audience: str,
        *,
        cache_seconds: float = 0.0,
        cache_size: int = _CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._clock = clock
        #: sha256(token) -> (wall-clock second until which it is trusted, identity)
        self._verified: dict[bytes, tuple[float, Identity]] = {}

    async def verify(self, authorization: str | None) -> Identity:
        """The identity in an `Authorization: Bearer <jwt>` header, or AuthError."""
        if not authorization:
            raise AuthError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("authorization must be a bearer token")
        return await self.verify_token(token)

    async def verify_token(self, token: str) -> Identity:
        """The identity a raw JWT proves, or AuthError."""
        if not token:
            raise AuthError("missing bearer token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token too long")
        if self.cache_seconds <= 0:
            return await self._verify(token)
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        hit = self._verified.get(digest)
        if hit is not None:
            if now < hit[0]:
                return hit[1]
            del self._verified[digest]
        identity = await self._verify(token)
        exp = identity.claims.get("exp")
        until = now + self.cache_seconds
        if isinstance(exp, int | float):
            until = min(until, float(exp))
        if until > now:
            self._remember(digest, until, identity, now)
        return identity

    def _remember(self, digest: bytes, until: float, identity: Identity, now: float) -> None:
        if len(self._verified) >= self._cache_size:
            for key in [k for k, (u, _) in self._verified.items() if u <= now]:
                del self._verified[key]
            while len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[digest] = (until, identity)

    async def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"token algorithm must be {ALGORITHM}")
        key = await self.jwks.key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature invalid") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise AuthError("token has no subject")
        return Identity(user_id=subject.strip(), claims=claims)


def load_jwt_verifier(
    env: Mapping[str, str], *, cache_seconds: float = SERVICE_CACHE_SECONDS
) -> JwtVerifier | None:
    """A service's verifier of forwarded user JWTs: ``MPPO_JWT_JWKS`` (a JWKS file or URL),
    ``MPPO_JWT_ISSUER`` and ``MPPO_JWT_AUDIENCE``, the identity provider the edge trusts.

    None when none of them is set (the service then accepts no forwarded JWT); ValueError
    naming what is missing when only some are, or for ``MPPO_JWT_JWKS=dev`` (the Python
    gateway's development shortcut, which a service cannot resolve).
    """
    jwks = env.get(ENV_JWT_JWKS, "").strip()
    issuer = env.get(ENV_JWT_ISSUER, "").strip()
    audience = env.get(ENV_JWT_AUDIENCE, "").strip()
    if not jwks:
        if issuer or audience:
            raise ValueError(
                f"{ENV_JWT_JWKS} must be set with {ENV_JWT_ISSUER} and {ENV_JWT_AUDIENCE}"
            )
        return None
    if jwks == "dev":
        raise ValueError(
            f"{ENV_JWT_JWKS}=dev is the Python gateway's development setting; a service needs "
            "the identity provider's JWKS file or URL"
        )
    settings = ((ENV_JWT_ISSUER, issuer), (ENV_JWT_AUDIENCE, audience))
    missing = [name for name, value in settings if not value]
    if missing:
        raise ValueError(f"{' and '.join(missing)} must be set with {ENV_JWT_JWKS}")
    return JwtVerifier(JwksSource(jwks), issuer, audience, cache_seconds=cache_seconds)
