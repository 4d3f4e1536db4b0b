"""Replaying a projection from position 0, and proving that a live read model equals a replay.

`table_digest` is an order-independent digest of a table's rows, computed inside PostgreSQL:
each row's canonical text (`ROW(columns sorted by name)::text` with the time zone and date
style fixed) is hashed with SHA-256, and the four 64-bit words of the hashes are summed
modulo 2**64, with the row count. Equal multisets of rows give equal digests, whatever the
physical order; nothing but four sums leaves the server.

`snapshot` reads a live projection's position and the digest of its tables in one
REPEATABLE READ transaction: the runner commits rows and position together, so the pair is
consistent while the runner keeps going. `replay_digest` rebuilds the projection from
position 0 up to that position in a scratch schema (whose search path falls back to the live
schema for the events table) and digests the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

import asyncpg

from projections._runner import EVENTS_TABLE, Connection, Projection, ProjectionRunner


async def lock_key(conn: Connection, name: str) -> int:
    """The advisory lock a projection's runner holds in the connection's schema (as
    `ProjectionRunner.run` takes it: advisory locks are per database, not per schema)."""
    schema = await conn.fetchval("SELECT current_schema()")
    return zlib.crc32(f"projection:{schema}:{name}".encode())


WORD = 2**64


def tables_of(projection: Projection) -> tuple[str, ...]:
    """The tables a projection owns: its `tables` attribute, else one named after it."""
    tables: tuple[str, ...] = getattr(projection, "tables", (projection.name,))
    return tables


class UndeclaredTables(LookupError):
    """A projection's read model is not where `tables_of` looks: declare `tables`."""


async def _columns(conn: Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = $1::regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attname",
        table,
    )
    return [r[0] for r in rows]


async def table_digest(conn: Connection, table: str) -> str:
    """`<rows>:<hex>`: an order-independent digest of the table's rows, computed in SQL.

    Run it inside a transaction: it sets the time zone and date style for that transaction."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    if not exists:
        raise UndeclaredTables(
            f"no table {table!r}: a projection whose tables are not named after it "
            "declares them in a `tables` attribute"
        )
    columns = await _columns(conn, table)
    row = ", ".join(f'"{c}"' for c in columns)
    words = ", ".join(
        f"sum(('x' || encode(substr(h, {8 * i + 1}, 8), 'hex'))::bit(64)::bigint::numeric)"
        for i in range(4)
    )
    await conn.execute("SET LOCAL TimeZone = 'UTC'")
    await conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    await conn.execute("SET LOCAL extra_float_digits = 3")
    record = await conn.fetchrow(
        f"SELECT count(*), {words} FROM "
        f"(SELECT sha256(convert_to(ROW({row})::text, 'UTF8')) AS h FROM {table}) AS rows"
    )
    assert record is not None  # noqa: S101 - an aggregate always returns a row
    count = int(record[0])
    parts = b"".join((int(record[i] or 0) % WORD).to_bytes(8, "big") for i in range(1, 5))
    return f"{count}:{hashlib.sha256(parts).hexdigest()[:32]}"


async def projection_digest(conn: Connection, projection: Projection) -> str:
    """The digest of all a projection's tables (one per table, joined)."""
    return " ".join([await table_digest(conn, t) for t in tables_of(projection)])


async def snapshot(conn: Connection, projection: Projection) -> tuple[int, str]:
    """(position, digest) of a live projection, consistent with each other."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        value = await conn.fetchval(
            "SELECT position FROM projection_positions WHERE name = $1", projection.name
        )
        return int(value or 0), await projection_digest(conn, projection)


@asynccontextmanager
async def scratch_pool(url: str, live_schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose tables go to a new scratch schema, dropped afterwards; the live schema
    stays on the search path, so the events table is read from there."""
    scratch = f"replay_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{scratch}"')
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=2,
            server_settings={"search_path": f'"{scratch}", "{live_schema}"'},
        )
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')
        await conn.close()


async def replay_digest(
    url: str,
    live_schema: str,
    projection: Projection,
    upto: int,
    *,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Rebuild `projection` from position 0 up to `upto` in a scratch schema; its digest."""
    async with scratch_pool(url, live_schema) as pool:
        runner = ProjectionRunner(pool, projection, batch_size=batch_size)
        await runner.setup()
        await runner.catch_up(upto=upto, progress=progress)
        async with pool.acquire() as conn, conn.transaction():
            return await projection_digest(conn, projection)


async def drop_secondary_indexes(conn: Connection, tables: Sequence[str]) -> list[str]:
    """Drop the indexes of `tables` that back no constraint; returns their definitions, so
    that a bulk replay can recreate them once at the end (`restore_indexes`)."""
    rows = await conn.fetch(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid IN (SELECT unnest($1::text[])::regclass) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        list(tables),
    )
    for name, _ in rows:
        await conn.execute(f"DROP INDEX IF EXISTS {name}")
    return [definition for _, definition in rows]


async def restore_indexes(conn: Connection, definitions: Sequence[str]) -> None:
    for definition in definitions:
        await conn.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))


# Bulk rebuilds (`projections.listings_bulk`) read the log in one scan per pass, in chunks, one
# chunk ahead, and load a fresh table without indexes that replaces the live one at the end.

_SCAN = (
    f"SELECT notification_id, originator_id, topic, state FROM {EVENTS_TABLE} "
    "WHERE notification_id <= $1 AND topic = ANY($2::text[]) "
    "AND (get_byte(uuid_send(originator_id), 14) * 256 "
    "+ get_byte(uuid_send(originator_id), 15)) % $3 = $4"
)
"""No order: a sequential scan of the table is the cheapest way through the log, and the
heap holds the events in about the order of their positions."""

PARTS = 65536
"""Partitions of aggregates go by the last two bytes of their id (`id_hash`): at most this
many."""


def id_hash(aggregate_id: bytes) -> int:
    """The number `log_scan` partitions an aggregate by: its id's (16 bytes) last two."""
    return int.from_bytes(aggregate_id[14:], "big")


async def log_scan(
    conn: Connection,
    upto: int,
    topics: Sequence[str],
    chunk: int,
    partition: tuple[int, int] = (0, 1),
) -> AsyncIterator[tuple[int, list[asyncpg.Record]]]:
    """(position reached, about, records) chunks of (position, originator id, topic, state)
    of `topics` up to `upto`, in no particular order (about the log's), at most `chunk` at a
    time, from one scan of the events table in a read-only transaction on `conn`; the next
    chunk is requested before this one is handed over, so PostgreSQL reads it while the
    caller folds. `partition` (k, n): only the aggregates whose `id_hash` is k modulo n (an
    aggregate's events are all in one)."""
    k, n = partition
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # the whole result is wanted (not a fast start), from the table's first page on
        await conn.execute("SET LOCAL cursor_tuple_fraction = 1")
        await conn.execute("SET LOCAL synchronize_seqscans = off")
        cursor = await conn.cursor(_SCAN, upto, list(topics), n, k)
        pending: asyncio.Future[list[asyncpg.Record]] | None = None
        reached = 0
        try:
            pending = asyncio.ensure_future(cursor.fetch(chunk))
            while rows := await pending:
                pending = asyncio.ensure_future(cursor.fetch(chunk))
                reached = max(reached, rows[-1][0])
                yield reached, rows
            pending = None
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                    await pending


_DEPENDENTS = """
SELECT DISTINCT coalesce(v.oid::regclass::text, c.conrelid::regclass::text) AS name
FROM pg_depend d
LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
LEFT JOIN pg_class v ON v.oid = r.ev_class
LEFT JOIN pg_constraint c ON d.classid = 'pg_constraint'::regclass AND c.oid = d.objid
WHERE d.refobjid = $1::regclass AND d.deptype = 'n'
  AND (v.oid IS NOT NULL AND v.oid <> $1::regclass
       OR c.contype = 'f' AND c.conrelid <> $1::regclass)
"""
"""Views and other tables' foreign keys that depend on a table (its own rules and keys
aside)."""


async def fresh_table(conn: Connection, table: str) -> str:
    """An empty copy of `table` (columns and defaults; no index, no constraint but NOT NULL),
    to bulk load; `swap_in` replaces `table` with it. A copy left by a failed rebuild is
    dropped first (the caller holds the projection's lock)."""
    fresh = f"{table}__rebuild"
    dependents = await conn.fetch(_DEPENDENTS, table)
    if dependents:  # DROP TABLE in swap_in would refuse, after the whole rebuild
        names = ", ".join(sorted({r["name"] for r in dependents}))
        raise RuntimeError(
            f"{names} depend on {table}: drop them before the rebuild, recreate them after"
        )
    await conn.execute(f"DROP TABLE IF EXISTS {fresh}")
    await conn.execute(f"CREATE TABLE {fresh} (LIKE {table} INCLUDING DEFAULTS)")
    return fresh


_INDEX_DEF = re.compile(r"CREATE (UNIQUE )?INDEX (\S+) ON (ONLY )?(\S+) (USING .*)", re.DOTALL)


def _renamed(name: str) -> str:
    return f'"{name.strip(chr(34))[:56]}__swap"'


class Swap(NamedTuple):
    """What `swap_in` finishes: the live table's constraints (name, type, definition) and
    its other indexes' names, their indexes built on the fresh table under `_renamed` names."""

    table: str
    fresh: str
    constraints: list[tuple[str, str, str]]
    indexes: list[str]


def _on_fresh(definition: str, name: str, fresh: str) -> str:
    match = _INDEX_DEF.fullmatch(definition)
    if match is None:
        raise ValueError(f"unexpected index definition: {definition}")
    unique, _, only, _, rest = match.groups()
    return f"CREATE {unique or ''}INDEX {_renamed(name)} ON {only or ''}{fresh} {rest}"


_BUILDS = """
SELECT coalesce(k.conname, c.relname), pg_get_indexdef(i.indexrelid), k.conname IS NOT NULL
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
WHERE i.indrelid = $1::regclass AND (k.conname IS NULL OR k.contype IN ('p', 'u'))
ORDER BY i.indpred IS NULL DESC,
         (SELECT count(*) FROM unnest(i.indcollation) AS x WHERE x <> 0) DESC,
         i.indnkeyatts DESC, 1
"""
"""The indexes to build on a fresh copy of a table, the dearest first: those over all rows
before partial ones, then by their text keys (compared by collation, the slow part of a
sort), then by key columns. Each build scans the whole table once; two at a time, the
dearest first, they end at about the same time."""


async def build_indexes(pool: asyncpg.Pool, table: str, fresh: str, *, parallel: int = 2) -> Swap:
    """Build the indexes of `table` (those of its primary key and unique constraints too) on
    the loaded, committed `fresh` table, `parallel` at a time, each over all the rows at once."""
    async with pool.acquire() as conn:
        constraints = await conn.fetch(
            "SELECT conname, contype::text, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid = $1::regclass AND contype <> 'n' "
            "ORDER BY conname",
            table,
        )
        builds = await conn.fetch(_BUILDS, table)
    queue = [_on_fresh(d, n, fresh) for n, d, _ in reversed(builds)]

    async def build() -> None:
        async with pool.acquire() as conn:
            # Several builds at once share the cores already: no parallel workers each.
            await conn.execute("SET maintenance_work_mem = '256MB'")
            if parallel > 1:
                await conn.execute("SET max_parallel_maintenance_workers = 0")
            try:
                while queue:
                    await conn.execute(queue.pop())
            finally:
                await conn.execute("RESET maintenance_work_mem")
                await conn.execute("RESET max_parallel_maintenance_workers")

    await asyncio.gather(*(build() for _ in range(max(1, parallel))))
    return Swap(
        table, fresh, [(n, t, d) for n, t, d in constraints], [n for n, _, k in builds if not k]
    )


_GRANTS = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
       a.privilege_type, a.is_grantable
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = $1::regclass AND a.grantee <> c.relowner
"""


async def swap_in(conn: Connection, swap: Swap) -> None:
    """Replace the table with the fresh one: drop it, give the fresh one its constraints
    (on the indexes `build_indexes` built) and its name and its indexes' names. Run it in
    the transaction that records the position; readers see the old rows until the commit."""
    table, fresh = swap.table, swap.fresh
    await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    # The owner and the grants (a reporting role's SELECT, say) go over to the fresh table.
    owner = await conn.fetchval(
        "SELECT relowner::regrole::text FROM pg_class WHERE oid = $1::regclass", table
    )
    await conn.execute(f"ALTER TABLE {fresh} OWNER TO {owner}")
    for grant in await conn.fetch(_GRANTS, table):
        option = " WITH GRANT OPTION" if grant["is_grantable"] else ""
        await conn.execute(
            f"GRANT {grant['privilege_type']} ON {fresh} TO {grant['grantee']}{option}"
        )
    await conn.execute(f"DROP TABLE {table}")
    for name, kind, definition in swap.constraints:
        if kind in ("p", "u"):  # the index takes the constraint's name
            key = "PRIMARY KEY" if kind == "p" else "UNIQUE"
            await conn.execute(
                f'ALTER TABLE {fresh} ADD CONSTRAINT "{name}" {key} USING INDEX {_renamed(name)}'
            )
        else:
            await conn.execute(f'ALTER TABLE {fresh} ADD CONSTRAINT "{name}" {definition}')
    await conn.execute(f"ALTER TABLE {fresh} RENAME TO {table}")
    for name in swap.indexes:
        await conn.execute(f'ALTER INDEX {_renamed(name)} RENAME TO "{name}"')
