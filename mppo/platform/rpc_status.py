"""The one mapping between domain errors and gRPC status (the entrypoint layer's concern).

Servers: the runtime wraps every handler of a service (see :func:`guard`), so a raised
:class:`~mppo.platform.errors.DomainError` becomes a status whose ``grpc-status-details-bin``
trailer holds a ``google.rpc.Status`` with ``ErrorInfo`` and, where fields are at fault,
``BadRequest`` or ``PreconditionFailure`` details; a dependency that is down (Postgres, Redis,
NATS, a peer) becomes UNAVAILABLE with a ``retry-after`` hint, and anything else INTERNAL with
nothing leaked. ``@grpc_errors`` does the same for a single servicer method (test fakes).

Clients: :func:`from_rpc_error` turns a peer's status back into the domain error it described,
so callers branch on error classes and :func:`is_retryable` is the one retry rule.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mppo.platform.errors import (
    AlreadyExistsError,
    ConflictError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

DOMAIN = "mppo.dev"
RETRY_AFTER_KEY = "retry-after"
Req = TypeVar("Req")
Resp = TypeVar("Resp")

_CODES: tuple[tuple[type[DomainError], int], ...] = (
    (InvalidArgumentError, code_pb2.INVALID_ARGUMENT),
    (NotFoundError, code_pb2.NOT_FOUND),
    (FailedPreconditionError, code_pb2.FAILED_PRECONDITION),
    (PermissionDeniedError, code_pb2.PERMISSION_DENIED),
    (UnauthenticatedError, code_pb2.UNAUTHENTICATED),
    (ConflictError, code_pb2.ABORTED),
    (AlreadyExistsError, code_pb2.ALREADY_EXISTS),
    (UnavailableError, code_pb2.UNAVAILABLE),
    (ResourceExhaustedError, code_pb2.RESOURCE_EXHAUSTED),
    (InternalError, code_pb2.INTERNAL),
)

#: gRPC codes a caller may retry with the same idempotency key
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


def code_of(error: DomainError) -> int:
    """The google.rpc code of a domain error (UNKNOWN for an unlisted subclass)."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return int(code)
    return int(code_pb2.UNKNOWN)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status describing `error`."""
    code = code_of(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if error.violations and code == code_pb2.INVALID_ARGUMENT:
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
    return status_pb2.Status(code=code, message=error.message, details=details)


def is_dependency_failure(exc: BaseException) -> bool:
    """A database, cache, broker or peer that did not answer (retryable, never INTERNAL)."""
    import asyncpg
    import nats.errors
    import redis.exceptions
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if cause is not exc and cause is not None and is_dependency_failure(cause):
        return True
    return isinstance(
        exc,
        (
            TimeoutError,
            asyncio.TimeoutError,
            ConnectionError,
            OSError,
            sqlalchemy.exc.TimeoutError,
            sqlalchemy.exc.InterfaceError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.InterfaceError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            nats.errors.Error,
        ),
    )


def error_for(exc: BaseException, where: str) -> DomainError:
    """What to tell a caller about `exc` raised while serving `where`."""
    import sqlalchemy.exc

    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, (sqlalchemy.exc.DataError, UnicodeError)):
        # the database refused a value (e.g. NUL in text) that validation should have caught
        logger.warning("value refused in %s: %r", where, exc)
        return InvalidArgumentError("a value in the request is not acceptable", [], "BAD_VALUE")
    if is_dependency_failure(exc):
        logger.warning("dependency failure in %s: %r", where, exc)
        return UnavailableError("a dependency is unavailable; retry shortly")
    logger.exception("unhandled error in %s", where, exc_info=exc)
    return InternalError()


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    """End the call with `error` as a rich status."""
    status = to_status(error)
    trailers: list[tuple[str, str | bytes]] = [
        ("grpc-status-details-bin", status.SerializeToString())
    ]
    if status.code == code_pb2.UNAVAILABLE:
        trailers.append((RETRY_AFTER_KEY, "1"))
    await context.abort(
        grpc.StatusCode[code_pb2.Code.Name(status.code)],
        status.message,
        trailing_metadata=tuple(trailers),
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def grpc_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Servicer method decorator: DomainError → rich status; anything else → INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, error_for(exc, method.__qualname__))

    return wrapper


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def guard(behavior: Behavior, where: str) -> Behavior:
    """A unary handler's behaviour with the error mapping around it (used by the runtime)."""

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, error_for(exc, where))

    return guarded


def status_from_error(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The rich status a peer sent, if any (for callers that want the details)."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def from_rpc_error(error: grpc.aio.AioRpcError) -> DomainError:
    """The domain error a peer's status describes (for clients of our services)."""
    code = error.code()
    message = error.details() or code.name
    status = status_from_error(error)
    reason = code.name
    violations: list[FieldViolation] = []
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason or reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                pre = error_details_pb2.PreconditionFailure()
                detail.Unpack(pre)
                violations += [FieldViolation(v.subject, v.description) for v in pre.violations]
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(message, violations, reason)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message, reason)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPreconditionError(message, reason, violations)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(message, reason)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return UnauthenticatedError(message)
    if code is grpc.StatusCode.ABORTED:
        return ConflictError(message, reason)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExistsError(message, reason)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(message, reason)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(message, reason)
    return InternalError(message, reason)


def is_retryable(error: BaseException) -> bool:
    """The one retry rule for calls to our services: transient status codes only."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in RETRYABLE_CODES
    return isinstance(error, (UnavailableError, ConflictError, ResourceExhaustedError))
