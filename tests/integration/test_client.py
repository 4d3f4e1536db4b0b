"""The agency client: checks and feedback through the hub; and, with the hub unreachable,
answers from its local replica of the active lists, which it keeps from a durable JetStream
consumer and resumes from its file after a restart."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient
from relay_support import listing_body, make_agency, relay_settings

from adapters.client import AgencyClient, ClientError, HubUnreachable
from adapters.client_replica import LocalReplica
from hub.api.app import create_app
from ops.embedded import free_port

NOWHERE = f"http://127.0.0.1:{free_port()}"  # nothing listens: the hub is down


@pytest.fixture(name="relay_client")
async def fx_relay_client(db, nats_url, stream_prefix, clock):
    settings = relay_settings(db, nats_url, stream_prefix)
    async with AsyncTestClient(create_app(settings, clock)) as client:
        yield client


async def publish(client, headers, **body):
    response = await client.post("/v1/listings", json=listing_body(**body), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def key_of(headers):
    return headers["Authorization"].removeprefix("Bearer ")


async def test_check_and_feedback_through_the_hub(relay_client):
    tax = await make_agency(relay_client)
    listed = await publish(relay_client, tax)
    subject = listing_body()["subject"]["id"]  # never listed
    hub = AgencyClient("http://unused", key_of(tax), http=relay_client)
    [listed_subject] = [
        e["data"]["subject_id"]
        for e in (await relay_client.get("/v1/events?after=0", headers=tax)).json()["events"]
        if e["aggregate_id"] == listed["listing_id"]
    ]

    answer = await hub.check(
        listed_subject, "government_procurement", "投标资格审查", min_position=listed["position"]
    )
    assert answer.source == "hub"
    assert answer.decision == "deny"
    assert answer.check_id
    assert answer.stale_after is None
    [hit] = answer.hits
    assert (hit.listing_id, hit.list) == (listed["listing_id"], "blacklist")
    measure = hit.measures[0].code
    recorded = await hub.feedback(answer.check_id, measure, applied=True, note="已拦截")
    assert (recorded["measure_code"], recorded["applied"]) == (measure, True)

    clear = await hub.check(subject, "government_procurement", "投标资格审查")
    assert (clear.decision, clear.hits) == ("clear", [])
    with pytest.raises(ClientError) as refused:
        await hub.check("not-an-id", "government_procurement", "x")
    assert refused.value.status == 400


async def listed_world(client, tax):
    """A blacklisting, a redlisting and a delisted watchlisting; their subjects by listing."""
    blacklisted = await publish(client, tax)
    redlisted = await publish(client, tax, list_name="redlist")
    removed = await publish(client, tax, list_name="watchlist")
    delisted = await client.post(
        f"/v1/listings/{removed['listing_id']}/delist",
        json={"reason": "repaired", "note": "信用修复完成"},
        headers=tax,
    )
    assert delisted.status_code == 200, delisted.text
    subjects = {
        e["aggregate_id"]: e["data"]["subject_id"]
        for e in (await client.get("/v1/events?after=0", headers=tax)).json()["events"]
        if e["type"] == "listing.registered"
    }
    return blacklisted, redlisted, removed, delisted.json()["position"], subjects


async def test_replica_answers_while_the_hub_is_down(relay_client, clock, tmp_path):
    tax = await make_agency(relay_client)
    hub = AgencyClient("http://unused", key_of(tax), http=relay_client)
    info = await hub.info()
    prefix = info["subjects"][0].removesuffix(".>")
    path = tmp_path / "replica.json"

    def replica():
        return LocalReplica(
            info["nats_url"], info["stream"], "320000-tax", path, subject_prefix=prefix,
            now=clock.now,
        )  # fmt: skip

    blacklisted, redlisted, removed, last_position, subjects = await listed_world(relay_client, tax)

    first = replica()
    await first.start()
    assert await first.wait_for(last_position, 20)
    offline = AgencyClient(NOWHERE, key_of(tax), replica=first)
    try:
        answer = await offline.check(subjects[blacklisted["listing_id"]], "bidding", "投标")
        assert answer.source == "replica"
        assert answer.check_id is None
        assert answer.decision == "review"  # conservative: never deny without the catalogue
        assert [(h.listing_id, h.list, h.severity) for h in answer.hits] == [
            (blacklisted["listing_id"], "blacklist", "severe")
        ]
        assert answer.stale_after is not None
        assert answer.stale_after <= clock.now()
        red = await offline.check(subjects[redlisted["listing_id"]], "bidding", "投标")
        assert (red.decision, [h.list for h in red.hits]) == ("clear", ["redlist"])
        gone = await offline.check(subjects[removed["listing_id"]], "bidding", "投标")
        assert (gone.decision, gone.hits) == ("clear", [])
        with pytest.raises(HubUnreachable):
            await offline.feedback("any", "bidding.exclude", applied=True)
    finally:
        await first.stop()
        await offline.aclose()

    later = await publish(relay_client, tax, list_name="market_ban")
    second = replica()  # resumes from its file: nothing applied twice, nothing missed
    assert second.position == first.position
    assert len(second.replica) == 2
    await second.start()
    try:
        assert await second.wait_for(later["position"], 20)
        assert len(second.replica) == 3
        assert second.replica.state.stream_seq == first.replica.state.stream_seq + 1
    finally:
        await second.stop()

    stale = AgencyClient(NOWHERE, key_of(tax), replica=second)
    clock.advance(timedelta(days=2))  # beyond the 24-hour staleness bound
    with pytest.raises(HubUnreachable, match="stale"):
        await stale.check(subjects[blacklisted["listing_id"]], "bidding", "投标")
    await stale.aclose()


async def test_no_replica_no_answer():
    offline = AgencyClient(NOWHERE, "hub_key")
    with pytest.raises(HubUnreachable):
        await offline.check("uscc:91350100M000100Y43", "bidding", "投标")
    await offline.aclose()
