"""The public view shows only what may be published: for several generated subjects, no full
identity number and no restricted record ever appears, by subject or by name search; pages
are keyset cursors that carry no identifier; keyless clients are rate-limited."""

from __future__ import annotations

import base64
import random

from repair_fixtures import FRIDAY_BEFORE_NATIONAL_DAY, listing_body, settle

from hub.subject.ratelimit import TokenBucket
from schemas.identifiers import make_cnid, make_uscc

RNG_SEED = 20240927
# (severity, start, end, public?) as of 2024-09-27
SHAPES = [
    ("general", "2024-06-01", "2025-06-01", True),
    ("severe", "2023-01-01", "2025-12-31", True),
    ("minor", "2024-08-01", "2024-11-01", False),  # minor listings are not published
    ("general", "2023-06-01", "2024-06-01", False),  # expired
    ("general", "2024-10-01", "2025-10-01", False),  # not started
]


async def _subject(client, tax, rng, i):
    person = i % 2 == 0
    code = make_cnid(rng) if person else make_uscc(rng)
    subject = f"{'cnid' if person else 'uscc'}:{code}"
    name = f"公开测试{i:02d} {'张三' if person else '有限公司'}"
    expected = set()
    for j, (severity, start, end, public) in enumerate(rng.sample(SHAPES, 3)):
        decision = f"D-{i}-{j}-{code}"  # carries the full number: it must come out masked
        body = listing_body(
            decision, subject=subject, name=name, severity=severity, start=start, end=end
        )
        created = await client.post("/v1/listings", json=body, headers=tax)
        assert created.status_code == 201, created.text
        if public and rng.random() < 0.3:
            delist = {"reason": "corrected", "note": "wrong"}
            url = f"/v1/listings/{created.json()['listing_id']}/delist"
            assert (await client.post(url, json=delist, headers=tax)).status_code == 200
        elif public:
            expected.add(f"D-{i}-{j}-")
    commitments = {}
    for k, publicity in enumerate(("public", "restricted", "not_public")):
        commitment_code = f"3201002024092{7 if k else 6}{i:04d}{k:02d}"
        body = {
            "code": commitment_code,
            "committer": {
                "name": name,
                "category": "person" if person else "organisation",
                "code": subject,
            },
            "type": "voluntary",
            "reason": f"reason {code}",
            "content": f"content for {code}",
            "liability": "liability",
            "publicity": publicity,
        }
        made = await client.post("/v1/commitments", json=body, headers=tax)
        assert made.status_code == 201, made.text
        commitments[commitment_code] = publicity
    return subject, code, name, expected, commitments


async def test_public_view_never_leaks(client, make_agency, clock):
    clock.set(FRIDAY_BEFORE_NATIONAL_DAY)
    tax = await make_agency()
    rng = random.Random(RNG_SEED)
    subjects = [await _subject(client, tax, rng, i) for i in range(8)]
    await settle(client)
    published_somewhere = 0
    for subject, code, name, expected, commitments in subjects:
        response = await client.get(f"/public/subjects/{subject}")
        assert response.status_code == 200, response.text
        text = response.text
        view = response.json()
        person = subject.startswith("cnid:")
        if person:
            assert code not in text
            assert view["subject_id"] == f"cnid:{code[:6]}{'*' * 8}{code[-4:]}"
            assert all(item["decision_no"].endswith(code[-4:]) for item in view["listings"])
        shown = {"-".join(item["decision_no"].split("-")[:3]) + "-" for item in view["listings"]}
        assert shown == expected
        published_somewhere += len(shown)
        public_codes = {c for c, p in commitments.items() if p == "public"}
        assert {c["code"] for c in view["commitments"]} == public_codes
        for hidden in (c for c, p in commitments.items() if p != "public"):
            assert hidden not in text

        found = await client.get("/public/search", params={"name": name[:6]})
        assert found.status_code == 200, found.text
        if person:
            assert code not in found.text
        for hidden in (c for c, p in commitments.items() if p != "public"):
            assert hidden not in found.text

    assert published_somewhere >= 4  # the generated mix publishes some listings, not all

    # every subject has a public commitment, so a prefix search finds all of them, in pages
    seen, cursor = [], None
    while True:
        params = {"name": "公开测试", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/public/search", params=params)).json()
        seen += [s["subject_id"] for s in page["subjects"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        assert not any(code in decoded for _, code, *_ in subjects)
    assert len(seen) == len(subjects)
    for _, code, *_ in subjects:
        assert all(code not in s for s in seen if s.startswith("cnid:"))


async def test_public_refusals_and_rate_limit(client, make_agency, clock):
    bad = await client.get("/public/subjects/cnid:123")
    assert bad.status_code == 400
    assert bad.json()["field"] == "subject_id"
    assert (await client.get("/public/search", params={"name": "  "})).status_code == 400
    cursor = await client.get("/public/search", params={"name": "x", "cursor": "!!"})
    assert (cursor.status_code, cursor.json()["field"]) == (400, "cursor")
    unknown = await client.get("/public/subjects/uscc:91350100M000100Y43")
    assert unknown.json()["listings"] == []

    client.app.state.hub.subject.public_limit = TokenBucket(3, 60)
    statuses = [
        (await client.get("/public/search", params={"name": "acme"})).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = await client.get("/public/subjects/uscc:91350100M000100Y43")
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["rule"] == "public.rate_limit"
