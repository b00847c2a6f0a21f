"""Generate docs/lifecycle.md from the state machines in code.

python scripts/gen_lifecycle.py          # write docs/lifecycle.md
python scripts/gen_lifecycle.py --check  # fail if the committed file differs (stale)

The diagrams come from the transition tables the services enforce (group_svc/domain/lifecycle.py
``TRANSITIONS``, group_svc/domain/model.py ``MEMBER_TRANSITIONS``, payment_svc/domain/model.py
``NEXT``, order_svc/domain/model.py ``_FORWARD``);
what each state means comes from the comment on its value in proto/ (the same text the OpenAPI
document gives REST clients). A state the code knows but the proto does not describe stops the
generator, so neither side can drift from the document.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

from group_svc.domain.lifecycle import TRANSITIONS as GROUP_TRANSITIONS
from group_svc.domain.lifecycle import GroupStatus
from group_svc.domain.model import MEMBER_STARTS, MEMBER_TRANSITIONS, MemberStatus
from order_svc.domain import model as order_model
from payment_svc.domain.model import NEXT as PAYMENT_NEXT
from payment_svc.domain.model import PaymentStatus

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "lifecycle.md"
E = TypeVar("E", bound=Enum)
_ENUM = re.compile(r"^enum (\w+) \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_VALUE = re.compile(r"^\s*(\w+) = \d+;")


def proto_comments(proto: Path, enum: str) -> dict[str, str]:
    """Each value of ``enum`` in ``proto`` → the ``//`` comment lines just above it, joined."""
    for found in _ENUM.finditer(proto.read_text()):
        if found.group(1) != enum:
            continue
        comments: dict[str, str] = {}
        pending: list[str] = []
        for line in found.group(2).splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                pending.append(stripped.removeprefix("//").strip())
                continue
            value = _VALUE.match(line)
            if value:
                comments[value.group(1)] = " ".join(pending)
            pending = []
        return comments
    raise LookupError(f"no enum {enum} in {proto.relative_to(REPO)}")


@dataclass(frozen=True)
class Machine:
    """One state machine: its states in proto order, its edges, where both come from."""

    title: str
    intro: str
    proto: str  # path under the repository
    enum: str  # the proto enum
    prefix: str  # the enum's value prefix, as REST clients see it
    states: Sequence[str]  # short names, in the code's order
    edges: Mapping[str, Iterable[str]] | None  # None: the code keeps no table
    rule: str  # where the edges live and what happens to a move outside them
    notes: str = ""
    #: the states a record starts in (None: every state no other state leads to)
    starts: Sequence[str] | None = None

    def meanings(self) -> dict[str, str]:
        """Each state → its proto comment; LookupError when one is missing."""
        comments = proto_comments(REPO / self.proto, self.enum)
        found: dict[str, str] = {}
        for state in self.states:
            text = comments.get(self.prefix + state, "")
            if not text:
                raise LookupError(
                    f"{self.enum}: {self.prefix + state} has no comment in {self.proto}"
                )
            found[state] = text
        return found

    def diagram(self) -> list[str]:
        """Mermaid ``stateDiagram-v2`` lines: ``[*]`` into every state nothing leads to, every
        edge of the table, and every state with no way out into ``[*]``."""
        assert self.edges is not None
        order = {state: i for i, state in enumerate(self.states)}
        edges = {s: sorted(self.edges.get(s, ()), key=order.__getitem__) for s in self.states}
        reached = {t for s, targets in edges.items() for t in targets if t != s}
        starts = set(self.starts) if self.starts is not None else set(self.states) - reached
        lines = ["```mermaid", "stateDiagram-v2"]
        lines += [f"    [*] --> {s}" for s in self.states if s in starts]
        lines += [f"    {s} --> {t}" for s in self.states for t in edges[s]]
        lines += [f"    {s} --> [*]" for s in self.states if not edges[s]]
        lines.append("```")
        return lines

    def render(self) -> list[str]:
        """The machine's section."""
        lines = [f"## {self.title}", "", self.intro, ""]
        if self.edges is not None:
            lines += [*self.diagram(), ""]
        if self.rule:
            lines += [self.rule, ""]
        if self.edges is None:
            lines += ["| state | means |", "| --- | --- |"]
            lines += [f"| `{self.prefix}{s}` | {m} |" for s, m in self.meanings().items()]
        else:
            lines += ["| state | means | may become |", "| --- | --- | --- |"]
            for state, meaning in self.meanings().items():
                targets = [t for t in self.states if t in set(self.edges.get(state, ()))]
                nxt = ", ".join(targets) or "— (final)"
                lines.append(f"| `{self.prefix}{state}` | {meaning} | {nxt} |")
        lines.append("")
        if self.notes:
            lines += [self.notes, ""]
        return lines


def _names(table: Mapping[E, Iterable[E]]) -> dict[str, list[str]]:
    return {s.name: [t.name for t in targets] for s, targets in table.items()}


def _members(enum: Iterable[Enum]) -> list[str]:
    return [m.name for m in enum]


MACHINES: tuple[Callable[[], Machine], ...] = (
    lambda: Machine(
        title="Group",
        intro=(
            "A group order, from the host's cart to the merchant's confirmation "
            "(`GET /group/{group_id}` → `group.status`; every change is a row of "
            "`GET /group/{group_id}/history` with its reason and actor)."
        ),
        proto="proto/mppo/group/v1/group.proto",
        enum="GroupStatus",
        prefix="GROUP_STATUS_",
        states=_members(GroupStatus),
        edges=_names(GROUP_TRANSITIONS),
        rule=(
            "Drawn from `TRANSITIONS` in `group_svc/domain/lifecycle.py`; any other move is "
            "refused with `FAILED_PRECONDITION` (reason `ILLEGAL_TRANSITION`)."
        ),
        notes=(
            "What moves a group: the host opens it (DRAFT → OPEN) or cancels it (DRAFT/OPEN → "
            "CANCELLED); the last required share secured moves it to PENDING and hands the cart "
            "to the order service; the order's outcome moves it to CONFIRMED (order confirmed) "
            "or CANCELLED (order failed); the expiry scheduler moves it to EXPIRED at the "
            "deadline unless the fallback policy (`HOST_PAYS_REMAINING`: the host is asked for "
            "the rest within a grace period) rescues it: an OPEN → OPEN row by whoever applied "
            "the fallback says the host covers the rest and by when. `force-finalize` runs that "
            "fallback early. A card hold about to lapse (`payment.authorization_expiring`) "
            "before the group can complete — its deadline, plus the host's grace under "
            "`HOST_PAYS_REMAINING`, plus the order's time to capture "
            "(`MPPO_GROUP_HOLD_MARGIN_SECONDS`) — brings the deadline forward to the latest "
            "safe moment (the lapse minus that margin and grace, never before now): the "
            "history shows an OPEN → OPEN row by `system:holds` naming whose hold lapses when, "
            "and the group then ends early, EXPIRED (or the host covers the rest) with that "
            "reason, which the members' group page shows. A hold lapsing after the group can "
            "complete changes nothing; an OPEN group with every share secured is finalized "
            '(PENDING) at once (docs/payment.md, "Holds that never lapse").'
        ),
    ),
    lambda: Machine(
        title="Member",
        intro=(
            "One member of a group: their invitation and their share's payment "
            "(`group.members[].status`)."
        ),
        proto="proto/mppo/group/v1/group.proto",
        enum="MemberStatus",
        prefix="MEMBER_STATUS_",
        states=_members(MemberStatus),
        edges=_names(MEMBER_TRANSITIONS),
        starts=sorted(s.name for s in MEMBER_STARTS),
        rule=(
            "Drawn from `MEMBER_TRANSITIONS` in `group_svc/domain/model.py`: the group moves "
            "its members as a side effect of its own moves, each through `Member.move_to`, "
            "which refuses any other move with `INTERNAL` (a bug, never a client's mistake). "
            "A guest starts INVITED, the host JOINED."
        ),
        notes=(
            "What moves a member: a guest joins with their invite token (INVITED → JOINED); "
            "opening the group makes every member who owes a share AWAITING_PAYMENT, joined or "
            "not; their payment secured makes them PAID, declined PAYMENT_FAILED, and "
            "`retry-payment` (or choosing another provider) makes them AWAITING_PAYMENT again. "
            "With `HOST_PAYS_REMAINING` when the group is due, a member who paid nothing "
            "becomes COVERED_BY_HOST, one who paid part keeps that part as their share (PAID), "
            "and the host is AWAITING_PAYMENT for the rest — whatever the host's own status "
            "was (JOINED with no share of their own, PAID, PAYMENT_FAILED). A member's status "
            "stays as it was when the group ends: after EXPIRED or CANCELLED a PAID member's "
            "money is returned (the hold voided or the capture refunded; their payments say "
            "which)."
        ),
    ),
    lambda: Machine(
        title="Payment",
        intro=(
            "One member's payment attempt with a provider (`GET /payments/{payment_id}` → "
            "`payment.status`). A payment authorizes (a hold) and is captured only once the "
            "merchant accepted the order; if the group fails, the hold is voided and anything "
            "captured is refunded. A provider that cannot hold money captures at once; then "
            "the release is a refund."
        ),
        proto="proto/mppo/payment/v1/payment.proto",
        enum="PaymentStatus",
        prefix="PAYMENT_STATUS_",
        states=_members(PaymentStatus),
        edges=_names(PAYMENT_NEXT),
        rule=(
            "Drawn from `NEXT` in `payment_svc/domain/model.py`. Money moves only forward: a "
            "provider report that skips states (a payment seen CAPTURED while still "
            "REQUIRES_ACTION) is applied as each step in between, and a report older than "
            "what is known changes nothing."
        ),
    ),
    lambda: Machine(
        title="Order",
        intro=(
            "The merchant order a fully paid group places, run as a saga by the order service "
            "(`GET /order/by-group/{group_id}` → `order.status`; its `steps` record each "
            "step's outcome)."
        ),
        proto="proto/mppo/order/v1/order.proto",
        enum="OrderStatus",
        prefix="ORDER_STATUS_",
        states=_members(order_model.OrderStatus),
        edges=_names(order_model._FORWARD),
        rule=(
            "Drawn from `_FORWARD` in `order_svc/domain/model.py`: the saga only moves "
            "forward; any step that fails sends it to COMPENSATING, which undoes what was done "
            "(cancels the merchant order, voids holds, refunds captures) before FAILED."
        ),
    ),
    lambda: Machine(
        title="Order share",
        intro=(
            "Each secured payment the order captures, or releases when it fails "
            "(`order.shares[].status`)."
        ),
        proto="proto/mppo/order/v1/order.proto",
        enum="OrderShareStatus",
        prefix="ORDER_SHARE_STATUS_",
        states=_members(order_model.ShareStatus),
        edges=None,
        rule="",
    ),
)

HEADER = """\
# Lifecycles

<!-- generated by scripts/gen_lifecycle.py from the code's transition tables and the proto
comments; edit those, then run `python scripts/gen_lifecycle.py` -->

What each status a REST or gRPC client reads means, and which status may follow which. States
are shown by their short name in the diagrams and as the client receives them (proto3 JSON enum
names) in the tables. A checkout that succeeds goes: member JOINED → AWAITING_PAYMENT (group
OPEN) → payment AUTHORIZED → member PAID; the last share secured makes the group PENDING and
creates the order (CREATED → VALIDATED → PLACED); every share captured (payments CAPTURED)
makes the order and then the group CONFIRMED. When a step fails the order goes COMPENSATING →
FAILED (holds VOIDED, captures REFUNDED) and the group CANCELLED; a deadline without full
payment makes the group EXPIRED and releases every hold (early, at the latest safe moment, when
a card hold would lapse before the group could complete).
"""


def render() -> str:
    """docs/lifecycle.md as the code defines it today."""
    lines = [HEADER]
    for make in MACHINES:
        lines += make().render()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write or check the document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--path", type=Path, default=DOC, help="the document (docs/lifecycle.md)")
    args = parser.parse_args(argv)
    path: Path = args.path
    fresh = render()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != fresh:
            sys.stderr.write(f"{path} is stale: run `python scripts/gen_lifecycle.py`\n")
            return 1
        return 0
    path.write_text(fresh)
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
