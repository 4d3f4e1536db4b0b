"""Load generators for `ops.bench.checks`: `wrk` with a Lua request mix, or a lean client of
raw keep-alive HTTP/1.1 connections on asyncio streams when `wrk` is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
local bodies = {%(bodies)s}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(key)s"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "%(path)s", headers, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""
_RESULT = re.compile(rb"BENCH (\d+) (\d+) (\d+) (\d+) (\d+)")


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float | None = None
    """CPU seconds (user + system) the server process used in the measured interval."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per answered request: steadier than rates on a shared machine."""
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s / self.requests * 1e6

    def as_dict(self) -> dict[str, Any]:
        cpu = self.cpu_us_per_request
        return {
            "per_second": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "server_cpu_us_per_request": None if cpu is None else round(cpu, 1),
        }


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of process `pid` (all its threads), None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: write a request, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        return cls(reader, writer)

    async def request(self, method: str, path: str, key: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        lines = await self.reader.readuntil(b"\r\n\r\n")
        status = int(lines[9:12])
        length = 0
        for line in lines.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def wrk_load(
    port: int,
    path: str,
    key: str,
    bodies: list[bytes],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    pid: int | None = None,
) -> LoadResult:
    lua = ", ".join("[==[" + b.decode() + "]==]" for b in bodies)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "checks.lua"
        script.write_text(WRK_SCRIPT % {"bodies": lua, "key": key, "path": path})

        def wrk(duration: float) -> bytes:
            return subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{clients}",
                    f"-d{max(1, round(duration))}s",
                    "--timeout",
                    "10s",
                    "-s",
                    str(script),
                    f"http://127.0.0.1:{port}",
                ],
                check=True,
                capture_output=True,
            ).stdout

        if warmup > 0:
            wrk(warmup)
        cpu_before = process_cpu(pid)
        out = wrk(seconds)
        cpu_after = process_cpu(pid)
    found = _RESULT.search(out)
    if found is None:
        raise RuntimeError(f"wrk printed no result: {out.decode(errors='replace')}")
    requests, micros, p50, p99, errors = (int(g) for g in found.groups())
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return LoadResult("wrk", requests, micros / 1e6, p50 / 1000, p99 / 1000, errors, cpu)


async def python_load(
    port: int,
    path: str,
    key: str,
    bodies: list[bytes],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    pid: int | None = None,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds
    latencies: list[float] = []
    errors = [0]

    cpu: list[float | None] = [None, None]

    async def mark() -> None:
        await asyncio.sleep(max(0.0, start - loop.time()))
        cpu[0] = process_cpu(pid)
        await asyncio.sleep(max(0.0, end - loop.time()))
        cpu[1] = process_cpu(pid)

    async def worker(n: int) -> None:
        conn = await HttpConnection.open(port)
        i = n
        try:
            while (began := loop.time()) < end:
                status, _ = await conn.request("POST", path, key, bodies[i % len(bodies)])
                i += 1
                if began >= start:
                    latencies.append(loop.time() - began)
                    if status != 200:
                        errors[0] += 1
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    await asyncio.gather(mark(), *(worker(n) for n in range(clients)))
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    used = None if cpu[0] is None or cpu[1] is None else cpu[1] - cpu[0]
    return LoadResult("python", len(ordered), seconds, pct(0.5), pct(0.99), errors[0], used)
