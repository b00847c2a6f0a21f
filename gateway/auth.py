"""JWT verification at the edge (ARCHITECTURE.md §7).

- The algorithm is pinned to ES256 (ECDSA P-256): a token whose header names any other
  algorithm (`none`, HS256 signed with the public key, RS256, ...) is rejected before any key is
  used, and only EC P-256 public keys from the JWKS are ever loaded.
- Keys come from a JWKS document: a file path or an https/http URL (`MPPO_JWT_JWKS`), cached
  and re-read at most every `refresh_seconds` (sooner when a token names an unknown `kid`,
  but never more than once per `min_refresh_seconds`).
- `iss`, `aud`, `exp` (required), `nbf` and `iat` are checked with a small clock-skew leeway;
  `sub` is required and becomes the caller's identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from jwt.algorithms import ECAlgorithm

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
LEEWAY_SECONDS = 30


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
            await self._reload()
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthError("token signed with an unknown key")

    async def _reload(self) -> None:
        async with self._lock:
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


class JwtVerifier:
    """Checks bearer tokens against one issuer, audience and JWKS."""

    def __init__(self, jwks: JwksSource, issuer: str, audience: str) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience

    async def verify(self, authorization: str | None) -> Identity:
        """The identity in an `Authorization: Bearer <jwt>` header, or AuthError."""
        if not authorization:
            raise AuthError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("authorization must be a bearer token")
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
