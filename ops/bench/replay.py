"""Replay throughput of the listings read model against reading the same notifications raw.

    .venv/bin/python -m ops.bench.replay [EVENTS] [--batch-size N] [--memory-rows N] [--workers N]
                                         [--schema NAME]

Fills a fresh schema's `credit_events` (created by `CreditApplication`) with EVENTS events
(default 1,000,000) by bulk COPY of msgpack states built with `schemas.codec.encode_state`:
80 % registrations, 12 % amendments, 8 % delistings of earlier listings. Then, in one run:

- `raw`: asyncpg SELECTs of the notifications in batches of N, decoding nothing;
- `runner`: `ProjectionRunner.catch_up` from position 0, the read model's indexes in place
  (the live path, in batches of N);
- `hub replay`: what `hub replay listings` does once it holds the lock
  (`hub.cli_replay.rebuild`): the bulk rebuild into a fresh table, its indexes built at the
  end and the table swapped in, in `--workers` processes with at most `--memory-rows` events
  of changes in memory each (the command's defaults unless given). Its result is checked against the
  runner's (digests).

Reports events per second and each replay's ratio to `raw` (target: at least 0.5).
`--schema NAME` keeps the events, and the runner's digest, in schema NAME for the next run
with the same option: that run neither generates the events nor runs the runner again (it
checks the bulk rebuild against the stored digest), and reports `raw` and `hub replay`. The
database is `HUB_BENCH_DATABASE_URL` or `HUB_TEST_DATABASE_URL` when set, else an embedded
PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from hub.bootstrap import eventsourcing_env
from hub.cli_replay import Bulk, rebuild
from hub.credit.application import EVENTS_TABLE, CreditApplication
from hub.scheduler import ExpiryJob, TakeEffectJob
from ops.embedded import EmbeddedPostgres
from projections import Connection, ProjectionRunner
from projections.listings import ListingsProjection
from projections.listings_bulk import MEMORY_ROWS, default_workers
from projections.replay import projection_digest
from schemas.codec import encode_state

TOPIC = "hub.credit.domainmodel:Listing."
CHUNK = 50_000
START = datetime(2025, 3, 1, tzinfo=UTC)


def _events(n: int, seed: int = 3) -> Iterator[tuple[uuid.UUID, int, str, bytes]]:
    """(originator id, version, topic, state) rows in log order."""
    rng = random.Random(seed)
    open_ids: list[uuid.UUID] = []
    versions: dict[uuid.UUID, int] = {}
    for i in range(n):
        at = START + timedelta(seconds=i)
        roll = rng.random()
        if roll < 0.80 or len(open_ids) < 100:
            listing_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            open_ids.append(listing_id)
            versions[listing_id] = 1
            state: dict[str, Any] = {
                "timestamp": at,
                "originator_topic": "hub.credit.domainmodel:Listing",
                "subject_id": f"uscc:9132{i:012d}XY",
                "subject_name": f"企业{i}有限公司",
                "list": "blacklist" if i % 5 else "redlist",
                "domain": "taxation",
                "severity": "severe" if i % 5 else None,
                "intent": "intentional" if i % 5 else None,
                "decision_no": f"苏税罚(2025){i}号",
                "legal_basis": "《税收征收管理法》第六十三条",
                "facts": "虚开增值税专用发票 偷逃税款",
                "region": "320100",
                "authority": "320000-tax",
                "effective_from": at,
                "effective_until": at + timedelta(days=365),
                "notice_until": None,
                "digest": f"{i:064x}",
                "origin_hub": None,
                "origin_position": None,
            }
            yield listing_id, 1, TOPIC + "Registered", encode_state(state)
            continue
        index = rng.randrange(len(open_ids))
        listing_id = open_ids[index]
        versions[listing_id] += 1
        if roll < 0.92:
            state = {
                "timestamp": at,
                "changes": {"subject_name": f"更名{i}有限公司", "effective_until": at},
                "note": "更正",
                "applies_from": at,
            }
            yield listing_id, versions[listing_id], TOPIC + "Amended", encode_state(state)
        else:
            open_ids[index] = open_ids[-1]
            open_ids.pop()
            state = {"timestamp": at, "reason": "corrected", "note": "纠错", "effective_at": at}
            yield listing_id, versions[listing_id], TOPIC + "Delisted", encode_state(state)


async def _fill(conn: Connection, n: int) -> None:
    rows = _events(n)
    columns = ("originator_id", "originator_version", "topic", "state")
    while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
        await conn.copy_records_to_table(EVENTS_TABLE, records=chunk, columns=columns)


async def _raw(pool: asyncpg.Pool, batch: int) -> int:
    after, count = 0, 0
    async with pool.acquire() as conn:
        while rows := await conn.fetch(
            f"SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2 "
            f"ORDER BY notification_id LIMIT $3",
            after,
            2**62,
            batch,
        ):
            after = rows[-1][0]
            count += len(rows)
    return count


async def _runner(pool: asyncpg.Pool, batch: int) -> int:
    runner = ProjectionRunner(pool, ListingsProjection(), batch_size=batch)
    await runner.setup()
    async with pool.acquire() as conn:
        await ExpiryJob().setup(conn)
        await TakeEffectJob().setup(conn)
    await runner.reset()
    return await runner.catch_up()


async def _hub_replay(
    pool: asyncpg.Pool, batch: int, bulk: Bulk, timings: dict[str, float] | None = None
) -> int:
    applied, _ = await rebuild(
        pool, ListingsProjection(), batch_size=batch, bulk=bulk, timings=timings
    )
    return applied


async def _digest(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn, conn.transaction():
        return await projection_digest(conn, ListingsProjection())


async def _timed(label: str, results: dict[str, Any], coro: Any) -> None:
    started = time.perf_counter()
    count = await coro
    seconds = time.perf_counter() - started
    results[label] = {"events": count, "seconds": round(seconds, 2), "per_second": count / seconds}


_REFERENCE = "bench_replay_reference"
"""In a kept schema (`--schema`): the events generated and the runner's digest of them."""


async def _prepare(pool: asyncpg.Pool, n: int, batch: int, results: dict[str, Any]) -> str:
    """Generate `n` events, replay them with the runner (timed into `results`); its digest.
    In a kept schema that holds them already: the stored digest."""
    async with pool.acquire() as conn:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_REFERENCE} (events bigint PRIMARY KEY, digest text)"
        )
        stored = await conn.fetchval(f"SELECT digest FROM {_REFERENCE} WHERE events = $1", n)
        if stored is not None:
            print(f"reusing {n:,} events and the runner's digest")
            return str(stored)
        await conn.execute(f"TRUNCATE {_REFERENCE}, {EVENTS_TABLE}")
        started = time.perf_counter()
        await _fill(conn, n)
        await conn.execute(f"VACUUM ANALYZE {EVENTS_TABLE}")
    print(f"generated {n:,} events in {time.perf_counter() - started:.1f} s")
    await _timed("runner", results, _runner(pool, batch))
    digest = await _digest(pool)
    async with pool.acquire() as conn:
        await conn.execute(f"INSERT INTO {_REFERENCE} VALUES ($1, $2)", n, digest)
    return digest


async def run(
    url: str,
    n: int,
    batch: int,
    memory_rows: int = MEMORY_ROWS,
    workers: int = 1,
    *,
    keep: str | None = None,
) -> dict[str, Any]:
    schema = keep or f"bench_replay_{uuid.uuid4().hex[:8]}"
    bulk = Bulk(url, workers, memory_rows)
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    try:
        app = await asyncio.to_thread(CreditApplication, eventsourcing_env(url, schema))
        app.close()
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=3, server_settings={"search_path": schema}
        )
        try:
            results: dict[str, Any] = {}
            by_runner = await _prepare(pool, n, batch, results)
            await _raw(pool, batch)  # warm the cache
            await _timed("raw", results, _raw(pool, batch))
            steps: dict[str, float] = {}
            await _timed("hub replay", results, _hub_replay(pool, batch, bulk, steps))
            if await _digest(pool) != by_runner:
                raise AssertionError("the bulk rebuild differs from the runner's read model")
            await _timed("raw (again)", results, _raw(pool, batch))
        finally:
            await pool.close()
    finally:
        if keep is None:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    raw = max(results["raw"]["per_second"], results["raw (again)"]["per_second"])
    print(
        f"\nreplay of {n:,} events, batches of {batch:,}; bulk rebuild in {workers} "
        f"process(es), at most {memory_rows:,} change events in memory each "
        "(target: replay >= 0.5 x raw)"
    )
    print(f"{'path':14} {'seconds':>9} {'events/s':>12} {'x raw':>7}")
    for label, row in results.items():
        row["ratio"] = round(row["per_second"] / raw, 3)
        print(f"{label:14} {row['seconds']:9.2f} {row['per_second']:12,.0f} {row['ratio']:7.3f}")
    results["hub replay"]["steps"] = {k: round(v, 2) for k, v in steps.items()}
    print("hub replay steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--memory-rows", type=int, default=MEMORY_ROWS)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--schema", help="keep the events in this schema and reuse them")
    args = parser.parse_args(argv)
    url = os.environ.get("HUB_BENCH_DATABASE_URL") or os.environ.get("HUB_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if not url:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = stack.enter_context(EmbeddedPostgres(Path(tmp))).url
        return asyncio.run(
            run(url, args.events, args.batch_size, args.memory_rows, args.workers, keep=args.schema)
        )


if __name__ == "__main__":
    main()
