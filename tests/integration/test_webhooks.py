"""Webhooks through the API against a real PostgreSQL and a local HTTP receiver.

The story: an agency subscribes a URL; the worker fans new log events out to it and POSTs
them signed per Standard Webhooks (verified here with the `standardwebhooks` package); a
failing receiver gets retries with growing delays, then a dead letter that holds the later
events of its subject (not those of other subjects) until it is redelivered; filters by list,
event type and region; two workers on one schema send each event once. The worker runs in
passes the tests call (`run_once()`) on the hub's SettableClock; one test runs it as the
hub's background task. Subscriptions' ownership and refusals: test_webhook_subscriptions.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest
from cloudevents.core.formats.json import JSONFormat
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest
from standardwebhooks.webhooks import WebhookVerificationError
from webhook_support import (
    delist,
    deliveries,
    fx_receiver,  # noqa: F401 - fixture
    fx_settings,  # noqa: F401 - fixture
    list_subject,
    new_subject,
    on_app,
    run_once,
    stats,
    subjects_of,
    subscribe,
    verify,
    worker,
)

from adapters.webhooks import WebhookWorker
from adapters.webhooks_signing import new_secret
from hub.api.app import create_app
from hub.bootstrap import build_hub


async def test_deliveries_arrive_signed_as_cloudevents(client, make_agency, receiver, clock):
    tax = await make_agency()
    before = await list_subject(client, tax, new_subject())  # before the subscription: not sent
    sub = await subscribe(client, tax, receiver.url())
    assert sub["secret"].startswith("whsec_")
    own_secret = new_secret()
    sub2 = await subscribe(client, tax, receiver.url("/own"), secret=own_secret)
    assert sub2["secret"] == own_secret
    subject = new_subject()
    created = await list_subject(client, tax, subject)

    result = await run_once(client)

    assert result.delivered == 2
    assert before["position"] < created["position"]
    (request,) = receiver.at("/hook")
    event = verify(sub["secret"], request)
    assert verify(own_secret, receiver.at("/own")[0]) == event
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), request)
    assert request.headers["content-type"] == "application/cloudevents+json"
    cloud = JSONFormat().read(None, request.body)  # a valid CloudEvents 1.0 envelope
    assert (cloud.get_id(), cloud.get_source()) == (event["id"], "/hubs/320000")
    assert event["specversion"] == "1.0"
    assert event["type"] == "cn.gov.credit.listing.registered"
    assert event["subject"] == subject
    assert event["data"]["position"] == created["position"]
    assert event["data"]["list"] == "blacklist"
    log = await client.get(f"/v1/events?after={created['position'] - 1}&limit=1", headers=tax)
    assert request.headers["webhook-id"] == event["id"] == log.json()["events"][0]["id"]
    [row] = await deliveries(client, tax, sub["id"])
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 204)
    assert (await run_once(client)).delivered == 0  # nothing twice
    clock.advance(worker(client).config.keep_delivered + timedelta(seconds=1))
    assert await on_app(client, worker(client).prune) == 2
    assert await deliveries(client, tax, sub["id"]) == []


async def test_failures_retry_with_growing_delays_then_dead_letter_then_redeliver(
    client, make_agency, receiver, clock
):
    tax = await make_agency()
    sub = await subscribe(client, tax, receiver.url())
    receiver.fail_next(100)
    subject = new_subject()
    first = await list_subject(client, tax, subject)
    hooks = worker(client)
    attempts = hooks.config.max_attempts
    assert attempts == 8

    waits = []
    for n in range(1, attempts + 1):
        await run_once(client)
        [row] = await deliveries(client, tax, sub["id"])
        assert row["attempts"] == n
        if n < attempts:
            assert row["status"] == "pending"
            due = datetime.fromisoformat(row["due_at"])
            waits.append((due - clock.now()).total_seconds())
            assert (await run_once(client)).retried == 0  # not before it is due
            clock.set(due)
    assert row["status"] == "dead"
    assert row["last_status"] == 503
    assert len(receiver.requests) == attempts
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert all(verify(sub["secret"], r) for r in receiver.requests)
    capped = hooks.config.max_delay
    assert all(b > a for a, b in itertools.pairwise(w for w in waits if w < capped))
    assert waits[0] >= hooks.config.base_delay
    assert waits[-1] >= capped

    # the dead letter holds the next event of its subject; another subject goes on
    receiver.failures_left = 0
    later = await delist(client, tax, first["listing_id"])
    other = new_subject()
    await list_subject(client, tax, other)
    await run_once(client)
    assert subjects_of(receiver.requests[attempts:]) == [other]
    statuses = [r["status"] for r in await deliveries(client, tax, sub["id"])]
    assert statuses == ["dead", "held", "delivered"]
    assert len(await deliveries(client, tax, sub["id"], "dead")) == 1

    redelivered = await client.post(
        f"/v1/subscriptions/{sub['id']}/redeliver", json={}, headers=tax
    )
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json() == {"requeued": 1}
    await run_once(client)
    tail = receiver.requests[attempts + 1 :]
    assert [r.json["data"]["position"] for r in tail] == [first["position"], later["position"]]
    assert {r["status"] for r in await deliveries(client, tax, sub["id"])} == {"delivered"}
    assert await stats(client) == {}


async def test_order_is_kept_per_subject_while_other_subjects_proceed(
    client, make_agency, receiver, clock
):
    tax = await make_agency()
    sub = await subscribe(client, tax, receiver.url())
    slow, fast = new_subject(), new_subject()
    receiver.respond = lambda r: 500 if r.json["subject"] == slow else 200
    a1 = await list_subject(client, tax, slow)
    b1 = await list_subject(client, tax, fast)
    a2 = await delist(client, tax, a1["listing_id"])
    b2 = await list_subject(client, tax, fast)
    a3 = await list_subject(client, tax, slow)

    result = await run_once(client)

    assert (result.delivered, result.retried) == (2, 1)
    assert subjects_of(receiver.requests) == [slow, fast, fast]
    rows = {r["position"]: r["status"] for r in await deliveries(client, tax, sub["id"])}
    assert rows == {
        a1["position"]: "pending",
        b1["position"]: "delivered",
        a2["position"]: "held",
        b2["position"]: "delivered",
        a3["position"]: "held",
    }
    pending = await stats(client)
    assert pending == {"pending": 1, "held": 2}

    receiver.respond = lambda _: 200
    clock.advance(timedelta(hours=1))
    await run_once(client)
    tail = receiver.requests[3:]
    assert [r.json["data"]["position"] for r in tail] == [
        a1["position"],
        a2["position"],
        a3["position"],
    ]


async def test_filters_by_list_event_and_region(client, make_agency, receiver):
    tax = await make_agency()
    await subscribe(client, tax, receiver.url("/red"), filter={"lists": ["redlist"]})
    await subscribe(client, tax, receiver.url("/delisted"), filter={"events": ["listing.delisted"]})
    await subscribe(client, tax, receiver.url("/suzhou"), filter={"regions": ["320500"]})
    await subscribe(client, tax, receiver.url("/jiangsu"), filter={"regions": ["320000"]})
    await subscribe(client, tax, receiver.url("/shanghai"), filter={"regions": ["310000"]})
    await subscribe(
        client,
        tax,
        receiver.url("/both"),
        filter={"lists": ["blacklist"], "events": ["listing.delisted"], "regions": ["320100"]},
    )
    black = await list_subject(client, tax, new_subject())  # Nanjing 320100
    red = await list_subject(
        client, tax, new_subject(), list="redlist", region="320500", severity=None, intent=None
    )
    gone = await delist(client, tax, black["listing_id"])

    await run_once(client)

    def positions(path):
        return [r.json["data"]["position"] for r in receiver.at(path)]

    assert positions("/red") == [red["position"]]
    assert positions("/delisted") == [gone["position"]]
    assert positions("/suzhou") == [red["position"]]
    assert positions("/jiangsu") == [black["position"], red["position"], gone["position"]]
    assert positions("/shanghai") == []
    assert positions("/both") == [gone["position"]]


async def test_the_hub_runs_the_worker_in_the_background(settings, clock, receiver):
    live = dataclasses.replace(settings, run_webhooks=True)
    async with AsyncTestClient(create_app(live, clock)) as client:
        made = await client.post(
            "/v1/agencies",
            json={
                "code": "320000-tax",
                "name": "t",
                "scopes": ["publish", "subscribe"],
                "domains": ["taxation"],
            },
            headers={"Authorization": f"Bearer {settings.admin_key}"},
        )
        tax = {"Authorization": f"Bearer {made.json()['api_key']}"}
        sub = await subscribe(client, tax, receiver.url())
        created = await list_subject(client, tax, new_subject())
        [request] = await receiver.wait_for(1)
        assert verify(sub["secret"], request)["data"]["position"] == created["position"]
        metrics = generate_latest().decode()  # what /metrics serves: the same registry
        assert 'hub_webhook_deliveries_total{outcome="delivered"}' in metrics
        assert "hub_webhook_queue_depth" in metrics


async def test_two_workers_on_one_schema_send_each_event_once(
    client, make_agency, receiver, settings, clock
):
    tax = await make_agency()
    sub = await subscribe(client, tax, receiver.url())
    subjects = [new_subject() for _ in range(6)]
    created = [await list_subject(client, tax, subjects[n % 6]) for n in range(24)]
    other = await build_hub(settings, clock)
    await other.committer.start()
    try:
        await asyncio.gather(
            run_once(client), other.webhooks.run_once(), run_once(client), other.webhooks.run_once()
        )
        await asyncio.gather(run_once(client), other.webhooks.run_once())
    finally:
        await other.stop()
    sent = [r.json["data"]["position"] for r in receiver.requests]
    assert sorted(sent) == [c["position"] for c in created]  # each once
    for subject in subjects:  # and each subject's in log order
        mine = [
            r.json["data"]["position"] for r in receiver.requests if r.json["subject"] == subject
        ]
        assert mine == sorted(mine)
    rows = await deliveries(client, tax, sub["id"])
    assert {r["status"] for r in rows} == {"delivered"}
    assert len(rows) == 24


async def test_the_leader_lock_is_per_schema(settings, clock, pg_url):
    hub = await build_hub(settings, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.webhooks.run(stop))
    try:
        await asyncio.sleep(0.3)
        assert hub.webhooks.leader
        rival = WebhookWorker(hub.pool, hub.webhooks.config, clock.now)
        rival_task = asyncio.create_task(rival.run(stop))
        elsewhere = WebhookWorker(
            hub.pool, dataclasses.replace(hub.webhooks.config, database_schema="x"), clock.now
        )
        elsewhere_task = asyncio.create_task(elsewhere.run(stop))
        await asyncio.sleep(0.3)
        assert not rival.leader
        assert elsewhere.leader  # another schema's worker is not held back
    finally:
        stop.set()
        await asyncio.gather(task, rival_task, elsewhere_task)
        await hub.stop()
