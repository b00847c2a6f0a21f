"""The saga's view of the shared payment client: a refusal is any error not worth retrying."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mppo.clients.payment import PaymentClient
from mppo.common.v1 import money_pb2
from mppo.payment.v1 import payment_pb2
from mppo.platform.errors import (
    ConflictError,
    DomainError,
    FailedPreconditionError,
    InternalError,
    NotFoundError,
    UnavailableError,
)
from order_svc.adapters.payment_gateway import PaymentServiceGateway
from order_svc.service_layer.ports import PaymentRefusedError, PaymentUnavailableError


class StubClient:
    def __init__(self, error: DomainError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def _answer(self, what: str, *args: Any) -> payment_pb2.Payment:
        self.calls.append((what, args))
        if self.error is not None:
            raise self.error
        usd = "USD"
        return payment_pb2.Payment(
            payment_id=str(args[0]),
            status=payment_pb2.PAYMENT_STATUS_CAPTURED,
            amount_captured=money_pb2.Money(amount_minor=700, currency_code=usd),
        )

    async def capture(self, *args: Any) -> payment_pb2.Payment:
        return await self._answer("capture", *args)

    async def get(self, *args: Any) -> payment_pb2.Payment:
        return await self._answer("get", *args)


def _gateway(client: StubClient) -> PaymentServiceGateway:
    return PaymentServiceGateway(cast(PaymentClient, client))


async def test_an_answer_becomes_the_payment_state() -> None:
    client = StubClient()
    state = await _gateway(client).capture("p1", 700, "USD", "o1:capture:p1")
    assert (state.payment_id, state.status, state.captured_minor) == ("p1", "CAPTURED", 700)
    assert client.calls == [("capture", ("p1", 700, "USD", "o1:capture:p1"))]


@pytest.mark.parametrize(
    "error",
    [
        FailedPreconditionError("payment is VOIDED"),
        NotFoundError("no such payment"),
        InternalError(),
    ],
)
async def test_errors_not_worth_retrying_are_refusals(error: DomainError) -> None:
    with pytest.raises(PaymentRefusedError):
        await _gateway(StubClient(error)).capture("p1", 700, "USD", "k")


@pytest.mark.parametrize("error", [UnavailableError("down"), ConflictError("busy")])
async def test_retryable_errors_mean_unavailable(error: DomainError) -> None:
    with pytest.raises(PaymentUnavailableError):
        await _gateway(StubClient(error)).get("p1")
