"""Who is calling: the identity the gateway put in gRPC metadata after verifying a JWT.

Services re-check what the caller may do (ARCHITECTURE.md §7); this module only reads the
identity. Calls between our services identify themselves with `x-mppo-service`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mppo.platform.errors import UnauthenticatedError

USER_ID_KEY = "x-mppo-user-id"
SERVICE_KEY = "x-mppo-service"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class Caller:
    """An end user (user_id) or one of our services (service)."""

    user_id: str = ""
    service: str = ""

    @property
    def label(self) -> str:
        """`user:<id>` or `service:<name>`, for history rows and idempotency scopes."""
        return f"user:{self.user_id}" if self.user_id else f"service:{self.service}"


def _value(metadata: Any, name: str) -> str:
    for key, value in metadata or ():
        if key.lower() == name and isinstance(value, str):
            return value.strip()
    return ""


def caller_from(metadata: Any) -> Caller:
    """The caller named in `metadata`; UnauthenticatedError when there is none."""
    user_id, service = _value(metadata, USER_ID_KEY), _value(metadata, SERVICE_KEY)
    if not user_id and not service:
        raise UnauthenticatedError(f"missing {USER_ID_KEY} metadata (set by the gateway)")
    return Caller(user_id=user_id, service=service)


def service_metadata(service: str) -> tuple[tuple[str, str], ...]:
    """Metadata one of our services sends when it calls another."""
    return ((SERVICE_KEY, service),)
