"""The audit projection: every event of the credit log, in log order, appended to the Merkle
tree (`projections.merkle`), and the mapping from log positions to leaf indexes.

Leaf index = the 0-based ordinal of the event in log order. Positions (notification ids) may
have gaps (a rolled-back insert uses up ids), so the two differ once a gap has occurred. The
mapping is kept as *runs* of consecutive positions, one row per run, in `audit_leaf_runs`:
positions [first_position, first_position + leaves) are leaves [first_leaf, first_leaf +
leaves). A log without gaps is one row. The runs, the tree's rows and the runner's position
commit in one transaction, so they always agree.

`tree size at position p` = the number of events at positions <= p (`leaf_count_at`).

With `hash_workers` (`HUB_MERKLE_HASH_WORKERS`), the tree's internal nodes are hashed in a
worker process (`projections.merkle.HashWorker`), started at the first batch and ended by
`close()`; one that dies is replaced at most once a minute, its batches hashed in-process
meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import cast

import asyncpg
import structlog

from projections._runner import EVENTS_TABLE, Connection
from projections.merkle import (
    HashWorker,
    MerkleAppender,
    StoreError,
    create_tables,
    start_hash_worker,
)
from schemas.audit import entry_bytes
from schemas.log import RawEvent

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS audit_leaf_runs (
    first_position bigint PRIMARY KEY,
    first_leaf bigint NOT NULL UNIQUE,
    leaves bigint NOT NULL CHECK (leaves > 0)
)"""

log = structlog.get_logger(__name__)
RESTART_SECONDS = 60.0
"""Least time between starts of the hash worker."""

_LAST_RUN = (
    "SELECT current_schema(), r.first_position, r.first_leaf, r.leaves FROM (SELECT 1) AS one "
    "LEFT JOIN LATERAL (SELECT * FROM audit_leaf_runs ORDER BY first_position DESC LIMIT 1) r "
    "ON true"
)


def runs_of(positions: Sequence[int]) -> list[tuple[int, int]]:
    """(first position, count) of each run of consecutive positions, in order."""
    runs: list[tuple[int, int]] = []
    for position in positions:
        if runs and runs[-1][0] + runs[-1][1] == position:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return runs


class AuditProjection:
    name = "audit"
    tables = ("audit_leaf_runs", "merkle_leaf_blocks", "merkle_nodes")
    batch_size = 20_000
    """Events per transaction when catching up: the commit, not the hashing, bounds smaller
    batches (ops/bench/audit.py)."""

    def __init__(
        self, on_applied: Callable[[int], None] | None = None, *, hash_workers: int = 0
    ) -> None:
        self._appenders: dict[str, MerkleAppender] = {}
        self.on_applied = on_applied
        """Called with the new tree size after each batch (before its commit)."""
        self.hash_workers = hash_workers
        self._hasher: HashWorker | None = None
        self._hasher_started = float("-inf")

    async def hasher(self) -> HashWorker | None:
        """The hash worker, started (or replaced, if it died) when due; None: hash in-process."""
        if self._hasher is not None and self._hasher.alive:
            return self._hasher
        now = time.monotonic()
        if self.hash_workers <= 0 or now - self._hasher_started < RESTART_SECONDS:
            return None
        if self._hasher is not None:
            log.warning("merkle_hash_worker_restart", pid=self._hasher.pid)
            await self._hasher.close()
        self._hasher_started = now
        self._hasher = await start_hash_worker(self.hash_workers)
        return self._hasher

    async def close(self) -> None:
        """End the hash worker (on hub stop)."""
        if self._hasher is not None:
            await self._hasher.close()
            self._hasher = None

    async def setup(self, conn: Connection) -> None:
        schema = await conn.fetchval("SELECT current_schema()")
        await create_tables(cast("asyncpg.Connection", conn), schema)
        await conn.execute(RUNS_DDL)

    async def reset(self, conn: Connection) -> None:
        await conn.execute("TRUNCATE audit_leaf_runs, merkle_leaf_blocks, merkle_nodes")
        self._appenders.clear()

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        if not events:
            return
        row = await conn.fetchrow(_LAST_RUN)
        assert row is not None  # noqa: S101 - the query always returns one row
        schema, last_position, last_leaf, last_count = row
        next_leaf = 0 if last_leaf is None else last_leaf + last_count
        plain = cast("asyncpg.Connection", conn)
        appender = self._appenders.get(schema)
        if appender is None:
            appender = self._appenders[schema] = await MerkleAppender.load(plain, schema)
        appender.hasher = await self.hasher()
        size = await appender.append(plain, [entry_bytes(e) for e in events])
        if size != next_leaf + len(events):
            raise StoreError(f"the tree has {size} leaves, the position map {next_leaf}")
        runs = runs_of([e.position for e in events])
        if last_position is not None and last_position + last_count == runs[0][0]:
            await conn.execute(
                "UPDATE audit_leaf_runs SET leaves = leaves + $2 WHERE first_position = $1",
                last_position,
                runs[0][1],
            )
            next_leaf += runs[0][1]
            runs = runs[1:]
        firsts: list[int] = []
        for _, count in runs:
            firsts.append(next_leaf)
            next_leaf += count
        if runs:
            await conn.execute(
                "INSERT INTO audit_leaf_runs (first_position, first_leaf, leaves) "
                "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])",
                [p for p, _ in runs],
                firsts,
                [c for _, c in runs],
            )
        if self.on_applied is not None:
            self.on_applied(size)


async def leaf_index_of(conn: Connection, position: int) -> int | None:
    """The leaf index of the event at `position`; None when no event there is in the tree."""
    row = await conn.fetchrow(
        "SELECT first_position, first_leaf, leaves FROM audit_leaf_runs "
        "WHERE first_position <= $1 ORDER BY first_position DESC LIMIT 1",
        position,
    )
    if row is None or position >= row[0] + row[2]:
        return None
    return int(row[1] + position - row[0])


async def leaf_count_at(conn: Connection, position: int) -> int:
    """Tree size at `position`: the number of log events at positions <= `position`.

    Exact even while the audit projection lags: events beyond the tree are counted in the log.
    """
    row = await conn.fetchrow(
        "SELECT first_position, first_leaf, leaves FROM audit_leaf_runs "
        "ORDER BY first_position DESC LIMIT 1"
    )
    if row is None:
        end_position, counted = 0, 0
    else:
        end_position, counted = row[0] + row[2] - 1, row[1] + row[2]
        if position <= end_position:
            inner = await conn.fetchrow(
                "SELECT first_position, first_leaf, leaves FROM audit_leaf_runs "
                "WHERE first_position <= $1 ORDER BY first_position DESC LIMIT 1",
                position,
            )
            if inner is None:
                return 0
            return int(inner[1] + min(inner[2], position - inner[0] + 1))
    beyond = await conn.fetchval(
        f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2",
        end_position,
        position,
    )
    return int(counted + (beyond or 0))


async def tree_position(conn: Connection) -> tuple[int, int]:
    """(tree size, position of its last leaf) as the projection has committed them."""
    row = await conn.fetchrow(
        "SELECT first_position, first_leaf, leaves FROM audit_leaf_runs "
        "ORDER BY first_position DESC LIMIT 1"
    )
    if row is None:
        return 0, 0
    return int(row[1] + row[2]), int(row[0] + row[2] - 1)
