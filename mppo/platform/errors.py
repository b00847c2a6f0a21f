"""Domain errors and their one mapping to gRPC status with rich details.

Domain code raises these (they import nothing from grpc); servicers wrap their methods with
`@grpc_errors`, which turns them into a status whose `grpc-status-details-bin` trailer holds a
`google.rpc.Status` with `ErrorInfo` and, where fields are at fault, `BadRequest` or
`PreconditionFailure` details. The gateway turns that into a JSON error body.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

logger = logging.getLogger(__name__)

DOMAIN = "mppo.dev"
Req = TypeVar("Req")
Resp = TypeVar("Resp")


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
    code: int = code_pb2.UNKNOWN

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(DomainError):
    """The request is malformed; `violations` name the fields."""

    def __init__(
        self, message: str, violations: Sequence[FieldViolation] = (), reason: str = "INVALID"
    ) -> None:
        super().__init__(message, reason, tuple(violations), code_pb2.INVALID_ARGUMENT)


class NotFoundError(DomainError):
    """The named resource does not exist (or the caller may not know it does)."""

    def __init__(self, message: str, reason: str = "NOT_FOUND") -> None:
        super().__init__(message, reason, (), code_pb2.NOT_FOUND)


class FailedPreconditionError(DomainError):
    """The resource is not in a state that allows this (e.g. an illegal transition)."""

    def __init__(
        self,
        message: str,
        reason: str = "FAILED_PRECONDITION",
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message, reason, tuple(violations), code_pb2.FAILED_PRECONDITION)


class PermissionDeniedError(DomainError):
    """The caller is known but may not do this."""

    def __init__(self, message: str, reason: str = "PERMISSION_DENIED") -> None:
        super().__init__(message, reason, (), code_pb2.PERMISSION_DENIED)


class UnauthenticatedError(DomainError):
    """The call carries no (valid) identity."""

    def __init__(self, message: str = "caller identity required") -> None:
        super().__init__(message, "UNAUTHENTICATED", (), code_pb2.UNAUTHENTICATED)


class ConflictError(DomainError):
    """A concurrent change won (optimistic version mismatch); retry after re-reading."""

    def __init__(self, message: str, reason: str = "CONFLICT") -> None:
        super().__init__(message, reason, (), code_pb2.ABORTED)


class AlreadyExistsError(DomainError):
    """The resource exists already (e.g. an idempotency key reused with other parameters)."""

    def __init__(self, message: str, reason: str = "ALREADY_EXISTS") -> None:
        super().__init__(message, reason, (), code_pb2.ALREADY_EXISTS)


class UnavailableError(DomainError):
    """A dependency (provider, merchant, peer service) could not be reached; retry later."""

    def __init__(self, message: str, reason: str = "UNAVAILABLE") -> None:
        super().__init__(message, reason, (), code_pb2.UNAVAILABLE)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status describing `error`."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if error.violations and error.code == code_pb2.INVALID_ARGUMENT:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif error.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=error.reason, subject=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=error.code, message=error.message, details=details)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    """End the call with `error` as a rich status."""
    status = to_status(error)
    await context.abort(
        grpc.StatusCode[code_pb2.Code.Name(status.code)],
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def grpc_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Servicer method decorator: DomainError → rich status; anything else → INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except DomainError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            logger.exception("unhandled error in %s", method.__qualname__)
            await abort(context, DomainError("internal error", "INTERNAL", (), code_pb2.INTERNAL))

    return wrapper


def status_from_error(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The rich status a peer sent, if any (for callers that want the details)."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None
