"""The breach policy lists a breached commitment exactly once, even when it dies between its
command and the update of its position (an exception, or the task killed mid-way)."""

from __future__ import annotations

import asyncio

import pytest
from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, on_app
from test_commitments import CODE, commitment

from hub.settings import Settings
from projections import ProjectionRunner


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    # Nothing runs by itself: the test drives the breach policy step by step.
    return Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        run_projections=False,
        run_scheduler=False,
    )


class Crash(Exception):
    pass


async def _die_after_commands(hub, *, how: str) -> None:
    """Run the policy's commands, then die before its position is stored."""
    policy = hub.subject.policy

    class Dying:
        name = policy.name

        async def setup(self, conn):
            pass

        async def reset(self, conn):
            pass

        async def apply(self, conn, events):
            await policy.apply(conn, events)
            if how == "raise":
                raise Crash
            await asyncio.Event().wait()  # hangs until killed

    runner = ProjectionRunner(hub.pool, Dying())
    if how == "raise":
        with pytest.raises(Crash):
            await runner.step()
        return
    task = asyncio.create_task(runner.step())
    for _ in range(500):
        async with hub.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT count(*) FROM credit_events WHERE topic LIKE '%Listing.Registered'"
            )
        if found:
            break
        await asyncio.sleep(0.01)
    task.cancel()  # killed between the command and the position update
    with pytest.raises(asyncio.CancelledError):
        await task


async def _restart_and_count(hub) -> tuple[int, int]:
    runner = hub.runners[hub.subject.policy.name]
    async with hub.pool.acquire() as conn:
        before = await runner.stored_position(conn)
    await runner.catch_up()
    await runner.catch_up()
    async with hub.pool.acquire() as conn:
        listings = await conn.fetchval(
            "SELECT count(*) FROM credit_events WHERE topic LIKE '%Listing.Registered'"
        )
    return before, int(listings)


@pytest.mark.parametrize("how", ["raise", "kill"])
async def test_breach_lists_exactly_once_when_the_policy_dies(client, make_agency, clock, how):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    await client.post("/v1/commitments", json=commitment(), headers=tax)
    breached = await client.post(
        f"/v1/commitments/{CODE}/breach", json={"facts": "never came"}, headers=tax
    )
    assert breached.status_code == 200, breached.text
    hub = client.app.state.hub
    await on_app(client, lambda: _die_after_commands(hub, how=how))
    before, listings = await on_app(client, lambda: _restart_and_count(hub))
    assert before == 0  # the dead run stored no position: the restart ran the batch again
    assert listings == 1
    async with asyncio.timeout(5):
        events = (await client.get("/v1/events?after=0&limit=1000", headers=tax)).json()["events"]
    registered = [e for e in events if e["type"] == "listing.registered"]
    assert [e["data"]["decision_no"] for e in registered] == [f"commitment-breach:{CODE}"]
