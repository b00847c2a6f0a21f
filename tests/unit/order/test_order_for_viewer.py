"""What a member sees of their group's order: the host and our services the whole order; a
member the failure's cause in words, no step details and only their own payment ids."""

from __future__ import annotations

from mppo.clients.group import SERVICE_VIEW, GroupView
from mppo.order.v1 import order_pb2
from order_svc.service_layer.handlers import for_viewer

DETAIL = (
    "6e55fb1e-0000: PROVIDER_CARD_DECLINED: provider refused to capture: Your card was declined."
)


def failed_order() -> order_pb2.Order:
    return order_pb2.Order(
        order_id="o-1",
        group_id="g-1",
        status=order_pb2.ORDER_STATUS_FAILED,
        failure_reason=order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED,
        failure_detail=DETAIL,
        shares=[
            order_pb2.OrderShare(member_id="m-ana", payment_id="p-ana"),
            order_pb2.OrderShare(member_id="m-bo", payment_id="6e55fb1e-0000"),
        ],
        steps=[order_pb2.OrderStep(step="capture", outcome="failed", detail=DETAIL)],
    )


def test_the_host_and_services_see_the_whole_order() -> None:
    host = GroupView(everything=False, is_host=True, own_member_ids=frozenset({"m-host"}))
    for view in (host, SERVICE_VIEW):
        assert for_viewer(failed_order(), view) == failed_order()


def test_a_member_sees_the_cause_in_words_and_only_their_own_payment() -> None:
    ana = GroupView(everything=False, is_host=False, own_member_ids=frozenset({"m-ana"}))
    seen = for_viewer(failed_order(), ana)
    assert seen.failure_detail == "a share could not be captured"
    assert [(s.member_id, s.payment_id) for s in seen.shares] == [
        ("m-ana", "p-ana"),
        ("m-bo", ""),
    ]
    assert [(s.step, s.outcome, s.detail) for s in seen.steps] == [("capture", "failed", "")]
    text = str(seen)
    assert "6e55fb1e" not in text
    assert "declined" not in text
    # what is shared stays: status, reason, amounts, members
    assert seen.failure_reason == order_pb2.ORDER_FAILURE_REASON_CAPTURE_FAILED
    assert failed_order().failure_detail == DETAIL  # the stored order is not changed
