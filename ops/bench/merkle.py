"""The Merkle tree store: appends against hashlib alone, and proof latency on a large tree.

    python -m ops.bench.merkle [--leaves 1000000] [--proof-tree 10000000] [--batch 20000]
                               [--proofs 2000] [--async-commit] [--dsn URL]

(a) Appends: ~300-byte pseudo-random entries, `--batch` per transaction as a projection
    commits them, through `MerkleAppender.append` (leaf and node hashes, the PostgreSQL
    writes and the commit). The baseline hashes the same entries with hashlib alone,
    `sha256(b"\\x00" + entry).digest()` in a list comprehension. Baseline and append alternate
    batch by batch, so both see the same machine; the ratio appends/hashlib (target >= 0.5)
    is given over the whole run and as the median of the batches.
    APPENDS USE TWO CORES where the hub does: like the audit projection, the appender gets a
    hash worker per `HUB_MERKLE_HASH_WORKERS` (default 1 with 2+ CPUs; set 0 to measure
    in-process hashing), which hashes the blocks' internal nodes in a second process while
    this one hashes leaves. The baseline uses one core. So the CPU-time ratio is printed
    too, baseline CPU / (this process's + the worker's CPU during the appends, as the worker
    reports it): it moves less than the elapsed times on a shared machine and leaves out the
    waits (PostgreSQL, the commit), and it shows what the second core costs.
(b) Proofs: a tree of `--proof-tree` pseudo-random leaf hashes is bulk-built (block roots
    hashed in every CPU, rows written with COPY), then `--proofs` inclusion proofs at random
    leaves of the full tree are timed one by one over one connection (target p99 <= 5 ms);
    every 50th is verified against the root. Consistency proofs and roots are timed too.

The database is `--dsn`, else `HUB_BENCH_DATABASE_URL`, else the local test server; both
schemas are fresh and dropped at the end. The load average is printed: on a shared machine
the figures move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import secrets
import statistics
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import asyncpg

from hub.settings import Settings
from projections.audit import AuditProjection
from projections.merkle import (
    MerkleAppender,
    MerkleStore,
    create_tables,
    start_hash_worker,
    verify_consistency,
    verify_inclusion,
)
from projections.merkle._edge import BLOCK_BYTES, BLOCK_LEVEL, block_roots
from projections.merkle._hashing import node_hash

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ENTRY_BYTES = 300
BUILD_CHUNK = 1 << 20  # leaves per bulk-build step


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _entries(rng: random.Random, count: int) -> list[bytes]:
    data = rng.randbytes(ENTRY_BYTES * count)
    return [data[i : i + ENTRY_BYTES] for i in range(0, len(data), ENTRY_BYTES)]


async def bench_appends(
    conn: asyncpg.Connection, schema: str, opts: argparse.Namespace
) -> dict[str, Any]:
    await create_tables(conn, schema)
    # Write out what earlier benches left dirty, so a checkpoint does not land on this one.
    await conn.execute("CHECKPOINT")
    if opts.async_commit:
        await conn.execute("SET synchronous_commit = off")
    # The hub's setting, started as the audit projection starts it.
    worker = await start_hash_worker(opts.workers)
    try:
        appender = await MerkleAppender.load(conn, schema, hasher=worker)
        rng = random.Random(6962)
        sha256 = hashlib.sha256
        async with conn.transaction():  # warm-up: statements prepared, worker started
            await appender.append(conn, _entries(rng, opts.batch))
        worker_cpu = 0.0 if worker is None else worker.cpu_time
        hashing = appending = cpu = hashing_cpu = 0.0
        ratios = []
        for number, start in enumerate(range(0, opts.leaves, opts.batch)):
            entries = _entries(rng, min(opts.batch, opts.leaves - start))
            for step in (0, 1) if number % 2 else (1, 0):
                began, began_cpu = time.perf_counter(), time.process_time()
                if step:
                    async with conn.transaction():
                        await appender.append(conn, entries)
                    appended = time.perf_counter() - began
                    cpu += time.process_time() - began_cpu
                else:
                    [sha256(b"\x00" + entry).digest() for entry in entries]
                    hashed = time.perf_counter() - began
                    hashing_cpu += time.process_time() - began_cpu
            hashing, appending = hashing + hashed, appending + appended
            ratios.append(hashed / appended)
        if worker is not None:  # its CPU as of its last answer: all the appends' work
            if not worker.alive:
                raise RuntimeError("the hash worker died: appends fell back to one process")
            worker_cpu = worker.cpu_time - worker_cpu
        stored_root = await MerkleStore(schema).get_root(conn, appender.size)
        if stored_root != appender.root():
            raise RuntimeError("the stored root differs from the appender's")
    finally:
        if worker is not None:
            await worker.close()
    return {
        "append_leaves_per_s": opts.leaves / appending,
        "hashlib_leaves_per_s": opts.leaves / hashing,
        "ratio": hashing / appending,
        "ratio_median_batch": statistics.median(ratios),
        "append_cpu_share": cpu / appending,
        "worker_cpu_share": worker_cpu / appending,
        "ratio_cpu": hashing_cpu / (cpu + worker_cpu),
        "ratio_cpu_this_process": hashing_cpu / cpu,
    }


async def bulk_build(conn: asyncpg.Connection, schema: str, size: int, pool: Executor) -> bytes:
    """Write a tree of `size` pseudo-random leaves with COPY; return its root."""
    rng = random.Random(9162)
    roots: list[bytes] = []
    loop = asyncio.get_running_loop()
    for start in range(0, size, BUILD_CHUNK):
        data = rng.randbytes(32 * min(BUILD_CHUNK, size - start))
        whole = len(data) // BLOCK_BYTES * BLOCK_BYTES
        step = 64 * BLOCK_BYTES
        hashing = [
            loop.run_in_executor(pool, block_roots, data[i : min(i + step, whole)])
            for i in range(0, whole, step)
        ]
        first = start >> BLOCK_LEVEL
        records = [
            (first + n, data[i : i + BLOCK_BYTES])
            for n, i in enumerate(range(0, len(data), BLOCK_BYTES))
        ]
        await conn.copy_records_to_table(
            "merkle_leaf_blocks", schema_name=schema, records=records, columns=["block", "hashes"]
        )
        joined = b"".join(await asyncio.gather(*hashing))
        roots += [joined[i : i + 32] for i in range(0, len(joined), 32)]
    nodes = [(BLOCK_LEVEL, index, value) for index, value in enumerate(roots)]
    level, row = BLOCK_LEVEL, roots
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
        nodes += [(level, index, value) for index, value in enumerate(row)]
    await conn.copy_records_to_table(
        "merkle_nodes", schema_name=schema, records=nodes, columns=["level", "idx", "hash"]
    )
    await conn.execute(f'ANALYZE "{schema}".merkle_leaf_blocks, "{schema}".merkle_nodes')
    return await MerkleStore(schema).get_root(conn, size)


def _quantiles(seconds: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def bench_proofs(
    conn: asyncpg.Connection, schema: str, opts: argparse.Namespace
) -> dict[str, Any]:
    await create_tables(conn, schema)
    size = opts.proof_tree
    began = time.perf_counter()
    with _pool(os.cpu_count() or 1) as pool:
        root = await bulk_build(conn, schema, size, pool)
    built = time.perf_counter() - began
    store = MerkleStore(schema)
    rng = random.Random(6962)
    for _ in range(50):  # warm-up: statements prepared
        await store.inclusion_proof(conn, rng.randrange(size), size)
    inclusion, consistency, roots, floor = [], [], [], []
    for _ in range(opts.proofs):  # the round trip alone, for scale on a busy machine
        started = time.perf_counter()
        await conn.fetchval("SELECT 1")
        floor.append(time.perf_counter() - started)
    for number in range(opts.proofs):
        index = rng.randrange(size)
        started = time.perf_counter()
        path = await store.inclusion_proof(conn, index, size)
        inclusion.append(time.perf_counter() - started)
        if number % 50 == 0:
            [leaf] = await store.leaf_hashes(conn, index, index + 1)
            verify_inclusion(leaf, index, size, path, root)
    for number in range(opts.proofs // 4):
        first = rng.randrange(1, size)
        started = time.perf_counter()
        path = await store.consistency_proof(conn, first, size)
        consistency.append(time.perf_counter() - started)
        started = time.perf_counter()
        first_root = await store.get_root(conn, first)
        roots.append(time.perf_counter() - started)
        if number % 50 == 0:
            verify_consistency(first, size, first_root, root, path)
    figures = {"proof_tree": size, "build_s": built}
    timed = {"inclusion": inclusion, "consistency": consistency, "root": roots, "select1": floor}
    for name, seconds in timed.items():
        figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"] = _quantiles(seconds)
    return figures


def _report(opts: argparse.Namespace, server: str, load: str, figures: dict[str, Any]) -> None:
    commit = "off" if opts.async_commit else "on"
    rows = [
        ("append batches", f"{opts.batch:,} leaves per transaction", ""),
        ("appends", f"{figures['append_leaves_per_s']:,.0f} leaves/s", ""),
        ("hashlib alone", f"{figures['hashlib_leaves_per_s']:,.0f} leaves/s", ""),
        ("ratio appends / hashlib", f"{figures['ratio']:.2f}", ">= 0.50"),
        ("  median of batches", f"{figures['ratio_median_batch']:.2f}", ">= 0.50"),
        ("  appends: busy in this process", f"{figures['append_cpu_share']:.0%} of the time", ""),
        ("  appends: busy in the worker", f"{figures['worker_cpu_share']:.0%} of the time", ""),
        ("  ratio of CPU times, both", f"{figures['ratio_cpu']:.2f}", ""),
        ("  ratio of CPU times, this one", f"{figures['ratio_cpu_this_process']:.2f}", ""),
        ("bulk build", f"{figures['proof_tree']:,} leaves in {figures['build_s']:.1f} s", ""),
        ("inclusion proof p50", f"{figures['inclusion_p50_ms']:.2f} ms", ""),
        ("inclusion proof p99", f"{figures['inclusion_p99_ms']:.2f} ms", "<= 5 ms"),
        ("consistency proof p50 / p99", _ms(figures, "consistency"), ""),
        ("root at a past size p50 / p99", _ms(figures, "root"), ""),
        ("SELECT 1 round trip p50 / p99", _ms(figures, "select1"), ""),
    ]
    workers = f"HUB_MERKLE_HASH_WORKERS={opts.workers}"
    print(f"merkle: {server}; synchronous_commit={commit}; {workers}")
    print(f"load average {load}; {os.cpu_count()} CPUs; {opts.leaves:,} leaves appended")
    for name, value, target in rows:
        print(f"  {name:<31} {value:>38}  {target}")


def _ms(figures: dict[str, Any], name: str) -> str:
    return f"{figures[name + '_p50_ms']:.2f} / {figures[name + '_p99_ms']:.2f} ms"


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(opts.dsn)
    suffix = secrets.token_hex(4)
    schemas = [f"bench_merkle_{suffix}", f"bench_merkle_{suffix}_proofs"]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        server = await conn.fetchval("SELECT split_part(version(), ' ', 2)")
        for schema in schemas:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        figures = await bench_appends(conn, schemas[0], opts)
        figures |= await bench_proofs(conn, schemas[1], opts)
        load += " -> " + " ".join(f"{x:.1f}" for x in os.getloadavg())
        figures |= {"leaves": opts.leaves, "batch": opts.batch, "workers": opts.workers}
        figures["synchronous_commit"] = not opts.async_commit
        _report(opts, f"PostgreSQL {server}", load, figures)
        return figures
    finally:
        await conn.execute("SET synchronous_commit = on")
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.merkle", description=__doc__)
    dsn = os.environ.get("HUB_BENCH_DATABASE_URL", DEFAULT_DSN)
    parser.add_argument("--dsn", default=dsn, help="PostgreSQL URL (default: %(default)s)")
    parser.add_argument("--leaves", type=int, default=1_000_000, help="leaves to append")
    parser.add_argument(
        "--batch",
        type=int,
        default=AuditProjection.batch_size,
        help="leaves per transaction (default: as many as the audit projection commits at most)",
    )
    parser.add_argument("--proof-tree", type=int, default=10_000_000, help="leaves of (b)")
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion proofs to time")
    parser.add_argument(
        "--async-commit", action="store_true", help="synchronous_commit=off for the appends"
    )
    opts = parser.parse_args(args)
    opts.workers = Settings.from_env().merkle_hash_workers  # as the hub runs
    return asyncio.run(run(opts))


if __name__ == "__main__":
    main()
