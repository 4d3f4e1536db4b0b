"""Checks through the HTTP API against a real PostgreSQL: the catalogue's measures decide,
delisting and expiry clear, punishment suspends incentives, catalogue changes apply to later
checks only, batches equal singles, feedback is counted, and bad input gets clear problems.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from datetime import timedelta

import msgspec
import pytest

from hub.checks import fastpath
from hub.settings import Settings
from schemas.identifiers import make_uscc

ADMIN = {"Authorization": "Bearer hub_admin_test_key"}
_numbers = itertools.count(1)
_rng = random.Random(20250303)


def new_subject() -> str:
    return "uscc:" + make_uscc(_rng)


def listing(subject, list_name="blacklist", severity="severe", **changes):
    body = {
        "subject": {"id": subject, "name": "Acme Trading Co."},
        "list": list_name,
        "domain": "taxation",
        "basis": {
            "decision_no": f"苏税罚〔2025〕{next(_numbers)}号",  # noqa: RUF001
            "legal_basis": "税收征收管理法 第六十三条",
            "facts": "虚开发票",
        },
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    if list_name != "redlist":
        body.update(severity=severity, intent="intentional")
    body.update(changes)
    return body


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    # no scheduler: an expiry must clear the check before any event says so
    return Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        run_scheduler=False,
    )


@pytest.fixture(name="agency")
async def fx_agency(make_agency):
    return await make_agency(
        "320000-tax", ("publish", "check", "audit"), ("taxation", "market_regulation")
    )


async def publish(client, headers, body):
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def check(client, headers, subject, matter, **extra):
    body = {"subject_id": subject, "matter": matter, "purpose": "审批受理", **extra}
    response = await client.post("/v1/checks", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def measure_codes(answer):
    return sorted(m["code"] for h in answer["hits"] for m in h["measures"])


def assert_problem(response, status, field):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field, response.json()
    return response.json()


async def test_listing_denies_with_the_catalogues_measures(client, agency):
    subject = new_subject()
    assert (await check(client, agency, subject, "government_procurement"))["decision"] == "clear"
    created = await publish(client, agency, listing(subject))
    position = created["position"]

    procurement = await check(
        client, agency, subject, "government_procurement", min_position=position
    )
    assert procurement["decision"] == "deny"
    assert procurement["position"] >= position
    assert procurement["catalogue_version"] > 1
    [hit] = procurement["hits"]
    assert hit["listing_id"] == created["listing_id"]
    assert (hit["list"], hit["severity"], hit["region"]) == ("blacklist", "severe", "320100")
    assert hit["measures"] == [
        {"code": "procurement.exclude", "name": "依法限制参与政府采购活动", "effect": "prohibit"}
    ]
    bidding = await check(client, agency, subject, "bidding.construction_project")
    assert (bidding["decision"], measure_codes(bidding)) == ("deny", ["bidding.exclude"])
    licensing = await check(client, agency, subject, "administrative_licensing.food_business")
    assert licensing["decision"] == "review"
    assert measure_codes(licensing) == ["inspection.stricter", "licensing.restrict"]

    record = await client.get(f"/v1/checks/{procurement['check_id']}", headers=agency)
    assert record.status_code == 200, record.text
    stored = record.json()
    assert stored["agency"] == "320000-tax"
    assert (stored["subject_id"], stored["matter"], stored["purpose"]) == (
        subject,
        "government_procurement",
        "审批受理",
    )
    assert stored["decision"] == "deny"
    assert stored["hits"] == procurement["hits"]
    assert stored["position"] == procurement["position"]
    assert stored["catalogue_version"] == procurement["catalogue_version"]
    assert stored["checked_at"] == procurement["checked_at"]


async def test_delisting_clears(client, agency):
    subject = new_subject()
    created = await publish(client, agency, listing(subject))
    answer = await check(client, agency, subject, "bidding", min_position=created["position"])
    assert answer["decision"] == "deny"
    delisted = await client.post(
        f"/v1/listings/{created['listing_id']}/delist",
        json={"reason": "repaired", "note": "信用修复完成"},
        headers=agency,
    )
    assert delisted.status_code == 200, delisted.text
    after = await check(
        client, agency, subject, "bidding", min_position=delisted.json()["position"]
    )
    assert (after["decision"], after["hits"]) == ("clear", [])


async def test_punishment_suspends_incentives(client, agency):
    subject = new_subject()
    red = await publish(client, agency, listing(subject, "redlist"))
    licensing = await check(
        client, agency, subject, "administrative_licensing", min_position=red["position"]
    )
    assert licensing["decision"] == "facilitate"
    assert measure_codes(licensing) == [
        "inspection.fewer",
        "licensing.accept_with_commitment",
        "licensing.green_channel",
    ]
    black = await publish(client, agency, listing(subject, "blacklist", "severe"))
    both = await check(
        client, agency, subject, "administrative_licensing", min_position=black["position"]
    )
    assert both["decision"] == "review"
    by_list = {h["list"]: h for h in both["hits"]}
    assert by_list["redlist"]["measures"] == []
    assert [m["code"] for m in by_list["blacklist"]["measures"]] == [
        "licensing.restrict",
        "inspection.stricter",
    ]
    funding = await check(client, agency, subject, "state_funding")
    assert (funding["decision"], measure_codes(funding)) == ("deny", ["funding.exclude"])


async def test_expiry_clears_before_any_event(client, agency, clock):
    subject = new_subject()
    body = listing(subject, effective_until="2025-03-04T00:00:00+08:00")
    created = await publish(client, agency, body)
    answer = await check(
        client, agency, subject, "government_procurement", min_position=created["position"]
    )
    assert answer["decision"] == "deny"
    clock.advance(timedelta(hours=13, minutes=59, seconds=59))  # 15:59:59Z: still in force
    assert (await check(client, agency, subject, "government_procurement"))["decision"] == "deny"
    clock.advance(timedelta(seconds=1))  # 2025-03-03T16:00Z, effective_until: no longer
    after = await check(client, agency, subject, "government_procurement")
    assert (after["decision"], after["hits"]) == ("clear", [])
    assert after["position"] == answer["position"]  # no event happened in between


async def test_catalogue_change_alters_later_checks_not_earlier_records(client, agency):
    subject = new_subject()
    created = await publish(client, agency, listing(subject, severity="general"))
    before = await check(
        client, agency, subject, "government_procurement", min_position=created["position"]
    )
    assert before["decision"] == "deny"
    measure = {
        "name": "政府采购资格审查时人工复核",
        "kind": "punitive",
        "effect": "restrict",
        "lists": ["blacklist"],
        "severities": ["general", "severe"],
        "matters": ["government_procurement"],
        "agencies": ["财政部门"],
        "legal_basis": "《中华人民共和国政府采购法》第二十二条",
    }
    assert (
        await client.put("/v1/measures/procurement.exclude", json=measure, headers=agency)
    ).status_code == 403
    put = await client.put("/v1/measures/procurement.exclude", json=measure, headers=ADMIN)
    assert put.status_code == 200, put.text
    changed = put.json()
    assert changed["changed"] is True
    assert changed["catalogue_version"] == before["catalogue_version"] + 1
    again = await client.put("/v1/measures/procurement.exclude", json=measure, headers=ADMIN)
    assert again.json()["changed"] is False

    after = await check(
        client, agency, subject, "government_procurement", min_position=changed["position"]
    )
    assert after["decision"] == "review"
    assert after["catalogue_version"] == changed["catalogue_version"]
    assert after["hits"][0]["measures"][0]["effect"] == "restrict"

    old = (await client.get(f"/v1/checks/{before['check_id']}", headers=agency)).json()
    assert old["decision"] == "deny"
    assert old["catalogue_version"] == before["catalogue_version"]
    assert old["hits"][0]["measures"][0]["effect"] == "prohibit"

    catalogue = (await client.get("/v1/measures", headers=agency)).json()
    assert catalogue["version"] == changed["catalogue_version"]
    by_code = {m["code"]: m for m in catalogue["measures"]}
    assert by_code["procurement.exclude"]["effect"] == "restrict"
    assert "administrative_licensing.food_business" in {m["code"] for m in catalogue["matters"]}


async def test_batch_answers_equal_single_answers(client, agency):
    subjects = [new_subject() for _ in range(4)]
    await publish(client, agency, listing(subjects[0]))
    await publish(client, agency, listing(subjects[1], "redlist"))
    await publish(client, agency, listing(subjects[2], "watchlist", "general"))
    last = await publish(client, agency, listing(subjects[2], "redlist"))
    matters = [
        "government_procurement",
        "bidding",
        "administrative_licensing.food_business",
        "state_funding",
        "public_honours",
    ]
    items = [
        {"subject_id": s, "matter": m, "purpose": "批量比对"} for s in subjects for m in matters
    ]
    response = await client.post(
        "/v1/checks/batch",
        json={"items": items, "min_position": last["position"]},
        headers=agency,
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert len(batch["results"]) == len(items)
    for i, (item, result) in enumerate(zip(items, batch["results"], strict=True)):
        single = await check(client, agency, item["subject_id"], item["matter"])
        assert (result["decision"], result["hits"]) == (single["decision"], single["hits"])
        assert result["check_id"] == f"{batch['batch_id']}:{i}"
    decisions = {r["decision"] for r in batch["results"]}
    assert {"deny", "facilitate", "alert", "review", "clear"} <= decisions

    record = await client.get(f"/v1/checks/{batch['batch_id']}:3", headers=agency)
    assert record.status_code == 200, record.text
    stored = record.json()
    assert stored["batch_id"] == batch["batch_id"]
    assert (stored["subject_id"], stored["matter"]) == (items[3]["subject_id"], items[3]["matter"])
    assert stored["decision"] == batch["results"][3]["decision"]
    missing = await client.get(f"/v1/checks/{batch['batch_id']}:{len(items)}", headers=agency)
    assert_problem(missing, 404, "check_id")
    assert_problem(
        await client.get(f"/v1/checks/{batch['batch_id']}", headers=agency), 404, "check_id"
    )


async def test_feedback_is_counted(client, agency, make_agency):
    subject = new_subject()
    created = await publish(client, agency, listing(subject))
    answer = await check(
        client, agency, subject, "government_procurement", min_position=created["position"]
    )
    url = f"/v1/checks/{answer['check_id']}/feedback"
    body = {"measure_code": "procurement.exclude", "applied": True, "note": "拒绝其参与本次采购"}
    first = await client.post(url, json=body, headers=agency)
    assert first.status_code == 201, first.text
    assert (await client.post(url, json=body, headers=agency)).status_code == 200
    other = {**body, "applied": False}
    conflict = await client.post(url, json=other, headers=agency)
    assert conflict.status_code == 409
    unknown = await client.post(
        url, json={**body, "measure_code": "bidding.exclude"}, headers=agency
    )
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "measure_code"
    stranger = await make_agency("320100-finance", ("check",), ("finance",))
    assert (await client.post(url, json=body, headers=stranger)).status_code == 403
    assert (
        await client.get(f"/v1/checks/{answer['check_id']}", headers=stranger)
    ).status_code == 403

    record = (await client.get(f"/v1/checks/{answer['check_id']}", headers=agency)).json()
    assert [(f["measure_code"], f["applied"]) for f in record["feedback"]] == [
        ("procurement.exclude", True)
    ]
    stats = await client.get(
        "/v1/stats", params={"min_position": created["position"]}, headers=agency
    )
    assert stats.status_code == 200, stats.text
    counts = stats.json()
    assert counts["totals"]["applied"] == 1
    assert counts["totals"]["checks"] == 1
    assert counts["totals"]["hits"] == 1
    assert counts["totals"]["listings_in_force"] == 1
    assert counts["listings"]["by_list"] == {"blacklist": 1}
    assert counts["listings"]["by_region"] == {"320100": 1}
    assert counts["checks"]["by_agency"] == {"320000-tax": 1}
    assert counts["checks"]["by_decision"] == {"deny": 1}
    assert counts["hits"]["by_list"] == {"blacklist": 1}
    assert counts["measures"]["returned"] == {"procurement.exclude": 1}
    assert counts["measures"]["applied"] == {"procurement.exclude": 1}
    assert counts["applied"]["by_agency"] == {"320000-tax": 1}
    assert counts["applied"]["by_region"] == {"320100": 1}
    assert (await client.get("/v1/stats", headers=stranger)).status_code == 403


async def test_bad_input_gets_clear_problems(client, agency):
    subject = new_subject()
    body = {"subject_id": subject, "matter": "government_procurement", "purpose": "p"}
    cases = [
        ({**body, "matter": "fishing_licence"}, "matter"),
        ({**body, "matter": "administrative_licensing.unknown"}, "matter"),
        ({**body, "subject_id": "uscc:91350100M000100Y44"}, "subject_id"),
        ({**body, "subject_id": "91350100M000100Y43"}, "subject_id"),
        ({**body, "subject_id": "cnid:110101199003070000"}, "subject_id"),
        ({**body, "extra": 1}, "extra"),
        ({**body, "min_position": -1}, "min_position"),
    ]
    for bad, field in cases:
        assert_problem(await client.post("/v1/checks", json=bad, headers=agency), 400, field)
    items = [{"subject_id": subject, "matter": "bidding", "purpose": "p"}] * 10_001
    oversize = await client.post("/v1/checks/batch", json={"items": items}, headers=agency)
    assert_problem(oversize, 400, "items")
    items = [{"subject_id": subject, "matter": "bidding", "purpose": "p"}] * 5
    items[3] = {**items[3], "subject_id": "uscc:1"}
    bad_item = await client.post("/v1/checks/batch", json={"items": items}, headers=agency)
    assert_problem(bad_item, 400, "items.3.subject_id")
    items[3] = {**items[3], "subject_id": subject, "matter": "nothing"}
    bad_matter = await client.post("/v1/checks/batch", json={"items": items}, headers=agency)
    assert_problem(bad_matter, 400, "items.3.matter")
    assert_problem(await client.get("/v1/checks/not-a-check", headers=agency), 400, "check_id")
    measure = {
        "name": "x",
        "kind": "incentive",
        "effect": "prohibit",
        "lists": ["redlist"],
        "matters": ["bidding"],
        "legal_basis": "law",
    }
    refused = await client.put("/v1/measures/test.measure", json=measure, headers=ADMIN)
    assert_problem(refused, 422, "effect")
    unknown = await client.put(
        "/v1/measures/test.measure", json={**measure, "colour": 1}, headers=ADMIN
    )
    assert_problem(unknown, 400, "colour")
    bad_matter = {**measure, "effect": "facilitate", "matters": ["bidding", "mining"]}
    assert_problem(
        await client.put("/v1/measures/test.measure", json=bad_matter, headers=ADMIN),
        400,
        "matters.1",
    )


async def test_fast_path_errors_equal_the_frameworks(client, agency, make_agency, monkeypatch):
    publisher = await make_agency("320000-mr", ("publish",), ("market_regulation",))
    subject = new_subject()
    good = {"subject_id": subject, "matter": "bidding", "purpose": "p"}
    requests = [
        (b"{", agency),
        (b"", agency),
        (b"[]", agency),
        (b'{"subject_id": 1, "matter": "bidding", "purpose": "p"}', agency),
        (b'{"matter": "bidding", "purpose": "p"}', agency),
        (b'{"subject_id": "x", "matter": "bidding", "purpose": "p", "more": true}', agency),
        (b'{"subject_id": "uscc:1", "matter": "bidding", "purpose": "p"}', agency),
        (b'{"subject_id": "' + subject.encode() + b'", "matter": "no", "purpose": "p"}', agency),
        (
            b'{"subject_id": "' + subject.encode() + b'", "matter": "bidding", "purpose": ""}',
            agency,
        ),
        (b'{"subject_id": 1}', {}),
        (b"{", {"Authorization": "Bearer nope"}),
        (b'{"subject_id": 1}', {"Authorization": "Bearer nope"}),
        (
            b'{"subject_id": "x", "matter": "bidding", "purpose": "p"}',
            {"Authorization": "Bearer nope"},
        ),
        (b'{"subject_id": "x", "matter": "bidding", "purpose": "p"}', publisher),
    ]

    item = msgspec.json.encode(good)
    batches = [
        (b'{"items": []}', agency),
        (b'{"items": [' + b",".join([item] * 10_001) + b"]}", agency),
        (b'{"items": [' + item + b', {"subject_id": "uscc:1", "matter": "bidding"}]}', agency),
        (
            b'{"items": [' + item + b', {"subject_id": "uscc:1", "matter": "x", "purpose": "p"}]}',
            agency,
        ),
        (b'{"items": [' + item + b"]}", publisher),
        (b'{"items": [' + item + b"]", agency),
    ]

    def shown(response, *hidden):
        body = response.json()
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in hidden}
        return response.status_code, response.headers["content-type"], body

    async def answers():
        found = []
        for content, headers in requests:
            found.append(shown(await client.post("/v1/checks", content=content, headers=headers)))
        for content, headers in batches:
            response = await client.post("/v1/checks/batch", content=content, headers=headers)
            found.append(shown(response))
        found.append(shown(await client.post("/v1/checks", json=good, headers=agency), "check_id"))
        batch = await client.post("/v1/checks/batch", json={"items": [good]}, headers=agency)
        answer = shown(batch, "batch_id")
        answer[2]["results"] = [{**r, "check_id": None} for r in answer[2]["results"]]
        found.append(answer)
        return found

    fast = await answers()
    monkeypatch.setattr(fastpath, "ENABLED", False)
    slow = await answers()
    assert fast == slow
    assert [status for status, _, _ in fast] == [
        *([400] * 9 + [401, 400, 401, 401, 403]),
        *[400, 400, 400, 400, 403, 400],
        200,
        200,
    ]


async def test_min_position_reads_your_writes(client, agency):
    subject = new_subject()
    created = await publish(client, agency, listing(subject))
    answer = await check(client, agency, subject, "bidding", min_position=created["position"])
    assert answer["decision"] == "deny"
    body = {
        "subject_id": subject,
        "matter": "bidding",
        "purpose": "p",
        "min_position": created["position"] + 1000,
    }
    # a position no commit has reached yet is refused at once: it would never come
    late = await client.post("/v1/checks", json=body, headers=agency)
    assert late.status_code == 422
    assert late.json()["rule"] == "min_position.beyond_log"
    assert late.headers["content-type"].startswith("application/problem+json")
    batch = await client.post(
        "/v1/checks/batch",
        json={
            "items": [{k: body[k] for k in ("subject_id", "matter", "purpose")}],
            "min_position": created["position"] + 1000,
        },
        headers=agency,
    )
    assert batch.status_code == 422


async def test_concurrent_checks_are_recorded_logged_and_counted(client, agency, capfd):
    """Checks answered together share one usage-log commit, yet each has its own id and
    record; the fast path gives each the request id, access log line and metrics of any
    request."""
    from hub.metrics import REGISTRY  # noqa: PLC0415 - the registry /metrics serves

    labels = {"method": "POST", "route": "/v1/checks", "status": "200"}
    before = REGISTRY.get_sample_value("hub_http_requests_total", labels) or 0
    subjects = [new_subject() for _ in range(12)]
    position = (await publish(client, agency, listing(subjects[0])))["position"]
    bodies = [  # read your write: every check sees the listing (else the deny below races)
        {"subject_id": s, "matter": "bidding", "purpose": f"p{i}", "min_position": position}
        for i, s in enumerate(subjects)
    ]
    responses = await asyncio.gather(
        *(client.post("/v1/checks", json=body, headers=agency) for body in bodies)
    )
    assert [r.status_code for r in responses] == [200] * len(bodies)
    answers = [r.json() for r in responses]
    assert len({a["check_id"] for a in answers}) == len(answers)
    for body, answer in zip(bodies, answers, strict=True):
        record = await client.get(f"/v1/checks/{answer['check_id']}", headers=agency)
        assert record.status_code == 200, record.text
        stored = record.json()
        assert (stored["subject_id"], stored["purpose"]) == (body["subject_id"], body["purpose"])
        assert stored["decision"] == answer["decision"]
        assert stored["checked_at"] == answer["checked_at"]
        assert stored["position"] == answer["position"]
    assert answers[0]["decision"] == "deny"
    # a place beyond the group's end is no check
    last = answers[-1]["check_id"]
    beyond = last[:-4] + "ffff"
    assert (await client.get(f"/v1/checks/{beyond}", headers=agency)).status_code == 404

    assert REGISTRY.get_sample_value("hub_http_requests_total", labels) == before + len(bodies)
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)
    lines = [
        json.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if line.startswith("{") and '"event":"request"' in line.replace(" ", "")
    ]
    logged = {line["request_id"]: line for line in lines if line.get("path") == "/v1/checks"}
    for request_id in ids:
        assert logged[request_id]["agency"] == "320000-tax"
        assert logged[request_id]["status"] == 200
        assert logged[request_id]["method"] == "POST"
