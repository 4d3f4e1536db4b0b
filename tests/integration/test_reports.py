"""Public reports: anyone files one without a key; it reaches only the agency responsible,
within a working-day answer limit, and is flagged once the limit has passed."""

from __future__ import annotations

from datetime import UTC, datetime

from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, make_listing, settle

from hub.subject.ratelimit import TokenBucket


async def test_report_reaches_only_its_agency_and_is_flagged_overdue(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    env = await make_agency("320000-env", domains=("environment",))
    listing_id = await make_listing(client, tax, "W-1")

    about_listing = {"kind": "wrong_listing", "listing_id": listing_id, "content": "paid in 2023"}
    filed = await client.post("/public/reports", json=about_listing)
    assert filed.status_code == 201, filed.text
    receipt = filed.json()
    assert receipt["agency"] == "320000-tax"
    # 15 working days, with the make-up days 09-29 and 10-12 and no day of 10-01..07
    assert receipt["answer_due"] == "2024-10-23T15:59:59.999999Z"
    named = {"kind": "measure_not_applied", "agency": "320000-env", "content": "still got a grant"}
    env_receipt = (await client.post("/public/reports", json=named)).json()
    assert env_receipt["agency"] == "320000-env"

    await settle(client)
    mine = (await client.get("/v1/reports", headers=tax)).json()["reports"]
    assert [r["report_id"] for r in mine] == [receipt["report_id"]]
    assert mine[0]["overdue"] is False
    theirs = (await client.get("/v1/reports", headers=env)).json()["reports"]
    assert [r["report_id"] for r in theirs] == [env_receipt["report_id"]]
    wrong = await client.post(
        f"/v1/reports/{receipt['report_id']}/answer", json={"answer": "no"}, headers=env
    )
    assert wrong.status_code == 404

    clock.set(datetime(2024, 10, 23, 15, 59, tzinfo=UTC))
    assert (await client.get("/v1/reports?overdue=true", headers=tax)).json()["reports"] == []
    clock.set(datetime(2024, 10, 23, 16, 0, tzinfo=UTC))
    late = (await client.get("/v1/reports?overdue=true", headers=tax)).json()["reports"]
    assert [(r["report_id"], r["overdue"]) for r in late] == [(receipt["report_id"], True)]
    assert (await client.get("/v1/overdue", headers=tax)).json()["counts"]["report"] == 1

    answered = await client.post(
        f"/v1/reports/{receipt['report_id']}/answer",
        json={"answer": "checked: the listing stands", "upheld": False},
        headers=tax,
    )
    assert answered.status_code == 200, answered.text
    assert (answered.json()["status"], answered.json()["overdue"]) == ("answered", False)
    again = await client.post(
        f"/v1/reports/{receipt['report_id']}/answer", json={"answer": "x"}, headers=tax
    )
    assert (again.status_code, again.json()["rule"]) == (409, "report.answered")
    await settle(client)
    assert (await client.get("/v1/overdue", headers=tax)).json()["counts"]["report"] == 0
    rows = (await client.get("/v1/reports?status=answered", headers=tax)).json()["reports"]
    assert [r["answer"] for r in rows] == ["checked: the listing stands"]


async def test_report_refusals(client, make_agency):
    await make_agency()
    cases = [
        ({"kind": "other", "content": "who knows"}, 422, "listing_id"),
        ({"kind": "other", "content": "x", "agency": "nobody"}, 404, "agency"),
        (
            {"kind": "other", "content": "x", "listing_id": "00000000-0000-0000-0000-000000000001"},
            404,
            "listing_id",
        ),
        ({"kind": "other", "content": "x", "listing_id": "nope"}, 400, "listing_id"),
        ({"kind": "gossip", "content": "x", "agency": "320000-tax"}, 400, "kind"),
        ({"kind": "other", "content": "", "agency": "320000-tax"}, 400, "content"),
        ({"kind": "other", "content": "x", "agency": "320000-tax", "x": 1}, 400, "x"),
    ]
    for body, status, field in cases:
        response = await client.post("/public/reports", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json().get("field") == field, response.json()

    too_big = await client.post(
        "/public/reports", content=b'{"kind": "other", "content": "' + b"x" * 9000 + b'"}'
    )
    assert too_big.status_code == 413
    assert too_big.headers["content-type"].startswith("application/problem+json")

    client.app.state.hub.subject.report_limit = TokenBucket(2, 3600)
    ok = {"kind": "other", "content": "x", "agency": "320000-tax"}
    statuses = [(await client.post("/public/reports", json=ok)).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
