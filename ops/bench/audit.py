"""The audit tree: append throughput against hashlib, and inclusion-proof latency at scale.

    .venv/bin/python -m ops.bench.audit [--events N] [--leaves L] [--proofs K]

In one run, on the same synthetic events (msgpack states of about 500 bytes, as listings
store them):

- `hashlib`: SHA-256 leaf hashes of the prebuilt entries, nothing else (the baseline);
- `appender`: `MerkleAppender.append` of the same entries (leaf and node hashes, the
  PostgreSQL writes and commits), 2,000 per transaction (the runner's batch) and 20,000;
- `projection`: `AuditProjection.apply` on the raw events as `read_events` returns them, as
  the runner calls it: building each entry (`schemas.audit.entry_bytes`) is included;

then builds a tree of L leaves (default 10,000,000, pseudo-random leaf hashes) and times K
inclusion proofs at random leaves against its full size (`MerkleStore.inclusion_proof`, one
round trip each), verifying some against the root. Targets: appends at least 0.5 of hashlib,
proof p99 at most 5 ms. The database is `HUB_BENCH_DATABASE_URL` or `HUB_TEST_DATABASE_URL`
when set, else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from ops.embedded import EmbeddedPostgres
from projections import EVENTS_TABLE, read_events
from projections.audit import AuditProjection
from projections.merkle import MerkleAppender, MerkleStore, create_tables, verify_inclusion
from schemas.audit import entry_bytes
from schemas.codec import encode_state
from schemas.log import RawEvent

TOPIC = "hub.credit.domainmodel:Listing.Registered"
BATCHES = (2000, 20_000)
BUILD_BATCH = 1 << 16


def synthetic_events(n: int, seed: int = 6) -> list[RawEvent]:
    rng = random.Random(seed)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    events = []
    for i in range(n):
        state = encode_state(
            {
                "timestamp": start + timedelta(seconds=i),
                "subject_id": f"uscc:91350100M{rng.randrange(10**8):08d}",
                "subject_name": "南京某某贸易有限公司",
                "list": "blacklist",
                "domain": "taxation",
                "severity": "severe",
                "intent": "intentional",
                "decision_no": f"苏税罚〔2025〕{i}号",  # noqa: RUF001
                "legal_basis": "税收征收管理法 第六十三条",
                "facts": "虚开增值税专用发票，情节严重" * 3,  # noqa: RUF001
                "region": "320100",
                "authority": "320000-tax",
                "effective_from": start,
                "effective_until": start + timedelta(days=365),
                "notice_until": None,
                "digest": rng.randbytes(32).hex(),
                "originator_topic": "hub.credit.domainmodel:Listing",
            }
        )
        events.append(RawEvent(i + 1, uuid.UUID(int=rng.getrandbits(128)), 1, TOPIC, state))
    return events


@contextlib.asynccontextmanager
async def scratch(url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    schema = f"bench_audit_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        yield conn, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def best_rate(n: int, run: Callable[[], object], repeat: int = 3) -> float:
    best = min(_timed(run) for _ in range(repeat))
    return n / best


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


async def as_read(url: str, events: list[RawEvent]) -> list[RawEvent]:
    """The events as the runner gets them: stored, then read back by `read_events`."""
    async with scratch(url) as (conn, _):
        await conn.execute(
            f"CREATE TABLE {EVENTS_TABLE} (notification_id bigint PRIMARY KEY, originator_id "
            "uuid, originator_version integer, topic text, state bytea)"
        )
        await conn.copy_records_to_table(
            EVENTS_TABLE,
            records=[(e.position, e.originator_id, e.version, e.topic, e.state) for e in events],
        )
        return await read_events(conn, 0, len(events))


async def appends(url: str, n: int) -> dict[str, float]:
    events = await as_read(url, synthetic_events(n))
    entries = [entry_bytes(e) for e in events]
    sha256 = hashlib.sha256
    rates = {"hashlib": best_rate(n, lambda: [sha256(b"\x00" + e).digest() for e in entries])}
    for batch in BATCHES:
        async with scratch(url) as (conn, schema):
            await create_tables(conn, schema)
            appender = await MerkleAppender.load(conn, schema)
            started = time.perf_counter()
            for i in range(0, n, batch):
                async with conn.transaction():
                    await appender.append(conn, entries[i : i + batch])
            rates[f"appender {batch}/txn"] = n / (time.perf_counter() - started)
        async with scratch(url) as (conn, _):
            projection = AuditProjection()
            await projection.setup(conn)
            started = time.perf_counter()
            for i in range(0, n, batch):
                async with conn.transaction():
                    await projection.apply(conn, events[i : i + batch])
            rates[f"projection {batch}/txn"] = n / (time.perf_counter() - started)
    return rates


async def proofs(url: str, leaves: int, count: int) -> dict[str, float]:
    async with scratch(url) as (conn, schema):
        await create_tables(conn, schema)
        appender = await MerkleAppender.load(conn, schema)
        started = time.perf_counter()
        seed = os.urandom(16)
        for first in range(0, leaves, BUILD_BATCH):
            batch = [
                hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
                for i in range(first, min(leaves, first + BUILD_BATCH))
            ]
            async with conn.transaction():
                await appender.append_leaf_hashes(conn, batch)
        built = time.perf_counter() - started
        store = MerkleStore(schema)
        root = await store.get_root(conn, leaves)
        assert root == appender.root()  # noqa: S101 - the bench checks what it measures
        rng = random.Random(9)
        timings = []
        for n in range(count):
            index = rng.randrange(leaves)
            started = time.perf_counter()
            path = await store.inclusion_proof(conn, index, leaves)
            timings.append(time.perf_counter() - started)
            if n % 50 == 0:
                [leaf] = await store.leaf_hashes(conn, index, index + 1)
                verify_inclusion(leaf, index, leaves, path, root)
    timings.sort()
    return {
        "build_seconds": built,
        "build_leaves_per_second": leaves / built,
        "p50_ms": statistics.median(timings) * 1000,
        "p99_ms": timings[int(len(timings) * 0.99) - 1] * 1000,
        "max_ms": timings[-1] * 1000,
    }


async def run(url: str, events: int, leaves: int, count: int) -> dict[str, Any]:
    rates = await appends(url, events)
    latency = await proofs(url, leaves, count)
    return {"events": events, "leaves": leaves, "proofs": count, **rates, **latency}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--leaves", type=int, default=10_000_000)
    parser.add_argument("--proofs", type=int, default=2000)
    args = parser.parse_args(argv)
    url = os.environ.get("HUB_BENCH_DATABASE_URL") or os.environ.get("HUB_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if not url:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = stack.enter_context(EmbeddedPostgres(Path(tmp))).url
        result = asyncio.run(run(url, args.events, args.leaves, args.proofs))
    base = result["hashlib"]
    print(f"{'':24}{'per second':>14}{'vs hashlib':>12}")
    names = ["hashlib"] + [
        f"{kind} {b}/txn" for kind in ("appender", "projection") for b in BATCHES
    ]
    for name in names:
        print(f"{name:24}{result[name]:>14,.0f}{result[name] / base:>12.2f}")
        result[f"{name} ratio"] = result[name] / base
    print(
        f"\ntree of {result['leaves']:,} leaves built in {result['build_seconds']:.1f} s "
        f"({result['build_leaves_per_second']:,.0f} leaves/s)\n"
        f"inclusion proof over {result['proofs']:,} random leaves: p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms"
    )
    return result


if __name__ == "__main__":
    main()
