"""A provider per member, end to end: one group whose members pay with the sandbox (Stripe's
API), PayPal and Razorpay, through the REST gateway with the whole system running as
``mppo dev up`` runs it (tests/e2e/providers/conftest.py). Members choose their provider as the
host's preference for them (``MemberInput.provider``) or when they join
(``JoinGroupRequest.provider``); each pays on their own provider's page; the providers' signed
webhooks reach the payment service through the gateway.

- everyone pays: the group and the order are CONFIRMED and each share is captured through
  its own provider (a Razorpay payment link captures at once: its share is already kept);
- the deadline passes with a share unpaid: the group EXPIRED and nothing kept — the sandbox's
  and PayPal's holds voided at each provider, the Razorpay capture refunded;
- everyone pays but the merchant is out of stock: the order's saga voids and refunds each
  share through its own provider (order FAILED, group CANCELLED, nothing kept).

Each outcome is reconciled against every provider's own books (tests/support/e2e.py
``assert_money_reconciles``): the providers keep what our payments record, per provider, and
only for a confirmed order, whose shares sum to its total.
"""

from __future__ import annotations

from tests.support.e2e import (
    GARLIC,
    PIZZA,
    SODA,
    TIRAMISU,
    Api,
    GroupOrder,
    Json,
    Person,
    ProviderFakes,
    assert_money_reconciles,
    cart,
    create_body,
    eventually,
    minor,
    provider_enum,
    provider_name,
)

#: seconds from creating the expiring group to its deadline: enough to create, open and pay
#: at three providers on a busy two-core machine
SHORT_DEADLINE = 15.0


def mixed(api: Api) -> GroupOrder:
    """Hana (sandbox, named for her), Ali (PayPal, the host's choice for him), Bo (Razorpay,
    his own choice when joining) and Cy (the default provider: the sandbox)."""
    return GroupOrder(
        api,
        Person.new("Hana", provider="sandbox"),
        [
            Person.new("Ali", provider="paypal"),
            Person.new("Bo", joins_with="razorpay"),
            Person.new("Cy"),
        ],
    )


async def assert_members_pay_where_they_chose(
    order: GroupOrder, opened: Json, fakes: ProviderFakes
) -> None:
    """Each member's provider, and each payment link on that provider's page."""
    for person in order.people:
        member = order.member(opened, person)
        # the provider they pay with: the one chosen, or the default for whoever chose none
        assert member.get("provider") == provider_enum(person.pays_with), member
    pages = {
        "sandbox": order.api.stack.sandbox,
        "paypal": fakes.paypal.base_url,
        "razorpay": fakes.razorpay.base_url,
    }
    for person in order.people:
        link = await order.link_of(person)
        assert link.startswith(pages[person.pays_with] + "/"), (person.name, link)


async def test_a_mixed_group_is_confirmed_each_share_captured_at_its_provider(
    api: Api, fakes: ProviderFakes
) -> None:
    order = mixed(api)
    draft = await order.create(
        create_body(order.host, cart((PIZZA, 2), (GARLIC, 1), (SODA, 1)), tax_minor=77)
    )
    total = minor(draft["total"])
    assert total == 2 * 1200 + 550 + 250 + 77
    opened = await order.open()
    assert opened["status"] == "GROUP_STATUS_OPEN"
    await assert_members_pay_where_they_chose(order, opened, fakes)

    said = await order.pay_each_at_own_provider(order.people)
    assert said == ["requires_capture", "APPROVED", "captured", "requires_capture"], said

    group = await order.wait("CONFIRMED", within=60)
    assert minor(group["amountSecured"]) == total
    confirmed = await api.wait_order(order.group_id, order.host.user, "CONFIRMED")
    assert minor(confirmed["total"]) == total
    assert {s["status"] for s in confirmed["shares"]} == {"ORDER_SHARE_STATUS_CAPTURED"}
    assert await order.statuses() == [
        ("UNSPECIFIED", "DRAFT"),
        ("DRAFT", "OPEN"),
        ("OPEN", "PENDING"),
        ("PENDING", "CONFIRMED"),
    ]

    payments = await order.payments()
    assert len(payments) == 4
    assert {p["status"] for p in payments} == {"PAYMENT_STATUS_CAPTURED"}
    by_member = {p["memberId"]: p for p in payments}
    for person in order.people:
        payment = by_member[order.member_ids[person.user]]
        assert provider_name(payment) == person.pays_with, payment
        share = minor(order.member(group, person)["share"])
        assert minor(payment["amountCaptured"]) == share, payment

    books = await assert_money_reconciles(order, fakes, confirmed=confirmed)
    shares = {p.pays_with: minor(order.member(group, p)["share"]) for p in order.people}
    sandbox_shares = sum(
        minor(order.member(group, p)["share"]) for p in order.people if p.pays_with == "sandbox"
    )
    assert books["sandbox"].kept == sandbox_shares
    assert books["paypal"].kept == shares["paypal"]
    assert books["razorpay"].kept == shares["razorpay"]
    assert sum(b.kept for b in books.values()) == total
    assert all(b.refund == 0 and b.held == 0 for b in books.values()), books
    # the PayPal share was captured by the order's saga, through PayPal's capture call
    assert len(fakes.paypal.api_calls("POST", "/v2/payments/authorizations/")) == 1
    merchant = await api.merchant_state()
    assert [o for o in merchant["orders"] if o["reference"] == confirmed["orderId"]]


async def test_a_mixed_group_expires_with_nothing_kept_at_any_provider(
    api: Api, fakes: ProviderFakes
) -> None:
    order = mixed(api)
    draft = await order.create(
        create_body(
            order.host,
            cart((TIRAMISU, 2), (SODA, 2)),
            deadline_in=SHORT_DEADLINE,
            policy="CANCEL",
        )
    )
    total = minor(draft["total"])
    opened = await order.open()
    await assert_members_pay_where_they_chose(order, opened, fakes)
    hana, ali, bo, cy = order.people
    said = await order.pay_each_at_own_provider([hana, ali, bo])
    assert said == ["requires_capture", "APPROVED", "captured"], said
    for person in (hana, ali, bo):
        await order.wait_member(person, "PAID", within=SHORT_DEADLINE)
    paid = sum(minor(order.member(opened, p)["share"]) for p in (hana, ali, bo))
    assert 0 < paid < total

    expired = await order.wait("EXPIRED", within=SHORT_DEADLINE + 40)
    assert expired["closeReason"], expired
    assert await order.statuses() == [
        ("UNSPECIFIED", "DRAFT"),
        ("DRAFT", "OPEN"),
        ("OPEN", "EXPIRED"),
    ]
    assert (await api.order_of(order.group_id, order.host.user)).status == 404

    books = await assert_money_reconciles(order, fakes)
    assert (
        books["sandbox"].hold
        == books["sandbox"].release
        == minor(order.member(opened, hana)["share"])
    )
    assert (
        books["paypal"].hold == books["paypal"].release == minor(order.member(opened, ali)["share"])
    )
    assert (
        books["razorpay"].capture
        == books["razorpay"].refund
        == minor(order.member(opened, bo)["share"])
    )
    assert all(b.kept == 0 and b.held == 0 for b in books.values()), books
    payments = await eventually(
        order.payments,
        lambda ps: not {p["status"] for p in ps} & {"PAYMENT_STATUS_AUTHORIZED"},
        within=30,
        what="no hold left",
    )
    status = {
        provider_name(p): p["status"]
        for p in payments
        if p["memberId"] != order.member_ids[cy.user]
    }
    assert status == {
        "sandbox": "PAYMENT_STATUS_VOIDED",
        "paypal": "PAYMENT_STATUS_VOIDED",
        "razorpay": "PAYMENT_STATUS_REFUNDED",
    }, payments


async def test_a_failed_mixed_order_releases_each_share_at_its_provider(
    api: Api, fakes: ProviderFakes
) -> None:
    """The order's saga compensates through each share's provider: the merchant is out of
    stock, the order FAILED and the group CANCELLED, with nothing kept anywhere."""
    order = mixed(api)
    draft = await order.create(create_body(order.host, cart((PIZZA, 1), (TIRAMISU, 2))))
    total = minor(draft["total"])
    opened = await order.open()
    fault = await api.merchant_fault(action="reserve", fault="out_of_stock", times=1)
    assert fault["remaining"] == 1
    try:
        said = await order.pay_each_at_own_provider(order.people)
        assert said == ["requires_capture", "APPROVED", "captured", "requires_capture"], said
        cancelled = await order.wait("CANCELLED", within=60)
    finally:
        state = await api.merchant_state()
        if state["faults"]:  # not used up: leave the merchant as the other tests expect it
            await api.request("POST", api.stack.merchant + "/_control/reset")
    assert state["faults"] == []
    assert cancelled["closeReason"], cancelled
    failed = await api.wait_order(order.group_id, order.host.user, "FAILED")
    assert failed["failureReason"] == "ORDER_FAILURE_REASON_OUT_OF_STOCK", failed
    assert minor(failed["total"]) == total

    books = await assert_money_reconciles(order, fakes)
    share = {p.name: minor(order.member(opened, p)["share"]) for p in order.people}
    assert books["sandbox"].hold == books["sandbox"].release == share["Hana"] + share["Cy"]
    assert books["paypal"].hold == books["paypal"].release == share["Ali"]
    assert books["razorpay"].capture == books["razorpay"].refund == share["Bo"]
    payments = await order.payments()
    assert sorted((provider_name(p), p["status"]) for p in payments) == [
        ("paypal", "PAYMENT_STATUS_VOIDED"),
        ("razorpay", "PAYMENT_STATUS_REFUNDED"),
        ("sandbox", "PAYMENT_STATUS_VOIDED"),
        ("sandbox", "PAYMENT_STATUS_VOIDED"),
    ], payments
