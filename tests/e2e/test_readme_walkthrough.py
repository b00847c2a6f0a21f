"""The README's curl walkthrough works as written: its shell block, taken from README.md as it
is, runs with bash against a real ``mppo dev up`` stack (only ``GATEWAY`` and
``MPPO_STATE_DIR`` point it at the test's stack), and leaves one more confirmed checkout
behind: the order it prints last is CONFIRMED, and the gateway says the same of the group and
of every share. Its continuation (a guest who pays with PayPal, on the dev stack's simulator)
runs after it in the same shell."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.e2e import Api, minor

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough: tests/e2e/test_readme_walkthrough.py"
CONTINUED = "<!-- walkthrough, continued: tests/e2e/test_readme_walkthrough.py"
GROUP_LINE = re.compile(r"^group ([0-9a-f-]{36})$", re.MULTILINE)


def walkthrough(marker: str = MARKER) -> str:
    """The first ``sh`` block after the marker comment in README.md."""
    text = (REPO / "README.md").read_text()
    start = text.index(marker)
    found = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL).search(text, start)
    assert found is not None, f"no ```sh block after {marker}"
    return found.group(1)


def test_the_walkthrough_block_is_found_and_complete() -> None:
    script = walkthrough()
    for step in ("POST /group ", "/members", "/join", "/open", "/pay", "/order/by-group/"):
        assert step in script, step


async def test_the_readme_walkthrough_confirms_an_order(api: Api) -> None:
    for tool in ("bash", "curl", "python3"):
        assert shutil.which(tool), f"the walkthrough needs {tool} on PATH"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MPPO_")},
        "GATEWAY": api.stack.gateway,
        "MPPO_STATE_DIR": str(api.stack.state_dir),
        # the venv's python first: python3 is what a reader's machine has
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euo", "pipefail", "-c", walkthrough() + walkthrough(CONTINUED)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    # the continuation: a guest of a new group pays with PayPal, the dev stack's simulator
    assert lines.pop() == "PROVIDER_PAYPAL", done.stdout + done.stderr
    assert lines[-1] == "ORDER_STATUS_CONFIRMED", done.stdout + done.stderr
    assert lines[-2].startswith("mo_"), done.stdout  # the merchant's order id
    assert "GROUP_STATUS_CONFIRMED" in lines, done.stdout
    found = GROUP_LINE.search(done.stdout)
    assert found is not None, done.stdout
    group_id = found.group(1)

    group = await api.group(group_id, "alice")
    assert group["status"] == "GROUP_STATUS_CONFIRMED"
    assert [m["displayName"] for m in group["members"]] == ["Alice", "Bob", "Carol"]
    assert {m["status"] for m in group["members"]} == {"MEMBER_STATUS_PAID"}
    order = (await api.order_of(group_id, "alice")).ok()["order"]
    assert order["status"] == "ORDER_STATUS_CONFIRMED"
    assert minor(order["total"]) == 3150
    assert sorted(minor(s["amount"]) for s in order["shares"]) == [1050, 1050, 1050]
    assert {s["status"] for s in order["shares"]} == {"ORDER_SHARE_STATUS_CAPTURED"}
