"""Kill the projection process at random points while events stream in: after each restart
and catch-up, the listings read model equals a fresh replay of the log up to its position.

The projection runs as a user runs it (`hub project listings`, a separate process); a writer
streams registrations, amendments and delistings through the credit application meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from datetime import UTC, datetime
from uuid import UUID

import msgspec
import pytest

from hub.bootstrap import build_hub
from hub.clock import SettableClock
from hub.credit.service import Agency
from hub.settings import Settings
from projections.listings import ListingsProjection
from projections.replay import replay_digest, snapshot
from schemas.listing import Amendment, Delisting, NewListing

pytestmark = pytest.mark.slow

TAX = Agency("320000-tax", "Tax", frozenset({"publish"}), frozenset({"taxation"}))
SUBJECTS = ["uscc:91350100M000100Y43", "uscc:91320000134758190U", "uscc:91110000100006035P"]
KILLS = 4


def new_listing(n: int) -> NewListing:
    return msgspec.convert(
        {
            "subject": {"id": SUBJECTS[n % 3], "name": f"Subject {n}"},
            "list": "blacklist",
            "domain": "taxation",
            "severity": "general",
            "intent": "intentional",
            "basis": {"decision_no": f"K-{n}", "legal_basis": "law", "facts": "facts"},
            "region": "320100",
            "effective_from": "2025-03-01T00:00:00+08:00",
            "effective_until": "2025-12-01T00:00:00+08:00",
        },
        NewListing,
    )


async def stream(hub, stop: asyncio.Event) -> int:
    """Write until `stop`: groups of registrations, then changes to some of them."""
    n = 0
    while not stop.is_set():
        created = await asyncio.gather(
            *(hub.listings.register(TAX, new_listing(n + i)) for i in range(16))
        )
        ids = [UUID(result.listing_id) for result, _ in created]
        changes = [
            hub.listings.amend(TAX, ids[i], Amendment(note="n", subject_name=f"New {n + i}"))
            for i in range(0, 16, 3)
        ] + [
            hub.listings.delist(TAX, ids[i], Delisting(reason="corrected", note="x"))
            for i in range(1, 16, 5)
        ]
        await asyncio.gather(*changes)
        n += 16
        await asyncio.sleep(0.05)  # a steady stream, a few hundred events a second
    return n


async def start_projection(db) -> asyncio.subprocess.Process:
    env = {**os.environ, "HUB_DATABASE_URL": db.url, "HUB_DATABASE_SCHEMA": db.schema}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        "project",
        "listings",
        "--batch-size",
        "100",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def positions(hub) -> tuple[int, int]:
    """(projection position, head of the log)."""
    async with hub.pool.acquire() as conn:
        position = await conn.fetchval(
            "SELECT position FROM projection_positions WHERE name = 'listings'"
        )
        head = await conn.fetchval("SELECT coalesce(max(notification_id), 0) FROM credit_events")
    return int(position or 0), int(head)


async def catch_up(hub, proc, within: float = 15) -> int:
    """Wait until the projection has reached the head of the log as it was when we asked."""
    _, target = await positions(hub)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (position := (await positions(hub))[0]) < target:
        assert proc.returncode is None, "the projection process died"
        assert loop.time() < deadline, f"projection stuck at {position} < {target}"
        await asyncio.sleep(0.05)
    return position


async def assert_equals_replay(hub, db) -> int:
    async with hub.pool.acquire() as conn:
        position, live = await snapshot(conn, ListingsProjection())
    assert await replay_digest(db.url, db.schema, ListingsProjection(), position) == live
    return position


async def test_kill_projection_at_random_points(db):
    settings = Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="k",
        run_projections=False,
        run_scheduler=False,
    )
    hub = await build_hub(settings, SettableClock(datetime(2025, 3, 3, 2, tzinfo=UTC)))
    await hub.committer.start()
    rng = random.Random(20250303)
    stop = asyncio.Event()
    writer = asyncio.create_task(stream(hub, stop))
    proc = None
    verified: list[int] = []
    try:
        for _ in range(KILLS):
            proc = await start_projection(db)
            await catch_up(hub, proc)
            verified.append(await assert_equals_replay(hub, db))
            before, _ = await positions(hub)
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            assert (await positions(hub))[0] >= before
        stop.set()
        written = await writer
        proc = await start_projection(db)
        final = await catch_up(hub, proc)
        assert final == (await positions(hub))[1]
        verified.append(await assert_equals_replay(hub, db))
    finally:
        stop.set()
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        await hub.stop()
    assert written > 0
    assert verified == sorted(verified)
    assert verified[-1] > verified[0]
    assert len(verified) == KILLS + 1
