"""Batch docking: a city's spreadsheet with some bad rows, imported, re-imported and exported.

The good rows go in through the same rules as the API; each bad one is reported with its
row number, column header and reason; importing the same file again changes nothing; an
export imported into a fresh schema gives the same listings in force.
"""

# ruff: noqa: RUF001 - decision numbers use tortoise-shell brackets, as Chinese documents do
from __future__ import annotations

import asyncio
import csv
import os
import random
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import msgspec
import openpyxl
import pytest
from litestar.testing import AsyncTestClient

from adapters.batch import HEADERS, BatchRecord, ParsedRow, parse_row, to_template_row
from adapters.batch_files import RowWriter, read_records, read_rows
from hub.api.app import create_app
from hub.batch import Importer, export_records
from hub.credit.service import Agency
from schemas.identifiers import cnid_check_char, make_uscc

RNG = random.Random(4)
GOOD_1 = make_uscc(RNG)
GOOD_2 = make_uscc(RNG)
BAD_CHECK = GOOD_1[:17] + next(c for c in "0123456789" if c != GOOD_1[17])
PERSON = "32010219800101001"
PERSON += cnid_check_char(PERSON)
OTHER = make_uscc(RNG)


def row(**values: str) -> list[str]:
    base = {
        "主体名称": "南京某某贸易有限公司",
        "统一社会信用代码": GOOD_1,
        "身份证号码": "",
        "名单类型": "严重失信主体名单",
        "认定部门": "320000-tax",
        "认定依据": "《税收征收管理法》第六十三条",
        "决定文书号": "苏税罚〔2025〕1号",
        "失信行为": "虚开增值税专用发票",
        "领域": "taxation",
        "严重程度": "严重",
        "主观故意": "故意",
        "行政区划": "320100",
        "列入日期": "2025-03-01",
        "有效期至": "2026-02-28",
    }
    base.update(values)
    return [base[h] for h in HEADERS]


ROWS = [
    row(),  # 2: good, blacklist
    row(  # 3: good, redlist (no severity, no intent)
        统一社会信用代码=GOOD_2,
        名单类型="守信激励对象名单",
        决定文书号="苏税奖〔2025〕2号",
        严重程度="",
        主观故意="",
        失信行为="纳税信用A级",
        有效期至="2027-02-28",
    ),
    row(统一社会信用代码=BAD_CHECK, 决定文书号="苏税罚〔2025〕3号"),  # 4: bad check character
    row(名单类型="黑名单", 决定文书号="苏税罚〔2025〕4号"),  # 5: unknown list name
    row(决定文书号="苏税罚〔2025〕5号", 有效期至="2028-03-01"),  # 6: severe for > 36 months
    row(决定文书号=""),  # 7: a value missing
    row(  # 8: good, a person on the watchlist
        统一社会信用代码="",
        身份证号码=PERSON,
        主体名称="张三",
        名单类型="重点关注名单",
        决定文书号="苏税罚〔2025〕8号",
        严重程度="一般",
        主观故意="无意",
        有效期至="2025-12-31",
    ),
    row(认定部门="320000-nobody", 决定文书号="苏税罚〔2025〕9号"),  # 9: unknown agency
    row(领域="environment", 决定文书号="苏税罚〔2025〕10号"),  # 10: outside the agency's domains
]
EXPECTED_ERRORS = [
    (4, "统一社会信用代码", "check character"),
    (5, "名单类型", "黑名单"),
    (6, "有效期至", "36 months"),
    (7, "决定文书号", "required"),
    (9, "认定部门", "not registered"),
    (10, "领域", "environment"),
]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # with a BOM, as Excel does
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[str]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append([f"{h}*" if h == "主体名称" else h for h in HEADERS])  # a "required" mark
    for values in rows:
        sheet.append([None if v == "" else v for v in values])
    sheet.append([None] * len(HEADERS))  # a blank row is skipped
    book.save(path)
    return path


async def on_app(client, fn, *args):
    """Run `fn(*args)` on the app's event loop (the test client runs it in its own thread)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def _head(hub) -> int:
    return await hub.pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM credit_events")


async def head(client) -> int:
    return await on_app(client, _head, client.app.state.hub)


async def _import(hub, path: Path):
    reported = []
    importer = Importer(hub, on_error=reported.append, chunk=4)  # several chunks
    summary = await importer.run(read_rows(path))
    return summary, [(e.row, e.column, e.reason) for e in reported]


async def import_file(client, path: Path):
    return await on_app(client, _import, client.app.state.hub, path)


async def _exported(hub, catch_up) -> list[BatchRecord]:
    if catch_up:  # projection locks are per database: the first hub holds this one
        await hub.runners["listings"].catch_up()
    else:
        assert await hub.wait_for_projections(await _head(hub), 5)
    return [r async for batch in export_records(hub, batch=2) for r in batch]


async def exported(client, *, catch_up=False) -> list[BatchRecord]:
    return await on_app(client, _exported, client.app.state.hub, catch_up)


def assert_reported(reported):
    assert [(r, c) for r, c, _ in reported] == [(r, c) for r, c, _ in EXPECTED_ERRORS]
    for (_, _, reason), (_, _, expected) in zip(reported, EXPECTED_ERRORS, strict=True):
        assert expected in reason


@pytest.mark.parametrize("writer", [write_csv, write_xlsx], ids=["csv", "xlsx"])
async def test_import_reports_bad_rows_and_is_idempotent(client, make_agency, tmp_path, writer):
    await make_agency("320000-tax")
    path = writer(tmp_path / f"city.{'csv' if writer is write_csv else 'xlsx'}", ROWS)

    summary, reported = await import_file(client, path)
    assert (summary.created, summary.unchanged, summary.rejected) == (3, 0, 6)
    assert_reported(reported)
    position = await head(client)
    tax = await make_agency("320000-audit", ("audit",), ("taxation",))
    profile = await client.get(f"/v1/subjects/uscc:{GOOD_1}?min_position={position}", headers=tax)
    assert [a["decision_no"] for a in profile.json()["active"]] == ["苏税罚〔2025〕1号"]
    person = await client.get(f"/v1/subjects/cnid:{PERSON}", headers=tax)
    assert person.json()["active"][0]["list"] == "watchlist"

    again, reported_again = await import_file(client, path)
    assert (again.created, again.unchanged, again.rejected) == (0, 3, 6)
    assert reported_again == reported
    assert await head(client) == position  # nothing appended to the log


async def _import_records(hub, path: Path):
    reported = []
    importer = Importer(hub, on_error=reported.append, chunk=4)
    summary = await importer.run(read_records(path))  # in chunks, as `hub import` reads
    return summary, [(e.row, e.column, e.reason) for e in reported]


@pytest.mark.parametrize("writer", [write_csv, write_xlsx], ids=["csv", "xlsx"])
async def test_import_of_a_file_read_in_chunks(client, make_agency, tmp_path, writer):
    """What `hub import FILE` runs: the file's rows taken a chunk at a time."""
    await make_agency("320000-tax")
    path = writer(tmp_path / f"city.{'csv' if writer is write_csv else 'xlsx'}", ROWS)
    hub = client.app.state.hub
    summary, reported = await on_app(client, _import_records, hub, path)
    assert (summary.created, summary.unchanged, summary.rejected) == (3, 0, 6)
    assert_reported(reported)
    again, reported_again = await on_app(client, _import_records, hub, path)
    assert (again.created, again.unchanged, again.rejected) == (0, 3, 6)
    assert reported_again == reported


async def test_changed_row_is_a_conflict_not_a_new_listing(client, make_agency, tmp_path):
    await make_agency("320000-tax")
    await import_file(client, write_csv(tmp_path / "a.csv", ROWS[:1]))
    summary, reported = await import_file(
        client, write_csv(tmp_path / "b.csv", [row(失信行为="另一事实")])
    )
    assert summary.rejected == 1
    assert reported[0][:2] == (2, "决定文书号")


@pytest.fixture(name="second_schema")
async def fx_second_schema(pg_url):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
async def test_export_round_trips(client, make_agency, tmp_path, second_schema, fmt):
    tax = await make_agency("320000-tax")
    market_ban = row(
        统一社会信用代码=OTHER,
        名单类型="市场禁入名单",
        决定文书号="苏市监禁〔2025〕7号",
        有效期至="",
    )
    await import_file(client, write_csv(tmp_path / "in.csv", [*ROWS, market_ban]))
    listing = await client.post(
        "/v1/listings",
        headers=tax,
        json={
            "subject": {"id": f"uscc:{GOOD_2}", "name": "苏州某某公司"},
            "list": "watchlist",
            "domain": "taxation",
            "severity": "general",
            "intent": "unintentional",
            "region": "320500",
            "basis": {"decision_no": "API-1", "legal_basis": "法", "facts": "事实"},
            "effective_from": "2025-03-02T09:30:00+08:00",  # not midnight: an exact instant
            "effective_until": "2025-09-02T09:30:00+08:00",
        },
    )
    amended = await client.post(
        f"/v1/listings/{listing.json()['listing_id']}/amend",
        headers=tax,
        json={"note": "更正", "facts": "更正后的事实", "subject_name": "苏州某某有限公司"},
    )
    assert amended.status_code == 200, amended.text
    before = await exported(client)
    assert len(before) == 5
    assert {r.facts for r in before} >= {"更正后的事实"}

    out = tmp_path / f"out.{fmt}"
    with RowWriter(out, fmt) as writer:
        for record in before:
            writer.write(to_template_row(record))

    hub = client.app.state.hub
    settings, clock = hub.settings, hub.clock
    fresh = replace(settings, database_schema=second_schema)
    async with AsyncTestClient(create_app(fresh, clock)) as other:
        made = await other.post(
            "/v1/agencies",
            headers={"Authorization": f"Bearer {settings.admin_key}"},
            json={"code": "320000-tax", "name": "tax", "scopes": ["publish"], "domains": ["*"]},
        )
        assert made.status_code == 201
        summary, reported = await import_file(other, out)
        assert (summary.created, summary.rejected, reported) == (5, 0, [])
        after = await exported(other, catch_up=True)
    key = lambda r: r.decision_no  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)


def test_cli_import_and_export(db, tmp_path):
    """`hub import` and `hub export` as an operator runs them."""
    env = {
        **os.environ,
        "HUB_DATABASE_URL": db.url,
        "HUB_DATABASE_SCHEMA": db.schema,
        "HUB_DATA_DIR": str(tmp_path / "no-hub-env"),
    }
    hub = [sys.executable, "-m", "hub.cli"]
    setup = (
        "import asyncio, asyncpg\n"
        "async def main():\n"
        f"    c = await asyncpg.connect({db.url!r})\n"
        f"    await c.execute('SET search_path TO \"{db.schema}\"')\n"
        '    await c.execute("CREATE TABLE IF NOT EXISTS agencies (code text PRIMARY KEY, '
        "name text NOT NULL, scopes text[] NOT NULL, domains text[] NOT NULL, "
        'key_hash text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now())")\n'
        "    await c.execute(\"INSERT INTO agencies VALUES ('320000-tax', 't', '{publish}', "
        "'{taxation}', 'x')\")\n"
        "asyncio.run(main())\n"
    )
    subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", setup], check=True, env=env, timeout=60
    )
    permanent = row(
        统一社会信用代码=OTHER,
        名单类型="市场禁入名单",
        决定文书号="苏市监禁〔2025〕7号",
        有效期至="",
    )
    source = write_xlsx(tmp_path / "city.xlsx", [*ROWS, permanent])
    errors = tmp_path / "errors.csv"
    done = subprocess.run(  # noqa: S603 - our own command
        [*hub, "import", str(source), "--errors", str(errors)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # some rows were rejected
    assert "created 4, unchanged 0, rejected 6" in done.stdout
    assert "row 4, 统一社会信用代码: USCC check character" in done.stderr
    with errors.open(encoding="utf-8-sig") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["行号", "列名", "原因"]
    assert [(int(r), c) for r, c, _ in lines[1:]] == [(r, c) for r, c, _ in EXPECTED_ERRORS]
    # the import process only appended: it never started the check path (no usage log made)

    async def usage_log() -> object:
        conn = await asyncpg.connect(db.url)
        try:
            return await conn.fetchval(f"SELECT to_regclass('\"{db.schema}\".check_groups')")
        finally:
            await conn.close()

    assert asyncio.run(usage_log()) is None

    async def projected() -> set[str]:
        conn = await asyncpg.connect(db.url)
        try:
            rows = await conn.fetch(
                f'SELECT name FROM "{db.schema}".projection_positions WHERE position > 0'
            )
            return {r["name"] for r in rows}
        finally:
            await conn.close()

    out = tmp_path / "export.xlsx"
    done = subprocess.run(  # noqa: S603 - our own command
        [*hub, "export", "--list", "market_ban", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = list(read_rows(out))
    assert len(rows) == 1
    assert rows[0][1]["统一社会信用代码"] == OTHER
    assert rows[0][1]["有效期至"] is None
    # nor did the export: it read the listings, with no check index or signer beside them
    assert asyncio.run(usage_log()) is None
    assert "check_index_loaded" not in done.stderr + done.stdout
    # and of the read models only the listings it exports (no merkle tree, no tree-head signer)
    assert asyncio.run(projected()) == {"listings"}

    # to standard output: the CSV alone, its logs on stderr (`hub export > file.csv`)
    done = subprocess.run(  # noqa: S603 - our own command
        [*hub, "export", "--list", "market_ban"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    piped = tmp_path / "piped.csv"
    piped.write_bytes(done.stdout)
    assert [values["统一社会信用代码"] for _, values in read_rows(piped)] == [OTHER]
    assert done.stdout.decode("utf-8-sig").splitlines()[0].startswith("主体名称,")


def test_sample_file_in_the_docs_is_valid():
    sample = Path(__file__).parents[2] / "docs" / "batch-sample.csv"
    parsed = [parse_row(number, values) for number, values in read_rows(sample)]
    assert parsed
    assert all(isinstance(p, ParsedRow) for p in parsed), parsed


async def _stored(hub) -> list[tuple]:
    rows = await hub.pool.fetch(
        "SELECT originator_id, originator_version, topic, state FROM credit_events "
        "WHERE topic LIKE 'hub.credit.domainmodel:Listing.%' ORDER BY originator_id"
    )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("notice_days", [0, 5], ids=["no-notice", "notice"])
async def test_imported_events_are_those_the_api_records(
    settings, clock, tmp_path, second_schema, notice_days
):
    """The same listings through `hub import` and through `POST /v1/listings`: the same
    events in the log, byte for byte (ids, topics, states), and the same answers again."""
    extra = row(  # an exact instant, not a whole day
        统一社会信用代码=OTHER,
        决定文书号="苏税罚〔2025〕11号",
        列入日期="2025-03-02T09:30:00+08:00",
    )
    good = [r for i, r in enumerate([*ROWS, extra]) if i in (0, 1, 6, 9)]
    path = write_csv(tmp_path / "good.csv", good)
    make = {"code": "320000-tax", "name": "tax", "scopes": ["publish"], "domains": ["*"]}
    admin = {"Authorization": f"Bearer {settings.admin_key}"}

    imported = replace(settings, notice_days=notice_days)
    async with AsyncTestClient(create_app(imported, clock)) as client:
        assert (await client.post("/v1/agencies", headers=admin, json=make)).status_code == 201
        summary, reported = await import_file(client, path)
        assert (summary.created, reported) == (4, [])
        by_import = await on_app(client, _stored, client.app.state.hub)

    posted = replace(settings, database_schema=second_schema, notice_days=notice_days)
    async with AsyncTestClient(create_app(posted, clock)) as client:
        made = await client.post("/v1/agencies", headers=admin, json=make)
        tax = {"Authorization": f"Bearer {made.json()['api_key']}"}
        for number, values in read_rows(path):
            parsed = parse_row(number, values)
            assert isinstance(parsed, ParsedRow)
            body = msgspec.json.encode(parsed.listing)
            answer = await client.post(
                "/v1/listings", headers={**tax, "Content-Type": "application/json"}, content=body
            )
            assert answer.status_code == 201, answer.text
        by_api = await on_app(client, _stored, client.app.state.hub)
        again, reported = await import_file(client, path)  # the API's listings, imported again
        assert (again.created, again.unchanged, reported) == (0, 4, [])

    assert len(by_import) == 4
    assert by_import == by_api


async def test_repeats_within_a_file_answer_as_the_api_would(client, make_agency, tmp_path):
    """A decision twice in one chunk, or in two chunks: the first row creates it, a same
    repeat is unchanged and a different one a conflict, wherever they fall."""
    await make_agency("320000-tax")
    rows = [
        ROWS[0],
        ROWS[0],  # the same row again, same chunk
        row(失信行为="另一事实"),  # same decision, other content, same chunk
        ROWS[1],
        ROWS[0],  # next chunk (chunk=4): the same again
        row(失信行为="又一事实"),  # next chunk: other content
    ]
    summary, reported = await import_file(client, write_csv(tmp_path / "repeats.csv", rows))
    assert (summary.created, summary.unchanged, summary.rejected) == (2, 2, 2)
    assert [(r, c) for r, c, _ in reported] == [(4, "决定文书号"), (7, "决定文书号")]
    assert all("already listed with other content" in reason for _, _, reason in reported)


async def _register_many(hub, bodies):
    agency = Agency("320000-tax", "tax", frozenset({"publish"}), frozenset({"taxation"}))
    return await hub.listings.register_many([(agency, body) for body in bodies])


async def _positions(hub) -> dict[str, int]:
    rows = await hub.pool.fetch(
        "SELECT originator_id, notification_id FROM credit_events "
        "WHERE topic = 'hub.credit.domainmodel:Listing.Registered'"
    )
    return {str(r[0]): r[1] for r in rows}


async def test_register_many_answers_ids_statuses_and_positions(client, make_agency):
    """What the bulk path answers: the listing's id, status and log position, as `register`."""
    await make_agency("320000-tax")
    hub = client.app.state.hub
    parsed = [parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in enumerate(ROWS)]
    bodies = [p.listing for p in parsed if isinstance(p, ParsedRow)]
    answers = await on_app(client, _register_many, hub, bodies)
    created = [a for a in answers if not isinstance(a, Exception)]
    assert [c for _, c in created] == [True] * len(created)
    assert len(created) == 4  # the rest break a rule: period, domain
    stored = await on_app(client, _positions, hub)
    assert {r.listing_id: r.position for r, _ in created} == stored
    assert sorted(stored.values()) == [r.position for r, _ in created]  # in the order given

    again = await on_app(client, _register_many, hub, bodies)
    assert [a for a in again if not isinstance(a, Exception)] == [(r, False) for r, _ in created]
    assert [type(a) for a in again] == [type(a) for a in answers]
    alone = await on_app(client, _register_one, hub, bodies[0])
    assert alone == again[0]


async def _register_one(hub, body):
    agency = Agency("320000-tax", "tax", frozenset({"publish"}), frozenset({"taxation"}))
    return await hub.listings.register(agency, body)


async def test_a_process_without_checks_refuses_them_with_503(settings, clock):
    """`HUB_RUN_CHECKS=false` (what import runs with): checks are refused as not served
    here, with Retry-After, instead of answered from an index that was never loaded."""
    async with AsyncTestClient(create_app(replace(settings, run_checks=False), clock)) as other:
        body = {"subject_id": "uscc:" + make_uscc(random.Random(3)), "matter": "bidding"}
        headers = {"Authorization": f"Bearer {settings.admin_key}"}
        refused = await other.post("/v1/checks", json={**body, "purpose": "p"}, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["retry-after"] == "5"
        assert "not served by this process" in refused.json()["detail"]


async def _import_until_the_file_fails(hub, path: Path) -> tuple[int, int, int]:
    def rows():
        for n, record in enumerate(read_rows(path)):
            if n == 4:  # the second chunk: the first one is being written
                raise OSError("the file went away")
            yield record

    before = await _head(hub)
    importer = Importer(hub, chunk=4)
    with pytest.raises(OSError, match="went away"):
        await importer.run(rows())
    return importer.summary.created, before, await _head(hub)


async def test_an_import_stopped_early_counts_what_it_wrote(client, make_agency, tmp_path):
    """The chunk being written when the import stops is finished and counted: the summary
    says what the log holds, and nothing is written after `run` returns."""
    await make_agency("320000-tax")
    path = write_csv(tmp_path / "city.csv", ROWS)
    created, before, after = await on_app(
        client, _import_until_the_file_fails, client.app.state.hub, path
    )
    assert created == 2  # rows 2 and 3 of the first chunk; 4 and 5 are bad
    assert after - before == created
