"""A first story through the API: an agency lists a subject and reads it back."""

from __future__ import annotations


async def test_listing_story(client, make_agency):
    tax = await make_agency()
    body = {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": "D-1", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    created = await client.post("/v1/listings", json=body, headers=tax)
    assert created.status_code == 201, created.text
    position = created.json()["position"]
    profile = await client.get(
        f"/v1/subjects/uscc:91350100M000100Y43?min_position={position}", headers=tax
    )
    assert profile.status_code == 200
    assert [item["decision_no"] for item in profile.json()["active"]] == ["D-1"]
