"""`hub replay` and `hub project`: rebuild, verify and run the PostgreSQL read models.

    hub replay listings            rebuild from position 0, with a progress bar
    hub replay --verify [NAME]     live read model == a fresh replay up to the same position?
    hub project [NAME ...]         run projections in their own process until SIGTERM

A replay holds the projection's advisory lock, so no live runner applies events meanwhile (it
waits and resumes from the replayed position). `listings` is rebuilt in bulk into a fresh
table that replaces the live one in one transaction (`projections.listings_bulk`); the other
read models are replayed by their runner, with their secondary indexes dropped for the load
and recreated at the end. `--verify` replays with the runner into a scratch schema and leaves
the live read model alone; it prints both digests and exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import asyncpg

from hub.bootstrap import close_projections, projections
from hub.progress import console, progress_bar
from hub.settings import Settings
from projections import EVENTS_TABLE, Projection, ProjectionRunner, max_position
from projections.listings import ListingsProjection
from projections.listings_bulk import MEMORY_ROWS, default_workers, rebuild_listings
from projections.replay import (
    drop_secondary_indexes,
    lock_key,
    replay_digest,
    restore_indexes,
    snapshot,
    tables_of,
)


async def _pool(settings: Settings, size: int = 3) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=size,
        server_settings={"search_path": f'"{settings.database_schema}"'},
    )


async def replay(
    settings: Settings,
    name: str,
    *,
    batch_size: int,
    wait: float,
    memory_rows: int = MEMORY_ROWS,
    workers: int = 1,
) -> int:
    """Rebuild one projection from position 0 under its advisory lock."""
    projection = projections(settings)[name]
    pool = await _pool(settings)
    try:
        async with pool.acquire() as lock_conn:
            key = await lock_key(lock_conn, name)
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                console.print(f"{name}: a live runner holds the projection; waiting {wait:g} s")
                try:
                    await asyncio.wait_for(
                        lock_conn.execute("SELECT pg_advisory_lock($1)", key), wait
                    )
                except TimeoutError:
                    console.print(
                        f"{name}: still held; stop the hub's projections "
                        "(HUB_RUN_PROJECTIONS=false) or run the replay with a longer --wait"
                    )
                    return 3
            try:
                bulk = Bulk(settings.database_url, workers, memory_rows)
                return await _rebuild(pool, projection, batch_size, bulk)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await close_projections([projection])
        await pool.close()


class Bulk(NamedTuple):
    """How `hub replay listings` rebuilds in bulk: in `workers` processes connecting to
    `dsn` (one, this process, without it), each with at most `memory_rows` rows in memory."""

    dsn: str | None = None
    workers: int = 1
    memory_rows: int = MEMORY_ROWS


async def rebuild(
    pool: asyncpg.Pool,
    projection: Projection,
    *,
    batch_size: int,
    bulk: Bulk | None = None,
    progress: Callable[[int], None] | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[int, int]:
    """What `hub replay NAME` does once it holds the projection's lock: rebuild the read model
    from position 0 up to the log's head; (events applied, position). `progress` is called
    with the position reached; a bulk rebuild puts the seconds of its steps in `timings`."""
    bulk = bulk or Bulk()
    runner = ProjectionRunner(pool, projection, batch_size=batch_size)
    await runner.setup()
    async with pool.acquire() as conn:
        head = await max_position(conn)
    if isinstance(projection, ListingsProjection):
        applied = await rebuild_listings(
            pool,
            head,
            name=runner.name,
            dsn=bulk.dsn,
            workers=bulk.workers,
            memory_rows=bulk.memory_rows,
            progress=progress,
            timings=timings,
        )
        return applied, head
    async with pool.acquire() as conn:
        definitions = await drop_secondary_indexes(conn, tables_of(projection))
    try:
        await runner.reset()
        applied = await runner.catch_up(
            progress=None if progress is None else lambda _: progress(runner.position)
        )
    finally:
        async with pool.acquire() as conn:
            await restore_indexes(conn, definitions)
    return applied, runner.position


async def _rebuild(pool: asyncpg.Pool, projection: Projection, batch_size: int, bulk: Bulk) -> int:
    async with pool.acquire() as conn:
        head = await max_position(conn)
    with progress_bar() as bar:
        task = bar.add_task(f"replay {projection.name}", total=max(head, 1))

        def advance(position: int) -> None:
            bar.update(task, completed=position, total=max(head, position))

        applied, position = await rebuild(
            pool, projection, batch_size=batch_size, bulk=bulk, progress=advance
        )
        bar.update(task, completed=max(head, position), total=max(head, position, 1))
    console.print(f"{projection.name}: {applied} events replayed, position {position}")
    return 0


async def verify(settings: Settings, names: list[str], *, batch_size: int) -> int:
    """Compare each live read model's digest with a fresh replay's; 1 when any differs."""
    assert settings.database_url is not None  # noqa: S101 - checked by the command
    differ = False
    pool = await _pool(settings, size=1)
    try:
        for name in names:
            projection = projections()[name]
            async with pool.acquire() as conn:
                position, live = await snapshot(conn, projection)
            with progress_bar() as bar:
                task = bar.add_task(f"verify {name}", total=max(position, 1))
                fresh = await replay_digest(
                    settings.database_url,
                    settings.database_schema,
                    projections()[name],
                    position,
                    batch_size=batch_size,
                    progress=functools.partial(bar.advance, task),
                )
                bar.update(task, completed=max(position, 1))
            same = live == fresh
            differ = differ or not same
            print(f"{name}  position {position}")
            print(f"  live    {live}")
            print(f"  replay  {fresh}")
            print(f"  {'equal' if same else 'DIFFERENT'}")
    finally:
        await pool.close()
    return 1 if differ else 0


async def project(settings: Settings, names: list[str], *, batch_size: int) -> int:
    """Run projections, woken by the log's NOTIFY, until SIGTERM or SIGINT."""
    pool = await _pool(settings, size=2 * len(names) + 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    known = projections(settings)
    runners = [ProjectionRunner(pool, known[n], batch_size=batch_size) for n in names]
    listener = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": f'"{settings.database_schema}"'}
    )
    try:
        for runner in runners:
            await runner.setup()
            console.print(f"{runner.name}: projecting from position {runner.position}")

        def wake(*_: object) -> None:
            for runner in runners:
                runner.wakeup.set()

        await listener.add_listener(EVENTS_TABLE, wake)
        await asyncio.gather(*(runner.run(stop, poll_seconds=0.5) for runner in runners))
    finally:
        with contextlib.suppress(Exception):
            await listener.close()
        await close_projections(known.values())
        await pool.close()
    return 0


def _settings() -> Settings | None:
    settings = Settings.from_env()
    if not settings.database_url:
        print("no database: set HUB_DATABASE_URL or start `hub up` first", file=sys.stderr)
        return None
    return settings


def _names(given: list[str]) -> list[str] | None:
    known = projections()
    unknown = [n for n in given if n not in known]
    if unknown:
        print(f"unknown projection {unknown[0]!r}; known: {', '.join(known)}", file=sys.stderr)
        return None
    return given or list(known)


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings()
    names = _names([args.projection] if args.projection else [])
    if settings is None or names is None:
        return 2
    if args.verify:
        return asyncio.run(verify(settings, names, batch_size=args.batch_size))
    if not args.projection:
        print("name the projection to replay (or use --verify)", file=sys.stderr)
        return 2
    return asyncio.run(
        replay(
            settings,
            names[0],
            batch_size=args.batch_size,
            wait=args.wait,
            memory_rows=args.memory_rows,
            workers=args.workers,
        )
    )


def cmd_project(args: argparse.Namespace) -> int:
    settings = _settings()
    names = _names(args.projections)
    if settings is None or names is None:
        return 2
    return asyncio.run(project(settings, names, batch_size=args.batch_size))


def register(subparsers: Any) -> None:
    """Add `replay` and `project` to the `hub` command."""
    rep = subparsers.add_parser("replay", help="rebuild a read model, or verify it (--verify)")
    rep.add_argument("projection", nargs="?", help=f"one of: {', '.join(projections())}")
    rep.add_argument(
        "--verify", action="store_true", help="compare the live read model with a fresh replay"
    )
    rep.add_argument("--batch-size", type=int, default=5000, help="events per transaction")
    rep.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for a live runner's lock"
    )
    rep.add_argument(
        "--memory-rows",
        type=int,
        default=MEMORY_ROWS,
        help="events of changes (all listing events but registrations) a bulk rebuild keeps "
        "in memory per process; beyond, it folds its listings in more rounds",
    )
    rep.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes a bulk rebuild of listings splits the listings among",
    )
    rep.set_defaults(func=cmd_replay)
    proj = subparsers.add_parser("project", help="run read-model projections in this process")
    proj.add_argument("projections", nargs="*", help="default: all")
    proj.add_argument("--batch-size", type=int, default=2000, help="events per transaction")
    proj.set_defaults(func=cmd_project)
