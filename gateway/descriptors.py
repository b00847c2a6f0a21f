"""The gateway's view of proto/: every `google.api.http` binding in the descriptor set.

`gateway/descriptors.binpb` (built by `scripts/gen_protos.py`, with imports and source info) is
loaded into a private descriptor pool; request and response classes are built from it, so the
gateway needs no generated stubs and serves a new annotated RPC without a code change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

DEFAULT_DESCRIPTORS = Path(__file__).resolve().parent / "descriptors.binpb"

# The RPCs whose REST bindings authenticate by the provider's signature instead of a JWT.
WEBHOOK_METHODS = frozenset({"mppo.payment.v1.PaymentService.HandleWebhook"})
# Annotated RPCs that only our services may call, over gRPC inside the mesh (the services'
# `service_only` lists: order_svc/bootstrap.py, payment_svc/bootstrap.py SERVICE_ONLY): the
# gateway (and Envoy) refuse their REST bindings as if they did not exist (404), and OpenAPI
# leaves them out. CreateOrder is called by the group service when a group is fully paid,
# CreatePaymentIntent by the group service when it opens a member's payment; an end user must
# never call either directly. (HandleWebhook is service-only too, for the gateway itself: its
# REST binding is the provider's way in, WEBHOOK_METHODS.) tests/unit/gateway/test_routing.py
# checks this list against every service's service_only list.
INTERNAL_METHODS = frozenset(
    {
        "mppo.order.v1.OrderService.CreateOrder",
        "mppo.payment.v1.PaymentService.CreatePaymentIntent",
    }
)
# The public RPCs whose service honours an `idempotency-key` (group_svc's servicer claims it
# in the call's unit of work): OpenAPI declares the `Idempotency-Key` header on their REST
# bindings, and a replay is answered with `Idempotent-Replayed: true`. Checked against the
# real services by tests/integration/gateway/test_idempotent_replay.py.
IDEMPOTENT_METHODS = frozenset(
    f"mppo.group.v1.GroupService.{name}"
    for name in (
        "CreateGroup",
        "AddMembers",
        "RemoveMember",
        "JoinGroup",
        "UpdateSplit",
        "OpenGroup",
        "ForceFinalize",
        "CancelGroup",
        "RetryPayment",
    )
)


@dataclass(frozen=True)
class HttpBinding:
    """One REST binding of one RPC (the main rule or one of its additional_bindings)."""

    verb: str  # GET, POST, PUT, PATCH, DELETE or a custom verb
    template: str  # the path template, e.g. /group/{group_id}/members
    body: str  # "", "*" or a top-level field name
    response_body: str  # "" or a top-level field name of the response
    method: MethodDescriptor

    @property
    def service(self) -> str:
        """Full name of the gRPC service, e.g. mppo.group.v1.GroupService."""
        return str(self.method.containing_service.full_name)

    @property
    def full_method(self) -> str:
        """Full name of the RPC, e.g. mppo.group.v1.GroupService.CreateGroup."""
        return str(self.method.full_name)

    @property
    def grpc_path(self) -> str:
        """The HTTP/2 path of the RPC: /mppo.group.v1.GroupService/CreateGroup."""
        return f"/{self.service}/{self.method.name}"

    @property
    def area(self) -> str:
        """The upstream service name: `group` for package mppo.group.v1."""
        parts = self.service.split(".")
        return parts[1] if len(parts) > 3 and parts[0] == "mppo" else parts[0]

    @property
    def webhook(self) -> bool:
        """Authenticated by provider signature (no JWT)."""
        return self.full_method in WEBHOOK_METHODS

    @property
    def idempotent(self) -> bool:
        """The service honours an Idempotency-Key on this RPC."""
        return self.full_method in IDEMPOTENT_METHODS

    @property
    def internal(self) -> bool:
        """Refused at the edge: only services call it, over gRPC."""
        return self.full_method in INTERNAL_METHODS


class Catalog:
    """The descriptor pool, its message classes and every HTTP binding."""

    def __init__(self, descriptor_set: bytes) -> None:
        self.file_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self.pool = descriptor_pool.DescriptorPool()
        for file in self.file_set.file:
            self.pool.Add(file)
        self.bindings: list[HttpBinding] = list(self._bindings())
        self.comments = _comments(self.file_set)

    @classmethod
    def load(cls, path: Path = DEFAULT_DESCRIPTORS) -> Catalog:
        """Read a descriptor set file (FileDescriptorSet, binary)."""
        return cls(path.read_bytes())

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        """The dynamic message class of `descriptor`."""
        cls: type[Message] = message_factory.GetMessageClass(descriptor)
        return cls

    def services(self) -> list[str]:
        """Full names of the services with at least one HTTP binding, in file order."""
        seen: dict[str, None] = {}
        for binding in self.bindings:
            seen.setdefault(binding.service, None)
        return list(seen)

    def _bindings(self) -> Iterator[HttpBinding]:
        for file in self.file_set.file:
            for service in file.service:
                name = f"{file.package}.{service.name}" if file.package else service.name
                for method_proto in service.method:
                    options = method_proto.options
                    if not options.HasExtension(annotations_pb2.http):
                        continue
                    method = self.pool.FindMethodByName(f"{name}.{method_proto.name}")
                    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
                    for one in (rule, *rule.additional_bindings):
                        yield _binding(one, method)


def _binding(rule: http_pb2.HttpRule, method: MethodDescriptor) -> HttpBinding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError(f"{method.full_name}: google.api.http rule without a pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, template = kind.upper(), str(getattr(rule, kind))
    return HttpBinding(verb, template, rule.body, rule.response_body, method)


def _comments(file_set: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments by full element name (messages, fields, enums, services, methods)."""
    found: dict[str, str] = {}
    for file in file_set.file:
        by_path = {
            tuple(loc.path): loc.leading_comments.strip()
            for loc in file.source_code_info.location
            if loc.leading_comments.strip()
        }
        prefix = f"{file.package}." if file.package else ""

        def walk_message(
            msg: Any, path: tuple[int, ...], scope: str, by_path: dict[Any, str] = by_path
        ) -> None:
            full = f"{scope}{msg.name}"
            _put(found, full, by_path.get(path))
            for i, fld in enumerate(msg.field):
                _put(found, f"{full}.{fld.name}", by_path.get((*path, 2, i)))
            for i, nested in enumerate(msg.nested_type):
                walk_message(nested, (*path, 3, i), f"{full}.")
            for i, enum in enumerate(msg.enum_type):
                walk_enum(enum, (*path, 4, i), f"{full}.")

        def walk_enum(
            enum: Any, path: tuple[int, ...], scope: str, by_path: dict[Any, str] = by_path
        ) -> None:
            full = f"{scope}{enum.name}"
            _put(found, full, by_path.get(path))
            for i, value in enumerate(enum.value):
                _put(found, f"{full}.{value.name}", by_path.get((*path, 2, i)))

        for i, msg in enumerate(file.message_type):
            walk_message(msg, (4, i), prefix)
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, (5, i), prefix)
        for i, svc in enumerate(file.service):
            _put(found, f"{prefix}{svc.name}", by_path.get((6, i)))
            for j, method in enumerate(svc.method):
                _put(found, f"{prefix}{svc.name}.{method.name}", by_path.get((6, i, 2, j)))
    return found


def _put(found: dict[str, str], name: str, comment: str | None) -> None:
    if comment:
        found[name] = " ".join(line.strip() for line in comment.splitlines())
