"""Credit commitments through the API: recording, the rules that refuse one, fulfilment, and a
breach that lists the committer exactly once, even when the breach policy dies mid-way."""

from __future__ import annotations

from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, USCC, settle

CODE = "32010020240927000001"


def commitment(code: str = CODE, **changes) -> dict:
    body = {
        "code": code,
        "committer": {"name": "Acme Trading Co.", "category": "organisation", "code": USCC},
        "type": "missing_materials",
        "reason": "licence application with a missing fire-safety certificate",
        "content": "we will hand in the certificate within 30 days",
        "liability": "the licence is revoked and we accept listing",
        "valid_until": "2024-12-31",
        "publicity": "public",
        "domain": "taxation",
    }
    body.update(changes)
    return body


async def test_commitment_record_and_refusals(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    created = await client.post("/v1/commitments", json=commitment(), headers=tax)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["status"], view["made_on"], view["accepting_agency"]) == (
        "pending",
        "2024-09-27",
        "320000-tax",
    )
    assert (await client.post("/v1/commitments", json=commitment(), headers=tax)).status_code == 200
    changed = await client.post("/v1/commitments", json=commitment(content="other"), headers=tax)
    assert (changed.status_code, changed.json()["rule"]) == (409, "commitment.code_conflict")

    refusals = [
        (commitment(code="00000020240927000002"), 400, "code"),
        (commitment(code="32010020240230000002"), 400, "code"),
        (commitment(code="32010020240928000002"), 400, "made_on"),  # tomorrow
        (commitment(code="32010020240927000002", made_on="2024-09-26"), 400, "made_on"),
        (commitment(code="32010020240927000002", valid_until="2024-01-01"), 400, "valid_until"),
        (commitment(code="32010020240927000002", type="promise"), 400, "type"),
        (
            commitment(
                code="32010020240927000002",
                committer={"name": "Zhang San", "category": "person", "code": USCC},
            ),
            400,
            "committer.code",
        ),
        (
            commitment(code="32010020240927000002", accepting_agency="other"),
            403,
            "accepting_agency",
        ),
        (commitment(code="32010020240927000002", domain="astrology"), 422, "domain"),
        (commitment(code="32010020240927000002", extra=1), 400, "extra"),
    ]
    for body, status, field in refusals:
        response = await client.post("/v1/commitments", json=body, headers=tax)
        assert response.status_code == status, (field, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json().get("field") == field, response.json()

    env = await make_agency("320000-env", domains=("environment",))
    foreign = await client.post(
        f"/v1/commitments/{CODE}/fulfil", json={"note": "done"}, headers=env
    )
    assert (foreign.status_code, foreign.json()["rule"]) == (403, "authority.owner")
    partly = await client.post(
        f"/v1/commitments/{CODE}/fulfil", json={"status": "partly", "note": "half"}, headers=tax
    )
    assert partly.json()["status"] == "partly"
    done = await client.post(f"/v1/commitments/{CODE}/fulfil", json={"note": "all"}, headers=tax)
    assert done.json()["status"] == "fulfilled"
    late = await client.post(f"/v1/commitments/{CODE}/breach", json={"facts": "x"}, headers=tax)
    assert (late.status_code, late.json()["rule"]) == (409, "commitment.closed")
    missing = await client.get("/v1/commitments/32010020240927999999", headers=tax)
    assert missing.status_code == 404

    await settle(client)
    listed = (await client.get(f"/v1/subjects/{USCC}/commitments", headers=tax)).json()
    assert [(c["code"], c["status"]) for c in listed["commitments"]] == [(CODE, "fulfilled")]


async def test_breach_lists_the_committer(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    await client.post("/v1/commitments", json=commitment(), headers=tax)
    no_domain = "32010020240927000002"
    await client.post("/v1/commitments", json=commitment(no_domain, domain=None), headers=tax)
    refused = await client.post(
        f"/v1/commitments/{no_domain}/breach", json={"facts": "never came"}, headers=tax
    )
    assert (refused.status_code, refused.json()["field"]) == (400, "domain")

    breached = await client.post(
        f"/v1/commitments/{CODE}/breach",
        json={"facts": "the certificate never came", "severity": "general"},
        headers=tax,
    )
    assert breached.status_code == 200, breached.text
    view = breached.json()
    assert view["status"] == "not_fulfilled"
    await settle(client)
    listing = await client.get(f"/v1/listings/{view['breach_listing_id']}", headers=tax)
    assert listing.status_code == 200, listing.text
    detail = listing.json()["listing"]
    assert (detail["list"], detail["authority"], detail["severity"], detail["status"]) == (
        "watchlist",
        "320000-tax",
        "general",
        "effective",
    )
    assert detail["subject"] == {"id": USCC, "name": "Acme Trading Co."}
    assert detail["basis"]["decision_no"] == f"commitment-breach:{CODE}"
    profile = (await client.get(f"/v1/subjects/{USCC}", headers=tax)).json()
    assert [a["decision_no"] for a in profile["active"]] == [f"commitment-breach:{CODE}"]
