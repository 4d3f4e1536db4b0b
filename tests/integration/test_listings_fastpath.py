"""`POST /v1/listings` answers the same from its fast paths (the dispatcher's in
`hub.checks.fastpath`, ahead of the framework, and the route middleware `hub.api.fastlisting`)
and from the documented handler: created, repeated and conflicting (422) decisions, every
kind of refusal, byte for byte."""

from __future__ import annotations

import itertools

import msgspec

from hub.api import fastlisting
from hub.checks import fastpath

_runs = itertools.count()


def _body(decision: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme Trading Co."},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": decision, "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    body.update(changes)
    return body


async def test_fast_path_answers_equal_the_frameworks(client, make_agency, monkeypatch):
    tax = await make_agency()
    checker = await make_agency("320000-chk", ("check",))
    market = await make_agency("320000-mr", ("publish",), ("market_regulation",))
    nope = {"Authorization": "Bearer nope"}

    def requests(run: int) -> list[tuple[bytes, dict[str, str], str]]:
        good = msgspec.json.encode(_body(f"F-{run}"))
        other = msgspec.json.encode(_body(f"F-{run}", severity="minor"))
        return [
            (good, tax, ""),
            (good, tax, ""),  # a repeat: 200, the same listing
            (other, tax, ""),  # the same decision with other content: 409
            (b"{", tax, ""),
            (b"", tax, ""),
            (b"[]", tax, ""),
            (msgspec.json.encode(_body(f"G-{run}", severity=3)), tax, ""),
            (msgspec.json.encode(_body(f"G-{run}", more=True)), tax, ""),
            (msgspec.json.encode(_body(f"G-{run}", list="nolist")), tax, ""),
            (msgspec.json.encode(_body(f"G-{run}", effective_from=1700000000)), tax, ""),
            (
                msgspec.json.encode(_body(f"G-{run}", subject={"id": "uscc:1", "name": "x"})),
                tax,
                "",
            ),
            (msgspec.json.encode(_body(f"G-{run}", region="1\u0000")), tax, ""),
            (msgspec.json.encode(_body(f"G-{run}", domain="market_regulation")), tax, ""),
            (
                msgspec.json.encode(_body(f"G-{run}", effective_until="2024-03-01T00:00:00Z")),
                tax,
                "",
            ),
            (good, {}, ""),
            (b"{", nope, ""),
            (good, nope, ""),
            (good, checker, ""),
            (msgspec.json.encode(_body(f"H-{run}")), market, ""),
            (msgspec.json.encode(_body(f"I-{run}")), tax, "?x=1"),
        ]

    async def answers() -> list[tuple[int, str, object]]:
        found = []
        for content, headers, query in requests(next(_runs)):
            response = await client.post(f"/v1/listings{query}", content=content, headers=headers)
            body = response.json()
            if isinstance(body, dict):
                # the listing id and position depend on the run; their presence does not
                body = {
                    k: (v if k not in ("listing_id", "position") else "*") for k, v in body.items()
                }
                if "detail" in body:
                    body["detail"] = body["detail"].replace(body.get("listing_id", ""), "")
            found.append((response.status_code, response.headers["content-type"], body))
        return found

    fast = await answers()
    monkeypatch.setattr(fastpath, "LISTINGS", False)  # the dispatcher's, ahead of the framework
    behind = await answers()
    monkeypatch.setattr(fastlisting, "ENABLED", False)  # the route middleware's, behind it
    slow = await answers()
    assert fast == behind
    assert fast == slow
    assert [status for status, _, _ in fast][:3] == [201, 200, 422]
    assert all(status >= 400 for status, _, _ in fast[3:-1])
    assert fast[-1][0] == 201
