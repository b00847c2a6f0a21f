"""The embedded infrastructure, the supervisor and ``mppo dev up/down/status``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mppo.devstack.postgres as pg_mod
from mppo.devstack import (
    Infra,
    ProcessExitedError,
    ProcessSpec,
    Supervisor,
    grpc_health_probe,
    pid_alive,
)
from mppo.devstack.probes import free_port, http_get_probe
from mppo.platform.tls import TlsMaterial, channel_credentials

# A stand-in for a service: gRPC health (NOT_SERVING for a moment, then SERVING) or HTTP
# /healthz, on the address in $MPPO_<NAME>_ADDR; records its environment in $FAKE_ENV_OUT.
FAKE_SERVICE = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys, time

    kind, name = sys.argv[1], sys.argv[2]
    addr = os.environ[f"MPPO_{name.upper()}_ADDR"]
    host, _, port = addr.rpartition(":")
    out = os.environ.get("FAKE_ENV_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({k: v for k, v in os.environ.items() if k.startswith("MPPO_")}, f)

    async def grpc_main():
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        tls = os.environ.get("MPPO_TLS_DIR")
        if tls:  # like our services under mppo dev up: mutual TLS with its own certificate
            read = lambda f: open(os.path.join(tls, f), "rb").read()
            creds = grpc.ssl_server_credentials(
                [(read(name + ".key"), read(name + ".pem"))],
                root_certificates=read("ca.pem"), require_client_auth=True,
            )
            server.add_secure_port(addr, creds)
        else:
            server.add_insecure_port(addr)
        await server.start()
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(float(os.environ.get("FAKE_NOT_SERVING_FOR", "0.5")))
        serving_file = os.environ.get("FAKE_SERVING_FILE")
        if serving_file:
            with open(serving_file, "w") as f:
                f.write(str(time.time()))
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.wait_for_termination()

    async def http_main():
        async def handle(reader, writer):
            line = await reader.readline()
            status = b"200 OK" if line.split()[1] == b"/healthz" else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\\r\\nContent-Length: 0\\r\\n\\r\\n")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, host, int(port))
        await server.serve_forever()

    asyncio.run(grpc_main() if kind == "grpc" else http_main())
    """
)

# Ignores SIGTERM, starts a grandchild in its own process group, writes both pids, sleeps.
STUBBORN_CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(300)
    """
)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _pids_file_ready(path: Path) -> bool:
    return path.exists()


def _proc_user(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


# ------------------------------------------------------------------ infrastructure


async def test_postgres_creates_and_queries_databases(infra: Infra, fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        await conn.execute("INSERT INTO t VALUES (1, 'héllo')")
        assert await conn.fetchval("SELECT v FROM t WHERE id = 1") == "héllo"
        assert await conn.fetchval("SELECT current_database()") == fresh_database.rsplit("/", 1)[1]
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()
    # idempotent, and the URL helper agrees with it
    name = f"idem_{os.getpid()}"
    first = await infra.create_database(name)
    assert await infra.create_database(name) == first == infra.postgres_url(name)


async def test_embedded_postgres_is_local_tcp_only_and_not_root(infra: Infra) -> None:
    if "postgres" not in infra.embedded:
        pytest.skip("using MPPO_POSTGRES_URL")
    conn = await asyncpg.connect(infra.postgres_server_url)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW unix_socket_directories") == ""
        assert await conn.fetchval("SHOW fsync") == "off"
    finally:
        await conn.close()
    (pg,) = [p for p in infra.processes if p.name == "postgres"]
    assert pid_alive(pg.pid)
    if os.geteuid() == 0:
        assert _proc_user(pg.pid) != 0


async def test_redis_set_get(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}k", "v", ex=60)
        assert await client.get(f"{redis_prefix}k") == b"v"
        assert await client.get(f"{redis_prefix}missing") is None
    finally:
        await client.aclose()


async def test_nats_has_jetstream(nats_url: str, nats_prefix: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.account_info()
        assert info.limits is not None
        stream = f"{nats_prefix.upper()}_T"
        await js.add_stream(name=stream, subjects=[f"{nats_prefix}.x.>"])
        ack = await js.publish(f"{nats_prefix}.x.y", b"hi", headers={"Nats-Msg-Id": "m1"})
        dup = await js.publish(f"{nats_prefix}.x.y", b"hi", headers={"Nats-Msg-Id": "m1"})
        assert (ack.stream, ack.seq, dup.duplicate) == (stream, 1, True)
        msg = await js.get_msg(stream, 1)
        assert msg.data == b"hi"
        await js.delete_stream(stream)
    finally:
        await nc.close()


# ------------------------------------------------------------------ supervisor


def _fake_service_file(tmp_path: Path) -> Path:
    path = tmp_path / "fake_service.py"
    path.write_text(FAKE_SERVICE)
    return path


async def test_supervisor_waits_for_grpc_serving(tmp_path: Path) -> None:
    script = _fake_service_file(tmp_path)
    serving_file = tmp_path / "serving"
    addr = f"127.0.0.1:{free_port()}"
    sup = Supervisor(tmp_path / "logs")
    proc = await sup.start(
        ProcessSpec(
            name="fake",
            argv=[sys.executable, str(script), "grpc", "fake"],
            env={"MPPO_FAKE_ADDR": addr, "FAKE_SERVING_FILE": str(serving_file)},
            readiness=grpc_health_probe(addr),
        )
    )
    try:
        # start() returned only after the service switched to SERVING
        assert serving_file.exists()
        async with grpc.aio.insecure_channel(addr) as channel:
            resp = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await sup.stop_all()
    assert not pid_alive(proc.pid)
    assert proc.returncode is not None


async def test_supervisor_http_readiness(tmp_path: Path) -> None:
    script = _fake_service_file(tmp_path)
    port = free_port()
    sup = Supervisor(tmp_path / "logs")
    ok_probe = http_get_probe("127.0.0.1", port, "/healthz")
    await sup.start(
        ProcessSpec(
            name="web",
            argv=[sys.executable, str(script), "http", "web"],
            env={"MPPO_WEB_ADDR": f"127.0.0.1:{port}"},
            readiness=ok_probe,
        )
    )
    try:
        assert await ok_probe(0) is True
        assert await http_get_probe("127.0.0.1", port, "/nope")(0) is False
    finally:
        await sup.stop_all()


async def test_supervisor_reports_early_exit(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    with pytest.raises(ProcessExitedError) as err:
        await sup.start(
            ProcessSpec(
                name="broken",
                argv=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                readiness=grpc_health_probe(f"127.0.0.1:{free_port()}"),
            )
        )
    assert err.value.returncode == 3
    assert "boom" in err.value.log_tail
    assert sup.processes == []


async def test_supervisor_stop_kills_stubborn_child_and_its_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    sup = Supervisor(tmp_path / "logs")
    proc = await sup.start(
        ProcessSpec(
            name="stubborn",
            argv=[sys.executable, "-c", STUBBORN_CHILD, str(pids_file)],
            readiness=None,
            stop_timeout=0.5,
        )
    )
    for _ in range(200):
        if pids_file.exists():
            break
        await asyncio.sleep(0.025)
    child, grandchild = map(int, pids_file.read_text().split())
    assert child == proc.pid
    assert pid_alive(child)
    assert pid_alive(grandchild)
    started = time.monotonic()
    await sup.stop_all()
    assert time.monotonic() - started < 8
    assert not pid_alive(child)
    _wait_for(lambda: not pid_alive(grandchild), 5, "grandchild to die")
    assert proc.returncode == -signal.SIGKILL  # SIGTERM was ignored


HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from mppo.devstack import ProcessSpec, Supervisor

    async def main():
        sup = Supervisor(Path(sys.argv[1]) / "logs")
        await sup.start(ProcessSpec(name="stubborn", argv=[sys.executable, "-c", sys.argv[2],
                                                           sys.argv[3]]))
        print("started", flush=True)
        await asyncio.sleep(300)

    asyncio.run(main())
    """
)


def test_children_die_when_supervisor_is_sigkilled(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(tmp_path), STUBBORN_CHILD, str(pids_file)],
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _pids_file_ready(pids_file), 20, "the child to start")
        child, _grandchild = map(int, pids_file.read_text().split())
        assert pid_alive(child)
        # the child is in its own session: only the parent-death signal can reach it
        assert os.getsid(child) == child != os.getsid(host.pid)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        _wait_for(lambda: not pid_alive(child), 5, "the child to die with its supervisor")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if pids_file.exists():
            for pid in map(int, pids_file.read_text().split()):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ mppo dev up/down/status


def _mppo(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "mppo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _fake_stack(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    script = _fake_service_file(tmp_path)
    env_out = tmp_path / "fake_env.json"
    services = [
        {
            "name": "fake",
            "command": ["{python}", str(script), "grpc", "fake"],
            "port": 0,
            "readiness": "grpc",
            "database": "fake_db",
            "env": {"FAKE_ENV_OUT": str(env_out), "FAKE_NOT_SERVING_FOR": "0.2"},
        },
        {
            "name": "web",
            "command": ["{python}", str(script), "http", "web"],
            "port": 0,
            "readiness": "http",
        },
    ]
    services_file = tmp_path / "services.json"
    services_file.write_text(json.dumps(services))
    state_dir = tmp_path / "state"
    up_args = [
        "--state-dir", str(state_dir),
        "--pg-port", "0", "--redis-port", "0", "--nats-port", "0",
        "--services", str(services_file),
        "--no-fsync", "--ephemeral",
    ]  # fmt: skip
    return state_dir, env_out, up_args


def _clean_env() -> dict[str, str]:
    # embedded servers even if the session was pointed at external ones
    return {"MPPO_POSTGRES_URL": "", "MPPO_REDIS_URL": "", "MPPO_NATS_URL": ""}


def _all_pids(state: dict[str, Any]) -> list[int]:
    return [int(state["supervisor_pid"])] + [int(p["pid"]) for p in state["processes"]]


async def test_dev_up_detach_status_down_round_trip(tmp_path: Path) -> None:
    state_dir, env_out, up_args = _fake_stack(tmp_path)
    up = await asyncio.to_thread(_mppo, "dev", "up", "--detach", *up_args, env=_clean_env())
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((state_dir / "devstack.json").read_text())
    try:
        assert state["status"] == "running"
        names = [p["name"] for p in state["processes"]]
        assert sorted(names[:3]) == ["nats", "postgres", "redis"]  # started concurrently
        assert names[3:] == ["fake", "web"]
        pids = _all_pids(state)
        assert all(pid_alive(pid) for pid in pids)
        fake_addr = state["services"]["fake"]["addr"]
        assert fake_addr in up.stdout
        assert state["endpoints"]["nats"] in up.stdout

        # the service got the conventional environment, and its database exists
        env = json.loads(env_out.read_text())
        assert env["MPPO_FAKE_ADDR"] == fake_addr
        assert env["MPPO_WEB_ADDR"] == state["services"]["web"]["addr"]
        assert env["MPPO_REDIS_URL"] == state["endpoints"]["redis"]
        assert env["MPPO_NATS_URL"] == state["endpoints"]["nats"]
        assert env["MPPO_STATE_DIR"] == str(state_dir)  # foreground or detached alike
        db_url = env["MPPO_FAKE_DATABASE_URL"]
        assert db_url.startswith("postgresql://")
        assert db_url.endswith("/fake_db")
        conn = await asyncpg.connect(db_url)
        assert await conn.fetchval("SELECT current_database()") == "fake_db"
        await conn.close()
        assert env["MPPO_TLS_DIR"] == str(state_dir / "pki")
        operator = TlsMaterial.load(state_dir / "pki", "operator")
        async with grpc.aio.secure_channel(fake_addr, channel_credentials(operator)) as channel:
            resp = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

        st = await asyncio.to_thread(_mppo, "dev", "status", "--state-dir", str(state_dir))
        assert st.returncode == 0
        assert "fake" in st.stdout
        assert "DOWN" not in st.stdout

        again = await asyncio.to_thread(_mppo, "dev", "up", "--detach", *up_args)
        assert again.returncode == 1
        assert "already running" in again.stdout
    finally:
        down = await asyncio.to_thread(_mppo, "dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "leftover" not in down.stdout  # the supervisor stopped its children itself
    for pid in pids:
        assert not pid_alive(pid), pid
    assert not (state_dir / "devstack.json").exists()
    assert not (state_dir / "postgres.location").exists()  # --ephemeral removed the data
    st = await asyncio.to_thread(_mppo, "dev", "status", "--state-dir", str(state_dir))
    assert st.returncode == 3


def test_dev_up_foreground_stops_everything_on_sigint(tmp_path: Path) -> None:
    state_dir, _, up_args = _fake_stack(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mppo.cli", "dev", "up", *up_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **_clean_env()},
    )
    try:
        state_file = state_dir / "devstack.json"

        def running() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dev up exited: {proc.stdout.read() if proc.stdout else ''}")
            return state_file.exists() and json.loads(state_file.read_text())["status"] == "running"

        _wait_for(running, 90, "dev up")
        pids = _all_pids(json.loads(state_file.read_text()))
        assert all(pid_alive(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "MPPO dev stack is up" in out
    assert "stopped" in out
    for pid in pids:
        assert not pid_alive(pid), pid
    assert not state_file.exists()


def test_dev_stack_dies_with_a_sigkilled_supervisor(tmp_path: Path) -> None:
    state_dir, _, up_args = _fake_stack(tmp_path)
    up = _mppo("dev", "up", "--detach", *up_args, env=_clean_env())
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((state_dir / "devstack.json").read_text())
    pids = _all_pids(state)
    try:
        os.kill(int(state["supervisor_pid"]), signal.SIGKILL)
        for pid in pids:
            _wait_for(lambda pid=pid: not pid_alive(pid), 15, f"pid {pid} to go")
    finally:
        down = _mppo("dev", "down", "--purge", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert not (state_dir / "devstack.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a copy nobody can run")
def test_pginstall_is_copied_where_nobody_can_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the venv sat under a folder only root can enter (CI clones into such folders).
    cache_root = Path("/var/tmp") / f"mppo-test-{tmp_path.name}-{os.getpid()}"
    cache_root.mkdir(mode=0o755)
    real_user_can = pg_mod.user_can

    def venv_unreachable(user: str, flag: str, path: Path) -> bool:
        return False if ".venv" in str(path) else real_user_can(user, flag, path)

    monkeypatch.setattr(pg_mod, "user_can", venv_unreachable)
    try:
        bin_dir = pg_mod.pg_bin_dir(cache_root=cache_root)
        assert bin_dir.is_relative_to(cache_root)
        assert pg_mod.pg_bin_dir(cache_root=cache_root) == bin_dir  # copied once
        cache = cache_root / next(iter(os.listdir(cache_root)))
        assert cache.stat().st_uid == 0
        assert not cache.stat().st_mode & 0o022
        # initdb needs the bundled libpq next to the tree ($ORIGIN/../../../*.libs)
        for binary in ("initdb", "postgres", "pg_isready"):
            run = subprocess.run(
                ["runuser", "-u", "nobody", "--", str(bin_dir / binary), "--version"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            assert "18." in run.stdout
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
