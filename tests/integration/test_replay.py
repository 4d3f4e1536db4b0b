"""Replay: the live listings read model equals a fresh replay of the log, and the digest that
says so notices a single tampered row. Also `hub replay` as a user runs it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import msgspec
import pytest

from hub.bootstrap import build_hub
from hub.cli import main
from hub.clock import SettableClock
from hub.credit.service import Agency
from hub.settings import Settings
from projections import read_events
from projections.listings import ListingsProjection
from projections.replay import replay_digest, snapshot, table_digest
from schemas.listing import Amendment, Delisting, NewListing, NewObjection

SUBJECTS = ["uscc:91350100M000100Y43", "uscc:91320000134758190U", "uscc:91110000100006035P"]
INDEXES = (
    "SELECT count(*) FROM pg_indexes WHERE tablename = 'listings' AND schemaname = current_schema()"
)
TAX = Agency("320000-tax", "Tax", frozenset({"publish"}), frozenset({"taxation"}))


@pytest.fixture(name="hub")
async def fx_hub(db):
    settings = Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="k",
        run_projections=False,
        run_scheduler=False,
    )
    hub = await build_hub(settings, SettableClock(datetime(2025, 3, 3, 2, tzinfo=UTC)))
    await hub.committer.start()
    await hub.appender.start()  # new listings go through it
    yield hub
    await hub.stop()


@pytest.fixture(name="cli_env")
def fx_cli_env(db, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", db.url)
    monkeypatch.setenv("HUB_DATABASE_SCHEMA", db.schema)


def new_listing(n: int, *, notice_days: int = 0) -> NewListing:
    return msgspec.convert(
        {
            "subject": {"id": SUBJECTS[n % len(SUBJECTS)], "name": f"Subject {n}"},
            "list": "blacklist",
            "domain": "taxation",
            "severity": "general",
            "intent": "intentional",
            "basis": {"decision_no": f"D-{n}", "legal_basis": "law", "facts": "facts"},
            "region": "320100",
            "effective_from": "2025-03-01T00:00:00+08:00",
            "effective_until": "2025-12-01T00:00:00+08:00",
            "notice_days": notice_days,
        },
        NewListing,
    )


async def write_history(hub, count: int = 60) -> None:
    """Registrations, amendments, objections and delistings, some in one group commit."""
    created = await asyncio.gather(
        *(hub.listings.register(TAX, new_listing(n, notice_days=n % 3)) for n in range(count))
    )
    ids = [result.listing_id for result, _ in created]
    for n, listing_id in enumerate(ids):
        uid = UUID(listing_id)
        if n % 4 == 0:
            await hub.listings.amend(
                TAX, uid, Amendment(note="renamed", subject_name=f"Renamed {n}")
            )
        if n % 3 != 0 and n % 5 == 0:
            await hub.listings.object(TAX, uid, NewObjection(grounds="not us"))
        if n % 7 == 0:
            await hub.listings.delist(TAX, uid, Delisting(reason="corrected", note="wrong"))


async def live_digest(hub) -> tuple[int, str]:
    async with hub.pool.acquire() as conn:
        return await snapshot(conn, ListingsProjection())


async def test_replay_equals_live(hub, db):
    runner = hub.runners["listings"]
    await write_history(hub, 30)
    await runner.catch_up()
    half, _ = await live_digest(hub)
    await write_history_more(hub)
    await runner.catch_up()
    position, live = await live_digest(hub)
    assert position > half
    assert live.startswith("50:")  # rows
    assert await replay_digest(db.url, db.schema, ListingsProjection(), position) == live
    earlier = await replay_digest(db.url, db.schema, ListingsProjection(), half, batch_size=7)
    assert earlier != live
    assert earlier.startswith("30:")


async def write_history_more(hub) -> None:
    created = await asyncio.gather(
        *(hub.listings.register(TAX, new_listing(n)) for n in range(100, 120))
    )
    assert all(made for _, made in created)


async def test_digest_notices_one_tampered_value(hub, db):
    await write_history(hub)
    await hub.runners["listings"].catch_up()
    position, live = await live_digest(hub)
    async with hub.pool.acquire() as conn:
        await conn.execute(
            "UPDATE listings SET effective_until = effective_until + interval '1 microsecond' "
            "WHERE listing_id = (SELECT listing_id FROM listings ORDER BY listing_id LIMIT 1)"
        )
        _, tampered = await snapshot(conn, ListingsProjection())
    assert tampered != live
    assert await replay_digest(db.url, db.schema, ListingsProjection(), position) == live


async def test_digest_ignores_row_order(db):
    conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
    try:
        await conn.execute("CREATE TABLE a (k int, v text, t timestamptz)")
        await conn.execute("CREATE TABLE b (t timestamptz, v text, k int)")
        await conn.execute("INSERT INTO a SELECT g, 'v' || g, now() FROM generate_series(1, 500) g")
        await conn.execute("INSERT INTO b SELECT t, v, k FROM a ORDER BY k DESC")
        async with conn.transaction():
            first, second = await table_digest(conn, "a"), await table_digest(conn, "b")
        assert first == second
        await conn.execute("UPDATE b SET v = NULL WHERE k = 7")
        async with conn.transaction():
            assert await table_digest(conn, "b") != first
    finally:
        await conn.close()


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_cli_verify_and_replay(hub, cli_env, capsys):
    await write_history(hub)
    await hub.runners["listings"].catch_up()
    _, before = await live_digest(hub)
    async with hub.pool.acquire() as conn:
        indexes = await conn.fetchval(INDEXES)

    assert await cli("replay", "--verify", "listings") == 0
    out = capsys.readouterr().out
    assert out.count(before) == 2
    assert "equal" in out

    async with hub.pool.acquire() as conn:
        await conn.execute("UPDATE listings SET status = 'effective' WHERE status = 'delisted'")
    assert await cli("replay", "--verify", "listings") == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out
    assert out.count(before) == 1  # the replay's digest; the live one changed

    assert await cli("replay", "listings", "--batch-size", "16") == 0
    position, after = await live_digest(hub)
    assert after == before
    async with hub.pool.acquire() as conn:
        assert indexes == await conn.fetchval(INDEXES)
        assert position == await conn.fetchval("SELECT max(notification_id) FROM credit_events")
    assert await cli("replay", "--verify", "listings") == 0


async def test_cli_replay_waits_for_the_live_runner(hub, cli_env, capsys):
    await write_history(hub, 5)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.runners["listings"].run(stop, poll_seconds=0.05))
    try:
        await asyncio.sleep(0.3)
        assert await cli("replay", "listings", "--wait", "0.3") == 3
        assert "still held" in capsys.readouterr().err
    finally:
        stop.set()
        await task
    assert await cli("replay", "unknown") == 2


async def test_batch_boundaries_do_not_matter(hub, db):
    await write_history(hub)
    await hub.runners["listings"].catch_up()
    position, live = await live_digest(hub)
    for batch_size in (1, 13):
        digest = await replay_digest(
            db.url, db.schema, ListingsProjection(), position, batch_size=batch_size
        )
        assert digest == live


async def test_registrations_applied_again_overwrite_their_rows(hub):
    await write_history(hub, 12)
    await hub.runners["listings"].catch_up()
    _, live = await live_digest(hub)
    async with hub.pool.acquire() as conn, conn.transaction():
        events = await read_events(conn, 0, 10_000)
        await ListingsProjection().apply(conn, events)  # the whole history again, in one batch
    assert (await live_digest(hub))[1] == live
