"""`mppo dev up` runs the whole real system: every process of DEFAULT_SERVICES comes up,
gRPC services answer grpcurl and report SERVING, HTTP ones answer /healthz, and
`mppo dev down` leaves no process behind. Ports are free ones so a running stack is not
disturbed; everything else is what `make run` starts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import aiohttp

from mppo.devstack.process import pid_alive
from mppo.devstack.services import DEFAULT_SERVICES
from tests.support.services import SERVING, health_status

BIN = Path(sys.executable).parent


def mppo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPPO_")}
    return subprocess.run(
        [str(BIN / "mppo"), *args], capture_output=True, text=True, timeout=240, env=env
    )


async def grpcurl_list(addr: str) -> set[str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "grpcurl"), "-plaintext", addr, "list", stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    return set(out.decode().split())


async def test_dev_up_brings_every_service_up_and_down_leaves_nothing(tmp_path: Path) -> None:
    services = [{**asdict(svc), "port": 0} for svc in DEFAULT_SERVICES]
    services_file = tmp_path / "services.json"
    services_file.write_text(json.dumps(services))
    state_dir = tmp_path / "state"
    up = await asyncio.to_thread(
        mppo,
        "dev",
        "up",
        "--detach",
        "--ephemeral",
        "--no-fsync",
        "--state-dir",
        str(state_dir),
        "--pg-port",
        "0",
        "--redis-port",
        "0",
        "--nats-port",
        "0",
        "--services",
        str(services_file),
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((state_dir / "devstack.json").read_text())
    pids = [int(p["pid"]) for p in state["processes"]]
    try:
        assert {p["name"] for p in state["processes"]} >= {s.name for s in DEFAULT_SERVICES}
        for svc in DEFAULT_SERVICES:
            addr = state["services"][svc.name]["addr"]
            if svc.readiness == "grpc":
                assert await health_status(addr) == SERVING, svc.name
                listed = await grpcurl_list(addr)
                assert "grpc.health.v1.Health" in listed
                assert any(name.startswith("mppo.") for name in listed), listed
            elif svc.readiness == "http":
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://{addr}{svc.health_path}") as resp,
                ):
                    assert resp.status == 200, svc.name
    finally:
        down = await asyncio.to_thread(mppo, "dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
