"""New listings are appended in groups (`hub.credit.appender`): what the group path writes and
answers, through the HTTP API against a real PostgreSQL.

- the stored event is the one the committer's aggregate path writes (same fields, same order);
- the same decision sent twice at once, once with other content, answers 201 and 409;
- a group whose connection dies answers 503 with Retry-After, never a 500, and the next
  group reconnects: every listing answered 2xx is in the log, once.
"""

from __future__ import annotations

import asyncio
import copy
from uuid import UUID

import msgspec
from repair_fixtures import on_app
from test_listings_lifecycle import assert_problem, listing

from hub.credit.appender import APPLICATION_NAME
from hub.credit.service import Agency, ListingService
from schemas.listing import NewListing

TOPIC = "hub.credit.domainmodel:Listing.Registered"


async def _states(hub) -> dict[str, bytes]:
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT originator_id, state FROM credit_events WHERE topic = $1", TOPIC
        )
    return {str(r["originator_id"]): bytes(r["state"]) for r in rows}


async def _register_through_committer(hub, body: NewListing):
    """`register` with no appender: the aggregate path (eventsourcing's mapper writes)."""
    service = ListingService(hub.committer, hub.listings.rules, hub.calendar, hub.clock)
    tax = Agency("320000-tax", "tax", frozenset({"publish"}), frozenset({"taxation"}))
    result, created = await service.register(tax, body)
    return result.listing_id, created


async def test_the_group_path_stores_the_event_the_aggregate_path_stores(client, make_agency):
    tax = await make_agency()
    grouped = listing(notice_days=3)
    created = await client.post("/v1/listings", json=grouped, headers=tax)
    assert created.status_code == 201, created.text
    other = copy.deepcopy(grouped)
    other["basis"]["decision_no"] += "-aggregate"
    body = msgspec.convert(other, NewListing, strict=False)
    hub = client.app.state.hub
    aggregate_id, was_created = await on_app(client, _register_through_committer, hub, body)
    assert was_created
    states = await on_app(client, _states, hub)
    ours = msgspec.msgpack.decode(states[created.json()["listing_id"]])
    theirs = msgspec.msgpack.decode(states[aggregate_id])
    assert list(ours) == list(theirs)  # the same fields in the same order
    differ = {k for k in ours if ours[k] != theirs[k]}
    assert differ == {"decision_no", "digest"}, differ
    # and the listing reads back through the aggregate, with its notice window
    read = await client.get(f"/v1/listings/{created.json()['listing_id']}", headers=tax)
    assert read.status_code == 200, read.text
    assert read.json()["listing"]["status"] == created.json()["status"] == "noticed"


async def test_one_decision_sent_twice_at_once_with_other_content_answers_201_and_409(
    client, make_agency
):
    tax = await make_agency()
    body = listing()
    changed = copy.deepcopy(body)
    changed["basis"]["facts"] = "另一事实"
    answers = await asyncio.gather(
        client.post("/v1/listings", json=body, headers=tax),
        client.post("/v1/listings", json=changed, headers=tax),
    )
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 201)
    loser = next(a for a in answers if a.status_code == 409)
    assert_problem(loser, 409, field="basis.decision_no", rule="listing.decision_conflict")
    states = await on_app(client, _states, client.app.state.hub)
    assert winner.json()["listing_id"] in states
    assert len([k for k in states if k == winner.json()["listing_id"]]) == 1


async def _kill_appender_connections(hub) -> int:
    name = f"{APPLICATION_NAME}:{hub.settings.database_schema}"[:63]
    async with hub.pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
        )


async def test_a_lost_connection_answers_503_and_the_next_group_reconnects(client, make_agency):
    tax = await make_agency()
    hub = client.app.state.hub
    assert await on_app(client, _kill_appender_connections, hub) >= 1
    answered: dict[str, dict[str, object]] = {}
    statuses = []
    for _ in range(5):
        response = await client.post("/v1/listings", json=listing(), headers=tax)
        statuses.append(response.status_code)
        if response.status_code == 503:  # the server's state, not the input: no field named
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.headers["retry-after"] == "1"
            problem = response.json()
            assert problem["status"] == 503
            assert "cannot be written" in problem["detail"]
        else:
            assert response.status_code == 201, response.text
            answered[response.json()["listing_id"]] = response.json()
    assert statuses.count(503) <= 1, statuses  # only the group that met the dead connection
    assert statuses[-1] == 201
    counts = await on_app(client, _event_counts, hub, [UUID(i) for i in answered])
    assert counts == dict.fromkeys(answered, 1)


async def _event_counts(hub, ids: list[UUID]) -> dict[str, int]:
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT originator_id, count(*) AS n FROM credit_events "
            "WHERE originator_id = ANY($1::uuid[]) GROUP BY originator_id",
            ids,
        )
    return {str(r["originator_id"]): int(r["n"]) for r in rows}
