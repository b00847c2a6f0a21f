"""``mppo dev up/down/status``: infrastructure and services under one supervisor + state file."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mppo.devstack.infra import DEV_PORTS, InfraPorts, start_infra
from mppo.devstack.postgres import recorded_data_dir, remove_data
from mppo.devstack.probes import free_port
from mppo.devstack.process import (
    ProcessSpec,
    StartupError,
    Supervisor,
    kill_process_group,
    pid_alive,
    process_start_time,
)
from mppo.devstack.services import ServiceDef, load_services

__all__ = [
    "ENV_STATE_DIR",
    "STATE_FILE",
    "StackConfig",
    "default_state_dir",
    "detach_up",
    "down",
    "read_state",
    "run_stack",
    "status",
]

ENV_STATE_DIR = "MPPO_STATE_DIR"
STATE_FILE = "devstack.json"


def default_state_dir() -> Path:
    """``$MPPO_STATE_DIR``, else ``<repo>/.mppo`` (the checkout holding this package)."""
    env = os.environ.get(ENV_STATE_DIR)
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / ".mppo"
    return Path.cwd().resolve() / ".mppo"


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    ports: InfraPorts = DEV_PORTS
    services: tuple[ServiceDef, ...] = field(default_factory=load_services)
    fsync: bool = True
    ephemeral: bool = False


# ---------------------------------------------------------------- state file


def isolated_up_args(state_dir: Path, services_file: Path, *, fsync: bool = False) -> list[str]:
    """`mppo` arguments for a detached, throw-away stack on free ports (tests, benchmarks):
    the services listed in `services_file` (JSON), every infrastructure port picked free."""
    return [
        "dev",
        "up",
        "--detach",
        "--ephemeral",
        *(() if fsync else ("--no-fsync",)),
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
    ]


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The state file of a stack in ``state_dir``, or None."""
    try:
        data: dict[str, Any] = json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = _state_path(state_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def _same_process(pid: int, start_time: int | None) -> bool:
    if not pid_alive(pid):
        return False
    return start_time is None or process_start_time(pid) == start_time


def _supervisor_alive(state: dict[str, Any]) -> bool:
    return _same_process(int(state["supervisor_pid"]), state.get("supervisor_start_time"))


# ---------------------------------------------------------------- output


def _write_endpoints(out: TextIO, state: dict[str, Any]) -> None:
    out.write(f"state: {state['state_dir']}\n")
    for name, url in state["endpoints"].items():
        out.write(f"  {name:<14} {url}\n")
    for name, svc in state["services"].items():
        extra = f"  db {svc['database_url']}" if svc.get("database_url") else ""
        out.write(f"  {name:<14} {svc['addr']}{extra}\n")
    if state.get("pki"):
        pki = Path(state["pki"])
        out.write(
            f"mTLS: CA {pki / 'ca.pem'}, operator client cert {pki / 'operator.pem'}"
            f" (key {pki / 'operator.key'})\n"
        )
    out.write(f"logs: {Path(state['state_dir']) / 'logs'}\n")
    out.flush()


# ---------------------------------------------------------------- foreground


async def _start_everything(
    config: StackConfig, sup: Supervisor, state: dict[str, Any], out: TextIO
) -> None:
    infra = await start_infra(
        config.state_dir,
        ports=config.ports,
        fsync=config.fsync,
        ephemeral=config.ephemeral,
        supervisor=sup,
    )
    state["endpoints"] = infra.endpoints()
    pki = _mint_pki(Path(state["state_dir"]), config.services)
    state["pki"] = str(pki)
    addrs = {svc.name: f"127.0.0.1:{svc.port or free_port()}" for svc in config.services}
    common = {
        "MPPO_POSTGRES_URL": infra.postgres_server_url,
        "MPPO_REDIS_URL": infra.redis_url,
        "MPPO_NATS_URL": infra.nats_url,
        # every process finds the stack's state (e.g. the gateway's dev JWKS) in one place
        ENV_STATE_DIR: str(config.state_dir),
        # mTLS certificates, the gateway's user-token keys (mppo.platform.tls, .user_token)
        "MPPO_TLS_DIR": str(pki),
        # development defaults (sandbox provider, dev secrets) exist only in dev/test
        "MPPO_ENV": os.environ.get("MPPO_ENV", "").strip() or "dev",
        **{svc.addr_env: addrs[svc.name] for svc in config.services},
    }
    db_urls: dict[str, str] = {}
    for svc in config.services:
        if svc.database:
            db_urls[svc.name] = await infra.create_database(svc.database)
    _record_processes(sup, state)
    _write_state(config.state_dir, state)
    for svc in config.services:
        env = dict(common)
        if svc.name in db_urls:
            env[svc.database_env] = db_urls[svc.name]
        env.update(svc.env)
        state["services"][svc.name] = {
            "addr": addrs[svc.name],
            "database_url": db_urls.get(svc.name),
        }
        out.write(f"starting {svc.name} on {addrs[svc.name]}\n")
        out.flush()
        await sup.start(
            ProcessSpec(
                name=svc.name,
                argv=svc.argv(),
                env=env,
                readiness=svc.probe(addrs[svc.name], pki),
                ready_timeout=60.0,
                stop_signal=signal.SIGTERM,
                stop_timeout=10.0,
                pdeath_signal=signal.SIGKILL,
            )
        )
        _record_processes(sup, state)
        _write_state(config.state_dir, state)


def _mint_pki(state_dir: Path, services: Sequence[ServiceDef]) -> Path:
    """The development PKI in ``<state>/pki``: the usual identities plus every gRPC service."""
    from mppo.platform.tls import DEV_NAMES, mint_dev_pki  # loads grpc/cryptography on use

    pki = state_dir / "pki"
    names = [*DEV_NAMES, *(svc.name for svc in services if svc.readiness == "grpc")]
    mint_dev_pki(pki, names)
    return pki


def _record_processes(sup: Supervisor, state: dict[str, Any]) -> None:
    state["processes"] = [
        {
            "name": p.name,
            "pid": p.pid,
            "start_time": process_start_time(p.pid),
            "log": str(p.log_path),
        }
        for p in sup.processes
    ]


async def run_stack(config: StackConfig, out: TextIO, *, stop: asyncio.Event | None = None) -> int:
    """Start everything, print the endpoints, run until SIGINT/SIGTERM (or ``stop``), then stop
    everything. Returns the exit code: 0 after a requested stop, 1 if something failed."""
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None and _supervisor_alive(existing):
        out.write(
            f"a stack is already running from {state_dir} (pid {existing['supervisor_pid']})\n"
        )
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    sup = Supervisor(state_dir / "logs")
    atexit.register(sup.kill_all_now)
    state: dict[str, Any] = {
        "status": "starting",
        "state_dir": str(state_dir),
        "supervisor_pid": os.getpid(),
        "supervisor_start_time": process_start_time(os.getpid()),
        "endpoints": {},
        "services": {},
        "processes": [],
    }
    _write_state(state_dir, state)
    code = 0
    try:
        starting = asyncio.ensure_future(_start_everything(config, sup, state, out))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            out.write("interrupted during startup; stopping\n")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        elif starting.exception() is not None:
            exc = starting.exception()
            out.write(f"startup failed: {exc}\n" if isinstance(exc, StartupError) else "")
            if not isinstance(exc, StartupError):
                raise exc  # type: ignore[misc]
            code = 1
        else:
            state["status"] = "running"
            _write_state(state_dir, state)
            out.write("MPPO dev stack is up\n")
            _write_endpoints(out, state)
            out.write("press Ctrl-C to stop\n")
            out.flush()
            exited = asyncio.ensure_future(sup.wait_any_exit())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                proc = exited.result()
                out.write(
                    f"{proc.name} exited with code {proc.returncode}; stopping the stack"
                    f" (log: {proc.log_path})\n{proc.log_tail(15)}\n"
                )
                code = 1
            else:
                exited.cancel()
        stopping.cancel()
    finally:
        out.write("stopping\n")
        out.flush()
        state["status"] = "stopping"
        _write_state(state_dir, state)
        await sup.stop_all()
        if config.ephemeral:
            remove_data(state_dir)
            for sub in ("redis", "nats"):
                shutil.rmtree(state_dir / sub, ignore_errors=True)
        _state_path(state_dir).unlink(missing_ok=True)
        atexit.unregister(sup.kill_all_now)
        for sig in handled:
            loop.remove_signal_handler(sig)
        out.write("stopped\n")
        out.flush()
    return code


# ---------------------------------------------------------------- detached


def detach_up(up_argv: Sequence[str], state_dir: Path, out: TextIO, timeout: float = 180.0) -> int:
    """Run ``mppo dev up <up_argv>`` as a background supervisor; return once it is running."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None and _supervisor_alive(existing):
        out.write(
            f"a stack is already running from {state_dir} (pid {existing['supervisor_pid']})\n"
        )
        return 1
    log_path = state_dir / "logs" / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV_STATE_DIR: str(state_dir)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mppo.cli", "dev", "up", *up_argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(state_dir)
        if state and state.get("supervisor_pid") == proc.pid and state.get("status") == "running":
            out.write(f"MPPO dev stack is up in the background (supervisor pid {proc.pid})\n")
            _write_endpoints(out, state)
            out.write("stop it with: mppo dev down\n")
            proc.returncode = 0  # detached on purpose: don't warn about a running child
            return 0
        if proc.poll() is not None:
            out.write(f"dev up failed (code {proc.returncode}); log {log_path}:\n")
            out.write("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]) + "\n")
            return 1
        if time.monotonic() > deadline:
            out.write(f"dev up did not come up within {timeout:.0f}s; stopping it\n")
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                kill_process_group(proc.pid)
                proc.wait()
            return 1
        time.sleep(0.1)


def down(state_dir: Path, out: TextIO, *, timeout: float = 60.0, purge: bool = False) -> int:
    """Stop the stack recorded in ``state_dir``; ``purge`` also deletes its data."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        out.write(f"no stack is running from {state_dir}\n")
    else:
        pid = int(state["supervisor_pid"])
        if _supervisor_alive(state):
            out.write(f"stopping supervisor pid {pid}\n")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _supervisor_alive(state) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _supervisor_alive(state):
                out.write(f"supervisor {pid} did not stop in {timeout:.0f}s; killing it\n")
                os.kill(pid, signal.SIGKILL)
        # Children die with their supervisor (parent-death signal); make sure anyway.
        for proc in state.get("processes", []):
            if _same_process(int(proc["pid"]), proc.get("start_time")):
                out.write(f"killing leftover {proc['name']} (pid {proc['pid']})\n")
                kill_process_group(int(proc["pid"]))
        _state_path(state_dir).unlink(missing_ok=True)
        out.write("stopped\n")
    if purge:
        data = recorded_data_dir(state_dir)
        remove_data(state_dir)
        for sub in ("redis", "nats"):
            shutil.rmtree(state_dir / sub, ignore_errors=True)
        out.write(f"removed data{f' ({data})' if data else ''}\n")
    out.flush()
    return 0


def status(state_dir: Path, out: TextIO) -> int:
    """Print what runs from ``state_dir``; 0 if a stack is running, 3 if not."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None or not _supervisor_alive(state):
        out.write(f"no stack is running from {state_dir}\n")
        return 3
    out.write(f"stack {state['status']} (supervisor pid {state['supervisor_pid']})\n")
    _write_endpoints(out, state)
    for proc in state.get("processes", []):
        alive = _same_process(int(proc["pid"]), proc.get("start_time"))
        out.write(f"  {proc['name']:<14} pid {proc['pid']:<8} {'up' if alive else 'DOWN'}\n")
    out.flush()
    return 0
