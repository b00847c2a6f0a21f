"""Why an order failed, in words every member of its group may read.

The order's own `failure_detail` is for the host and operators: it can name a member's payment
and quote their provider's message ("…: PROVIDER_CARD_DECLINED: Your card was declined."). What
the other members read — the group's close reason, the order as they see it, their e-mails —
is the cause from `OrderFailureReason`, in these words.
"""

from __future__ import annotations

from mppo.order.v1 import order_pb2

#: OrderFailureReason → the cause in words
ORDER_FAILURE_WORDS: dict[int, str] = {
    order_pb2.ORDER_FAILURE_REASON_OUT_OF_STOCK: "an item is out of stock at the merchant",
    order_pb2.ORDER_FAILURE_REASON_MERCHANT_REJECTED: "the merchant rejected the order",
    order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED: "a share could not be captured",
    order_pb2.ORDER_FAILURE_REASON_PRICE_MISMATCH: "a price differs from the merchant's catalogue",
    order_pb2.ORDER_FAILURE_REASON_UNKNOWN_ITEM: "an item is not in the merchant's catalogue",
    order_pb2.ORDER_FAILURE_REASON_MERCHANT_UNAVAILABLE: "the merchant could not be reached",
    order_pb2.ORDER_FAILURE_REASON_INVALID_ORDER: "the order did not add up",
}


def failure_words(reason: int) -> str:
    """The cause of a failure with `reason` (OrderFailureReason), in words."""
    return ORDER_FAILURE_WORDS.get(reason, "the order was not placed")
