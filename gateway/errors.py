"""gRPC status -> HTTP status and a JSON `google.rpc.Status` body, as Envoy's transcoder does
with `convert_grpc_status: true`.

The HTTP status follows the standard mapping (google/rpc/code.proto, also used by Envoy and
grpc-gateway). The body is the proto3 JSON form of the `google.rpc.Status` the service sent
in `grpc-status-details-bin` (details keep their `@type`), or one built from the code and
message when it sent none. Errors the gateway raises itself use the same shape.

Every error a REST client gets carries a `google.rpc.ErrorInfo` (domain `mppo.dev`) with a
reason to switch on: the service's own, or the one the gateway names for its own refusals
(`MISSING_BEARER_TOKEN`, `NO_ROUTE`, `SERVICE_UNAVAILABLE`, ...), or -- for a service status
that came without one -- the gRPC code's name (`with_error_info`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}


def http_status(code: int) -> int:
    """The HTTP status for a google.rpc code (500 for unknown codes)."""
    return HTTP_STATUS.get(code, 500)


def status_json(status: status_pb2.Status) -> bytes:
    """The proto3 JSON of a google.rpc.Status; details that cannot be decoded (of a type this
    process does not know) are dropped one by one, the others kept."""
    details: list[dict[str, Any]] = []
    for detail in status.details:
        try:
            details.append(
                json_format.MessageToDict(detail, always_print_fields_with_no_presence=True)
            )
        except (TypeError, KeyError, json_format.Error):
            logger.warning("status detail %s dropped from an error response", detail.type_url)
    body: dict[str, Any] = {"code": status.code, "message": status.message, "details": details}
    return json.dumps(body).encode()


#: the domain of every ErrorInfo the edge and the services send
DOMAIN = "mppo.dev"


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The status's ErrorInfo detail, if it has one."""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and detail.Unpack(info):
            return info
    return None


def code_reason(code: int) -> str:
    """The name of a google.rpc code (`NOT_FOUND`), the reason of last resort."""
    try:
        return str(code_pb2.Code.Name(code))
    except ValueError:
        return "UNKNOWN"


def with_error_info(
    status: status_pb2.Status, reason: str = "", metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    """`status` (a copy) with an ErrorInfo detail whose reason is not empty: the one it has
    (given `reason` if its own is empty), else a new one with `reason` (default: the code's
    name) and `metadata`, appended after the other details."""
    fixed = status_pb2.Status()
    fixed.CopyFrom(status)
    wanted = reason or code_reason(status.code)
    for detail in fixed.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and detail.Unpack(info):
            if not info.reason:
                info.reason = wanted
                info.domain = info.domain or DOMAIN
                detail.Pack(info)
            return fixed
    info = error_details_pb2.ErrorInfo(reason=wanted, domain=DOMAIN)
    info.metadata.update(metadata or {})
    fixed.details.add().Pack(info)
    return fixed


_MAX_ERROR_TEXT = 500
#: a field violation's reason when nobody gave one
_DEFAULT = "INVALID_ARGUMENT"


def _printable(text: str) -> str:
    """`text` as valid UTF-8, at most _MAX_ERROR_TEXT characters."""
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return clean if len(clean) <= _MAX_ERROR_TEXT else clean[: _MAX_ERROR_TEXT - 1] + "…"


def make_status(
    code: int,
    message: str,
    *,
    field_violations: Sequence[tuple[str, str] | tuple[str, str, str]] = (),
    reason: str = "",
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with optional BadRequest and ErrorInfo details. A violation is
    (field, description) or (field, description, reason); without its own reason it gets
    `reason` (or INVALID_ARGUMENT), so no violation goes out without one.

    Texts may echo what a client sent (a parser naming the value it refused): they are made
    valid UTF-8 (lone surrogates escaped) and bounded, so an error about hostile input can
    always be written.
    """
    message = _printable(message)
    violations = [
        (_printable(v[0]), _printable(v[1]), (v[2] if len(v) > 2 else "") or reason or _DEFAULT)
        for v in field_violations
    ]
    status = status_pb2.Status(code=code, message=message)
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
        info.metadata.update(metadata or {})
        packed = any_pb2.Any()
        packed.Pack(info)
        status.details.append(packed)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d, reason=r)
                for f, d, r in violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return status


def status_from_rpc_error(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The rich status a service sent, or one made of the code and details string."""
    code = error.code().value[0]
    rich = _details(error.trailing_metadata() or ())
    if rich is not None and rich.code == code:
        return rich
    return status_pb2.Status(code=code, message=error.details() or "")


def _details(metadata: Iterable[Any]) -> status_pb2.Status | None:
    for item in metadata:
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:
                logger.warning("undecodable %s trailer ignored", STATUS_DETAILS_KEY)
    return None


def rename_fields(status: status_pb2.Status, rename: Callable[[str], str]) -> status_pb2.Status:
    """`status` with the field of every BadRequest violation renamed (for a REST client: the
    JSON form it sent, gateway.field_names); the message too where it quotes such a field. A
    violation sent without a reason gets the status's ErrorInfo reason (or INVALID_ARGUMENT)."""
    renamed = status_pb2.Status()
    renamed.CopyFrom(status)
    message = renamed.message
    info = error_info(renamed)
    fallback = (info.reason if info is not None else "") or _DEFAULT
    for detail in renamed.details:
        if not detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            continue
        bad = error_details_pb2.BadRequest()
        if not detail.Unpack(bad):
            continue
        for violation in bad.field_violations:
            violation.reason = violation.reason or fallback
            new = rename(violation.field)
            if new != violation.field:
                message = _replace_field(message, violation.field, new)
                violation.field = new
        detail.Pack(bad)
    renamed.message = message
    return renamed


def _replace_field(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced where it stands as a whole field path (not inside a longer
    name)."""
    out: list[str] = []
    start = 0
    while True:
        found = text.find(old, start)
        if found < 0:
            out.append(text[start:])
            return "".join(out)
        end = found + len(old)
        before = text[found - 1] if found else " "
        after = text[end] if end < len(text) else " "
        whole = not (before.isalnum() or before in "_.") and not (after.isalnum() or after in "_")
        out.append(text[start:found])
        out.append(new if whole else old)
        start = end
