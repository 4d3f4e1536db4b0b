"""Credit repair through the API: the rules of an application, the authority's decisions, and
the working-day limits across the 2024 National Day holidays and their make-up working days."""

from __future__ import annotations

from datetime import UTC, datetime

from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, USCC, make_listing, materials, settle

BASIC = ("commitment", "penalty_performed")


async def _check(client, headers, subject, position):
    body = {"subject_id": subject, "matter": "bidding", "purpose": "审批受理"}
    body["min_position"] = position
    response = await client.post("/v1/checks", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _deadlines(client, clock, tax, website, repair_id):
    case = (await client.get(f"/v1/repairs/{repair_id}", headers=tax)).json()
    # 3 working days: Sun 09-29 (make-up), Mon 09-30, then Tue 10-08 after the holidays.
    assert case["decision_due"] == "2024-10-08T15:59:59.999999Z"
    # 10 working days: ... 10-11, Sat 10-12 (make-up), 10-14, 10-15, 10-16.
    assert case["answer_due"] == "2024-10-16T15:59:59.999999Z"
    assert case["decision_overdue"] is False

    clock.set(datetime(2024, 10, 8, 15, 59, tzinfo=UTC))
    case = (await client.get(f"/v1/repairs/{repair_id}", headers=tax)).json()
    assert case["decision_overdue"] is False
    clock.set(datetime(2024, 10, 8, 16, 0, tzinfo=UTC))
    case = (await client.get(f"/v1/repairs/{repair_id}", headers=tax)).json()
    assert case["decision_overdue"] is True
    assert case["answer_overdue"] is False
    await settle(client)
    overdue = (await client.get("/v1/overdue", headers=tax)).json()
    assert overdue["counts"]["repair_decision"] == 1
    assert [i["id"] for i in overdue["items"]] == [repair_id]
    assert (await client.get("/v1/overdue", headers=website)).json()["counts"][
        "repair_decision"
    ] == 0


async def test_repair_story_across_national_day(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    website = await make_agency("320000-credit", scopes=("publish",), domains=("taxation",))
    listing_id = await make_listing(client, tax, "R-1")
    body = {"listing_id": listing_id, "materials": materials(*BASIC)}

    created = await client.post("/v1/repairs", json=body, headers=website)
    assert created.status_code == 201, created.text
    repair_id = created.json()["repair_id"]
    assert created.json()["status"] == "applied"

    again = await client.post("/v1/repairs", json=body, headers=website)
    assert again.status_code == 200
    assert again.json()["repair_id"] == repair_id
    other = {"listing_id": listing_id, "materials": materials(*BASIC, "other")}
    busy = await client.post("/v1/repairs", json=other, headers=website)
    assert busy.status_code == 409
    assert busy.json()["rule"] == "repair.already_open"

    await _deadlines(client, clock, tax, website, repair_id)

    refused = await client.post(
        f"/v1/repairs/{repair_id}/accept", json={"reason": "complete"}, headers=website
    )
    assert refused.status_code == 403
    early = await client.post(
        f"/v1/repairs/{repair_id}/approve", json={"reason": "ok"}, headers=tax
    )
    assert early.status_code == 409
    assert early.json()["rule"] == "repair.approve.state"
    accepted = await client.post(
        f"/v1/repairs/{repair_id}/accept", json={"reason": "complete"}, headers=tax
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert accepted.json()["decision_overdue"] is False

    before = await _check(client, tax, USCC, accepted.json()["position"])
    assert before["decision"] == "deny"
    assert [h["listing_id"] for h in before["hits"]] == [listing_id]

    approved = await client.post(
        f"/v1/repairs/{repair_id}/approve",
        json={"reason": "penalty paid, training done"},
        headers=tax,
    )
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["status"] == "approved"
    assert [d["status"] for d in view["decisions"]] == ["accepted", "approved"]

    listing = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()
    assert listing["listing"]["status"] == "delisted"
    assert listing["listing"]["delist_reason"] == "repaired"
    # The approval and the delisting were saved in one transaction: adjacent positions.
    page = await client.get(f"/v1/events?after={view['position'] - 2}&limit=2", headers=tax)
    assert sorted(e["type"] for e in page.json()["events"]) == [
        "listing.delisted",
        "repair.approved",
    ]

    await settle(client, view["position"])
    profile = (await client.get(f"/v1/subjects/{USCC}", headers=tax)).json()
    assert profile["active"] == []
    after = await _check(client, tax, USCC, view["position"])
    assert (after["decision"], after["hits"]) == ("clear", [])


async def _apply(client, headers, listing_id, *kinds, **extra):
    body = {"listing_id": listing_id, "materials": materials(*kinds), **extra}
    return await client.post("/v1/repairs", json=body, headers=headers)


async def test_repair_refusals(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency(domains=("taxation", "courts"))
    general = await make_listing(client, tax, "G-1")
    recent = await make_listing(client, tax, "G-2", start="2024-08-01", end="2025-08-01")
    severe = await make_listing(
        client, tax, "S-1", severity="severe", start="2023-06-01", end="2026-06-01"
    )
    court = await make_listing(client, tax, "C-1", domain="courts")
    red = await make_listing(client, tax, "RED-1", list_name="redlist", start="2024-06-01")

    cases = [
        (recent, BASIC, {}, 422, "repair.min_period"),
        (general, ("commitment",), {}, 422, "repair.materials.penalty_performed"),
        (general, ("penalty_performed",), {}, 422, "repair.materials.commitment"),
        (severe, BASIC, {}, 422, "repair.severe.training"),
        (severe, (*BASIC, "training_certificate"), {}, 422, "repair.severe.credit_report"),
        (court, BASIC, {}, 422, "repair.unrepairable.domain=courts"),
        (red, BASIC, {}, 422, "repair.punitive"),
        (general, BASIC, {"commitment_code": "32010020240927000001"}, 422, "repair.commitment"),
    ]
    for listing_id, kinds, extra, status, rule in cases:
        response = await _apply(client, tax, listing_id, *kinds, **extra)
        assert response.status_code == status, (rule, response.text)
        assert response.json()["rule"] == rule
        assert response.headers["content-type"].startswith("application/problem+json")

    assert (await _apply(client, tax, "not-a-uuid", *BASIC)).json()["field"] == "listing_id"
    unknown = await _apply(client, tax, "00000000-0000-0000-0000-000000000001", *BASIC)
    assert unknown.status_code == 404
    bad_kind = await client.post(
        "/v1/repairs",
        json={"listing_id": general, "materials": [{"kind": "bribe", "ref": "x"}]},
        headers=tax,
    )
    assert bad_kind.status_code == 400
    assert bad_kind.json()["field"].startswith("materials")
    extra_field = await client.post(
        "/v1/repairs",
        json={"listing_id": general, "materials": materials(*BASIC), "x": 1},
        headers=tax,
    )
    assert extra_field.status_code == 400

    ok = await _apply(
        client, tax, severe, *BASIC, "credit_report", training_certificate="cert://2024-0001"
    )
    assert ok.status_code == 201, ok.text


async def test_rejected_case_may_be_filed_again_and_denied(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    listing_id = await make_listing(client, tax, "G-9")
    first = (await _apply(client, tax, listing_id, *BASIC)).json()["repair_id"]
    rejected = await client.post(
        f"/v1/repairs/{first}/reject", json={"reason": "the proof is unsigned"}, headers=tax
    )
    assert rejected.json()["status"] == "rejected"
    again = await client.post(f"/v1/repairs/{first}/accept", json={"reason": "x"}, headers=tax)
    assert again.status_code == 409

    second = await _apply(client, tax, listing_id, *BASIC, "other")
    assert second.status_code == 201
    second_id = second.json()["repair_id"]
    assert second_id != first
    await client.post(f"/v1/repairs/{second_id}/accept", json={"reason": "complete"}, headers=tax)
    denied = await client.post(
        f"/v1/repairs/{second_id}/deny", json={"reason": "penalty not performed"}, headers=tax
    )
    assert denied.json()["status"] == "denied"
    listing = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()["listing"]
    assert listing["status"] == "effective"

    stranger = await make_agency("320000-env", scopes=("publish",), domains=("environment",))
    hidden = await client.get(f"/v1/repairs/{second_id}", headers=stranger)
    assert hidden.status_code == 403
