"""A typed SDK generated from the live gateway's /openapi.json drives a whole checkout
(issue 14 part 4), and every request body example in the document is one the real services
accept.

The stack is the end-to-end tests' shared `mppo dev up` (tests/e2e/conftest.py: services,
gateway, sandbox provider and merchant). openapi-python-client generates `mppo_client` from
the document the gateway serves into a temporary directory; `mypy --strict` checks
sdk_checkout_driver.py (no cast, no Unset or isinstance on fields) against it, and the driver
runs a group of three to an order CONFIRMED, which the test then reads back over plain REST.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2e import Stack

BIN = Path(sys.executable).parent
DRIVER = Path(__file__).with_name("sdk_checkout_driver.py")
Json = dict[str, Any]


@pytest.fixture(scope="module")
def document(stack: Stack) -> Json:
    reply = httpx.get(stack.gateway + "/openapi.json", timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    doc: Json = reply.json()
    return doc


def _run(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), **env},
        check=False,
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _escape_hatches(source: str) -> list[str]:
    """What in the driver's code would dodge the generated types: cast, Unset/UNSET, Any,
    `type: ignore`, and isinstance on anything but a whole reply (a field, `x.y`)."""
    lines = enumerate(source.splitlines(), 1)
    found = [f"type: ignore (line {n})" for n, line in lines if "type: ignore" in line]
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.alias):
            names = [node.name]
        found += [
            f"{name} (line {getattr(node, 'lineno', '?')})"
            for name in names
            if name in ("cast", "Unset", "UNSET", "Any")
        ]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and not isinstance(node.args[0], ast.Name)
        ):
            found.append(f"isinstance on a field (line {node.lineno})")
    return found


def test_a_generated_client_drives_a_checkout_under_mypy_strict(
    stack: Stack, document: Json, tmp_path: Path
) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    _run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "mppo_client"),
        ],
        tmp_path,
    )
    generated = {p.stem for p in (tmp_path / "mppo_client" / "api").rglob("*.py")}
    assert {"create_group", "get_payment", "list_groups", "handle_webhook"} <= generated
    driver = tmp_path / DRIVER.name
    shutil.copy(DRIVER, driver)
    assert _escape_hatches(driver.read_text()) == []
    # The driver is checked strictly against the generated types; errors inside the
    # generator's fixed templates (client.py's `__exit__(*args: object)`) are its own.
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n\n[mypy-mppo_client.*]\nfollow_imports = silent\n"
    )
    checked = _run(
        [str(BIN / "mypy"), "--config-file", "mypy.ini", "--no-incremental", driver.name],
        tmp_path,
    )
    assert "Success: no issues found" in checked

    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "gateway": stack.gateway,
                "host": stack.token(f"hana-{tag}"),
                "guests": [stack.token(f"ali-{tag}"), stack.token(f"bo-{tag}")],
            }
        )
    )
    out = _run([sys.executable, driver.name, str(config)], tmp_path, timeout=180)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "ORDER_STATUS_CONFIRMED"
    # what the driver read, typed as always present, is what the services sent
    read = result["read"]
    total = 2 * 1200 + 101
    assert (read["total"], read["currency"]) == (str(total), "USD")
    created_at = datetime.fromisoformat(read["create_time"])
    assert created_at <= datetime.fromisoformat(read["update_time"])
    assert created_at < datetime.fromisoformat(read["deadline"])
    assert (read["secured"], read["host_paid"]) == ("0", "0")  # nothing paid at creation
    assert read["host_share"] == str(total)  # the host alone at creation
    assert sum(int(a) for a in read["payments"]) == total
    assert read["order_total"] == str(total)
    assert read["order_shares"] == read["payments"]
    # the times the document says are always there: read without an Unset check, in order
    assert len(read["payment_times"]) == 3
    for created, updated in [*read["payment_times"], read["order_times"]]:
        assert created_at <= datetime.fromisoformat(created) <= datetime.fromisoformat(updated)
    steps = [datetime.fromisoformat(t) for t in read["step_times"]]
    assert steps, "a confirmed order has steps"
    assert steps == sorted(steps)
    changes = [datetime.fromisoformat(t) for t in read["change_times"]]
    assert len(changes) >= 2  # at least opened, then pending or confirmed
    assert all(created_at <= t for t in changes)
    notices = [datetime.fromisoformat(t) for t in read["notification_times"]]
    assert notices, "members were invited"
    assert all(created_at <= t for t in notices)
    field, reason, info_reason = read["refused"]
    assert field == "items[0].quantity"  # the JSON name, indexed, from the typed details
    assert reason
    assert info_reason
    # read back over plain REST, as the host
    reply = httpx.get(
        f"{stack.gateway}/order/by-group/{result['group_id']}",
        headers={"Authorization": f"Bearer {stack.token(f'hana-{tag}')}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    order = reply.json()["order"]
    assert order["orderId"] == result["order_id"]
    assert order["status"] == "ORDER_STATUS_CONFIRMED"
    assert len(order["shares"]) == 3


def test_every_request_body_example_is_accepted_by_the_real_services(
    stack: Stack, document: Json
) -> None:
    """Each example is posted as the document describes it: path values name a group that does
    not exist (ids shaped like ours), so a body the gateway or a service finds invalid would be
    a 400, an acceptable one reaches the service's lookup (404) or, creating a group, succeeds.
    Service-only methods (CreatePaymentIntent) are not in the document, and their paths answer
    404 as if they did not exist."""
    auth = {"Authorization": f"Bearer {stack.token(f'examples-{uuid.uuid4().hex[:8]}')}"}
    answered: dict[str, int] = {}
    with httpx.Client(base_url=stack.gateway, headers=auth, timeout=30) as http:
        for path, item in document["paths"].items():
            for verb, op in item.items():
                content = op.get("requestBody", {}).get("content", {})
                if "application/json" not in content:
                    continue  # webhooks: raw provider bodies, authenticated by signature
                example = content["application/json"]["example"]  # as it stands
                url = path
                for param in op["parameters"]:
                    if param.get("in") == "path":
                        url = url.replace("{" + param["name"] + "}", str(uuid.uuid4()))
                reply = http.request(verb.upper(), url, json=example)
                answered[op["operationId"]] = reply.status_code
                if op["operationId"] == "createGroup" and reply.status_code == 200:
                    made = reply.json()["group"]
                    span = datetime.fromisoformat(made["deadline"]) - datetime.fromisoformat(
                        made["createTime"]
                    )
                    assert span == timedelta(hours=24), span  # no deadline: the default
                assert reply.status_code in (200, 404), (verb, path, reply.text)
        hidden = http.post("/payments/intents", json={"groupId": str(uuid.uuid4())})
        assert hidden.status_code == 404, hidden.text
    assert answered["createGroup"] == 200
    assert "createPaymentIntent" not in answered
    assert len(answered) >= 8


def test_opening_and_finalizing_are_replayed_from_the_service(stack: Stack) -> None:
    """The group changes that call the payment service between their own transactions store
    their answer too: a replay is that answer, marked, with no second effect."""
    auth = {"Authorization": f"Bearer {stack.token(f'replay-{uuid.uuid4().hex[:8]}')}"}
    create = document_example(stack, "/group", "post") | {"members": []}  # the host alone
    with httpx.Client(base_url=stack.gateway, headers=auth, timeout=30) as http:
        created = http.post("/group", json=create)
        assert created.status_code == 200, created.text
        group_id = created.json()["group"]["groupId"]
        for step, status in (("open", "GROUP_STATUS_OPEN"), ("force-finalize", "")):
            key = {"Idempotency-Key": str(uuid.uuid4())}
            first = http.post(f"/group/{group_id}/{step}", json={}, headers=key)
            assert first.status_code == 200, (step, first.text)
            assert "Idempotent-Replayed" not in first.headers, step
            again = http.post(f"/group/{group_id}/{step}", json={}, headers=key)
            assert again.status_code == 200, (step, again.text)
            assert again.headers["Idempotent-Replayed"] == "true", step
            assert again.json() == first.json(), step
            if status:
                assert first.json()["group"]["status"] == status
        history = http.get(f"/group/{group_id}/history").json()["changes"]
    # one OPEN, one ending (the host never paid: the CANCEL fallback), whatever the replays
    targets = [c["toStatus"] for c in history]
    assert targets.count("GROUP_STATUS_OPEN") == 1, targets
    assert len(targets) == len(set(targets)), targets


def document_example(stack: Stack, path: str, verb: str) -> Json:
    doc = httpx.get(stack.gateway + "/openapi.json", timeout=30).json()
    example: Json = doc["paths"][path][verb]["requestBody"]["content"]["application/json"][
        "example"
    ]
    return example


def test_retrying_a_payment_is_replayed_from_the_service(stack: Stack) -> None:
    """The last group change with a key: a member whose card was declined pays again on a
    fresh link; the replay is that same link, marked, and no third attempt exists."""
    user = f"retry-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {stack.token(user)}"}
    create = document_example(stack, "/group", "post") | {"members": []}
    with httpx.Client(base_url=stack.gateway, headers=auth, timeout=30) as http:
        created = http.post("/group", json=create)
        assert created.status_code == 200, created.text
        group_id = created.json()["group"]["groupId"]
        member_id = created.json()["group"]["members"][0]["memberId"]
        opened = http.post(f"/group/{group_id}/open", json={})
        assert opened.status_code == 200, opened.text
        link = opened.json()["group"]["members"][0]["paymentLink"]
        with httpx.Client(timeout=30) as browser:
            assert browser.get(link).status_code == 200
            declined = browser.post(
                link.rstrip("/") + "/pay",
                data={"card_number": "4000000000000002", "action": "pay"},
                headers={"Accept": "application/json"},
            )
            assert declined.json()["outcome"] == "declined", declined.text
        deadline = time.monotonic() + 30
        while True:
            member = http.get(f"/group/{group_id}").json()["group"]["members"][0]
            if member["status"] == "MEMBER_STATUS_PAYMENT_FAILED":
                break
            assert time.monotonic() < deadline, member
            time.sleep(0.3)
        key = {"Idempotency-Key": str(uuid.uuid4())}
        path = f"/group/{group_id}/members/{member_id}/retry-payment"
        first = http.post(path, json={}, headers=key)
        assert first.status_code == 200, first.text
        assert "Idempotent-Replayed" not in first.headers
        again = http.post(path, json={}, headers=key)
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        retried = first.json()["group"]["members"][0]
        assert retried["attempt"] == 2
        assert retried["paymentLink"] != link
        payments = http.get("/payments", params={"group_id": group_id}).json()["payments"]
    assert sorted(p["attempt"] for p in payments) == [1, 2]
