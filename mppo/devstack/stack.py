"""``mppo dev up/down/status/restart/logs``: infrastructure and services under one supervisor
that keeps them up, and a state file.

``<state dir>/devstack.json`` says what runs: the endpoints, each service's addresses (every
replica's, and the target its callers get), and for each process what is needed to run it
again — command, the environment it was given on top of the supervisor's, working directory,
readiness check, log file — with its pid, state (running, restarting, failed) and restarts.

The supervisor restarts a process that dies (:class:`~mppo.devstack.process.RestartPolicy`:
back-off, a limit, each restart logged to its log and the supervisor's output) while the rest
keeps serving. ``mppo dev restart NAME`` asks it (a request file in ``<state dir>/control``
and SIGUSR1) for a deliberate restart; ``mppo dev logs NAME`` reads the logs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mppo.devstack.infra import DEV_PORTS, InfraPorts, start_infra
from mppo.devstack.postgres import recorded_data_dir, remove_data
from mppo.devstack.probes import free_port
from mppo.devstack.process import (
    ManagedProcess,
    ProcessSpec,
    RestartPolicy,
    StartupError,
    Supervisor,
    kill_process_group,
    pid_alive,
    process_start_time,
)
from mppo.devstack.prometheus import (
    MetricsTarget,
    find_prometheus,
    prometheus_spec,
    write_config,
    write_targets,
)
from mppo.devstack.services import ServiceDef, check_services, load_services
from mppo.platform.environment import is_development

__all__ = [
    "CONTROL_DIR",
    "ENV_STATE_DIR",
    "PEER_SERVICES",
    "STATE_FILE",
    "Replica",
    "StackConfig",
    "default_state_dir",
    "detach_up",
    "down",
    "isolated_up_args",
    "logs",
    "plan_replicas",
    "read_state",
    "request_restart",
    "resolve_names",
    "run_stack",
    "status",
]

ENV_STATE_DIR = "MPPO_STATE_DIR"
STATE_FILE = "devstack.json"
CONTROL_DIR = "control"

#: where a process serves /metrics (mppo.platform.metrics): every process of the services
#: below gets a free port of its own (a service's env may name one), recorded in devstack.json
#: (`services.<name>.metrics` and `.metrics_addrs`, one per replica)
METRICS_ADDR_VAR = "MPPO_METRICS_ADDR"
SERVES_METRICS = frozenset(
    {"group", "payment", "order", "notification", "gateway", "group-scheduler"}
)

#: services our code dials over gRPC: their callers get every replica's address (round robin,
#: mppo.platform.targets); any other process is announced by its first replica's address
PEER_SERVICES = frozenset({"group", "payment", "order", "notification"})


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
    #: copies of every scalable service (a service's own ``replicas`` wins)
    replicas: int = 1
    #: nats-servers: 1, or an odd cluster size (3) whose streams get 3 replicas
    nats_cluster: int = 1
    #: how dead processes come back; None: the first one that dies stops the stack
    restart: RestartPolicy | None = field(default_factory=RestartPolicy)
    #: also run Prometheus scraping every process (mppo.devstack.prometheus)
    observability: bool = False


# ---------------------------------------------------------------- state file


def isolated_up_args(
    state_dir: Path,
    services_file: Path,
    *,
    fsync: bool = False,
    replicas: int = 1,
    nats_cluster: int = 1,
    observability: bool = False,
) -> list[str]:
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
        *(("--replicas", str(replicas)) if replicas != 1 else ()),
        *(("--nats-cluster", str(nats_cluster)) if nats_cluster != 1 else ()),
        *(("--observability",) if observability else ()),
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


def resolve_names(state: dict[str, Any], name: str) -> list[str]:
    """The processes ``name`` means: a process (``group-2``, ``nats-1``), or every replica of a
    service (``group``) or node of the NATS cluster (``nats``); [] when none."""
    processes = [str(p["name"]) for p in state.get("processes", [])]
    if name in processes:
        return [name]
    return [p for p in processes if p.rpartition("-")[0] == name and p.rpartition("-")[2].isdigit()]


# ---------------------------------------------------------------- output


def _write_endpoints(out: TextIO, state: dict[str, Any]) -> None:
    out.write(f"state: {state['state_dir']}\n")
    for name, url in state["endpoints"].items():
        out.write(f"  {name:<14} {url}\n")
    for name, svc in state["services"].items():
        extra = f"  db {svc['database_url']}" if svc.get("database_url") else ""
        if svc.get("metrics_addrs"):
            extra += f"  metrics {','.join(svc['metrics_addrs'])}"
        addrs = svc.get("addrs") or [svc["addr"]]
        copies = f"  ({len(addrs)} replicas)" if len(addrs) > 1 else ""
        out.write(f"  {name:<14} {','.join(addrs)}{copies}{extra}\n")
    if state.get("pki"):
        pki = Path(state["pki"])
        out.write(
            f"mTLS: CA {pki / 'ca.pem'}, operator client cert {pki / 'operator.pem'}"
            f" (key {pki / 'operator.key'})\n"
        )
    out.write(f"logs: {Path(state['state_dir']) / 'logs'}  (mppo dev logs NAME)\n")
    out.flush()


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class Replica:
    """One process of a service: its name and the address it listens on."""

    service: ServiceDef
    name: str
    addr: str


def plan_replicas(services: Sequence[ServiceDef], replicas: int = 1) -> dict[str, list[Replica]]:
    """Every service's processes: ``replicas`` copies of each scalable one (its own count in
    the services file wins), the first on the service's port, the others on free ports."""
    if replicas < 1:
        raise ValueError("--replicas must be at least 1")
    check_services(services)
    plan: dict[str, list[Replica]] = {}
    for svc in services:
        names = svc.process_names(svc.replica_count(replicas))
        ports = [svc.port or free_port(), *(free_port() for _ in names[1:])]
        plan[svc.name] = [
            Replica(svc, name, f"127.0.0.1:{port}") for name, port in zip(names, ports, strict=True)
        ]
    return plan


def announced_addr(svc: ServiceDef, replicas: Sequence[Replica]) -> str:
    """What ``MPPO_<NAME>_ADDR`` says to the other processes: every replica of a gRPC peer
    service (comma-separated), else the first replica's address."""
    if svc.name in PEER_SERVICES and svc.readiness == "grpc":
        return ",".join(r.addr for r in replicas)
    return replicas[0].addr


def _readiness(svc: ServiceDef, addr: str) -> dict[str, str]:
    described = {"kind": svc.readiness, "addr": addr}
    if svc.readiness == "http":
        described["path"] = svc.health_path
    return described


# ---------------------------------------------------------------- foreground


class _Stack:
    """One ``mppo dev up`` run: the supervisor, the state file, the control requests."""

    def __init__(self, config: StackConfig, out: TextIO, state_dir: Path) -> None:
        self.config = config
        self.out = out
        self.state_dir = state_dir
        self.sup = Supervisor(state_dir / "logs")
        self.state: dict[str, Any] = {
            "status": "starting",
            "state_dir": str(state_dir),
            "supervisor_pid": os.getpid(),
            "supervisor_start_time": process_start_time(os.getpid()),
            "replicas": config.replicas,
            "nats_cluster": config.nats_cluster,
            "endpoints": {},
            "services": {},
            "processes": [],
        }
        #: per process name: service, readiness (what devstack.json records besides the spec)
        self.meta: dict[str, dict[str, Any]] = {}
        self.control = asyncio.Event()

    # ---- state

    def save(self) -> None:
        self.state["processes"] = [self._describe(p) for p in self.sup.processes]
        _write_state(self.state_dir, self.state)

    def _describe(self, proc: ManagedProcess) -> dict[str, Any]:
        spec = proc.spec
        meta = self.meta.get(proc.name, {})
        return {
            "name": proc.name,
            "service": meta.get("service", proc.name.rpartition("-")[0] or proc.name),
            "pid": proc.pid,
            "start_time": process_start_time(proc.pid),
            "state": proc.state,
            "restarts": proc.restarts,
            "last_exit": proc.last_exit,
            "log": str(proc.log_path),
            "argv": list(spec.argv),
            "env": dict(spec.env),
            "cwd": str(spec.cwd) if spec.cwd else None,
            "readiness": meta.get("readiness", {"kind": "probe"}),
            "ready_timeout": spec.ready_timeout,
            "stop_signal": int(spec.stop_signal),
        }

    def on_restart(self, proc: ManagedProcess, message: str) -> None:
        """The supervisor's report of a restart: to our output and the state file."""
        self.out.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        self.out.flush()
        self.save()

    # ---- start

    async def start_everything(self) -> None:
        config = self.config
        if config.observability:
            find_prometheus()  # before anything starts: say how to install it
        infra = await start_infra(
            config.state_dir,
            ports=config.ports,
            fsync=config.fsync,
            ephemeral=config.ephemeral,
            supervisor=self.sup,
            nats_cluster=config.nats_cluster,
        )
        for proc in self.sup.processes:
            self.meta[proc.name] = {"service": proc.name.rpartition("-")[0] or proc.name}
        self.state["endpoints"] = infra.endpoints()
        pki = _mint_pki(self.state_dir, config.services)
        self.state["pki"] = str(pki)
        plan = plan_replicas(config.services, config.replicas)
        announced = {svc.name: announced_addr(svc, plan[svc.name]) for svc in config.services}
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
            **{svc.addr_env: announced[svc.name] for svc in config.services},
        }
        if config.nats_cluster > 1:
            common["MPPO_NATS_STREAM_REPLICAS"] = "3"
        if is_development(common):
            common |= _dev_identity_provider(self.state_dir)
            common |= dev_simulated_providers(config.services, announced, os.environ)
        db_urls: dict[str, str] = {}
        for svc in config.services:
            if svc.database:
                db_urls[svc.name] = await infra.create_database(svc.database)
        self.save()
        for svc in config.services:
            replicas = plan[svc.name]
            self.state["services"][svc.name] = {
                "addr": replicas[0].addr,
                "addrs": [r.addr for r in replicas],
                "target": announced[svc.name],
                "processes": [r.name for r in replicas],
                "database_url": db_urls.get(svc.name),
            }
            env = dict(common)
            if svc.name in db_urls:
                env[svc.database_env] = db_urls[svc.name]
            env.update(svc.env)
            self.out.write(
                f"starting {svc.name} on {','.join(r.addr for r in replicas)}"
                + (f" ({len(replicas)} replicas)\n" if len(replicas) > 1 else "\n")
            )
            self.out.flush()
            # the first alone (it migrates the database), then the others together
            await self._start_replica(replicas[0], env, pki, first=True)
            await asyncio.gather(*(self._start_replica(r, env, pki) for r in replicas[1:]))
        if config.observability:
            await self._start_prometheus()

    async def _start_prometheus(self) -> None:
        """Prometheus on a free port, scraping every metrics endpoint (one per replica)."""
        directory = self.state_dir / "prometheus"
        targets = [
            MetricsTarget(service, addr)
            for service, entry in self.state["services"].items()
            for addr in entry.get("metrics_addrs", [])
        ]
        write_targets(directory, targets)
        write_config(directory)
        port = free_port()
        self.out.write(f"starting prometheus on 127.0.0.1:{port} ({len(targets)} targets)\n")
        self.out.flush()
        self.meta["prometheus"] = {
            "service": "prometheus",
            "readiness": {"kind": "http", "addr": f"127.0.0.1:{port}", "path": "/-/ready"},
        }
        await self.sup.start(prometheus_spec(directory, port))
        self.state["endpoints"]["prometheus"] = f"http://127.0.0.1:{port}"
        self.save()

    async def _start_replica(
        self, replica: Replica, env: dict[str, str], pki: Path, *, first: bool = False
    ) -> None:
        svc = replica.service
        self.meta[replica.name] = {
            "service": svc.name,
            "readiness": _readiness(svc, replica.addr),
        }
        own = {svc.addr_env: replica.addr}
        if svc.name in SERVES_METRICS or METRICS_ADDR_VAR in svc.env:
            metrics = svc.env.get(METRICS_ADDR_VAR) or f"127.0.0.1:{free_port()}"
            own[METRICS_ADDR_VAR] = metrics
            entry = self.state["services"].setdefault(svc.name, {})
            entry.setdefault("metrics", metrics)
            entry.setdefault("metrics_addrs", []).append(metrics)
        await self.sup.start(
            ProcessSpec(
                name=replica.name,
                argv=svc.argv(),
                env={**env, **own},
                readiness=svc.probe(replica.addr, pki),
                ready_timeout=60.0,
                stop_signal=signal.SIGTERM,
                stop_timeout=10.0,
                pdeath_signal=signal.SIGKILL,
            )
        )
        self.save()

    # ---- control requests (mppo dev restart)

    async def serve_control(self) -> None:
        """Carry out the requests in ``<state>/control`` each time SIGUSR1 arrives."""
        directory = self.state_dir / CONTROL_DIR
        while True:
            await self.control.wait()
            self.control.clear()
            for request, asked in await asyncio.to_thread(_take_requests, directory):
                results: dict[str, str] = {}
                for name in asked.get("restart", []):
                    results[str(name)] = await self._restart(str(name))
                await asyncio.to_thread(_answer, request, results)

    async def _restart(self, name: str) -> str:
        self.out.write(f"{time.strftime('%H:%M:%S')} restarting {name} (asked for)\n")
        self.out.flush()
        try:
            proc = await self.sup.restart(name)
        except KeyError:
            return "error: no such process"
        except StartupError as exc:
            return f"error: {str(exc).splitlines()[0]}"
        finally:
            self.save()
        return f"restarted (pid {proc.pid})"


def _take_requests(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The waiting control requests, oldest first (each file is removed as it is read)."""
    taken = []
    for request in sorted(directory.glob("*.request.json")):
        try:
            asked = json.loads(request.read_text())
            request.unlink()
        except (OSError, ValueError):
            continue
        if isinstance(asked, dict):
            taken.append((request, asked))
    return taken


def _answer(request: Path, results: dict[str, str]) -> None:
    answer = request.with_name(request.name.replace(".request.json", ".answer.json"))
    tmp = answer.with_suffix(".tmp")
    tmp.write_text(json.dumps({"results": results}))
    os.replace(tmp, answer)


#: the provider simulators `dev up` may run, in the order the payment service offers them
SIMULATED_PROVIDERS = ("paypal", "razorpay")


def dev_simulated_providers(
    services: Sequence[ServiceDef],
    announced: Mapping[str, str],
    exported: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What makes the payment service offer the provider simulators among `services`
    (``payment_svc.simulators``) beside the sandbox: each provider's credentials, fresh for
    this run and shared by the simulator and the payment service through the variables the
    payment service reads for the real provider, its API base, and MPPO_PAYMENT_PROVIDERS (read
    by the payment and group services). Empty when no simulator runs.

    What the user `exported` wins: a provider any of whose variables (``MPPO_PAYPAL_*``,
    ``MPPO_RAZORPAY_*``) is set is theirs (its simulator still runs, unused), and an exported
    MPPO_PAYMENT_PROVIDERS is what members may choose from (README, "Going live on Stripe
    test mode")."""
    given = {k: v for k, v in (exported or {}).items() if v.strip()}
    running = [
        svc.name
        for svc in services
        if svc.name in SIMULATED_PROVIDERS
        and not any(k.startswith(f"MPPO_{svc.name.upper()}_") for k in given)
    ]
    if not running:
        return {}

    def fresh() -> str:
        return secrets.token_urlsafe(18)

    env = {}
    if "MPPO_PAYMENT_PROVIDERS" not in given:
        env["MPPO_PAYMENT_PROVIDERS"] = ",".join(["sandbox", *running])
    if "paypal" in running:
        env |= {
            "MPPO_PAYPAL_CLIENT_ID": f"dev-{fresh()}",
            "MPPO_PAYPAL_CLIENT_SECRET": fresh(),
            "MPPO_PAYPAL_WEBHOOK_ID": f"WH-DEV-{fresh()}",
            "MPPO_PAYPAL_SIMULATOR_SIGNING_SECRET": fresh(),
            "MPPO_PAYPAL_API_BASE": f"http://{announced['paypal']}",
        }
    if "razorpay" in running:
        env |= {
            "MPPO_RAZORPAY_KEY_ID": f"rzp_test_{fresh()}",
            "MPPO_RAZORPAY_KEY_SECRET": fresh(),
            "MPPO_RAZORPAY_WEBHOOK_SECRET": fresh(),
            "MPPO_RAZORPAY_API_BASE": f"http://{announced['razorpay']}",
        }
    return env


def _dev_identity_provider(state_dir: Path) -> dict[str, str]:
    """The development identity provider every service verifies forwarded user JWTs with
    (``x-mppo-user-jwt``, from the gateway's certificate): the keys ``mppo token`` signs with
    and the dev gateway trusts, made before any process starts so that all read the same
    ones. An operator can then debug a user's call with grpcurl (README) as the edge would
    make it; the gateway itself keeps ``MPPO_JWT_JWKS=dev``."""
    from gateway.devkeys import DEV_AUDIENCE, DEV_ISSUER, dev_keys

    return {
        "MPPO_JWT_JWKS": str(dev_keys(state_dir).jwks_path),
        "MPPO_JWT_ISSUER": DEV_ISSUER,
        "MPPO_JWT_AUDIENCE": DEV_AUDIENCE,
    }


def _mint_pki(state_dir: Path, services: Sequence[ServiceDef]) -> Path:
    """The development PKI in ``<state>/pki``: the usual identities plus every gRPC service."""
    from mppo.platform.tls import DEV_NAMES, mint_dev_pki  # loads grpc/cryptography on use

    pki = state_dir / "pki"
    names = [*DEV_NAMES, *(svc.name for svc in services if svc.readiness == "grpc")]
    mint_dev_pki(pki, list(dict.fromkeys(names)))
    return pki


async def run_stack(config: StackConfig, out: TextIO, *, stop: asyncio.Event | None = None) -> int:
    """Start everything, print the endpoints, keep it up until SIGINT/SIGTERM (or ``stop``),
    then stop everything. Returns the exit code: 0 after a requested stop, 1 if something
    failed (startup, or — with ``config.restart`` None — a process that died)."""
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None and _supervisor_alive(existing):
        out.write(
            f"a stack is already running from {state_dir} (pid {existing['supervisor_pid']})\n"
        )
        return 1
    stop = stop or asyncio.Event()
    stack = _Stack(config, out, state_dir)
    (state_dir / CONTROL_DIR).mkdir(exist_ok=True)
    for stale in (state_dir / CONTROL_DIR).iterdir():
        stale.unlink(missing_ok=True)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig, action in (
        (signal.SIGINT, stop.set),
        (signal.SIGTERM, stop.set),
        (signal.SIGUSR1, stack.control.set),
    ):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, action)
            handled.append(sig)
    sup = stack.sup
    atexit.register(sup.kill_all_now)
    _write_state(state_dir, stack.state)
    code = 0
    background: list[asyncio.Future[Any]] = []
    try:
        starting = asyncio.ensure_future(stack.start_everything())
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
            stack.state["status"] = "running"
            stack.save()
            out.write("MPPO dev stack is up\n")
            _write_endpoints(out, stack.state)
            out.write("press Ctrl-C to stop\n")
            out.flush()
            background.append(asyncio.ensure_future(stack.serve_control()))
            if config.restart is not None:
                keeper = asyncio.ensure_future(sup.keep_up(config.restart, stack.on_restart))
                background.append(keeper)
                await asyncio.wait({keeper, stopping}, return_when=asyncio.FIRST_COMPLETED)
            else:
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
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        out.write("stopping\n")
        out.flush()
        stack.state["status"] = "stopping"
        _write_state(state_dir, stack.state)
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


def detach_up(up_argv: Sequence[str], state_dir: Path, out: TextIO, timeout: float = 300.0) -> int:
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
        # Children die with their supervisor (parent-death signal); make sure anyway, with the
        # pids the supervisor recorded last (a restarted process has a new one).
        latest = read_state(state_dir) or state
        for proc in latest.get("processes", []):
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
        shown = proc.get("state", "running") if alive else "DOWN"
        restarts = int(proc.get("restarts", 0))
        extra = f"  restarts {restarts}" if restarts else ""
        out.write(f"  {proc['name']:<16} pid {proc['pid']:<8} {shown}{extra}\n")
    out.flush()
    return 0


def request_restart(state_dir: Path, name: str, out: TextIO, *, timeout: float = 120.0) -> int:
    """``mppo dev restart NAME``: ask the running supervisor to restart the process(es) ``NAME``
    means (:func:`resolve_names`) one after the other; 0 when each came back ready."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None or not _supervisor_alive(state):
        out.write(f"no stack is running from {state_dir}\n")
        return 3
    names = resolve_names(state, name)
    if not names:
        known = ", ".join(p["name"] for p in state.get("processes", []))
        out.write(f"no process {name!r} (running: {known})\n")
        return 2
    control = state_dir / CONTROL_DIR
    control.mkdir(exist_ok=True)
    ident = uuid.uuid4().hex
    request = control / f"{time.time_ns()}-{ident}.request.json"
    tmp = control / f"{ident}.tmp"
    tmp.write_text(json.dumps({"restart": names}))
    os.replace(tmp, request)
    os.kill(int(state["supervisor_pid"]), signal.SIGUSR1)
    answer = request.with_name(request.name.replace(".request.json", ".answer.json"))
    deadline = time.monotonic() + timeout
    while not answer.exists():
        if time.monotonic() > deadline or not _supervisor_alive(state):
            out.write(f"no answer from the supervisor within {timeout:.0f}s\n")
            return 1
        time.sleep(0.1)
    results: dict[str, str] = json.loads(answer.read_text())["results"]
    answer.unlink(missing_ok=True)
    for proc_name, outcome in results.items():
        out.write(f"{proc_name}: {outcome}\n")
    out.flush()
    return 0 if all(not r.startswith("error") for r in results.values()) else 1


def _log_files(state_dir: Path, name: str) -> list[tuple[str, Path]]:
    state = read_state(state_dir)
    if state is not None:
        names = resolve_names(state, name)
        by_name = {p["name"]: Path(p["log"]) for p in state.get("processes", [])}
        if names:
            return [(n, by_name[n]) for n in names]
    logs_dir = state_dir / "logs"
    exact = logs_dir / f"{name}.log"
    if exact.exists():
        return [(name, exact)]
    found = sorted(logs_dir.glob(f"{name}-*.log"))
    return [(path.stem, path) for path in found if path.stem.rpartition("-")[2].isdigit()]


def _tail_lines(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []


def _follow(files: Sequence[tuple[str, Path]], prefix: bool) -> Iterator[str]:
    offsets = {path: path.stat().st_size if path.exists() else 0 for _, path in files}
    while True:
        quiet = True
        for name, path in files:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size < offsets[path]:
                offsets[path] = 0
            if size == offsets[path]:
                continue
            with open(path, "rb") as handle:
                handle.seek(offsets[path])
                chunk = handle.read()
            offsets[path] += len(chunk)
            quiet = False
            for line in chunk.decode(errors="replace").splitlines():
                yield f"{name} | {line}" if prefix else line
        if quiet:
            time.sleep(0.2)


def logs(state_dir: Path, name: str, out: TextIO, *, lines: int = 50, follow: bool = False) -> int:
    """``mppo dev logs NAME``: the last ``lines`` lines of each process ``NAME`` means (every
    replica of a service, each line prefixed with its process), then new lines as they come
    with ``follow``. Works after the stack stopped too (the logs stay in the state dir)."""
    state_dir = state_dir.resolve()
    files = _log_files(state_dir, name)
    if not files:
        out.write(f"no log for {name!r} in {state_dir / 'logs'}\n")
        return 2
    prefix = len(files) > 1
    for proc_name, path in files:
        for line in _tail_lines(path, lines):
            out.write(f"{proc_name} | {line}\n" if prefix else f"{line}\n")
    out.flush()
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            for line in _follow(files, prefix):
                out.write(line + "\n")
                out.flush()
    return 0
