"""Checks, in one run: the HTTP check path against a bare ASGI endpoint, batches, the time from
a 2xx listing to a check that reflects it, and the memory of the check index.

    python -m ops.bench.checks [--dsn URL] [--seconds 5] [--clients 64] [--listings 1000000]

Both servers run as `hub serve` runs (uvicorn, uvloop, its httptools protocol
`hub.serving.OneWrite`, one worker): the hub in a fresh schema, and beside it a bare ASGI app
that reads the body and returns a fixed JSON answer of the same size. The load is the same
request mix for both (a tenth of the subjects listed), from `wrk` when it is installed, else
from a lean client of raw keep-alive asyncio connections. Both servers stay up; the HTTP case
runs in `--rounds` rounds per side, alternating (bare, checks, checks, bare, ...), after the
hub's projections have applied the listings the bench wrote, and reports each side's medians
(a shared machine's load drifts within a run) beside every round's figures and the hub's
usage-log commits in its rounds.
Targets: check requests/s at least 0.6 of the bare endpoint's with p99 at most 1.5 times its
p99; 200,000 batch checks/s, each batch of 10,000 distinct subjects (a tenth drawn from the
listed population, the rest unlisted and never repeated); p99 at most 50 ms from a 2xx
listing to a check that reflects it; at most 200 bytes of index per active listing at
1,000,000 listings.
Without `--dsn` (or HUB_BENCH_DATABASE_URL) an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ops.bench._checks_load import HttpConnection, LoadResult, python_load, wrk_load
from ops.embedded import EmbeddedPostgres, free_port
from projections.checkindex import EFFECTIVE, CheckIndex, flags, subject_key
from schemas.identifiers import make_uscc

ADMIN_KEY = "hub_admin_" + secrets.token_urlsafe(16)
MATTERS = ("government_procurement", "bidding", "administrative_licensing", "state_funding")
BATCH_ITEMS = 10_000
BARE_BODY = msgspec.json.encode(
    {
        "check_id": "0195f3c2-5a4e-7d1c-9b7e-3f2a1c0d9e8f",
        "decision": "clear",
        "hits": [],
        "position": 123456,
        "catalogue_version": 18,
        "checked_at": "2025-03-03T02:00:00Z",
    }
)


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: read the request, answer a fixed JSON body."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BARE_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BARE_BODY})


# -- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(argv: list[str], env: dict[str, str], port: int, workdir: Path) -> Iterator[int]:
    with (workdir / f"server-{port}.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        _wait_ready(port, process, workdir / f"server-{port}.log")
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError):
            import http.client  # noqa: PLC0415 - only here

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status in (200, 404, 405):
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not get ready:\n{log.read_text(errors='replace')[-2000:]}")


def hub_server(dsn: str, schema: str, workdir: Path) -> tuple[int, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {
        "HUB_DATABASE_URL": dsn,
        "HUB_DATABASE_SCHEMA": schema,
        "HUB_ADMIN_KEY": ADMIN_KEY,
        "HUB_LOG_LEVEL": "warning",
    }
    argv = [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)]
    return port, _server(argv, env, port, workdir)


def bare_server(workdir: Path) -> tuple[int, Any]:
    port = free_port()
    code = (  # the protocol `hub serve` runs (`hub.serving.OneWrite`): the same server
        "import uvicorn; from hub.serving import OneWrite; "
        "uvicorn.run('ops.bench.checks:bare_app', host='127.0.0.1', "
        f"port={port}, loop='uvloop', http=OneWrite, log_level='warning', access_log=False)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return port, _server([sys.executable, "-c", code], env, port, workdir)


# -- the hub's data --------------------------------------------------------------------------


async def _call(port: int, method: str, path: str, key: str, body: Any) -> tuple[int, Any]:
    conn = await HttpConnection.open(port)
    try:
        status, answer = await conn.request(method, path, key, msgspec.json.encode(body))
    finally:
        conn.close()
    return status, msgspec.json.decode(answer) if answer else None


def listing(subject: str, n: int) -> dict[str, Any]:
    return {
        "subject": {"id": subject, "name": "Bench Co."},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": f"BENCH-{n}", "legal_basis": "税收征收管理法", "facts": "bench"},
        "region": "320100",
        "effective_from": "2025-01-01T00:00:00+08:00",
        "effective_until": "2027-01-01T00:00:00+08:00",
    }


async def prepare(port: int, subjects: list[str]) -> str:
    """Register the bench agency and list `subjects` (over 32 connections); its key."""
    agency = {
        "code": "320000-bench",
        "name": "bench",
        "scopes": ["publish", "check"],
        "domains": ["taxation"],
    }
    status, answer = await _call(port, "POST", "/v1/agencies", ADMIN_KEY, agency)
    if status != 201:
        raise RuntimeError(f"creating the agency answered {status}: {answer}")
    key: str = answer["api_key"]
    pending = iter(enumerate(subjects))

    async def lister() -> None:
        conn = await HttpConnection.open(port)
        try:
            for n, subject in pending:
                body = msgspec.json.encode(listing(subject, n))
                status, answer = await conn.request("POST", "/v1/listings", key, body)
                if status != 201:
                    raise RuntimeError(f"listing answered {status}: {answer[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(lister() for _ in range(32)))
    return key


def check_bodies(subjects: list[str]) -> list[bytes]:
    return [
        msgspec.json.encode({"subject_id": s, "matter": MATTERS[i % len(MATTERS)], "purpose": "b"})
        for i, s in enumerate(subjects)
    ]


# -- the cases -------------------------------------------------------------------------------


async def http_case(
    port: int,
    key: str,
    bodies: list[bytes],
    args: argparse.Namespace,
    pid: int | None = None,
    *,
    warmup: float | None = None,
) -> LoadResult:
    warmup = args.warmup if warmup is None else warmup
    if args.load == "wrk" or (args.load == "auto" and shutil.which("wrk")):
        return await asyncio.to_thread(
            wrk_load,
            port,
            "/v1/checks",
            key,
            bodies,
            clients=args.clients,
            seconds=args.seconds,
            warmup=warmup,
            pid=pid,
        )
    return await python_load(
        port,
        "/v1/checks",
        key,
        bodies,
        clients=args.clients,
        seconds=args.seconds,
        warmup=warmup,
        pid=pid,
    )


async def settle(port: int, within: float = 120.0) -> None:
    """Wait until the hub's projections have applied the listings `prepare` wrote (their
    positions in `/metrics` equal and unchanged over two seconds), so that their catch-up,
    which the bare server has no counterpart of, does not run inside the measured HTTP rounds.
    (Lag gauges are not waited on: they are refreshed only now and then.)"""
    deadline = time.monotonic() + within
    seen: list[list[tuple[bytes, bytes]]] = []
    while time.monotonic() < deadline:
        positions = _POSITION.findall(await _metrics(port))
        seen = [*seen[-1:], positions]
        equal = positions and len({n for _, n in positions}) == 1
        if equal and len(seen) == 2 and seen[0] == positions:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the hub's projections did not settle within {within:.0f} s: {seen}")


async def _metrics(port: int) -> bytes:
    conn = await HttpConnection.open(port)
    try:
        _, text = await conn.request("GET", "/metrics", "none", b"")
    finally:
        conn.close()
    return text


_POSITION = re.compile(rb"^hub_projection_position(\{[^}]*\}) (\S+)$", re.MULTILINE)
_COMMIT_BUCKET = re.compile(
    rb'^hub_usage_log_commit_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.MULTILINE
)
_RECORDS = re.compile(rb"^hub_usage_log_batch_records_(sum|count) (\S+)$", re.MULTILINE)


async def usage_log_state(port: int) -> dict[str, float]:
    """The hub's usage-log commit histogram from `/metrics`: commits by upper bound, records."""
    text = await _metrics(port)
    state = {f"le {le.decode()}": float(n) for le, n in _COMMIT_BUCKET.findall(text)}
    state |= {f"records {k.decode()}": float(n) for k, n in _RECORDS.findall(text)}
    return state


def commit_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Usage-log commits between two `usage_log_state`s: how many, records per commit, and
    how many took over 5 ms and over 25 ms (their commits are where a check's tail waits)."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    commits = delta.get("records count", 0.0)
    return {
        "commits": commits,
        "records_per_commit": delta.get("records sum", 0.0) / commits if commits else 0.0,
        "over_5ms": commits - delta.get("le 0.005", commits),
        "over_25ms": commits - delta.get("le 0.025", commits),
    }


def median_result(results: list[LoadResult]) -> LoadResult:
    """One side's rounds as one result: the median of each figure (the requests and seconds
    of the median-rate round), steadier on a shared machine than any single round."""
    by_rate = sorted(results, key=lambda r: r.rate)
    middle = by_rate[(len(by_rate) - 1) // 2] if len(by_rate) % 2 else None
    cpus = [r.cpu_us_per_request for r in results]
    cpu = None if None in cpus else statistics.median(c for c in cpus if c is not None)
    if middle is None:  # an even number of rounds: the two middle ones averaged
        low, high = by_rate[len(by_rate) // 2 - 1], by_rate[len(by_rate) // 2]
        requests, seconds = low.requests + high.requests, low.seconds + high.seconds
    else:
        requests, seconds = middle.requests, middle.seconds
    return LoadResult(
        results[0].tool,
        requests,
        seconds,
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        None if cpu is None else cpu * requests / 1e6,
    )


def batch_bodies(listed: list[str], rounds: int, hit_rate: float) -> list[bytes]:
    """`rounds` bodies of 10,000 distinct subjects each: a share `hit_rate` drawn from the
    listed population (distinct within the body), the rest fresh unlisted ids never repeated,
    so no body repeats a subject and no two bodies are alike."""
    rng = random.Random(7)
    hits = min(len(listed), round(BATCH_ITEMS * hit_rate))
    bodies = []
    for _ in range(rounds):
        subjects = rng.sample(listed, hits) + [
            "uscc:" + make_uscc(rng) for _ in range(BATCH_ITEMS - hits)
        ]
        rng.shuffle(subjects)
        items = [
            {"subject_id": s, "matter": MATTERS[i % len(MATTERS)], "purpose": "b"}
            for i, s in enumerate(subjects)
        ]
        bodies.append(msgspec.json.encode({"items": items}))
    return bodies


async def batch_case(port: int, key: str, bodies: list[bytes]) -> float:
    """Batch checks/s over 2 connections, each body sent once after one warm-up batch."""
    conns = [await HttpConnection.open(port) for _ in range(2)]

    async def drive(conn: HttpConnection, mine: list[bytes]) -> None:
        for body in mine:
            status, answer = await conn.request("POST", "/v1/checks/batch", key, body)
            if status != 200:
                raise RuntimeError(f"batch answered {status}: {answer[:300]!r}")

    await drive(conns[0], bodies[:1])  # warm up
    timed = bodies[1:]
    started = time.perf_counter()
    await asyncio.gather(drive(conns[0], timed[0::2]), drive(conns[1], timed[1::2]))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return BATCH_ITEMS * len(timed) / elapsed


async def visibility_case(port: int, key: str, samples: int) -> tuple[list[float], list[float]]:
    """(ms from a 2xx listing until a check reflects it, ms of one plain check)."""
    rng = random.Random(99)
    conn = await HttpConnection.open(port)
    seen, plain = [], []
    try:
        for n in range(samples):
            subject = "uscc:" + make_uscc(rng)
            check = msgspec.json.encode(
                {"subject_id": subject, "matter": "bidding", "purpose": "b"}
            )
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/v1/checks", key, check)
            plain.append((time.perf_counter() - started) * 1000)
            body = msgspec.json.encode(listing(subject, 1_000_000 + n))
            status, answer = await conn.request("POST", "/v1/listings", key, body)
            if status != 201:
                raise RuntimeError(f"listing answered {status}: {answer[:300]!r}")
            listed = time.perf_counter()
            while True:
                status, answer = await conn.request("POST", "/v1/checks", key, check)
                if status == 200 and b'"deny"' in answer:
                    break
                if time.perf_counter() - listed > 5:
                    raise RuntimeError("a listing did not reach the checks within 5 s")
            seen.append((time.perf_counter() - listed) * 1000)
    finally:
        conn.close()
    return seen, plain


def memory_case(n: int) -> tuple[float, float]:
    """(bytes of index per listing, seconds to add them) at `n` listings."""
    rng = random.Random(5)
    subjects = ["uscc:" + make_uscc(rng) for _ in range(n)]
    ids = [rng.randbytes(16) for _ in range(n)]
    bits = flags("blacklist", "severe", "intentional", EFFECTIVE)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = CheckIndex()
        started = time.perf_counter()
        for i in range(n):
            region = f"32{i % 1300:04d}"
            record = index.pack(
                ids[i],
                start=1_735_660_800,
                end=1_798_732_800,
                notice=0,
                domain="taxation",
                region=region,
                flags=bits,
            )
            index.add(subject_key(subjects[i]), record)
        elapsed = time.perf_counter() - started
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return used / n, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the run ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(dsn: str | None) -> AsyncIterator[str]:
    if dsn:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, EmbeddedPostgres(Path(tmp)) as pg:
        yield pg.url


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1)
    subjects = ["uscc:" + make_uscc(rng) for _ in range(args.subjects)]
    bodies = check_bodies(subjects)
    # listed: a tenth of the HTTP mix, then more for the batches to draw their hits from
    listed = subjects[: args.subjects // 10] + [
        "uscc:" + make_uscc(rng) for _ in range(args.batch_listed)
    ]
    batches = batch_bodies(listed, args.batches + 1, args.batch_hit_rate)
    result: dict[str, Any] = {}
    async with database(args.dsn) as dsn:
        schema = f"bench_checks_{secrets.token_hex(4)}"
        with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
            workdir = Path(tmp)
            bare_port, bare = bare_server(workdir)
            port, hub = hub_server(dsn, schema, workdir)
            try:
                with bare as bare_pid, hub as hub_pid:
                    key = await prepare(port, listed)
                    await settle(port)
                    bare_rounds, check_rounds, commits = [], [], []
                    # rounds alternate bare, checks, checks, bare, ...: both sides meet the
                    # same drift of a shared machine; each side warms up in its first round
                    for n in range(args.rounds):
                        for side in ("bare", "checks") if n % 2 == 0 else ("checks", "bare"):
                            warmup = args.warmup if n == 0 else 0.0
                            if side == "bare":
                                bare_rounds.append(
                                    await http_case(
                                        bare_port, "none", bodies, args, bare_pid, warmup=warmup
                                    )
                                )
                                continue
                            before = await usage_log_state(port)
                            check_rounds.append(
                                await http_case(port, key, bodies, args, hub_pid, warmup=warmup)
                            )
                            commits.append(commit_figures(before, await usage_log_state(port)))
                    bare_batch = await batch_case(bare_port, "none", batches)
                    batch = await batch_case(port, key, batches)
                    seen, plain = await visibility_case(port, key, args.samples)
            finally:
                admin = await asyncpg.connect(dsn)
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await admin.close()
    per_listing, build = memory_case(args.listings)
    base, checks = median_result(bare_rounds), median_result(check_rounds)
    result["http"] = {
        "rounds": [
            {"bare": b.as_dict(), "checks": c.as_dict(), "usage_log": u}
            for b, c, u in zip(bare_rounds, check_rounds, commits, strict=True)
        ],
        "bare": base.as_dict(),
        "checks": checks.as_dict(),
        "ratio": round(checks.rate / base.rate, 3),
        "p99_ratio": round(checks.p99_ms / base.p99_ms, 3),
        "cpu_ratio": (
            None
            if checks.cpu_us_per_request is None or base.cpu_us_per_request is None
            else round(checks.cpu_us_per_request / base.cpu_us_per_request, 3)
        ),
        "load": base.tool,
    }
    result["batch"] = {
        "checks_per_second": round(batch),
        "bare_items_per_second": round(bare_batch),
        "ratio": round(batch / bare_batch, 3),
        "body_bytes": len(batches[0]),
        "distinct_subjects_per_batch": BATCH_ITEMS,
        "hit_rate": args.batch_hit_rate,
    }
    result["visibility_ms"] = {
        "p50": round(percentile(seen, 0.5), 2),
        "p99": round(percentile(seen, 0.99), 2),
        "plain_check_p50": round(percentile(plain, 0.5), 2),
    }
    result["index"] = {
        "listings": args.listings,
        "bytes_per_listing": round(per_listing, 1),
        "adds_per_second": round(args.listings / build),
    }
    report(result)
    return result


def _maybe(value: float | None, spec: str = ",.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def report(r: dict[str, Any]) -> None:
    http, batch, seen, index = r["http"], r["batch"], r["visibility_ms"], r["index"]
    rows = [
        ("bare ASGI requests/s", f"{http['bare']['per_second']:,.0f}", ""),
        ("check requests/s", f"{http['checks']['per_second']:,.0f}", ""),
        ("  checks / bare", f"{http['ratio']:.2f}", ">= 0.6"),
        ("bare p99 ms", f"{http['bare']['p99_ms']:.2f}", ""),
        ("check p99 ms", f"{http['checks']['p99_ms']:.2f}", ""),
        ("  check p99 / bare p99", f"{http['p99_ratio']:.2f}", "<= 1.5"),
        ("bare server CPU us/request", _maybe(http["bare"]["server_cpu_us_per_request"]), ""),
        ("check server CPU us/request", _maybe(http["checks"]["server_cpu_us_per_request"]), ""),
        ("  check CPU / bare CPU", _maybe(http["cpu_ratio"], ".2f"), ""),
        ("batch checks/s", f"{batch['checks_per_second']:,}", ">= 200,000"),
        ("  batch / bare transport of the body", f"{batch['ratio']:.2f}", ""),
        ("2xx listing -> check reflects it, p50 ms", f"{seen['p50']:.2f}", ""),
        ("2xx listing -> check reflects it, p99 ms", f"{seen['p99']:.2f}", "<= 50"),
        ("  one plain check, p50 ms", f"{seen['plain_check_p50']:.2f}", ""),
        (
            f"index bytes per listing at {index['listings']:,}",
            f"{index['bytes_per_listing']:.1f}",
            "<= 200",
        ),
    ]
    print(f"load generator: {http['load']}; HTTP rounds (bare and checks alternating):")
    for n, one in enumerate(http["rounds"]):
        bare, checks, usage = one["bare"], one["checks"], one["usage_log"]
        print(
            f"  round {n}: bare {bare['per_second']:,.0f}/s p99 {bare['p99_ms']:.2f} ms"
            f" cpu {_maybe(bare['server_cpu_us_per_request'])} us; checks"
            f" {checks['per_second']:,.0f}/s p99 {checks['p99_ms']:.2f} ms"
            f" cpu {_maybe(checks['server_cpu_us_per_request'])} us;"
            f" usage-log commits {usage['commits']:,.0f} of {usage['records_per_commit']:.1f}"
            f" records, {usage['over_5ms']:.0f} over 5 ms, {usage['over_25ms']:.0f} over 25 ms"
        )
    print("HTTP figures below: the median of the rounds, per side")
    print(f"{'figure':44} {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:44} {value:>12}  {target}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.checks", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("HUB_BENCH_DATABASE_URL"))
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per HTTP round"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="HTTP rounds per side, alternating (medians kept)"
    )
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--subjects", type=int, default=200, help="subjects checked (a tenth listed)"
    )
    parser.add_argument("--batches", type=int, default=20, help="batches of 10,000 to time")
    parser.add_argument(
        "--batch-listed", type=int, default=2_000, help="listed subjects batches draw hits from"
    )
    parser.add_argument(
        "--batch-hit-rate", type=float, default=0.1, help="share of batch items that are listed"
    )
    parser.add_argument("--samples", type=int, default=200, help="listings timed until visible")
    parser.add_argument("--listings", type=int, default=1_000_000, help="index size for memory")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

__all__ = ["bare_app", "main"]
