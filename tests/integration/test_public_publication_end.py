"""At the end of the maximum publication period, publication stops by itself: the scheduler
appends `listing.publication_ended` once, and the public view stops showing the listing, while
a permanent market ban stays in force for the agencies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, USCC, make_listing, on_app, settle

from hub.settings import Settings


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    # the test runs the scheduler itself, so that it counts every event appended
    return Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        run_scheduler=False,
    )


async def test_publication_ends_at_the_maximum_period(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    # a permanent general market ban, published from 2024-01-10 00:00 China time (12 months max)
    listing_id = await make_listing(
        client, tax, "BAN-1", list_name="market_ban", start="2024-01-10", end=None
    )
    hub = client.app.state.hub
    await settle(client)
    assert await on_app(client, hub.scheduler.run_once) == 0
    assert hub.scheduler.next_due == datetime(2025, 1, 9, 16, 0, tzinfo=UTC)
    shown = (await client.get(f"/public/subjects/{USCC}")).json()
    assert [item["decision_no"] for item in shown["listings"]] == ["BAN-1"]
    assert shown["listings"][0]["publish_until"] == "2025-01-09T16:00:00Z"

    clock.set(datetime(2025, 1, 9, 15, 59, tzinfo=UTC))
    assert await on_app(client, hub.scheduler.run_once) == 0
    clock.set(datetime(2025, 1, 9, 16, 0, tzinfo=UTC))
    # even before any event, the public view follows the rules' period
    assert (await client.get(f"/public/subjects/{USCC}")).json()["listings"] == []
    assert await on_app(client, hub.scheduler.run_once) == 1
    assert await on_app(client, hub.scheduler.run_once) == 0  # once only

    detail = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()
    ended = [e for e in detail["events"] if e["type"] == "listing.publication_ended"]
    assert [e["data"]["ended_at"] for e in ended] == ["2025-01-09T16:00:00Z"]
    assert detail["listing"]["status"] == "effective"
    await settle(client)
    assert await on_app(client, hub.scheduler.run_once) == 0
    profile = (await client.get(f"/v1/subjects/{USCC}", headers=tax)).json()
    assert [a["decision_no"] for a in profile["active"]] == ["BAN-1"]  # the ban still applies
    assert (await client.get(f"/public/subjects/{USCC}")).json()["listings"] == []
