"""Domain errors: what went wrong, in business terms, with no transport attached.

Domain and service-layer code raise these; they import nothing from grpc or HTTP. The one
mapping to gRPC status codes (with rich details) lives in the entrypoint layer,
:mod:`mppo.platform.rpc_status`; the gateway maps the resulting status to HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. `items[0].quantity`) and what is wrong."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error our services report on purpose."""

    message: str
    reason: str = "ERROR"
    violations: Sequence[FieldViolation] = field(default_factory=tuple)

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(DomainError):
    """The request is malformed; `violations` name the fields."""

    def __init__(
        self, message: str, violations: Sequence[FieldViolation] = (), reason: str = "INVALID"
    ) -> None:
        super().__init__(message, reason, tuple(violations))


class NotFoundError(DomainError):
    """The named resource does not exist (or the caller may not know it does)."""

    def __init__(self, message: str, reason: str = "NOT_FOUND") -> None:
        super().__init__(message, reason, ())


class FailedPreconditionError(DomainError):
    """The resource is not in a state that allows this (e.g. an illegal transition)."""

    def __init__(
        self,
        message: str,
        reason: str = "FAILED_PRECONDITION",
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message, reason, tuple(violations))


class PermissionDeniedError(DomainError):
    """The caller is known but may not do this."""

    def __init__(self, message: str, reason: str = "PERMISSION_DENIED") -> None:
        super().__init__(message, reason, ())


class UnauthenticatedError(DomainError):
    """The call carries no (valid) identity."""

    def __init__(self, message: str = "caller identity required") -> None:
        super().__init__(message, "UNAUTHENTICATED", ())


class ConflictError(DomainError):
    """A concurrent change won (optimistic version mismatch); retry after re-reading."""

    def __init__(self, message: str, reason: str = "CONFLICT") -> None:
        super().__init__(message, reason, ())


class AlreadyExistsError(DomainError):
    """The resource exists already (e.g. an idempotency key reused with other parameters)."""

    def __init__(self, message: str, reason: str = "ALREADY_EXISTS") -> None:
        super().__init__(message, reason, ())


class UnavailableError(DomainError):
    """A dependency (provider, merchant, peer service) could not be reached; retry later."""

    def __init__(self, message: str, reason: str = "UNAVAILABLE") -> None:
        super().__init__(message, reason, ())


class InternalError(DomainError):
    """Something that should not happen did; details are logged, never sent."""

    def __init__(self, message: str = "internal error", reason: str = "INTERNAL") -> None:
        super().__init__(message, reason, ())


class ResourceExhaustedError(DomainError):
    """A quota or limit was reached; retry later."""

    def __init__(self, message: str, reason: str = "RESOURCE_EXHAUSTED") -> None:
        super().__init__(message, reason, ())
