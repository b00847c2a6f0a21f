"""The one client of mppo.order.v1.OrderService, used by the group service.

* :meth:`OrderClient.quote_cart` — the merchant's catalogue prices a cart before its group is
  created: ``InvalidArgumentError`` (with a violation per line, ``items[i].sku`` /
  ``items[i].unit_price_minor``) when the cart differs from it, ``UnavailableError`` when the
  order service or the merchant cannot answer now (retry later;
  :func:`mppo.platform.rpc_status.is_retryable`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mppo.clients.channel import ServiceChannel
from mppo.common.v1 import cart_pb2
from mppo.order.v1 import order_service_pb2, order_service_pb2_grpc


class OrderClient:
    """Calls to the order service, as `caller` (our service's name)."""

    def __init__(self, addr: str, caller: str, *, timeout: float = 10.0) -> None:
        self._peer = ServiceChannel(addr, caller, timeout=timeout)

    def _stub(self) -> order_service_pb2_grpc.OrderServiceAsyncStub:
        return order_service_pb2_grpc.OrderServiceStub(self._peer.channel)

    async def quote_cart(
        self, *, merchant_id: str, currency_code: str, items: Sequence[cart_pb2.LineItem]
    ) -> order_service_pb2.QuoteCartResponse:
        """QuoteCart: the cart as the merchant's catalogue prices it (a read: no key)."""
        request = order_service_pb2.QuoteCartRequest(
            merchant_id=merchant_id, currency_code=currency_code, items=list(items)
        )
        md = self._peer.metadata()
        reply: order_service_pb2.QuoteCartResponse = await self._peer.call(
            "QuoteCart",
            lambda: self._stub().QuoteCart(request, metadata=md, timeout=self._peer.timeout),
        )
        return reply

    async def close(self) -> None:
        """Close the channel."""
        await self._peer.close()
