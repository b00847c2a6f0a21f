"""The group state machine (every pair of states) and the aggregate's lifecycle rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from group_svc.domain.lifecycle import (
    HOLDS_ACTOR,
    TERMINAL,
    GroupStatus,
    can_transition,
    check_transition,
)
from group_svc.domain.model import (
    MAX_MEMBERS,
    MEMBER_STARTS,
    MEMBER_TRANSITIONS,
    AttemptStatus,
    CartLine,
    FallbackOutcome,
    FallbackPolicy,
    Group,
    Member,
    MemberStatus,
    NewMember,
    PaymentOutcome,
    Role,
    check_member_list,
)
from group_svc.domain.split import ShareSpec, SplitMode
from mppo.platform.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)

S = GroupStatus
LEGAL = {
    (S.DRAFT, S.OPEN),
    (S.DRAFT, S.EXPIRED),
    (S.DRAFT, S.CANCELLED),
    (S.OPEN, S.OPEN),  # the hold policy brings the deadline forward
    (S.OPEN, S.PENDING),
    (S.OPEN, S.EXPIRED),
    (S.OPEN, S.CANCELLED),
    (S.PENDING, S.CONFIRMED),
    (S.PENDING, S.CANCELLED),
}
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_pair_of_states(source: GroupStatus, target: GroupStatus) -> None:
    legal = (source, target) in LEGAL
    assert can_transition(source, target) is legal
    if legal:
        check_transition(source, target)
    else:
        with pytest.raises(FailedPreconditionError) as err:
            check_transition(source, target)
        assert err.value.reason == "ILLEGAL_TRANSITION"


def test_terminal_states() -> None:
    assert {S.CONFIRMED, S.EXPIRED, S.CANCELLED} == TERMINAL


def status_of(group: Group) -> GroupStatus:
    """The status (a call, so the type checker does not narrow across transitions)."""
    return group.status


def make_group(
    n: int = 4, total: int = 1001, policy: FallbackPolicy = FallbackPolicy.CANCEL
) -> Group:
    group = Group(
        group_id="g1",
        host_user_id="u0",
        merchant_id="m1",
        currency_code="USD",
        items=[CartLine("l1", "sku", "pizza", 1, total)],
        fees_minor=0,
        tax_minor=0,
        tip_minor=0,
        split_mode=SplitMode.EQUAL,
        fallback_policy=policy,
        deadline=NOW + timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
    )
    group.members.append(
        Member("h", 0, Role.HOST, "Host", "h@x", "", "u0", ShareSpec(), MemberStatus.JOINED, "t0")
    )
    group.add_members(
        [NewMember(f"G{i}", f"g{i}@x", "", "", ShareSpec()) for i in range(1, n)], NOW, "members"
    )
    return group


def open_group(group: Group) -> None:
    group.freeze(NOW)
    for a in group.attempts_missing_intent():
        group.attach_intent(a.member_id, a.attempt, f"p-{a.member_id}-{a.attempt}", "link")
    assert group.open("user:u0", NOW)


def pay(group: Group, member: Member) -> PaymentOutcome:
    attempt = group.current_attempt(member)
    assert attempt is not None
    return group.payment_succeeded(
        attempt.payment_id, member.member_id, attempt.attempt, attempt.amount_minor, False, NOW
    )


def test_open_freezes_equal_shares_and_requests_one_attempt_each() -> None:
    group = make_group()
    group.freeze(NOW)
    assert [m.share_minor for m in group.members] == [251, 250, 250, 250]
    assert len(group.attempts_missing_intent()) == 4
    assert not group.open("user:u0", NOW)  # intents still missing: stays DRAFT
    assert status_of(group) is S.DRAFT
    with pytest.raises(FailedPreconditionError):
        group.add_members([NewMember("x", "x@x", "", "", ShareSpec())], NOW, "members")
    for a in group.attempts_missing_intent():
        group.attach_intent(a.member_id, a.attempt, f"p{a.member_id}", "link")
    assert group.open("user:u0", NOW)
    assert status_of(group) is S.OPEN
    assert {m.status for m in group.members} == {MemberStatus.AWAITING_PAYMENT}
    assert [(h.from_status, h.to_status) for h in group.new_history] == [(S.DRAFT, S.OPEN)]


def test_payments_secure_shares_and_the_last_one_makes_the_group_pending_once() -> None:
    group = make_group()
    open_group(group)
    for member in group.members[:-1]:
        assert pay(group, member) is PaymentOutcome.ACCEPTED
        assert not group.mark_pending(NOW)
    assert pay(group, group.members[-1]) is PaymentOutcome.ACCEPTED
    assert group.amount_secured == 1001
    assert group.mark_pending(NOW)
    assert not group.mark_pending(NOW)
    assert status_of(group) is S.PENDING
    # the same payment again is a duplicate, a surplus payment must be released
    first = group.members[0]
    assert pay(group, first) is PaymentOutcome.DUPLICATE
    extra = group.payment_succeeded("late", first.member_id, 9, 251, False, NOW)
    assert extra is PaymentOutcome.REJECTED
    assert group.attempt_by_payment("late") is not None


def test_failed_payment_can_be_retried_with_a_fresh_attempt() -> None:
    group = make_group(2, 100)
    open_group(group)
    guest = group.members[1]
    first = group.current_attempt(guest)
    assert first is not None
    assert group.payment_failed(first.payment_id, guest.member_id, 1, NOW)
    assert guest.status is MemberStatus.PAYMENT_FAILED
    with pytest.raises(FailedPreconditionError):
        group.retry_payment(group.members[0].member_id, NOW)
    retry = group.retry_payment(guest.member_id, NOW)
    assert (retry.attempt, retry.amount_minor, guest.status) == (
        2,
        50,
        MemberStatus.AWAITING_PAYMENT,
    )
    # the failed attempt succeeding later would be a surplus: released
    assert (
        group.payment_succeeded(first.payment_id, guest.member_id, 1, 50, False, NOW)
        is PaymentOutcome.REJECTED
    )
    group.attach_intent(guest.member_id, 2, "p2", "link2")
    assert pay(group, guest) is PaymentOutcome.ACCEPTED


def test_payment_after_expiry_is_rejected() -> None:
    group = make_group(2, 100)
    open_group(group)
    assert group.apply_fallback("system:scheduler", "deadline", timedelta(0), NOW) is (
        FallbackOutcome.EXPIRED
    )
    assert status_of(group) is S.EXPIRED
    assert pay(group, group.members[0]) is PaymentOutcome.REJECTED
    attempt = group.current_attempt(group.members[0])
    assert attempt is not None
    assert attempt.status is AttemptStatus.REJECTED


def test_host_pays_remaining_moves_unpaid_shares_to_the_host_then_expires_after_grace() -> None:
    group = make_group(4, 1001, FallbackPolicy.HOST_PAYS_REMAINING)
    open_group(group)
    host, g1, g2, g3 = group.members
    assert pay(group, g1) is PaymentOutcome.ACCEPTED
    outcome = group.apply_fallback("system:scheduler", "deadline", timedelta(minutes=5), NOW)
    assert outcome is FallbackOutcome.HOST_COVERS
    assert status_of(group) is S.OPEN
    assert (g2.status, g3.status, g2.share_minor, g2.required) == (
        MemberStatus.COVERED_BY_HOST,
        MemberStatus.COVERED_BY_HOST,
        0,
        False,
    )
    assert host.share_minor == 251 + 250 + 250
    assert sum(m.share_minor for m in group.members) == 1001
    new = group.current_attempt(host)
    assert new is not None
    assert (new.attempt, new.amount_minor) == (2, 751)
    assert group.grace_deadline == NOW + timedelta(minutes=5)
    # the history says why the group goes on, and until when
    row = group.new_history[-1]
    assert (row.from_status, row.to_status, row.actor) == (S.OPEN, S.OPEN, "system:scheduler")
    grace_end = (NOW + timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    assert row.reason == f"deadline: the host covers the rest (5.00 USD) by {grace_end} UTC"
    # a covered guest paying late is released; the host's old attempt is superseded
    late = group.current_attempt(g2)
    assert late is not None
    assert pay(group, g2) is PaymentOutcome.REJECTED
    # the grace passes unpaid: the group expires
    assert group.apply_fallback("system:scheduler", "grace", timedelta(0), NOW) is (
        FallbackOutcome.EXPIRED
    )
    assert status_of(group) is S.EXPIRED


def test_host_paying_within_grace_completes_the_group() -> None:
    group = make_group(3, 300, FallbackPolicy.HOST_PAYS_REMAINING)
    open_group(group)
    host = group.members[0]
    assert pay(group, host) is PaymentOutcome.ACCEPTED
    group.apply_fallback("system:scheduler", "deadline", timedelta(minutes=5), NOW)
    attempt = group.current_attempt(host)
    assert attempt is not None
    assert attempt.amount_minor == 200
    group.attach_intent(host.member_id, attempt.attempt, "p-host-2", "link")
    assert pay(group, host) is PaymentOutcome.ACCEPTED
    assert group.mark_pending(NOW)
    assert group.amount_secured == 300


def test_confirm_cancel_and_illegal_moves() -> None:
    group = make_group(2, 100)
    with pytest.raises(FailedPreconditionError):
        group.confirm("o1", NOW)
    open_group(group)
    for m in group.members:
        pay(group, m)
    assert group.mark_pending(NOW)
    with pytest.raises(FailedPreconditionError):
        group.apply_fallback("user:u0", "force", timedelta(0), NOW)
    group.confirm("o1", NOW)
    assert (group.status, group.order_id) == (S.CONFIRMED, "o1")
    with pytest.raises(FailedPreconditionError):
        group.cancel("too late", "user:u0", NOW)


def test_draft_past_deadline_expires() -> None:
    group = make_group(2, 100)
    assert group.apply_fallback("system:scheduler", "deadline", timedelta(0), NOW) is (
        FallbackOutcome.EXPIRED
    )
    assert status_of(group) is S.EXPIRED


def test_freeze_rejects_a_deadline_in_the_past() -> None:
    group = make_group(2, 100)
    with pytest.raises(InvalidArgumentError):
        group.freeze(NOW + timedelta(hours=2))


def test_join_binds_a_user_to_the_invitation_once() -> None:
    group = make_group(3, 300)
    guest = group.members[1]
    joined = group.join(guest.invite_token, "u1", NOW)
    assert joined is guest
    assert guest.status is MemberStatus.JOINED
    assert group.is_visible_to("u1")
    assert not group.is_visible_to("u9")
    assert group.join(guest.invite_token, "u1", NOW) is guest  # idempotent
    with pytest.raises(FailedPreconditionError):
        group.join(guest.invite_token, "u2", NOW)
    with pytest.raises(FailedPreconditionError):
        group.join(group.members[2].invite_token, "u1", NOW)
    with pytest.raises(NotFoundError):
        group.join("nope", "u3", NOW)


def test_remove_member_recomputes_and_host_stays() -> None:
    group = make_group(3, 300)
    group.remove_member(group.members[2].member_id, NOW)
    assert [m.share_minor for m in group.members] == [150, 150]
    with pytest.raises(FailedPreconditionError):
        group.remove_member(group.members[0].member_id, NOW)


def test_update_split_needs_every_member_and_known_ids() -> None:
    group = make_group(2, 100)
    host, guest = group.members
    labels = {host.member_id: "shares[0]", guest.member_id: "shares[1]"}
    group.update_split(
        SplitMode.CUSTOM,
        {host.member_id: ShareSpec(amount_minor=30), guest.member_id: ShareSpec(amount_minor=70)},
        labels,
        NOW,
    )
    assert [m.share_minor for m in group.members] == [30, 70]
    with pytest.raises(InvalidArgumentError):
        group.update_split(SplitMode.WEIGHTED, {host.member_id: ShareSpec(weight=1)}, labels, NOW)
    with pytest.raises(InvalidArgumentError):
        group.update_split(SplitMode.EQUAL, {"zz": ShareSpec()}, {"zz": "shares[0]"}, NOW)


def test_member_list_rules() -> None:
    check_member_list([("a@x", ""), ("b@x", "u2")])
    with pytest.raises(InvalidArgumentError) as err:
        check_member_list([("a@x", ""), ("A@x ", "")], skip=1)
    assert err.value.violations[0].field == "members[0].email"
    with pytest.raises(InvalidArgumentError) as err:
        check_member_list([("", "u1"), ("", "u1")])
    assert err.value.reason == "DUPLICATE_MEMBER"
    with pytest.raises(InvalidArgumentError) as err:
        check_member_list([(f"{i}@x", "") for i in range(MAX_MEMBERS + 1)])
    assert err.value.reason == "TOO_MANY_MEMBERS"


def test_member_moves_follow_the_table_and_a_move_outside_it_is_an_internal_error() -> None:
    member = Member("m", 1, Role.GUEST, "G", "g@x", "", "", ShareSpec(), MemberStatus.INVITED, "t")
    for target in (MemberStatus.JOINED, MemberStatus.AWAITING_PAYMENT, MemberStatus.PAID):
        member.move_to(target)
        assert member.status is target
    member.move_to(MemberStatus.PAID)  # staying is no move
    with pytest.raises(InternalError):
        member.move_to(MemberStatus.INVITED)
    assert member.status is MemberStatus.PAID  # a refused move changes nothing
    covered = Member(
        "c", 2, Role.GUEST, "C", "c@x", "", "", ShareSpec(), MemberStatus.COVERED_BY_HOST, "t"
    )
    for target in MemberStatus:
        if target is not MemberStatus.COVERED_BY_HOST:
            with pytest.raises(InternalError):
                covered.move_to(target)
    assert {s for s, nxt in MEMBER_TRANSITIONS.items() if not nxt} == {MemberStatus.COVERED_BY_HOST}


def test_the_fallback_moves_a_host_who_had_paid_back_to_awaiting_payment() -> None:
    group = make_group(3, 300, FallbackPolicy.HOST_PAYS_REMAINING)
    open_group(group)
    host, g1, g2 = group.members
    assert pay(group, host) is PaymentOutcome.ACCEPTED
    assert host.status is MemberStatus.PAID
    first = group.current_attempt(g1)
    assert first is not None
    assert group.payment_failed(first.payment_id, g1.member_id, first.attempt, NOW)
    group.apply_fallback("system:scheduler", "deadline", timedelta(minutes=5), NOW)
    assert (host.status, g1.status, g2.status) == (
        MemberStatus.AWAITING_PAYMENT,  # PAID → AWAITING_PAYMENT for the rest
        MemberStatus.COVERED_BY_HOST,  # PAYMENT_FAILED → COVERED_BY_HOST
        MemberStatus.COVERED_BY_HOST,  # AWAITING_PAYMENT → COVERED_BY_HOST
    )
    assert {m.status for m in group.members} <= set(MEMBER_TRANSITIONS)


def test_a_host_with_no_share_of_their_own_takes_the_rest_over_from_joined() -> None:
    group = make_group(2, 100, FallbackPolicy.HOST_PAYS_REMAINING)
    host, guest = group.members
    labels = {host.member_id: "shares[0]", guest.member_id: "shares[1]"}
    specs = {
        host.member_id: ShareSpec(amount_minor=0),
        guest.member_id: ShareSpec(amount_minor=100),
    }
    group.update_split(SplitMode.CUSTOM, specs, labels, NOW)
    open_group(group)
    assert (host.status, guest.status) == (MemberStatus.JOINED, MemberStatus.AWAITING_PAYMENT)
    group.apply_fallback("system:scheduler", "deadline", timedelta(minutes=5), NOW)
    assert (host.status, guest.status) == (
        MemberStatus.AWAITING_PAYMENT,
        MemberStatus.COVERED_BY_HOST,
    )


def test_members_start_invited_or_joined() -> None:
    group = make_group(3, 300)
    assert [m.status for m in group.members] == [
        MemberStatus.JOINED,
        MemberStatus.INVITED,
        MemberStatus.INVITED,
    ]
    assert {m.status for m in group.members} <= MEMBER_STARTS


def test_the_hold_policy_s_open_to_open_row_goes_through_the_state_machine() -> None:
    group = make_group(2, 100)
    open_group(group)
    host = group.members[0]
    assert pay(group, host) is PaymentOutcome.ACCEPTED
    attempt = group.current_attempt(host)
    assert attempt is not None
    lapses = NOW + timedelta(minutes=30)
    assert group.hold_lapsing(
        attempt.payment_id,
        lapses,
        HOLDS_ACTOR,
        NOW,
        margin=timedelta(minutes=10),
        host_grace=timedelta(0),
    )
    row = group.new_history[-1]
    assert (row.from_status, row.to_status, row.actor) == (S.OPEN, S.OPEN, HOLDS_ACTOR)
    assert group.deadline == lapses - timedelta(minutes=10)


def test_a_split_naming_an_unknown_member_is_reported_on_its_member_id() -> None:
    group = make_group(2, 100)
    host = group.members[0]
    with pytest.raises(InvalidArgumentError) as err:
        group.update_split(
            SplitMode.CUSTOM,
            {host.member_id: ShareSpec(amount_minor=100), "zz": ShareSpec(amount_minor=0)},
            {host.member_id: "shares[0]", "zz": "shares[1]"},
            NOW,
        )
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("shares[1].member_id", "not a member of the group")
    ]
    with pytest.raises(InvalidArgumentError) as bad:
        group.update_split(
            SplitMode.CUSTOM,
            {host.member_id: ShareSpec(amount_minor=-1), group.members[1].member_id: ShareSpec()},
            {host.member_id: "shares[1]", group.members[1].member_id: "shares[0]"},
            NOW,
        )
    assert {v.field for v in bad.value.violations} == {
        "shares[1].share_spec.amount_minor",
        "shares[0].share_spec.amount_minor",
    }
