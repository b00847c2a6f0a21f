"""docs/lifecycle.md is what scripts/gen_lifecycle.py generates from the code today: its
diagrams hold exactly the moves of the transition tables the services enforce, and every state
of every status enum is described."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import TypeVar

from group_svc.domain.lifecycle import TRANSITIONS, GroupStatus
from group_svc.domain.model import MEMBER_TRANSITIONS, MemberStatus
from order_svc.domain import model as order_model
from payment_svc.domain.model import NEXT, PaymentStatus

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "lifecycle.md"
SCRIPT = REPO / "scripts" / "gen_lifecycle.py"
E = TypeVar("E", bound=Enum)


def generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def section(title: str) -> str:
    """The text of ``## title`` up to the next section."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def diagram_edges(title: str) -> set[tuple[str, str]]:
    """``(from, to)`` of every arrow in the section's Mermaid diagram."""
    found = re.search(r"```mermaid\nstateDiagram-v2\n(.*?)```", section(title), re.DOTALL)
    assert found is not None, f"{title}: no state diagram"
    edges = set()
    for line in found.group(1).splitlines():
        source, _, target = line.strip().partition(" --> ")
        edges.add((source, target))
    return edges


def table_edges(table: Mapping[E, Iterable[E]]) -> set[tuple[str, str]]:
    """The code's table as arrows, plus [*] into the initial and out of the final states."""
    edges = {(s.name, t.name) for s, targets in table.items() for t in targets}
    reached = {t for s, t in edges if s != t}
    edges |= {("[*]", s.name) for s in table if s.name not in reached}
    edges |= {(s.name, "[*]") for s, targets in table.items() if not targets}
    return edges


def test_the_committed_document_is_current() -> None:
    done = generator("--check")
    assert done.returncode == 0, done.stderr


def test_the_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "lifecycle.md"
    stale.write_text(DOC.read_text().replace("PENDING --> CONFIRMED", "PENDING --> EXPIRED"))
    done = generator("--check", "--path", str(stale))
    assert done.returncode == 1
    assert "stale" in done.stderr
    missing = generator("--check", "--path", str(tmp_path / "absent.md"))
    assert missing.returncode == 1
    written = generator("--path", str(stale))
    assert written.returncode == 0, written.stderr
    assert stale.read_text() == DOC.read_text()


def test_each_diagram_is_exactly_the_code_s_transition_table() -> None:
    assert diagram_edges("Group") == table_edges(TRANSITIONS)
    # a member starts INVITED (a guest) or JOINED (the host), though JOINED is also reached
    assert diagram_edges("Member") == table_edges(MEMBER_TRANSITIONS) | {("[*]", "JOINED")}
    assert diagram_edges("Payment") == table_edges(NEXT)
    assert diagram_edges("Order") == table_edges(order_model._FORWARD)
    # spot checks against the tables as a reader knows them
    assert ("[*]", "DRAFT") in diagram_edges("Group")
    assert ("PENDING", "EXPIRED") not in diagram_edges("Group")
    assert ("OPEN", "OPEN") in diagram_edges("Group")  # the hold policy's deadline row
    assert ("PAID", "AWAITING_PAYMENT") in diagram_edges("Member")  # the host's fallback
    assert ("AUTHORIZED", "CAPTURED") in diagram_edges("Payment")
    assert ("COMPENSATING", "FAILED") in diagram_edges("Order")


def test_every_state_is_described() -> None:
    enums: list[tuple[str, str, Iterable[Enum]]] = [
        ("Group", "GROUP_STATUS_", GroupStatus),
        ("Member", "MEMBER_STATUS_", MemberStatus),
        ("Payment", "PAYMENT_STATUS_", PaymentStatus),
        ("Order", "ORDER_STATUS_", order_model.OrderStatus),
        ("Order share", "ORDER_SHARE_STATUS_", order_model.ShareStatus),
    ]
    for title, prefix, enum in enums:
        rows = {
            m.group(1): m.group(2).strip()
            for m in re.finditer(rf"^\| `{prefix}(\w+)` \| ([^|]+) \|", section(title), re.M)
        }
        assert set(rows) == {s.name for s in enum}, title
        assert all(len(meaning) > 10 for meaning in rows.values()), rows
