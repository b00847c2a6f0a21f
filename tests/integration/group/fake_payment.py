"""A local mppo.payment.v1.PaymentService used while the real payment service cannot create
intents yet: real gRPC, real metadata, idempotent per (group, member, attempt)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from mppo.payment.v1 import payment_pb2, payment_service_pb2_grpc
from mppo.payment.v1 import payment_service_pb2 as pb
from mppo.platform.errors import FailedPreconditionError, PermissionDeniedError, UnavailableError
from mppo.platform.rpc_status import grpc_errors

Ctx = grpc.aio.ServicerContext[Any, Any]


def _md(context: Ctx) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


@dataclass
class FakePaymentService(payment_service_pb2_grpc.PaymentServiceServicer):
    """Records intents, closed checkouts and releases; can be told to fail the next intents
    or every CloseCheckout."""

    intents: dict[tuple[str, str, int], payment_pb2.Payment] = field(default_factory=dict)
    create_calls: int = 0
    fail_next: int = 0
    released: list[str] = field(default_factory=list)
    #: payments whose hosted pages were closed (CloseCheckout), and whether it is down
    closed: list[str] = field(default_factory=list)
    close_unavailable: bool = False

    @grpc_errors
    async def CreatePaymentIntent(  # noqa: N802
        self, request: pb.CreatePaymentIntentRequest, context: Ctx
    ) -> pb.CreatePaymentIntentResponse:
        md = _md(context)
        if md.get("x-mppo-service") != "group" or not md.get("idempotency-key"):
            raise PermissionDeniedError("group service calls only, with an idempotency key")
        self.create_calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise UnavailableError("provider down (test)")
        key = (request.group_id, request.member_id, request.attempt)
        if key not in self.intents:
            payment_id = str(uuid.uuid4())
            self.intents[key] = payment_pb2.Payment(
                payment_id=payment_id,
                group_id=request.group_id,
                member_id=request.member_id,
                attempt=request.attempt,
                amount=request.amount,
                status=payment_pb2.PAYMENT_STATUS_REQUIRES_ACTION,
                payment_link=f"http://127.0.0.1:8090/pay/{payment_id}",
            )
        return pb.CreatePaymentIntentResponse(payment=self.intents[key])

    @grpc_errors
    async def VoidPayment(  # noqa: N802
        self, request: pb.VoidPaymentRequest, context: Ctx
    ) -> pb.VoidPaymentResponse:
        if request.payment_id in self.released:
            raise FailedPreconditionError("already voided")
        self.released.append(request.payment_id)
        return pb.VoidPaymentResponse()

    @grpc_errors
    async def CloseCheckout(  # noqa: N802
        self, request: pb.CloseCheckoutRequest, context: Ctx
    ) -> pb.CloseCheckoutResponse:
        if _md(context).get("x-mppo-service") != "group":
            raise PermissionDeniedError("group service calls only")
        if self.close_unavailable:
            raise UnavailableError("payment service down (test)")
        if request.payment_id not in self.closed:
            self.closed.append(request.payment_id)
        return pb.CloseCheckoutResponse(
            payment=payment_pb2.Payment(
                payment_id=request.payment_id, status=payment_pb2.PAYMENT_STATUS_VOIDED
            )
        )

    def intent_for(self, group_id: str, member_id: str, attempt: int) -> payment_pb2.Payment:
        return self.intents[(group_id, member_id, attempt)]


async def start_fake_payments(port: int) -> tuple[grpc.aio.Server, FakePaymentService]:
    server = grpc.aio.server()
    fake = FakePaymentService()  # type: ignore[abstract]  # unused RPCs: UNIMPLEMENTED
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, fake
