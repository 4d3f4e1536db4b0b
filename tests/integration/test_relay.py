"""The JetStream relay in the hub process: every event of the log reaches a durable consumer
once and in order, as a valid CloudEvent on its subject; subscribers filter with wildcards;
`GET /v1/info` says where to connect."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.formats.json import JSONFormat
from litestar.testing import AsyncTestClient
from relay_support import (
    assert_exactly_once_in_order,
    drain,
    log_ids,
    make_agency,
    post_listings,
    relay_settings,
    wait_until,
)

from hub.api.app import create_app


@pytest.fixture(name="relay_client")
async def fx_relay_client(db, nats_url, stream_prefix, clock):
    settings = relay_settings(db, nats_url, stream_prefix)
    async with AsyncTestClient(create_app(settings, clock)) as client:
        yield client


async def relayed(client, position):
    relay = client.app.state.hub.relay

    async def caught_up():
        return relay.position >= position

    await wait_until(caught_up, 20, f"the relay to publish position {position}")


async def test_every_event_once_in_order_as_cloudevents(relay_client, db, nats_url, stream_prefix):
    tax = await make_agency(relay_client)
    positions = await post_listings(relay_client, tax, 40)
    first = relay_client.app.state.hub.relay
    listing = await relay_client.get(f"/v1/events?after={positions[0] - 1}&limit=1", headers=tax)
    listing_id = listing.json()["events"][0]["aggregate_id"]
    delisted = await relay_client.post(
        f"/v1/listings/{listing_id}/delist",
        json={"reason": "corrected", "note": "wrong decision"},
        headers=tax,
    )
    assert delisted.status_code == 200, delisted.text
    await relayed(relay_client, delisted.json()["position"])

    received = await drain(nats_url, stream_prefix)
    assert_exactly_once_in_order(received, await log_ids(db))
    for message in received:
        event = JSONFormat().read(None, message.data)  # validates the attributes
        assert event.get_specversion() == "1.0"
        assert event.get_id() == message.msg_id
        assert event.get_source() == "/hubs/320000"
        if event.get_type().startswith("cn.gov.credit.listing."):
            assert event.get_subject().startswith("uscc:")
            assert message.subject.startswith(f"{stream_prefix.lower()}.blacklist.")
        else:  # other families (the hub seeds its measure catalogue): the fallback subjects
            family = event.get_type().removeprefix("cn.gov.credit.").split(".")[0]
            assert message.subject.startswith(f"{stream_prefix.lower()}.{family}.")
        assert event.get_time().tzinfo is not None
        assert event.get_datacontenttype() == "application/json"
        assert event.get_data()["position"] == message.position
        assert message.headers["Content-Type"] == "application/cloudevents+json"
    last = JSONFormat().read(None, received[-1].data)
    assert last.get_type() == "cn.gov.credit.listing.delisted"
    data = last.get_data()
    assert data["aggregate_id"] == listing_id
    assert data["list"] == "blacklist"
    assert data["reason"] == "corrected"
    assert received[-1].subject == f"{stream_prefix.lower()}.blacklist.delisted.320100"
    assert first.position == received[-1].position


async def test_subjects_filter_with_wildcards(relay_client, nats_url, stream_prefix):
    tax = await make_agency(relay_client)
    await post_listings(relay_client, tax, 3, list_name="blacklist", region="320100")
    await post_listings(relay_client, tax, 2, list_name="watchlist", region="320500")
    last = await post_listings(relay_client, tax, 2, list_name="redlist", region="320100")
    await relayed(relay_client, max(last))
    prefix = stream_prefix.lower()

    nanjing = await drain(
        nats_url, stream_prefix, durable="nj", filter_subject=f"{prefix}.*.*.320100"
    )
    assert len(nanjing) == 5
    assert {m.subject.split(".")[1] for m in nanjing} == {"blacklist", "redlist"}
    watch = await drain(
        nats_url, stream_prefix, durable="wl", filter_subject=f"{prefix}.watchlist.>"
    )
    assert [m.subject for m in watch] == [f"{prefix}.watchlist.registered.320500"] * 2
    registered = await drain(
        nats_url, stream_prefix, durable="reg", filter_subject=f"{prefix}.*.registered.*"
    )
    assert len(registered) == 7
    assert [json.loads(m.data)["data"]["list"] for m in registered][-2:] == ["redlist"] * 2


async def test_info_tells_subscribers_where_to_connect(relay_client, nats_url, stream_prefix):
    reader = await make_agency(relay_client, "320000-reader", scopes=("subscribe",))
    writer = await make_agency(relay_client, "320000-writer", scopes=("publish",))
    positions = await post_listings(relay_client, writer, 2)
    await relayed(relay_client, max(positions))

    answer = await relay_client.get("/v1/info", headers=reader)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "nats_url": nats_url,
        "stream": stream_prefix,
        "subjects": [f"{stream_prefix.lower()}.>"],
        "position": max(positions),
    }
    refused = await relay_client.get("/v1/info", headers=writer)
    assert refused.status_code == 403
    assert refused.json()["rule"] == "auth.scope"


async def test_info_without_nats_is_unavailable(client, make_agency):
    reader = await make_agency("320000-reader", scopes=("subscribe",))
    answer = await client.get("/v1/info", headers=reader)
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
