"""The scheduler: time alone makes events due, and each is appended exactly once.

A listing stops counting the instant its `effective_until` passes, before any event; the
scheduler then appends one `expired` delisting, however often and by however many schedulers
it runs. A noticed listing whose window ended with nothing pending gets `took_effect`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import datetime, timedelta

import pytest

from hub.bootstrap import build_hub
from hub.scheduler import Scheduler, lock_key

SUBJECT = "uscc:91350100M000100Y43"
UNTIL = "2025-06-01T00:00:00+08:00"


@pytest.fixture(name="settings")
def fx_settings(settings):
    """The hub without its background scheduler: the tests run it by hand."""
    return dataclasses.replace(settings, run_scheduler=False)


def listing(decision_no: str, *, until: str = UNTIL, notice_days: int | None = None) -> dict:
    body = {
        "subject": {"id": SUBJECT, "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "general",
        "intent": "intentional",
        "basis": {"decision_no": decision_no, "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": until,
    }
    if notice_days is not None:
        body["notice_days"] = notice_days
    return body


async def register(client, headers, body) -> dict:
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def profile(client, headers, position: int = 0) -> dict:
    response = await client.get(f"/v1/subjects/{SUBJECT}?min_position={position}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def log_events(client, headers) -> list[dict]:
    """The listing events of the log (other families, such as the catalogue, left out)."""
    response = await client.get("/v1/events?after=0&limit=10000", headers=headers)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["type"].startswith("listing.")]


def hub_of(client):
    return client.app.state.hub


async def on_app(client, fn, *args):
    """Run `fn(*args)` on the app's event loop (the test client runs it in its own thread)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def run_once(client):
    return await on_app(client, hub_of(client).scheduler.run_once)


async def stop_projections(hub):
    hub._stop.set()
    await asyncio.gather(*hub._tasks)


async def test_expiry_stops_counting_at_the_instant_then_one_event(client, make_agency, clock):
    tax = await make_agency()
    created = await register(client, tax, listing("D-1"))
    until = datetime.fromisoformat(UNTIL)
    scheduler = hub_of(client).scheduler

    clock.set(until - timedelta(seconds=1))
    assert [i["decision_no"] for i in (await profile(client, tax, created["position"]))["active"]]
    assert await run_once(client) == 0
    assert scheduler.next_due == until

    clock.set(until)
    assert (await profile(client, tax))["active"] == []  # no event yet, already not in force
    assert [e["type"] for e in await log_events(client, tax)] == ["listing.registered"]

    appended = await asyncio.gather(run_once(client), run_once(client))
    assert sum(appended) == 1
    head = (await log_events(client, tax))[-1]["position"]
    await profile(client, tax, head)
    assert await run_once(client) == 0

    delisted = [e for e in await log_events(client, tax) if e["type"] == "listing.delisted"]
    assert len(delisted) == 1
    assert delisted[0]["aggregate_id"] == created["listing_id"]
    assert delisted[0]["data"]["reason"] == "expired"
    assert datetime.fromisoformat(delisted[0]["data"]["effective_at"]) == until
    detail = await client.get(f"/v1/listings/{created['listing_id']}", headers=tax)
    assert detail.json()["listing"]["status"] == "delisted"


async def test_two_hubs_expire_each_listing_once(client, make_agency, clock, settings):
    tax = await make_agency()
    for n in range(20):
        last = await register(client, tax, listing(f"D-{n}"))
    await profile(client, tax, last["position"])
    clock.set(datetime.fromisoformat(UNTIL) + timedelta(days=1))
    other = await build_hub(settings, clock)
    await other.committer.start()
    try:
        appended = await asyncio.gather(
            run_once(client), other.scheduler.run_once(), run_once(client)
        )
    finally:
        await other.stop()
    assert sum(appended) == 20
    delisted = Counter(
        e["aggregate_id"] for e in await log_events(client, tax) if e["type"] == "listing.delisted"
    )
    assert len(delisted) == 20
    assert set(delisted.values()) == {1}


async def test_an_amended_period_is_not_expired_from_a_stale_read_model(client, make_agency, clock):
    tax = await make_agency()
    created = await register(client, tax, listing("D-1"))
    await profile(client, tax, created["position"])
    await on_app(client, stop_projections, hub_of(client))  # the read model keeps the old period
    amended = await client.post(
        f"/v1/listings/{created['listing_id']}/amend",
        json={"note": "extended", "effective_until": "2025-09-01T00:00:00+08:00"},
        headers=tax,
    )
    assert amended.status_code == 200, amended.text
    clock.set(datetime.fromisoformat(UNTIL) + timedelta(days=1))
    assert await run_once(client) == 0
    types = [e["type"] for e in await log_events(client, tax)]
    assert types == ["listing.registered", "listing.amended"]


async def test_take_effect_when_the_window_ends_with_nothing_pending(client, make_agency, clock):
    tax = await make_agency()
    quiet = await register(client, tax, listing("D-quiet", notice_days=5))
    objected = await register(client, tax, listing("D-objected", notice_days=5))
    assert quiet["status"] == "noticed"
    response = await client.post(
        f"/v1/listings/{objected['listing_id']}/objections",
        json={"grounds": "not us"},
        headers=tax,
    )
    assert response.status_code == 201, response.text
    position = response.json()["position"]
    await profile(client, tax, position)
    assert await run_once(client) == 0  # the windows are still open
    clock.advance(timedelta(days=10))  # more than five working days
    assert [i["decision_no"] for i in (await profile(client, tax))["active"]] == ["D-quiet"]
    assert await run_once(client) == 1
    head = (await log_events(client, tax))[-1]["position"]
    await profile(client, tax, head)
    assert await run_once(client) == 0
    took = [e for e in await log_events(client, tax) if e["type"] == "listing.took_effect"]
    assert [e["aggregate_id"] for e in took] == [quiet["listing_id"]]


async def test_background_loop_leads_once_and_appends_when_due(
    client, make_agency, clock, settings
):
    tax = await make_agency()
    created = await register(client, tax, listing("D-1"))
    await profile(client, tax, created["position"])
    hub = await build_hub(settings, clock)
    await hub.committer.start()
    loops = [Scheduler(hub.pool, hub.committer, clock, poll_seconds=0.05) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in loops]
    try:
        await asyncio.sleep(0.3)
        async with hub.pool.acquire() as conn:
            key = await lock_key(conn)
            holders = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND ((classid::bigint << 32) | objid::bigint) = $1",
                key,
            )
        assert holders == 1
        clock.set(datetime.fromisoformat(UNTIL))
        for _ in range(100):
            types = [e["type"] for e in await log_events(client, tax)]
            if "listing.delisted" in types:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await hub.stop()
    types = [e["type"] for e in await log_events(client, tax)]
    assert types == ["listing.registered", "listing.delisted"]
