"""Who is calling: the caller the runtime verified for the call being served.

The runtime authenticates every call before its handler runs (:mod:`mppo.platform.trust`:
the peer's mTLS certificate, the gateway-signed user token, or the identity provider's JWT the
edge verified and forwarded) and sets the result for the duration of the call;
:func:`caller_from` returns it. Services then re-check what the caller may do
(docs/design.md §8).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mppo.platform.errors import UnauthenticatedError

USER_ID_KEY = "x-mppo-user-id"
#: the end user's JWT, verified by the edge (Envoy) and forwarded raw; believed only from the
#: gateway's certificate (``Bearer <jwt>`` or the bare token)
USER_JWT_KEY = "x-mppo-user-jwt"
SERVICE_KEY = "x-mppo-service"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class Caller:
    """An end user (user_id) or one of our services (service)."""

    user_id: str = ""
    service: str = ""
    #: the verified gateway-signed user token, to forward when acting on the user's behalf
    #: (never logged)
    token: str = field(default="", repr=False, compare=False)
    #: or the identity provider's JWT the edge (Envoy) verified and forwarded, passed on the
    #: same way (never logged)
    jwt: str = field(default="", repr=False, compare=False)

    @property
    def label(self) -> str:
        """`user:<id>` or `service:<name>`, for history rows and idempotency scopes."""
        return f"user:{self.user_id}" if self.user_id else f"service:{self.service}"


_VERIFIED: ContextVar[Caller | None] = ContextVar("mppo_verified_caller", default=None)


def _value(metadata: Any, name: str) -> str:
    for key, value in metadata or ():
        if key.lower() == name and isinstance(value, str):
            return value.strip()
    return ""


def caller_from_metadata(metadata: Any) -> Caller:
    """Development only (plaintext gRPC): the caller named in metadata."""
    user_id, service = _value(metadata, USER_ID_KEY), _value(metadata, SERVICE_KEY)
    if not user_id and not service:
        raise UnauthenticatedError(f"missing {USER_ID_KEY} metadata (set by the gateway)")
    return Caller(user_id=user_id, service=service)


def set_verified(caller: Caller | None) -> Any:
    """Set the verified caller of the current call (the runtime does); returns a reset token."""
    return _VERIFIED.set(caller)


def reset_verified(token: Any) -> None:
    """Undo :func:`set_verified`."""
    _VERIFIED.reset(token)


def caller_from(metadata: Any = None) -> Caller:
    """The verified caller of the call being served; UnauthenticatedError outside one.

    `metadata` is accepted for the servicers' convenience and never trusted: the identity
    comes from what the runtime verified.
    """
    verified = _VERIFIED.get()
    if verified is None:
        raise UnauthenticatedError("caller identity required")
    return verified


def service_metadata(service: str) -> tuple[tuple[str, str], ...]:
    """Metadata one of our services sends when it calls another (checked against its cert)."""
    return ((SERVICE_KEY, service),)
