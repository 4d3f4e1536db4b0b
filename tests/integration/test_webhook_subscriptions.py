"""Webhook subscriptions through the API: an agency sees and deletes only its own; the
scope `subscribe` is required; bad bodies, ids and queries answer 400 naming the field."""

from __future__ import annotations

import pytest
from webhook_support import (
    fx_receiver,  # noqa: F401 - fixture
    fx_settings,  # noqa: F401 - fixture
    list_subject,
    new_subject,
    run_once,
    subscribe,
)


async def test_an_agency_sees_and_deletes_only_its_own(client, make_agency, receiver):
    tax = await make_agency("320000-tax")
    court = await make_agency("320000-court", domains=("courts",))
    sub = await subscribe(client, tax, receiver.url())
    path = f"/v1/subscriptions/{sub['id']}"

    assert (await client.get("/v1/subscriptions", headers=court)).json() == {"subscriptions": []}
    for response in (
        await client.get(path, headers=court),
        await client.delete(path, headers=court),
        await client.get(f"{path}/deliveries", headers=court),
        await client.post(f"{path}/redeliver", json={}, headers=court),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["field"] == "subscription_id"
    mine = (await client.get("/v1/subscriptions", headers=tax)).json()["subscriptions"]
    assert [s["id"] for s in mine] == [sub["id"]]
    assert "secret" not in mine[0]
    shown = await client.get(path, headers=tax)
    assert shown.status_code == 200
    assert shown.json()["filter"] == {"lists": [], "events": [], "regions": []}

    publisher = await make_agency("320000-pub", scopes=("publish",))
    refused = await client.post(
        "/v1/subscriptions", json={"url": receiver.url()}, headers=publisher
    )
    assert refused.status_code == 403
    assert refused.json()["rule"] == "auth.scope"

    assert (await client.delete(path, headers=tax)).status_code == 204
    assert (await client.get(path, headers=tax)).status_code == 404
    await list_subject(client, tax, new_subject())
    assert (await run_once(client)).queued == 0
    assert receiver.requests == []


def names(problem, field):
    """The problem names `field`: exactly (dotted path), or, where the shared problem mapping
    loses a nested path for a missing or unknown field, by its name in the message."""
    shown = (problem.get("field") or "").replace("[", ".").replace("]", "")
    if shown == field:
        return True
    name = field.rpartition(".")[2]
    return f"`{name}`" in problem["detail"] and field.endswith(shown)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/hook"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hook"}, "url"),
        ({"url": "not a url at all"}, "url"),
        ({"url": "https://example.org/#frag"}, "url"),
        ({}, "url"),
        ({"url": "https://example.org/h", "filter": {"lists": ["greylist"]}}, "filter.lists.0"),
        (
            {"url": "https://example.org/h", "filter": {"events": ["listing.registered", "x.y"]}},
            "filter.events.1",
        ),
        ({"url": "https://example.org/h", "filter": {"regions": ["3201"]}}, "filter.regions.0"),
        ({"url": "https://example.org/h", "filter": {"colour": ["red"]}}, "filter.colour"),
        ({"url": "https://example.org/h", "secret": "whsec_not*base64!"}, "secret"),
        ({"url": "https://example.org/h", "secret": "whsec_c2hvcnQ="}, "secret"),
        ({"url": "https://example.org/h", "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "secret"),
        ({"url": "https://example.org/h", "extra": 1}, "extra"),
    ],
)
async def test_bad_bodies_answer_400_naming_the_field(client, make_agency, body, field):
    tax = await make_agency()
    response = await client.post("/v1/subscriptions", json=body, headers=tax)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert names(response.json(), field), response.json()


async def test_bad_ids_and_queries(client, make_agency, receiver):
    tax = await make_agency()
    sub = await subscribe(client, tax, receiver.url())
    bad_id = await client.get("/v1/subscriptions/nope", headers=tax)
    assert (bad_id.status_code, bad_id.json()["field"]) == (400, "subscription_id")
    bad_status = await client.get(
        f"/v1/subscriptions/{sub['id']}/deliveries?status=lost", headers=tax
    )
    assert bad_status.status_code == 400
    bad_ids = await client.post(
        f"/v1/subscriptions/{sub['id']}/redeliver", json={"delivery_ids": ["a"]}, headers=tax
    )
    assert bad_ids.status_code == 400
    assert names(bad_ids.json(), "delivery_ids.0")
    none = await client.post(
        f"/v1/subscriptions/{sub['id']}/redeliver", json={"delivery_ids": [1]}, headers=tax
    )
    assert none.json() == {"requeued": 0}
