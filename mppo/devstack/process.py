"""Child processes that never outlive us: spawn, readiness, graceful stop, process groups, and
bringing back one that dies.

Every child runs in its own session (so its process group id equals its pid and a whole tree
can be signalled at once) and, on Linux, with ``PR_SET_PDEATHSIG`` so the kernel kills it when
the thread that spawned it dies — even if the supervisor is killed with SIGKILL. Spawn from the
main thread (the parent-death signal is tied to the spawning thread).

:meth:`Supervisor.keep_up` restarts a process that exits on its own, with the same spec (same
command, environment and port), after a back-off that doubles with each recent restart; a
process that died more than ``RestartPolicy.max_restarts`` times within ``window`` seconds is
left down (``failed``). Every restart is logged (the supervisor's log and the process's own)
and reported to a callback. :meth:`Supervisor.restart` is the deliberate kind (``mppo dev
restart``): a graceful stop, then the same spawn and readiness wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "Probe",
    "ProcessExitedError",
    "ProcessSpec",
    "RestartPolicy",
    "StartupError",
    "Supervisor",
    "kill_process_group",
    "pid_alive",
    "process_start_time",
    "spawn",
    "stop_process",
]

_log = logging.getLogger("mppo.devstack")

_PR_SET_PDEATHSIG = 1

Probe = Callable[[int], Awaitable[bool]]
"""A readiness check given the child's pid: True once it serves (may raise: not yet)."""


class StartupError(RuntimeError):
    """A process did not become ready."""


class ProcessExitedError(StartupError):
    """A process exited before it became ready."""

    def __init__(self, name: str, returncode: int, log_tail: str) -> None:
        super().__init__(f"{name} exited with code {returncode} before it was ready:\n{log_tail}")
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and how to tell that it is ready.

    ``env`` is added to the supervisor's environment. ``user`` drops privileges (e.g.
    ``"nobody"``) when running as root. ``stop_signal`` asks for a graceful stop; after
    ``stop_timeout`` seconds the process group gets SIGKILL. ``pdeath_signal`` is what the child
    receives if the supervisor dies (``None`` disables it).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    readiness: Probe | None = None
    ready_timeout: float = 30.0
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    pdeath_signal: int | None = signal.SIGKILL


def _set_pdeathsig(sig: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:  # pragma: no cover
            os._exit(126)
        # The parent may already be gone (race between fork and prctl).
        if os.getppid() == 1:  # pragma: no cover
            os.kill(os.getpid(), sig)

    return preexec


def spawn(spec: ProcessSpec, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``spec`` in a new session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    preexec = (
        _set_pdeathsig(spec.pdeath_signal)
        if spec.pdeath_signal is not None and sys.platform == "linux"
        else None
    )
    user_kwargs: dict[str, object] = {}
    if spec.user is not None and os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(spec.user)
        user_kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
        log.flush()
        # preexec_fn runs after the uid change, so the parent-death signal survives it.
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            list(spec.argv),
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
            **user_kwargs,
        )


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a running (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, not ours
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def process_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (guards against pid reuse), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal every process of group ``pgid``; a missing group is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Stop a child started by :func:`spawn` and its whole process group; returns its code."""
    pgid = proc.pid
    if proc.poll() is None:
        kill_process_group(pgid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("pid %d ignored signal %d for %.1fs; killing it", pgid, sig, timeout)
            kill_process_group(pgid, signal.SIGKILL)
            proc.wait()
    # Whatever is left in the group (grandchildren) goes too.
    kill_process_group(pgid, signal.SIGKILL)
    return proc.returncode


def _append_log(path: Path, line: str) -> None:
    with contextlib.suppress(OSError), open(path, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class RestartPolicy:
    """How the supervisor brings back a process that exits on its own.

    The n-th restart within ``window`` seconds waits ``backoff * 2**(n-1)`` seconds (at most
    ``max_backoff``); an exit beyond ``max_restarts`` within the window leaves it down.
    """

    max_restarts: int = 5
    window: float = 120.0
    backoff: float = 0.5
    max_backoff: float = 15.0

    def delay(self, recent: int) -> float:
        """The pause before restart number ``recent`` (1 = the first within the window)."""
        return float(min(self.backoff * 2 ** max(recent - 1, 0), self.max_backoff))


#: a process's state as the supervisor sees it (recorded in devstack.json)
RUNNING, RESTARTING, FAILED, STOPPING = "running", "restarting", "failed", "stopping"


@dataclass
class ManagedProcess:
    """A child the supervisor started (``popen`` is replaced when it is restarted)."""

    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    state: str = RUNNING
    #: restarts so far (after a crash or asked for)
    restarts: int = 0
    #: the exit code of the last unexpected exit
    last_exit: int | None = None
    #: monotonic times of the recent unexpected exits (the restart policy's window)
    exits: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    async def stop(self) -> int:
        pgid = self.pid
        if self.popen.poll() is None:
            kill_process_group(pgid, self.spec.stop_signal)
            deadline = time.monotonic() + self.spec.stop_timeout
            while self.popen.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return await asyncio.to_thread(stop_process, self.popen, signal.SIGKILL, 5.0)


Listener = Callable[[ManagedProcess, str], None]
"""Told about every restart: the process and one line saying what happened."""


def _announce(proc: ManagedProcess, level: int, message: str, listener: Listener | None) -> None:
    """What the supervisor did to `proc`: in our log at `level`, in the process's own log,
    and to `listener`."""
    _log.log(level, "%s", message)
    _append_log(proc.log_path, f"supervisor: {message}")
    if listener is not None:
        listener(proc, message)


class Supervisor:
    """Starts processes one by one, waits for each to be ready, keeps them up
    (:meth:`keep_up`), stops them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[ManagedProcess] = []
        self._closing = False
        self._restarting: dict[str, asyncio.Task[None]] = {}

    @property
    def processes(self) -> list[ManagedProcess]:
        return list(self._procs)

    async def start(self, spec: ProcessSpec) -> ManagedProcess:
        """Spawn ``spec`` and wait until its readiness probe passes.

        Raises :class:`ProcessExitedError` if it exits first and :class:`StartupError` on
        timeout; the process is stopped in both cases.
        """
        log_path = self.log_dir / f"{spec.name}.log"
        proc = ManagedProcess(spec, spawn(spec, log_path), log_path)
        _log.info("started %s (pid %d)", spec.name, proc.pid)
        try:
            await self._wait_ready(proc)
        except BaseException:
            await proc.stop()
            raise
        self._procs.append(proc)
        return proc

    async def _wait_ready(self, proc: ManagedProcess) -> None:
        probe = proc.spec.readiness
        deadline = time.monotonic() + proc.spec.ready_timeout
        delay = 0.02
        while True:
            code = proc.returncode
            if code is not None:
                raise ProcessExitedError(proc.name, code, proc.log_tail())
            if probe is None:
                return
            try:
                ok = await asyncio.wait_for(probe(proc.pid), timeout=5.0)
            except Exception as exc:  # probes use various client libraries
                _log.debug("probe of %s failed: %r", proc.name, exc)
                ok = False
            if ok:
                if proc.returncode is not None:  # answered by someone else on that port
                    raise ProcessExitedError(proc.name, proc.popen.returncode, proc.log_tail())
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{proc.name} not ready after {proc.spec.ready_timeout:.0f}s:\n"
                    f"{proc.log_tail()}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    async def wait_any_exit(self) -> ManagedProcess:
        """Return the first supervised process that exits (runs until one does)."""
        while True:
            for proc in self._procs:
                if proc.returncode is not None:
                    return proc
            await asyncio.sleep(0.2)

    def find(self, name: str) -> ManagedProcess:
        """The supervised process called ``name`` (KeyError if there is none)."""
        for proc in self._procs:
            if proc.name == name:
                return proc
        raise KeyError(name)

    async def keep_up(
        self,
        policy: RestartPolicy,
        listener: Listener | None = None,
        *,
        interval: float = 0.2,
    ) -> None:
        """Restart every process that exits on its own, per ``policy``; runs until cancelled."""
        try:
            while not self._closing:
                for proc in list(self._procs):
                    if proc.state != RUNNING or proc.returncode is None:
                        continue
                    self._exited(proc, policy, listener)
                await asyncio.sleep(interval)
        finally:
            for task in list(self._restarting.values()):
                task.cancel()
            await asyncio.gather(*self._restarting.values(), return_exceptions=True)

    def _exited(
        self, proc: ManagedProcess, policy: RestartPolicy, listener: Listener | None
    ) -> None:
        now = time.monotonic()
        code = proc.returncode
        proc.last_exit = code
        proc.exits = [t for t in proc.exits if now - t <= policy.window]
        proc.exits.append(now)
        # whatever it left in its process group goes with it
        kill_process_group(proc.pid, signal.SIGKILL)
        if len(proc.exits) > policy.max_restarts:
            proc.state = FAILED
            message = (
                f"{proc.name} (pid {proc.pid}) exited with code {code}; it died "
                f"{len(proc.exits)} times within {policy.window:.0f}s: left down "
                f"(log: {proc.log_path})"
            )
            _announce(proc, logging.ERROR, message, listener)
            return
        delay = policy.delay(len(proc.exits))
        proc.state = RESTARTING
        message = (
            f"{proc.name} (pid {proc.pid}) exited with code {code}; restart "
            f"{len(proc.exits)}/{policy.max_restarts} within {policy.window:.0f}s "
            f"in {delay:.1f}s"
        )
        _announce(proc, logging.WARNING, message, listener)
        self._restarting[proc.name] = asyncio.ensure_future(
            self._respawn_after(proc, delay, listener)
        )

    async def _respawn_after(
        self, proc: ManagedProcess, delay: float, listener: Listener | None
    ) -> None:
        try:
            await asyncio.sleep(delay)
            if self._closing or proc.state != RESTARTING:
                return
            ready = await self._respawn(proc)
            if listener is not None:
                what = "is back" if ready else "did not come back (see its log)"
                listener(proc, f"{proc.name} {what} (pid {proc.pid})")
        finally:
            self._restarting.pop(proc.name, None)

    async def _respawn(self, proc: ManagedProcess) -> bool:
        """Spawn ``proc`` again and wait for it; False (and stopped, so that the next exit
        counts) when it does not become ready."""
        proc.popen = spawn(proc.spec, proc.log_path)
        proc.restarts += 1
        proc.state = RUNNING
        _log.info("restarted %s (pid %d)", proc.name, proc.pid)
        try:
            await self._wait_ready(proc)
        except StartupError as exc:
            _log.warning("%s restarted but not ready: %s", proc.name, str(exc).splitlines()[0])
            if proc.returncode is None:
                await asyncio.to_thread(stop_process, proc.popen, signal.SIGKILL, 5.0)
            return False
        return True

    async def restart(self, name: str) -> ManagedProcess:
        """Stop ``name`` gracefully and start it again with the same spec; returns once it is
        ready (StartupError if it does not become ready: the keeper then treats it as a crash)."""
        proc = self.find(name)
        pending = self._restarting.pop(name, None)
        if pending is not None:
            pending.cancel()
        proc.state = STOPPING
        proc.exits.clear()  # a deliberate restart starts a new crash window
        code = await proc.stop()
        _append_log(proc.log_path, f"supervisor: restart asked for; stopped with code {code}")
        if not await self._respawn(proc):
            raise StartupError(f"{name} did not become ready after the restart:\n{proc.log_tail()}")
        return proc

    async def stop(self, proc: ManagedProcess) -> int:
        proc.state = STOPPING
        pending = self._restarting.pop(proc.name, None)
        if pending is not None:
            pending.cancel()
        code = await proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)
        _log.info("stopped %s (pid %d, code %s)", proc.name, proc.pid, code)
        return code

    async def stop_all(self) -> None:
        """Stop every process, last started first (nothing is restarted from now on)."""
        self._closing = True
        while self._procs:
            await self.stop(self._procs[-1])

    def kill_all_now(self) -> None:
        """Synchronous last resort (e.g. from atexit): SIGKILL every process group."""
        for proc in self._procs:
            kill_process_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.popen.wait(2.0)
        self._procs.clear()
