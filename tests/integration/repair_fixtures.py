"""Helpers for the subject side's API tests (repairs, commitments, public view, reports)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

CHINA = "+08:00"
# 2024-09-27 is a Friday (10:00 in China); 09-29 (Sunday) and 10-12 (Saturday) are make-up
# working days around the National Day holidays of October 1-7.
FRIDAY_BEFORE_NATIONAL_DAY = datetime(2024, 9, 27, 2, 0, tzinfo=UTC)
USCC = "uscc:91350100M000100Y43"


def listing_body(
    decision_no: str,
    *,
    subject: str = USCC,
    name: str = "Acme Trading Co.",
    list_name: str = "blacklist",
    domain: str = "taxation",
    severity: str | None = "general",
    start: str = "2024-06-01",
    end: str | None = "2025-06-01",
    notice_days: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {"id": subject, "name": name},
        "list": list_name,
        "domain": domain,
        "basis": {"decision_no": decision_no, "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": f"{start}T00:00:00{CHINA}",
        "effective_until": f"{end}T00:00:00{CHINA}" if end else None,
    }
    if list_name != "redlist":
        body["severity"] = severity
        body["intent"] = "intentional"
    if notice_days is not None:
        body["notice_days"] = notice_days
    return body


async def make_listing(client, headers, decision_no: str, **kw) -> str:
    response = await client.post(
        "/v1/listings", json=listing_body(decision_no, **kw), headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()["listing_id"]


async def on_app(client, fn, *args):
    """Run a coroutine function on the app's own event loop (its pools live there)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def head(client) -> int:
    async def _head(hub):
        async with hub.pool.acquire() as conn:
            return int(
                await conn.fetchval("SELECT coalesce(max(notification_id), 0) FROM credit_events")
            )

    return await on_app(client, _head, client.app.state.hub)


async def settle(client, position: int | None = None) -> None:
    """Wait until every projection (and the breach policy) has applied `position`, by default
    the head, until the head stays put: the policy appends a breach's listing after the
    breach, and the read models must apply that too (waiting for the head as it was before
    the listing let a test read the subject's profile without it, now and then)."""
    hub = client.app.state.hub
    if position is not None:
        assert await on_app(client, hub.wait_for_projections, position, 10.0)
        return
    target = -1
    while (now := await head(client)) != target:
        target = now
        assert await on_app(client, hub.wait_for_projections, target, 10.0)


def materials(*kinds: str) -> list[dict[str, str]]:
    return [{"kind": kind, "ref": f"doc://{kind}"} for kind in kinds]
