"""The supervisor keeps the stack up: a process that dies comes back (back-off, a limit, each
restart logged) while the rest keeps serving; ``mppo dev up --replicas``, ``mppo dev restart``,
``mppo dev logs`` and what ``devstack.json`` records to run a process again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mppo.devstack import ProcessSpec, RestartPolicy, Supervisor, pid_alive
from mppo.devstack.probes import free_port, http_get_probe
from mppo.devstack.process import FAILED, RUNNING, ManagedProcess
from mppo.platform.tls import TlsMaterial, channel_credentials
from tests.integration.test_devstack import _clean_env, _fake_service_file, _mppo, _wait_for


async def _eventually(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_killed_process_is_restarted_and_the_restart_is_logged(tmp_path: Path) -> None:
    script = _fake_service_file(tmp_path)
    port = free_port()
    sup = Supervisor(tmp_path / "logs")
    heard: list[str] = []
    web = await sup.start(
        ProcessSpec(
            name="web",
            argv=[sys.executable, str(script), "http", "web"],
            env={"MPPO_WEB_ADDR": f"127.0.0.1:{port}"},
            readiness=http_get_probe("127.0.0.1", port),
        )
    )
    other = await sup.start(
        ProcessSpec(name="other", argv=[sys.executable, "-c", "import time; time.sleep(300)"])
    )
    keeper = asyncio.ensure_future(
        sup.keep_up(
            RestartPolicy(max_restarts=3, window=60, backoff=0.2), lambda p, m: heard.append(m)
        )
    )
    try:
        first = web.pid
        os.kill(first, signal.SIGKILL)
        await _eventually(lambda: web.pid != first and web.state == RUNNING, 20, "a new web")
        await _eventually(lambda: any("is back" in m for m in heard), 20, "web to be ready")
        assert await http_get_probe("127.0.0.1", port)(web.pid) is True  # same port, serving
        assert web.restarts == 1
        assert web.last_exit == -signal.SIGKILL
        assert heard[0].startswith(f"web (pid {first}) exited with code -9; restart 1/3")
        assert pid_alive(other.pid)
        assert other.restarts == 0
        log = web.log_path.read_text()
        assert "supervisor: web (pid" in log
        assert log.count("starting web") == 2  # one header per spawn, same log file
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await sup.stop_all()
    assert not pid_alive(web.pid)


async def test_a_process_that_keeps_dying_is_left_down(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    heard: list[tuple[ManagedProcess, str]] = []
    dying = await sup.start(
        ProcessSpec(
            name="dying",
            argv=[sys.executable, "-c", "import sys, time; time.sleep(0.2); sys.exit(4)"],
        )
    )
    steady = await sup.start(
        ProcessSpec(name="steady", argv=[sys.executable, "-c", "import time; time.sleep(300)"])
    )
    policy = RestartPolicy(max_restarts=2, window=60, backoff=0.05, max_backoff=0.1)
    keeper = asyncio.ensure_future(sup.keep_up(policy, lambda p, m: heard.append((p, m))))
    try:
        await _eventually(lambda: dying.state == FAILED, 30, "the limit")
        await asyncio.sleep(0.5)  # nothing restarts it any more
        assert dying.restarts == 2
        assert dying.returncode == 4
        assert dying.last_exit == 4
        messages = [m for p, m in heard if p is dying]
        assert [m.split(";")[1].strip()[:11] for m in messages[:4:2]] == [
            "restart 1/2",
            "restart 2/2",
        ]
        assert "left down" in messages[-1]
        assert steady.state == RUNNING
        assert pid_alive(steady.pid)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await sup.stop_all()


def _replica_stack(tmp_path: Path) -> tuple[Path, list[str]]:
    script = _fake_service_file(tmp_path)
    services = [
        {
            # a stand-in for the payment service: its callers get every replica's address
            "name": "payment",
            "command": ["{python}", str(script), "grpc", "payment"],
            "port": 0,
            "readiness": "grpc",
            "env": {"FAKE_NOT_SERVING_FOR": "0.1"},
        },
        {"name": "web", "command": ["{python}", str(script), "http", "web"], "readiness": "http"},
    ]
    services_file = tmp_path / "services.json"
    services_file.write_text(json.dumps(services))
    state_dir = tmp_path / "state"
    up_args = [
        "--state-dir", str(state_dir),
        "--pg-port", "0", "--redis-port", "0", "--nats-port", "0",
        "--services", str(services_file),
        "--no-fsync", "--ephemeral", "--replicas", "2",
    ]  # fmt: skip
    return state_dir, up_args


def _state(state_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((state_dir / "devstack.json").read_text())
    return state


def _process(state_dir: Path, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in _state(state_dir)["processes"] if p["name"] == name)
    return found


async def _serving(addr: str, pki: Path) -> bool:
    creds = channel_credentials(TlsMaterial.load(pki, "operator"))
    async with grpc.aio.secure_channel(addr, creds) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_dev_up_replicas_come_back_restart_and_logs(tmp_path: Path) -> None:
    state_dir, up_args = _replica_stack(tmp_path)
    up = await asyncio.to_thread(_mppo, "dev", "up", "--detach", *up_args, env=_clean_env())
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        state = _state(state_dir)
        fake = state["services"]["payment"]
        assert fake["processes"] == ["payment-1", "payment-2"]
        assert len(set(fake["addrs"])) == 2
        assert fake["target"] == ",".join(fake["addrs"])
        assert state["services"]["web"]["processes"] == ["web"]  # not scalable: one copy
        # what is needed to run each again; each replica listens on its own address, every
        # other process is given all of them
        for name, addr in zip(fake["processes"], fake["addrs"], strict=True):
            recorded = _process(state_dir, name)
            assert recorded["env"]["MPPO_PAYMENT_ADDR"] == addr
            assert recorded["argv"][1:] == [str(tmp_path / "fake_service.py"), "grpc", "payment"]
            assert recorded["readiness"] == {"kind": "grpc", "addr": addr}
            assert recorded["state"] == "running"
            assert recorded["log"].endswith(f"logs/{name}.log")
            assert await _serving(addr, Path(state["pki"]))
        assert _process(state_dir, "web")["env"]["MPPO_PAYMENT_ADDR"] == fake["target"]

        # killed: it comes back on its own, on the same address
        killed = _process(state_dir, "payment-1")
        os.kill(int(killed["pid"]), signal.SIGKILL)
        await asyncio.to_thread(
            _wait_for,
            lambda: (
                _process(state_dir, "payment-1")["pid"] != killed["pid"]
                and _process(state_dir, "payment-1")["state"] == "running"
            ),
            60,
            "payment-1 to come back",
        )
        assert _process(state_dir, "payment-1")["restarts"] == 1
        assert _process(state_dir, "payment-1")["last_exit"] == -signal.SIGKILL
        await asyncio.to_thread(
            _wait_for,
            lambda: "payment-1 is back" in (state_dir / "logs" / "supervisor.log").read_text(),
            60,
            "payment-1 to be ready",
        )
        assert await _serving(fake["addrs"][0], Path(state["pki"]))
        supervisor_log = (state_dir / "logs" / "supervisor.log").read_text()
        assert f"payment-1 (pid {killed['pid']}) exited with code -9; restart 1/5" in supervisor_log

        # a deliberate restart of every replica, one after the other
        before = {n: _process(state_dir, n)["pid"] for n in ("payment-1", "payment-2")}
        restarted = await asyncio.to_thread(
            _mppo, "dev", "restart", "payment", "--state-dir", str(state_dir)
        )
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "payment-1: restarted" in restarted.stdout
        assert "payment-2: restarted" in restarted.stdout
        for name, pid in before.items():
            assert _process(state_dir, name)["pid"] != pid
            assert not pid_alive(int(pid))
        for addr in fake["addrs"]:
            assert await _serving(addr, Path(state["pki"]))
        unknown = await asyncio.to_thread(
            _mppo, "dev", "restart", "nope", "--state-dir", str(state_dir)
        )
        assert unknown.returncode == 2
        assert "no process 'nope'" in unknown.stdout

        logs = await asyncio.to_thread(
            _mppo, "dev", "logs", "payment", "-n", "20", "--state-dir", str(state_dir)
        )
        assert logs.returncode == 0
        lines = logs.stdout.splitlines()
        assert any(line.startswith("payment-1 | --- ") for line in lines)
        assert any(line.startswith("payment-2 | --- ") for line in lines)
        assert any("restart asked for" in line for line in lines)

        status = await asyncio.to_thread(_mppo, "dev", "status", "--state-dir", str(state_dir))
        assert "payment-1" in status.stdout
        assert "restarts 2" in status.stdout  # the crash and the one asked for
        pids = [int(p["pid"]) for p in _state(state_dir)["processes"]]
    finally:
        down = await asyncio.to_thread(_mppo, "dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "leftover" not in down.stdout
    for pid in pids:
        assert not pid_alive(pid)
