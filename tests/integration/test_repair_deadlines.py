"""Working-day limits of objections across the 2024 National Day holidays: the notice window,
the answer limit, and overdue answers flagged, counted and visible in metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, USCC, make_listing, on_app, settle


def _gauge(text: str, kind: str) -> float:
    prefix = f'hub_overdue{{kind="{kind}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


async def test_objection_answer_overdue_across_national_day(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    listing_id = await make_listing(client, tax, "N-1", notice_days=5)
    listing = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()["listing"]
    # 5 working days: Sun 09-29 (make-up), Mon 09-30, then 10-08, 10-09, 10-10.
    assert listing["notice_until"] == "2024-10-10T15:59:59.999999Z"

    objected = await client.post(
        f"/v1/listings/{listing_id}/objections", json={"grounds": "paid in time"}, headers=tax
    )
    assert objected.status_code == 201, objected.text
    listing = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()["listing"]
    # 10 working days: 09-29, 09-30, 10-08 .. 10-11, Sat 10-12 (make-up), 10-14, 10-15, 10-16.
    assert listing["objections"][0]["answer_due"] == "2024-10-16T15:59:59.999999Z"

    clock.set(datetime(2024, 10, 16, 15, 59, tzinfo=UTC))
    await settle(client)
    assert (await client.get("/v1/overdue", headers=tax)).json()["counts"]["objection"] == 0
    profile = (await client.get(f"/v1/subjects/{USCC}", headers=tax)).json()
    assert (profile["active"], len(profile["pending"])) == ([], 1)  # held back by the objection

    clock.set(datetime(2024, 10, 16, 16, 0, tzinfo=UTC))
    overdue = (await client.get("/v1/overdue", headers=tax)).json()
    assert overdue["counts"]["objection"] == 1
    assert overdue["items"] == [
        {"kind": "objection", "id": f"{listing_id}/1", "due": "2024-10-16T15:59:59.999999Z"}
    ]
    other = await make_agency("320000-env", domains=("environment",), scopes=("publish",))
    assert (await client.get("/v1/overdue", headers=other)).json()["counts"]["objection"] == 0

    hub = client.app.state.hub
    await on_app(client, hub.scheduler.run_once)
    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "objection") == 1.0

    resolved = await client.post(
        f"/v1/listings/{listing_id}/objections/1/resolve",
        json={"upheld": False, "answer": "the tax was paid late"},
        headers=tax,
    )
    assert resolved.status_code == 200, resolved.text
    await settle(client, resolved.json()["position"])
    assert (await client.get("/v1/overdue", headers=tax)).json()["counts"]["objection"] == 0
    await on_app(client, hub.scheduler.run_once)
    assert _gauge((await client.get("/metrics")).text, "objection") == 0.0


async def test_objection_window_counts_working_days(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    listing_id = await make_listing(client, tax, "N-2", notice_days=5)
    clock.set(datetime(2024, 10, 10, 15, 0, tzinfo=UTC))  # 23:00 on the 5th working day
    inside = await client.post(
        f"/v1/listings/{listing_id}/objections", json={"grounds": "g"}, headers=tax
    )
    assert inside.status_code == 201, inside.text
    clock.set(datetime(2024, 10, 10, 16, 0, tzinfo=UTC))  # 00:00 on 10-11: closed
    late = await client.post(
        f"/v1/listings/{listing_id}/objections", json={"grounds": "g"}, headers=tax
    )
    assert late.status_code == 422
    assert late.json()["rule"] == "objection.window_closed"
