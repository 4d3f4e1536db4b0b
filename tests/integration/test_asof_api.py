"""As-of answers: a subject and a whole list at an effective time, as known at a recorded
time, before, between and after a listing, an amendment, a retroactive correction and a
repair (a delisting), with the clock set between the steps."""

from __future__ import annotations

from datetime import UTC, datetime

SUBJECT = "uscc:91350100M000100Y43"


def body(decision: str, subject: str = SUBJECT, **extra) -> dict:
    return {
        "subject": {"id": subject, "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": decision, "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
        **extra,
    }


async def _ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


async def test_subject_and_list_as_of(client, make_agency, clock):
    tax = await make_agency()
    created = await _ok(await client.post("/v1/listings", json=body("D-1"), headers=tax), 201)
    lid, p1 = created["listing_id"], created["position"]

    clock.set(datetime(2025, 4, 1, 2, tzinfo=UTC))
    amended = await client.post(
        f"/v1/listings/{lid}/amend", json={"note": "n", "severity": "general"}, headers=tax
    )
    p2 = (await _ok(amended))["position"]

    clock.set(datetime(2025, 5, 1, 2, tzinfo=UTC))
    corrected = await client.post(
        f"/v1/listings/{lid}/amend",
        json={
            "note": "the decision took effect a month earlier",
            "effective_from": "2025-02-01T00:00:00+08:00",
            "effective_until": "2026-02-01T00:00:00+08:00",
            "applies_from": "2025-02-01T00:00:00+08:00",
        },
        headers=tax,
    )
    p3 = (await _ok(corrected))["position"]

    clock.set(datetime(2025, 6, 1, 2, tzinfo=UTC))
    repaired = await client.post(
        f"/v1/listings/{lid}/delist", json={"reason": "repaired", "note": "n"}, headers=tax
    )
    p4 = (await _ok(repaired))["position"]
    await _ok(await client.get(f"/v1/subjects/{SUBJECT}?min_position={p4}", headers=tax))

    async def active(as_of: str, known_at: str | int | None = None) -> list[dict]:
        url = f"/v1/subjects/{SUBJECT}?as_of={as_of}"
        if known_at is not None:
            url += f"&known_at={known_at}"
        return (await _ok(await client.get(url, headers=tax)))["active"]

    def terms(items: list[dict]) -> list[tuple]:
        return [(i["severity"], i["effective_from"][:10], i["effective_until"][:10]) for i in items]

    # before the listing was recorded, nothing was known
    assert await active("2025-03-15T00:00:00Z", p1 - 1) == []
    assert await active("2025-03-15T00:00:00Z", "2025-03-03T01:59:59Z") == []
    # as first recorded: in force from 1 March, not before
    assert terms(await active("2025-03-15T00:00:00Z", p1)) == [
        ("severe", "2025-02-28", "2026-02-28")
    ]
    assert await active("2025-02-28T12:00:00Z", p1) == []
    # the amendment applies from its recording on 1 April, not before
    assert terms(await active("2025-04-15T00:00:00Z", p2))[0][0] == "general"
    assert terms(await active("2025-03-15T00:00:00Z", p2))[0][0] == "severe"
    assert terms(await active("2025-04-15T00:00:00Z", "2025-04-15T00:00:00+08:00"))[0][0] == (
        "general"
    )
    # the retroactive correction: 15 February was not covered before it, is after it
    assert await active("2025-02-15T00:00:00Z", p2) == []
    assert terms(await active("2025-02-15T00:00:00Z", p3)) == [
        ("severe", "2025-01-31", "2026-01-31")
    ]
    assert terms(await active("2025-04-15T00:00:00Z")) == [("general", "2025-01-31", "2026-01-31")]
    # the repair ends it from 1 June; known before the repair, it was still in force in July
    assert len(await active("2025-05-31T00:00:00Z")) == 1
    assert await active("2025-07-01T00:00:00Z") == []
    assert len(await active("2025-07-01T00:00:00Z", p3)) == 1
    # an unencoded '+' in the offset arrives as a space and is still read
    assert len(await active("2025-05-31T00:00:00+08:00".replace("+", "%2B"))) == 1

    async def listed(as_of: str, known_at: int | None = None, **page) -> dict:
        url = f"/v1/lists/blacklist?as_of={as_of}&min_position={p4}"
        if known_at is not None:
            url += f"&known_at={known_at}"
        for key, value in page.items():
            url += f"&{key}={value}"
        return await _ok(await client.get(url, headers=tax))

    assert [x["listing_id"] for x in (await listed("2025-02-15T00:00:00Z"))["listings"]] == [lid]
    assert (await listed("2025-02-15T00:00:00Z", p2))["listings"] == []
    assert (await listed("2025-07-01T00:00:00Z"))["listings"] == []
    assert [x["severity"] for x in (await listed("2025-05-01T00:00:00Z", p3))["listings"]] == [
        "general"
    ]


async def test_list_pages_and_bad_parameters(client, make_agency, clock):
    tax = await make_agency()
    ids = []
    for n in range(5):
        created = await client.post("/v1/listings", json=body(f"P-{n}"), headers=tax)
        ids.append((await _ok(created, 201))["listing_id"])
        position = created.json()["position"]
    await _ok(await client.get(f"/v1/subjects/{SUBJECT}?min_position={position}", headers=tax))
    seen, after = [], None
    while True:
        url = f"/v1/lists/blacklist?as_of=2025-06-01T00:00:00Z&limit=2&min_position={position}"
        page = await _ok(await client.get(url + (f"&after={after}" if after else ""), headers=tax))
        seen += [x["listing_id"] for x in page["listings"]]
        after = page["next_after"]
        if after is None:
            break
    assert sorted(seen) == sorted(ids)

    async def field(url: str) -> str:
        response = await client.get(url, headers=tax)
        assert response.status_code == 400, response.text
        return response.json()["field"]

    assert await field(f"/v1/subjects/{SUBJECT}?as_of=yesterday") == "as_of"
    assert await field(f"/v1/subjects/{SUBJECT}?as_of=2025-01-01T00:00:00") == "as_of"
    assert await field(f"/v1/subjects/{SUBJECT}?known_at=soon") == "known_at"
    assert await field("/v1/lists/greylist") == "list_name"
    assert await field("/v1/lists/blacklist?after=zzz") == "after"
