"""A provider per member on the system as ``make run`` starts it: ``mppo dev up`` with its
default services runs the PayPal and Razorpay simulators (payment_svc/simulators) beside the
sandbox and hands the payment service their fresh credentials, so a member may choose either
without any setting. Members pay on the simulators' hosted pages over HTTP, as a person would,
and the simulators' signed webhooks reach the payment service through the gateway's routes."""

from __future__ import annotations

from tests.support.e2e import (
    GARLIC,
    PIZZA,
    Api,
    GroupOrder,
    Person,
    cart,
    create_body,
    minor,
    provider_enum,
    provider_name,
)


async def test_members_of_the_dev_system_pay_with_paypal_and_razorpay(api: Api) -> None:
    offered = {"paypal": api.stack.url("paypal"), "razorpay": api.stack.url("razorpay")}
    order = GroupOrder(
        api,
        Person.new("Hana"),
        [Person.new("Ali", provider="paypal"), Person.new("Bo", joins_with="razorpay")],
    )
    draft = await order.create(create_body(order.host, cart((PIZZA, 1), (GARLIC, 1))))
    total = minor(draft["total"])
    opened = await order.open()
    for person in order.people:
        assert order.member(opened, person)["provider"] == provider_enum(person.pays_with)
        link = await order.link_of(person)
        page = offered.get(person.pays_with, api.stack.sandbox)
        assert link.startswith(page + "/"), (person.name, link)
    said = await order.pay_each_at_own_provider(order.people)
    assert said == ["requires_capture", "APPROVED", "captured"], said
    group = await order.wait("CONFIRMED", within=60)
    assert minor(group["amountSecured"]) == total
    confirmed = await api.wait_order(order.group_id, order.host.user, "CONFIRMED")
    assert {s["status"] for s in confirmed["shares"]} == {"ORDER_SHARE_STATUS_CAPTURED"}
    payments = await order.payments()
    assert sorted(provider_name(p) for p in payments) == ["paypal", "razorpay", "sandbox"]
    assert {p["status"] for p in payments} == {"PAYMENT_STATUS_CAPTURED"}
    assert sum(minor(p["amountCaptured"]) for p in payments) == total
