"""Service-to-service calls are authenticated on the running system (issue 10 §2): every
gRPC port of `mppo dev up` speaks mutual TLS; the caller's service comes from its verified
certificate, the end user only from a token the gateway signed. A call with no certificate,
with the certificate of a service that may not make it, or with identity metadata that claims
to be someone else is refused — and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mppo.group.v1 import group_service_pb2 as gs
from mppo.group.v1 import group_service_pb2_grpc
from mppo.payment.v1 import payment_service_pb2 as ps
from mppo.payment.v1 import payment_service_pb2_grpc
from mppo.platform.tls import TlsMaterial, channel_credentials
from mppo.platform.user_token import USER_TOKEN_KEY, UserTokenSigner
from tests.support.e2e import PIZZA, Api, GroupOrder, Person, cart, create_body

Metadata = Sequence[tuple[str, str]]


def pki(api: Api) -> Path:
    return Path(api.stack.state["pki"])


def as_service(api: Api, target: str, name: str) -> grpc.aio.Channel:
    """A channel to `target` presenting `name`'s development certificate."""
    material = TlsMaterial.load(pki(api), name)
    return grpc.aio.secure_channel(api.stack.addr(target), channel_credentials(material))


async def code_of(call: AsyncIterator[object] | object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def order(api: Api) -> GroupOrder:
    return GroupOrder(api, Person.new("Tess"), [Person.new("Uma")])


async def test_no_certificate_no_call(api: Api, order: GroupOrder) -> None:
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    ca_only = grpc.ssl_channel_credentials(root_certificates=(pki(api) / "ca.pem").read_bytes())
    for target in ("group", "payment", "order", "notification"):
        async with grpc.aio.secure_channel(api.stack.addr(target), ca_only) as channel:
            stub = group_service_pb2_grpc.GroupServiceStub(channel)
            request = gs.GetGroupRequest(group_id=order.group_id)
            code = await code_of(stub.GetGroup(request, metadata=[("x-mppo-service", "group")]))
            assert code is grpc.StatusCode.UNAVAILABLE, target  # the handshake itself fails
        async with grpc.aio.insecure_channel(api.stack.addr(target)) as channel:
            stub = group_service_pb2_grpc.GroupServiceStub(channel)
            code = await code_of(stub.GetGroup(gs.GetGroupRequest(group_id=order.group_id)))
            assert code is grpc.StatusCode.UNAVAILABLE, target


async def test_contacts_only_for_the_notification_certificate(api: Api, order: GroupOrder) -> None:
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    request = gs.GetGroupContactsRequest(group_id=order.group_id)
    for name, metadata in (
        ("payment", ()),
        ("order", ()),
        ("gateway", ()),
        ("operator", ()),
        ("operator", (("x-mppo-service", "notification"),)),  # claims to be notification
        ("payment", (("x-mppo-service", "notification"),)),
    ):
        async with as_service(api, "group", name) as channel:
            stub = group_service_pb2_grpc.GroupServiceStub(channel)
            code = await code_of(stub.GetGroupContacts(request, metadata=metadata))
            assert code is grpc.StatusCode.PERMISSION_DENIED, (name, metadata)
    async with as_service(api, "group", "notification") as channel:
        reply = await group_service_pb2_grpc.GroupServiceStub(channel).GetGroupContacts(request)
    assert {c.email for c in reply.contacts} == {order.host.email, order.guests[0].email}


async def test_forged_user_identity_is_refused_and_changes_nothing(
    api: Api, order: GroupOrder
) -> None:
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stranger_token = UserTokenSigner(key).sign(order.host.user)  # right claims, wrong key
    forgeries: list[Metadata] = [
        (("x-mppo-user-id", order.host.user),),
        (("x-mppo-user-id", order.host.user), ("x-mppo-service", "gateway")),
        ((USER_TOKEN_KEY, stranger_token),),
        ((USER_TOKEN_KEY, "not-a-token"),),
    ]
    request = gs.CancelGroupRequest(group_id=order.group_id, reason="forged")
    for name in ("operator", "payment"):
        async with as_service(api, "group", name) as channel:
            stub = group_service_pb2_grpc.GroupServiceStub(channel)
            for metadata in forgeries:
                code = await code_of(stub.CancelGroup(request, metadata=metadata))
                claims_other_service = any(k == "x-mppo-service" and v != name for k, v in metadata)
                expected = (
                    grpc.StatusCode.PERMISSION_DENIED  # the certificate says otherwise
                    if claims_other_service
                    else grpc.StatusCode.UNAUTHENTICATED  # a user only by a gateway token
                )
                assert code is expected, (name, metadata)
    group = await order.get()
    assert group["status"] == "GROUP_STATUS_DRAFT"  # nothing changed
    assert [h["toStatus"] for h in await api.history(order.group_id, order.host.user)] == [
        "GROUP_STATUS_DRAFT"
    ]


async def test_money_moving_calls_only_from_the_services_that_make_them(
    api: Api, order: GroupOrder
) -> None:
    await order.create(create_body(order.host, cart((PIZZA, 1))))
    await order.open()
    payments = await api.payments(order.group_id, order.host.user)
    assert payments
    payment_id = payments[0]["paymentId"]
    void = ps.VoidPaymentRequest(payment_id=payment_id, reason="not yours")
    for name in ("notification", "gateway", "operator"):
        async with as_service(api, "payment", name) as channel:
            stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
            code = await code_of(stub.VoidPayment(void, metadata=[("idempotency-key", name)]))
            assert code is grpc.StatusCode.PERMISSION_DENIED, name
    after = {p["paymentId"]: p for p in await api.payments(order.group_id, order.host.user)}
    assert after[payment_id]["status"] == payments[0]["status"]  # untouched
