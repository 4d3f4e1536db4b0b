"""`POST /v1/listings` against raw single-row INSERTs into the same PostgreSQL, in one run.

    python -m ops.bench.listings [--dsn URL] [--seconds 5] [--clients 1,32]

The API runs as users run it (`hub serve`: uvicorn with uvloop and httptools, one worker,
settings from the environment) in a fresh schema, in two roles, each its own case:

- `api`: everything in one process, as `make up` runs it: the API beside the projections,
  the check index and its follower, the scheduler and the webhook worker, all sharing the
  machine's two cores with the database and the load;
- `writer`: a publishing node, as the hub scales out (README, "Scaling"): the same API with
  `HUB_RUN_PROJECTIONS`, `HUB_RUN_CHECKS`, `HUB_RUN_SCHEDULER` and `HUB_RUN_WEBHOOKS` off,
  the read models kept by a `hub project` process elsewhere (not run here). This is the
  write path alone, which is what the raw inserts measure.

The load comes from a lean client, a pool
of raw HTTP/1.1 keep-alive connections on asyncio streams, whose own CPU use is reported so
that a saturated client is not mistaken for a slow hub. The baseline is asyncpg inserting one
row per transaction into a table shaped like the events table (uuid, bigint, text, ~300-byte
bytea, bigserial; the same keys), with the same concurrency. The ratio api/raw is the figure:
the target with 32 clients is at least 1.0, which only grouping concurrent commands into one
transaction can reach. Both schemas are dropped at the end. `--roles` picks the roles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ops.embedded import free_port
from schemas.identifiers import make_uscc

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "hub_admin_" + secrets.token_urlsafe(16)
TOPIC = "hub.credit.domainmodel:Listing.Registered"
RAW_DDL = """
CREATE TABLE {schema}.events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
);
CREATE UNIQUE INDEX ON {schema}.events (notification_id ASC);
"""
ROLES: dict[str, dict[str, str]] = {
    "api": {},
    "writer": {
        "HUB_RUN_PROJECTIONS": "false",
        "HUB_RUN_CHECKS": "false",
        "HUB_RUN_SCHEDULER": "false",
        "HUB_RUN_WEBHOOKS": "false",
    },
}
"""The hub's settings per case (beside `--hub-env`): all in one process, a publishing node."""
Call = Callable[[int], Awaitable[None]]
"""One request of a worker, given its sequence number."""
Opener = Callable[[int], AsyncGenerator[Call, None]]
"""Opens worker `n`'s connection and yields its call; closes it when the generator closes."""
LISTING = {
    "subject": {"id": "uscc:@SUBJECT@", "name": "Acme Trading Co."},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {"decision_no": "@@", "legal_basis": "税收征收管理法 第六十三条", "facts": "虚开发票"},
    "region": "320100",
}


def _listing_template() -> bytes:
    """The body, with the decision number to fill in; in force from now for 11 months (so
    that nothing the bench writes is due for the hub's own jobs, such as expiry)."""
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(days=330)
    return msgspec.json.encode(LISTING | {"effective_from": now, "effective_until": until})


@dataclass
class Case:
    name: str
    clients: int
    done: int
    seconds: float
    latencies: list[float]
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    batch: float | None = None
    """Mean commands per transaction of the hub's group committer (from /metrics)."""

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: write a request, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (`--workers`), from /proc (0
    where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(_cpu_seconds(int(child)) for child in children)


async def _drive(
    name: str,
    clients: int,
    *,
    seconds: float,
    warmup: float,
    open_worker: Opener,
    server_pid: int | None,
) -> Case:
    """Run `clients` workers for warmup + seconds; count what completes in the measured part."""
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds
    latencies: list[float] = []
    counted = [0]
    marks: dict[str, float] = {}

    async def worker(n: int) -> None:
        async with contextlib.aclosing(open_worker(n)) as opened:
            call = await anext(opened)
            i = 0
            while (now := loop.time()) < end:
                await call(i)
                i += 1
                finished = loop.time()
                if now >= start:
                    latencies.append(finished - now)
                    counted[0] += 1

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - loop.time()))
        marks["cpu"], marks["server"] = time.process_time(), _server_cpu()
        await asyncio.sleep(max(0.0, end - loop.time()))
        marks["cpu"] = time.process_time() - marks["cpu"]
        marks["server"] = _server_cpu() - marks["server"]

    def _server_cpu() -> float:
        return _cpu_seconds(server_pid) if server_pid else 0.0

    await asyncio.gather(meter(), *(worker(n) for n in range(clients)))
    cpu, server = marks["cpu"] / seconds, marks["server"] / seconds
    return Case(name, clients, counted[0], seconds, latencies, cpu, server)


# -- the API ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_hub(
    dsn: str, schema: str, extra_env: dict[str, str], workers: int = 1
) -> AsyncIterator[tuple[int, int]]:
    """`hub serve` in a subprocess on a free port; yields (port, pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {
        "HUB_DATABASE_URL": dsn,
        "HUB_DATABASE_SCHEMA": schema,
        "HUB_ADMIN_KEY": ADMIN_KEY,
        "HUB_LOG_LEVEL": "warning",
    }
    env |= extra_env
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as workdir:
        log_path = Path(workdir) / "hub.log"
        process = _spawn(
            port, env, Path(workdir), quiet=env["HUB_LOG_LEVEL"] == "info", workers=workers
        )
        try:
            await _wait_ready(port, process, log_path)
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _spawn(
    port: int, env: dict[str, str], workdir: Path, *, quiet: bool, workers: int = 1
) -> subprocess.Popen[bytes]:
    """Start `hub serve`; its output goes to `workdir/hub.log` (stdout dropped when `quiet`)."""
    command = [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with (workdir / "hub.log").open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL if quiet else log,
            stderr=log,
        )


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


async def _wait_ready(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hub serve exited:\n{_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
            conn = await HttpConnection.open(port)
            try:
                status, _ = await conn.request(b"GET /readyz HTTP/1.1\r\nHost: bench\r\n")
            finally:
                conn.close()
            if status == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"hub serve did not get ready:\n{_tail(log_path)}")


async def _commit_batches(port: int) -> tuple[float, float]:
    """(commands, transactions) the hub's committer has saved, from its /metrics."""
    conn = await HttpConnection.open(port)
    try:
        _, text = await conn.request(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
    finally:
        conn.close()
    found = {"sum": 0.0, "count": 0.0}
    for line in text.decode().splitlines():
        for kind in found:
            if line.startswith(f"hub_commit_batch_size_{kind} "):
                found[kind] = float(line.split()[1])
    return found["sum"], found["count"]


async def _agency_key(port: int) -> str:
    conn = await HttpConnection.open(port)
    try:
        body = msgspec.json.encode(
            {"code": "320000-tax", "name": "bench", "scopes": ["publish"], "domains": ["taxation"]}
        )
        head = (
            b"POST /v1/agencies HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
        )
        status, answer = await conn.request(head, body)
    finally:
        conn.close()
    if status != 201:
        raise RuntimeError(f"creating the bench agency answered {status}: {answer!r}")
    key: str = msgspec.json.decode(answer)["api_key"]
    return key


def api_worker(port: int, key: str, label: str) -> Opener:
    head = (
        b"POST /v1/listings HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
    )
    template = _listing_template()
    rng = random.Random(label)
    # distinct subjects, as in life: a few listings each, not thousands on one subject
    subjects = [make_uscc(rng).encode() for _ in range(4096)]

    async def open_worker(n: int) -> AsyncGenerator[Call, None]:
        conn = await HttpConnection.open(port)

        async def call(i: int) -> None:
            body = template.replace(b'"@@"', b'"%s-%d-%d"' % (label.encode(), n, i)).replace(
                b"@SUBJECT@", subjects[(n * 7919 + i) % len(subjects)]
            )
            status, answer = await conn.request(head, body)
            if status != 201:
                raise RuntimeError(f"POST /v1/listings answered {status}: {answer[:300]!r}")

        try:
            yield call
        finally:
            conn.close()

    return open_worker


# -- the baseline ----------------------------------------------------------------------------


def raw_worker(pool: asyncpg.Pool, schema: str) -> Opener:
    sql = (
        f'INSERT INTO "{schema}".events (originator_id, originator_version, topic, state) '
        "VALUES ($1, 1, $2, $3)"
    )
    state = secrets.token_bytes(300)

    async def open_worker(_: int) -> AsyncGenerator[Call, None]:
        async with pool.acquire() as conn:

            async def call(_: int) -> None:
                await conn.execute(sql, uuid.uuid4(), TOPIC, state)  # one row, one commit

            yield call

    return open_worker


# -- the run ---------------------------------------------------------------------------------


async def run(
    dsn: str,
    seconds: float,
    warmup: float,
    levels: list[int],
    hub_env: dict[str, str],
    *,
    workers: int = 1,
    roles: tuple[str, ...] = tuple(ROLES),
) -> dict[str, Any]:
    """Each role's case at each level, each followed at once by raw inserts at that level:
    the ratio compares two measurements taken side by side, on a machine whose speed drifts."""
    tag = secrets.token_hex(4)
    raw_schema = f"bench_raw_{tag}"
    schemas = [raw_schema]
    admin = await asyncpg.connect(dsn)
    pairs: list[tuple[Case, Case]] = []
    try:
        await admin.execute(f'CREATE SCHEMA "{raw_schema}"')
        await admin.execute(RAW_DDL.format(schema=f'"{raw_schema}"'))
        for role in roles:
            api_schema = f"bench_{role}_{tag}"
            schemas.append(api_schema)
            async with serve_hub(dsn, api_schema, ROLES[role] | hub_env, workers) as (port, pid):
                key = await _agency_key(port)
                for clients in levels:
                    api = await _drive_api(
                        role, port, pid, key, clients=clients, seconds=seconds, warmup=warmup
                    )
                    async with asyncpg.create_pool(dsn, min_size=clients, max_size=clients) as pool:
                        raw = await _drive(
                            "raw",
                            clients,
                            seconds=seconds,
                            warmup=warmup,
                            open_worker=raw_worker(pool, raw_schema),
                            server_pid=None,
                        )
                    pairs.append((api, raw))
    finally:
        for schema in schemas:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    return report(pairs)


async def _drive_api(
    role: str, port: int, pid: int, key: str, *, clients: int, seconds: float, warmup: float
) -> Case:
    worker = api_worker(port, key, f"{role}{clients}")
    commands, batches = await _commit_batches(port)
    case = await _drive(
        role,
        clients,
        seconds=seconds,
        warmup=warmup,
        open_worker=worker,
        server_pid=pid,
    )
    commands_after, batches_after = await _commit_batches(port)
    if batches_after > batches:
        case.batch = (commands_after - commands) / (batches_after - batches)
    return case


def _row(case: Case) -> dict[str, Any]:
    return {
        "per_second": round(case.rate, 1),
        "p50_ms": round(case.percentile(0.5), 3),
        "p99_ms": round(case.percentile(0.99), 3),
        "median_ms": round(statistics.median(case.latencies) * 1000, 3) if case.latencies else None,
        "client_cpu": round(case.client_cpu, 3),
        "server_cpu": round(case.server_cpu, 3),
        "commit_batch": None if case.batch is None else round(case.batch, 1),
    }


def report(pairs: list[tuple[Case, Case]]) -> dict[str, Any]:
    """Print and return each (role's case, raw case beside it) and their ratio."""
    print(
        f"{'case':6} {'clients':>7} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'client cpu':>10} {'server cpu':>10} {'batch':>6}"
    )
    result: dict[str, Any] = {}
    for api, raw in pairs:
        for case in (api, raw):
            print(
                f"{case.name:6} {case.clients:7d} {case.rate:9.0f} {case.percentile(0.5):8.2f} "
                f"{case.percentile(0.99):8.2f} {case.client_cpu:10.0%} "
                + (f"{case.server_cpu:10.0%}" if case is api else f"{'':>10}")
                + (f" {case.batch:6.1f}" if case.batch is not None else "")
            )
        result[f"{api.name}_{api.clients}"] = _row(api)
        result[f"raw_beside_{api.name}_{api.clients}"] = _row(raw)
    for api, raw in pairs:
        if raw.rate:
            ratio = api.rate / raw.rate
            result[f"ratio_{api.name}_{api.clients}"] = round(ratio, 3)
            target = "  (target >= 1.0)" if api.clients >= 32 else ""
            print(f"{api.name}/raw with {api.clients} clients: {ratio:.2f}{target}")
    return result


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.listings", description=__doc__)
    parser.add_argument(
        "--dsn", default=os.environ.get("HUB_BENCH_DATABASE_URL", DEFAULT_DSN), help="PostgreSQL"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrency levels")
    parser.add_argument(
        "--hub-env",
        action="append",
        default=[],
        metavar="HUB_X=VALUE",
        help="a setting for the hub (default HUB_LOG_LEVEL=warning; info logs each request)",
    )
    parser.add_argument(
        "--roles",
        default=",".join(ROLES),
        help=f"comma-separated hub roles to measure, of: {', '.join(ROLES)}",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`hub serve --workers N` (the batch column then shows one worker's batches)",
    )
    opts = parser.parse_args(args)
    levels = [int(c) for c in opts.clients.split(",") if c.strip()]
    hub_env = dict(item.split("=", 1) for item in opts.hub_env)
    roles = tuple(r.strip() for r in opts.roles.split(",") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        parser.error(f"no role {', '.join(unknown)}; there are: {', '.join(ROLES)}")
    return asyncio.run(
        run(
            opts.dsn,
            opts.seconds,
            opts.warmup,
            levels,
            hub_env,
            workers=opts.workers,
            roles=roles,
        )
    )


if __name__ == "__main__":
    main()
