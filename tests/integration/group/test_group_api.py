"""The GroupService API: authorization, validation with field details, idempotency keys,
PII encrypted at rest, the snapshot cache never stale, and OpenGroup surviving a payment
service failure half-way."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from mppo.common.v1 import cart_pb2
from mppo.group.v1 import group_pb2
from mppo.group.v1 import group_service_pb2 as gs
from mppo.payment.v1 import payment_pb2
from mppo.platform.rpc_status import status_from_error
from tests.integration.group.fake_payment import FakePaymentService
from tests.integration.group.harness import (
    SERVICE_MD,
    Stack,
    create_request,
    eventually,
    get_group,
    of_type,
    open_group,
    user_md,
)


def violations(err: grpc.aio.AioRpcError) -> set[str]:
    status = status_from_error(err)
    assert status is not None
    fields: set[str] = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields |= {v.field for v in bad.field_violations}
    return fields


async def test_members_see_only_their_groups_and_only_the_host_acts(stack: Stack) -> None:
    stub = stack.stub()
    mine = await open_group(stack)
    other = await open_group(stack)
    member = mine.members[1].user_id
    seen = await stub.GetGroup(gs.GetGroupRequest(group_id=mine.group_id), metadata=user_md(member))
    assert seen.group.group_id == mine.group_id
    assert seen.group.members[1].email  # their own e-mail
    assert not seen.group.members[2].email  # not the others'
    assert not any(m.invite_token for m in seen.group.members)
    calls: list[tuple[Any, Any]] = [
        (stub.GetGroup, gs.GetGroupRequest(group_id=other.group_id)),
        (stub.GetGroupHistory, gs.GetGroupHistoryRequest(group_id=other.group_id)),
        (stub.ForceFinalize, gs.ForceFinalizeRequest(group_id=other.group_id)),
    ]
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=user_md(member))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    host_only: list[tuple[Any, Any]] = [
        (stub.ForceFinalize, gs.ForceFinalizeRequest(group_id=mine.group_id)),
        (stub.CancelGroup, gs.CancelGroupRequest(group_id=mine.group_id)),
        (stub.OpenGroup, gs.OpenGroupRequest(group_id=mine.group_id)),
    ]
    for call, request in host_only:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=user_md(member))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetGroup(gs.GetGroupRequest(group_id=mine.group_id))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await stub.ListGroups(gs.ListGroupsRequest(), metadata=user_md(member))
    assert [g.group_id for g in listed.groups] == [mine.group_id]
    # contacts are for services only, decrypted for delivery
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetGroupContacts(
            gs.GetGroupContactsRequest(group_id=mine.group_id), metadata=user_md(mine.host_user_id)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    contacts = await stub.GetGroupContacts(
        gs.GetGroupContactsRequest(group_id=mine.group_id), metadata=SERVICE_MD
    )
    emails = [c.email for c in contacts.contacts]
    assert emails == [m.email for m in mine.members]
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT email_enc, pii_key_id FROM group_members WHERE group_id = $1", mine.group_id
        )
    finally:
        await conn.close()
    assert len(rows) == 4
    for row, email in zip(rows, emails, strict=False):
        assert row["pii_key_id"] == "dev-insecure"
        assert email.encode() not in row["email_enc"]


async def test_bad_input_gets_invalid_argument_with_field_details(stack: Stack) -> None:
    stub = stack.stub()
    host = user_md("host-validation")

    async def rejected(request: gs.CreateGroupRequest) -> set[str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateGroup(request, metadata=host)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return violations(err.value)

    empty = create_request()
    del empty.items[:]
    assert "items" in await rejected(empty)
    bad_amounts = create_request()
    bad_amounts.items.append(cart_pb2.LineItem(line_id="l2", quantity=0, unit_price_minor=-5))
    bad_amounts.tip_minor = -1
    assert {"items[1].quantity", "items[1].unit_price_minor", "tip_minor"} <= await rejected(
        bad_amounts
    )
    assert "currency_code" in await rejected(create_request(currency="XYZ"))
    custom = create_request(total=1000, guests=1)
    custom.split_mode = group_pb2.SPLIT_MODE_CUSTOM
    custom.host.share_spec.amount_minor = 600
    custom.members[0].share_spec.amount_minor = 300
    assert "shares" in await rejected(custom)
    dup = create_request(guests=2)
    dup.members[1].email = dup.members[0].email
    assert "members[1].email" in await rejected(dup)
    crowd = create_request(guests=50)
    assert "members" in await rejected(crowd)
    assert "deadline" in await rejected(create_request(deadline_in=-5))
    # a valid custom split is accepted
    custom.members[0].share_spec.amount_minor = 400
    ok = await stub.CreateGroup(custom, metadata=host)
    assert [m.share.amount_minor for m in ok.group.members] == [600, 400]


async def test_idempotency_keys_replay_and_reject_other_parameters(stack: Stack) -> None:
    stub = stack.stub()
    request = create_request()
    first = await stub.CreateGroup(request, metadata=user_md("host-idem", key="create-1"))
    again = await stub.CreateGroup(request, metadata=user_md("host-idem", key="create-1"))
    assert again.group.group_id == first.group.group_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateGroup(create_request(), metadata=user_md("host-idem", key="create-1"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await stub.ListGroups(gs.ListGroupsRequest(), metadata=user_md("host-idem"))
    assert len(listed.groups) == 1


async def test_snapshot_cache_is_never_stale(stack: Stack) -> None:
    stub = stack.stub()
    created = await stub.CreateGroup(create_request(guests=1), metadata=user_md("host-cache"))
    group = created.group
    host = user_md(group.host_user_id)
    for _ in range(2):  # the second read may come from Redis
        seen = await get_group(stack, group, replica=1)
        assert len(seen.members) == 2
    await stub.AddMembers(
        gs.AddMembersRequest(
            group_id=group.group_id,
            members=[group_pb2.MemberInput(display_name="New", email="new-cache@example.com")],
        ),
        metadata=host,
    )
    seen = await get_group(stack, group, replica=1)
    assert len(seen.members) == 3
    assert [m.share.amount_minor for m in seen.members] == [334, 334, 333]
    removed = await stub.RemoveMember(
        gs.RemoveMemberRequest(group_id=group.group_id, member_id=seen.members[2].member_id),
        metadata=host,
    )
    assert len(removed.group.members) == 2
    assert len((await get_group(stack, group, replica=1)).members) == 2


async def test_open_group_survives_a_payment_service_failure_half_way(
    stack: Stack, fake_payments: tuple[str, FakePaymentService]
) -> None:
    _, fake = fake_payments
    stub = stack.stub()
    created = await stub.CreateGroup(create_request(guests=3), metadata=user_md("host-partial"))
    group = created.group
    host = user_md(group.host_user_id)
    before = fake.create_calls
    fake.fail_next = 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenGroup(gs.OpenGroupRequest(group_id=group.group_id), metadata=host)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    still = await get_group(stack, group)
    assert still.status == group_pb2.GROUP_STATUS_DRAFT
    # frozen: the split cannot change under the intents already requested
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddMembers(
            gs.AddMembersRequest(
                group_id=group.group_id,
                members=[group_pb2.MemberInput(display_name="Late", email="late@example.com")],
            ),
            metadata=host,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    opened = await stub.OpenGroup(
        gs.OpenGroupRequest(group_id=group.group_id), metadata=user_md(group.host_user_id, "o1")
    )
    assert opened.group.status == group_pb2.GROUP_STATUS_OPEN
    replay = await stub.OpenGroup(
        gs.OpenGroupRequest(group_id=group.group_id), metadata=user_md(group.host_user_id, "o1")
    )
    assert replay.group == opened.group
    keys = [k for k in fake.intents if k[0] == group.group_id]
    assert len(keys) == 4  # one intent per member, however often it was asked for
    assert fake.create_calls - before >= 5
    assert {m.payment_id for m in opened.group.members} == {
        fake.intents[k].payment_id for k in keys
    }
    events = await eventually(
        lambda: stack.events(group.group_id), lambda evs: bool(of_type(evs, "group.opened"))
    )
    (event,) = of_type(events, "group.opened")
    assert len(event.invitations) == 4
    assert all(i.payment_link for i in event.invitations)
    assert len(of_type(events, "member.added")) == 4
    assert len(of_type(events, "group.created")) == 1


async def test_a_member_who_names_no_provider_reports_the_default_they_pay_with(
    stack: Stack,
) -> None:
    # the services run with MPPO_ENV=test: the sandbox is the default provider
    created = await stack.stub().CreateGroup(create_request(guests=2), metadata=user_md("host-p"))
    assert [m.provider for m in created.group.members] == [payment_pb2.PROVIDER_SANDBOX] * 3
    seen = await stack.stub(1 % len(stack.procs)).GetGroup(
        gs.GetGroupRequest(group_id=created.group.group_id), metadata=user_md("host-p")
    )
    assert [m.provider for m in seen.group.members] == [payment_pb2.PROVIDER_SANDBOX] * 3
    assert payment_pb2.PROVIDER_UNSPECIFIED not in [m.provider for m in seen.group.members]


async def test_page_tokens_continue_only_the_listing_they_came_from(stack: Stack) -> None:
    """AIP-158: a token sent with other parameters (another group, another filter, another
    caller) is INVALID_ARGUMENT, not a page of some other listing."""
    stub = stack.stub()
    host = user_md(f"host-{uuid.uuid4().hex[:6]}")
    made = [(await stub.CreateGroup(create_request(), metadata=host)).group for _ in range(3)]
    ids: list[str] = []
    token = ""
    for _ in range(4):
        page = await stub.ListGroups(
            gs.ListGroupsRequest(page_size=2, page_token=token), metadata=host
        )
        ids += [g.group_id for g in page.groups]
        token = page.next_page_token
        if not token:
            break
    assert sorted(ids) == sorted(g.group_id for g in made)  # each once, none lost
    first = await stub.ListGroups(gs.ListGroupsRequest(page_size=1), metadata=host)
    assert first.next_page_token
    someone_else = user_md(f"host-{uuid.uuid4().hex[:6]}")
    refused: list[tuple[Any, Any, Any]] = [
        (
            stub.ListGroups,
            gs.ListGroupsRequest(
                page_size=1, page_token=first.next_page_token, status=group_pb2.GROUP_STATUS_OPEN
            ),
            host,
        ),
        (stub.ListGroups, gs.ListGroupsRequest(page_token=first.next_page_token), someone_else),
    ]
    # a history token belongs to its group (positions are row numbers shared by all groups)
    opened = [await open_group(stack) for _ in range(2)]
    owner = user_md(opened[0].host_user_id)
    history = await stub.GetGroupHistory(
        gs.GetGroupHistoryRequest(group_id=opened[0].group_id, page_size=1), metadata=owner
    )
    assert history.next_page_token
    refused += [
        (
            stub.GetGroupHistory,
            gs.GetGroupHistoryRequest(
                group_id=opened[1].group_id, page_token=history.next_page_token
            ),
            user_md(opened[1].host_user_id),
        ),
        # and a group listing's token is no history token
        (
            stub.GetGroupHistory,
            gs.GetGroupHistoryRequest(
                group_id=opened[0].group_id, page_token=first.next_page_token
            ),
            owner,
        ),
    ]
    for call, request, md in refused:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert violations(err.value) == {"page_token"}
    # the same parameters with another page size continue the listing
    rest = await stub.GetGroupHistory(
        gs.GetGroupHistoryRequest(
            group_id=opened[0].group_id, page_size=50, page_token=history.next_page_token
        ),
        metadata=owner,
    )
    assert [c.to_status for c in [*history.changes, *rest.changes]] == [
        group_pb2.GROUP_STATUS_DRAFT,
        group_pb2.GROUP_STATUS_OPEN,
    ]
