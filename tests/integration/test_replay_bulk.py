"""The bulk rebuild of `listings` (what `hub replay listings` runs) gives the table the runner
builds event by event: same digest, whatever the memory bound and page size, on a history of
registrations, notices, objections and their answers, amendments, retroactive corrections,
expiries and delistings. It records its position, so the live runner continues after it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
import pytest

from hub.bootstrap import build_hub
from hub.clock import SettableClock
from hub.credit.service import Agency
from hub.settings import Settings
from projections import ProjectionRunner, max_position
from projections.listings import ListingsProjection
from projections.listings_bulk import RebuildError, rebuild_listings
from projections.replay import (
    build_indexes,
    fresh_table,
    projection_digest,
    replay_digest,
    scratch_pool,
    snapshot,
    swap_in,
)
from schemas.listing import Amendment, Delisting, NewListing, NewObjection, ObjectionAnswer

SUBJECTS = ["uscc:91350100M000100Y43", "uscc:91320000134758190U", "uscc:91110000100006035P"]
START = datetime(2025, 3, 3, 2, tzinfo=UTC)
TAX = Agency("320000-tax", "Tax", frozenset({"publish"}), frozenset({"taxation"}))
INDEXES = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'listings' "
    "AND schemaname = current_schema() ORDER BY indexname"
)


@pytest.fixture(name="clock")
def fx_clock() -> SettableClock:
    return SettableClock(START)


@pytest.fixture(name="hub")
async def fx_hub(db, clock):
    settings = Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="k",
        run_projections=False,
        run_scheduler=False,
    )
    hub = await build_hub(settings, clock)
    await hub.committer.start()
    await hub.appender.start()  # new listings go through it
    yield hub
    await hub.stop()


def new_listing(n: int, *, notice_days: int) -> NewListing:
    return msgspec.convert(
        {
            "subject": {"id": SUBJECTS[n % len(SUBJECTS)], "name": f"Subject {n}"},
            "list": "blacklist",
            "domain": "taxation",
            "severity": "general" if n % 2 else "severe",
            "intent": "intentional",
            "basis": {"decision_no": f"D-{n}", "legal_basis": "law", "facts": "facts"},
            "region": "320100",
            "effective_from": "2025-03-01T00:00:00+08:00",
            "effective_until": "2025-12-01T00:00:00+08:00",
            "notice_days": notice_days,
        },
        NewListing,
    )


async def write_history(hub, clock: SettableClock, count: int = 40) -> None:
    created = await asyncio.gather(
        *(hub.listings.register(TAX, new_listing(n, notice_days=5 * (n % 3))) for n in range(count))
    )
    ids = [UUID(result.listing_id) for result, _ in created]
    for n, uid in enumerate(ids):
        if n % 3 and n % 4 == 1:
            await hub.listings.object(TAX, uid, NewObjection(grounds="not us"))
            await hub.listings.object(TAX, uid, NewObjection(grounds="paid since"))
            answer = ObjectionAnswer(upheld=False, answer="stands")
            await hub.listings.resolve(TAX, uid, 1, answer)
        if n % 5 == 0:
            await hub.listings.amend(TAX, uid, Amendment(note="renamed", subject_name=f"New {n}"))
        if n % 6 == 1:
            correction = Amendment(
                note="wrong end",
                effective_until=datetime(2025, 9, 1, tzinfo=UTC),
                applies_from=datetime(2025, 3, 1, tzinfo=UTC),
            )
            await hub.listings.amend(TAX, uid, correction)
    clock.set(START + timedelta(days=30))  # notice windows over: the scheduler's events
    assert hub.scheduler is not None
    await hub.runners["listings"].catch_up()  # the scheduler finds what is due there
    await hub.scheduler.run_once()
    for n, uid in enumerate(ids):
        if n % 8 == 3:
            await hub.listings.amend(TAX, uid, Amendment(note="again", severity="severe"))
        if n % 7 == 0:
            await hub.listings.delist(TAX, uid, Delisting(reason="corrected", note="wrong"))


async def live(hub) -> tuple[int, str]:
    async with hub.pool.acquire() as conn:
        return await snapshot(conn, ListingsProjection())


@pytest.mark.parametrize(
    "bounds",
    [(400_000, 50_000, 1), (3, 7, 1), (2, 1, 1), (4, 9, 2)],
    ids=["all-in-memory", "small", "tiny", "two-processes"],
)
async def test_bulk_rebuild_equals_the_runner(hub, db, clock, bounds):
    memory_rows, page_size, workers = bounds
    await write_history(hub, clock)
    await hub.runners["listings"].catch_up()
    position, digest = await live(hub)
    assert digest.startswith("40:")
    async with hub.pool.acquire() as conn:
        topics = {r[0] for r in await conn.fetch("SELECT DISTINCT topic FROM credit_events")}
    kinds = ("Registered", "Objected", "ObjectionResolved", "TookEffect", "Amended", "Delisted")
    assert {f"hub.credit.domainmodel:Listing.{kind}" for kind in kinds} <= topics
    async with scratch_pool(db.url, db.schema) as pool:
        await ProjectionRunner(pool, ListingsProjection()).setup()
        read = await rebuild_listings(
            pool,
            position,
            dsn=db.url,
            workers=workers,
            memory_rows=memory_rows,
            page_size=page_size,
        )
        async with pool.acquire() as conn, conn.transaction():
            assert await projection_digest(conn, ListingsProjection()) == digest
            assert await conn.fetchval("SELECT to_regclass('listings__rebuild')") is None
            stored = "SELECT position FROM projection_positions WHERE name = 'listings'"
            assert await conn.fetchval(stored) == position
    assert read > 40


async def test_bulk_rebuild_reads_the_heap_in_any_order(hub, db, clock):
    """The rebuild scans the events table in the heap's order, not the log's: events moved
    on the heap (an update writes a new version of a row at its end) are still applied in
    log order, and a halved partition (changes beyond the memory bound) comes to the same."""
    await write_history(hub, clock)
    await hub.runners["listings"].catch_up()
    position, digest = await live(hub)
    async with hub.pool.acquire() as conn:
        moved = await conn.execute(
            "UPDATE credit_events SET topic = topic WHERE notification_id % 3 = 1"
        )
        assert int(moved.split()[-1]) > 20
        order = await conn.fetch("SELECT notification_id FROM credit_events")
        assert [r[0] for r in order] != sorted(r[0] for r in order)
    for memory_rows in (400_000, 1):
        async with scratch_pool(db.url, db.schema) as pool:
            await ProjectionRunner(pool, ListingsProjection()).setup()
            await rebuild_listings(
                pool, position, dsn=db.url, workers=2, memory_rows=memory_rows, page_size=3
            )
            async with pool.acquire() as conn, conn.transaction():
                assert await projection_digest(conn, ListingsProjection()) == digest


async def test_bulk_rebuild_in_place_then_the_runner_continues(hub, db, clock):
    await write_history(hub, clock, 24)
    runner = hub.runners["listings"]
    await runner.catch_up()
    position, digest = await live(hub)
    async with hub.pool.acquire() as conn:
        indexes = await conn.fetch(INDEXES)
        await conn.execute("UPDATE listings SET status = 'effective'")  # damage, to be repaired
    assert len(indexes) > 2

    async with hub.pool.acquire() as conn:
        head = await max_position(conn)
    await rebuild_listings(hub.pool, head, memory_rows=4, page_size=5)
    assert await live(hub) == (position, digest)
    async with hub.pool.acquire() as conn:
        assert await conn.fetch(INDEXES) == indexes
        assert await conn.fetchval("SELECT to_regclass('listings__rebuild')") is None

    await hub.listings.register(TAX, new_listing(90, notice_days=0))
    await hub.listings.delist(
        TAX,
        UUID((await hub.listings.register(TAX, new_listing(91, notice_days=0)))[0].listing_id),
        Delisting(reason="corrected", note="x"),
    )
    assert await runner.catch_up() > 0
    later, digest = await live(hub)
    assert later > position
    assert digest.startswith("26:")
    assert await replay_digest(db.url, db.schema, ListingsProjection(), later) == digest


async def test_every_index_is_built_before_the_swap(hub, clock):
    """The primary key's index too: the swap only attaches the built indexes, so it holds
    the live table's lock for no longer than renames take."""
    await write_history(hub, clock, 6)
    await hub.runners["listings"].catch_up()
    oids = (
        "SELECT array_agg(indexrelid ORDER BY indexrelid) FROM pg_index "
        "WHERE indrelid = $1::regclass"
    )
    async with hub.pool.acquire() as conn:
        indexes = await conn.fetch(INDEXES)
        fresh = await fresh_table(conn, "listings")
        await conn.execute(f"INSERT INTO {fresh} SELECT * FROM listings")
    swap = await build_indexes(hub.pool, "listings", fresh)
    async with hub.pool.acquire() as conn:
        built = await conn.fetchval(oids, fresh)
        assert len(built) == len(indexes)
        async with conn.transaction():
            await swap_in(conn, swap)
        assert await conn.fetchval(oids, "listings") == built
        assert await conn.fetch(INDEXES) == indexes


async def test_a_failed_rebuild_leaves_the_live_table(hub, clock):
    await write_history(hub, clock, 9)
    await hub.runners["listings"].catch_up()
    before = await live(hub)
    bad = "postgresql://postgres@127.0.0.1:1/nowhere"  # the second process cannot connect
    with pytest.raises(RebuildError, match="partition"):
        await rebuild_listings(hub.pool, before[0], dsn=bad, workers=2, memory_rows=2)
    assert await live(hub) == before
    async with hub.pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('listings__rebuild')") is None


async def test_a_rebuild_keeps_grants_and_refuses_early_under_a_view(hub, db, clock):
    """A reporting role's SELECT survives the swap; a view on the table (which DROP would
    refuse at the very end) stops the rebuild before any work, naming the view."""
    await write_history(hub, clock, 6)
    await hub.runners["listings"].catch_up()
    role = f"reporting_{db.schema}"[:63]
    async with hub.pool.acquire() as conn:
        head = await max_position(conn)
        await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        async with hub.pool.acquire() as conn:
            await conn.execute(f'GRANT SELECT ON listings TO "{role}"')
        await rebuild_listings(hub.pool, head, memory_rows=4, page_size=5)
        async with hub.pool.acquire() as conn:
            granted = "SELECT has_table_privilege($1, 'listings', 'SELECT')"
            assert await conn.fetchval(granted, role) is True
            assert (
                await conn.fetchval("SELECT has_table_privilege($1, 'listings', 'INSERT')", role)
                is False
            )
            await conn.execute("CREATE VIEW active_listings AS SELECT * FROM listings")
        before = await live(hub)
        with pytest.raises(RuntimeError, match="active_listings depend on listings"):
            await rebuild_listings(hub.pool, head, memory_rows=4, page_size=5)
        assert await live(hub) == before
    finally:
        async with hub.pool.acquire() as conn:
            await conn.execute("DROP VIEW IF EXISTS active_listings")
            await conn.execute(f'REVOKE ALL ON listings FROM "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
