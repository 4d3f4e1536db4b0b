"""Fixtures for driving the hub through its HTTP API against a real PostgreSQL.

`client` is the Litestar app from `create_app()` with its lifespan, in the test's own schema,
reading time from `clock` (a SettableClock at a fixed instant in a year the official calendar
knows). `make_agency` registers an agency and returns its auth headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from litestar.testing import AsyncTestClient

from hub.api.app import create_app
from hub.clock import SettableClock
from hub.settings import Settings

ADMIN_KEY = "hub_admin_test_key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
START = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in China

MakeAgency = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture(name="clock")
def fx_clock() -> SettableClock:
    return SettableClock(START)


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    # The scheduler would append expiries on its own as tests move the clock; tests that
    # need it call `hub.scheduler.run_once()` so that what happens is decided by the test.
    return Settings(
        database_url=db.url, database_schema=db.schema, admin_key=ADMIN_KEY, run_scheduler=False
    )


@pytest.fixture(name="client")
async def fx_client(settings: Settings, clock: SettableClock) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(settings, clock)) as client:
        yield client


@pytest.fixture(name="make_agency")
def fx_make_agency(client: AsyncTestClient) -> MakeAgency:
    async def make(
        code: str = "320000-tax",
        scopes: tuple[str, ...] = ("publish", "check", "audit", "subscribe"),
        domains: tuple[str, ...] = ("taxation",),
    ) -> dict[str, str]:
        response = await client.post(
            "/v1/agencies",
            json={"code": code, "name": code, "scopes": list(scopes), "domains": list(domains)},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['api_key']}"}

    return make
