"""Batch import throughput against a raw COPY of the same rows.

    .venv/bin/python -m ops.bench.batch [ROWS [COMMIT_BATCH [ROUNDS]]]

Writes ROWS template rows (default 50,000) to a CSV file, then in each of ROUNDS rounds
(default 3), against the same PostgreSQL:

- `import`: the `hub import` path in process, as `hub import FILE` runs it
  (`hub.batch.Importer` over `adapters.batch_files.read_records`: every row checked by the
  API's rules, new decisions appended to the credit log by `ListingService.write_many` with
  one COPY per chunk), in a fresh schema;
- `reimport`: the same file again (every row answers "unchanged", nothing is appended);
- `copy`: asyncpg `copy_records_to_table` of the same parsed rows into a plain table.

Reports each round's rows per second and ratio import / copy, each ratio from figures measured
side by side, and the median of the rounds (target: at least 0.3). One COPY of 50,000 rows
takes a fifth of a second, so on a shared machine single rounds swing (seen here: the same
code at 0.20-0.38, the COPY alone at 176,000-316,000 rows/s). The database is
`HUB_BENCH_DATABASE_URL` or `HUB_TEST_DATABASE_URL` when set, else an embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from adapters.batch import HEADERS, ParsedRow, parse_row
from adapters.batch_files import RowWriter, read_records, read_rows
from hub.batch import Importer
from hub.bootstrap import build_hub
from hub.cli_batch import writer_only
from hub.settings import Settings
from ops.embedded import EmbeddedPostgres
from schemas.identifiers import make_uscc

AGENCY = "320000-tax"
_COPY_COLUMNS = (
    "subject_id", "subject_name", "list", "authority", "legal_basis", "decision_no", "facts",
    "domain", "severity", "intent", "region", "effective_from", "effective_until",
)  # fmt: skip


def _rows(n: int, seed: int = 7) -> Iterator[list[object]]:
    rng = random.Random(seed)
    for i in range(n):
        values = {
            "主体名称": f"企业{i}",
            "统一社会信用代码": make_uscc(rng),
            "名单类型": "严重失信主体名单",
            "认定部门": AGENCY,
            "认定依据": "《税收征收管理法》第六十三条",
            "决定文书号": f"BENCH-{i}",
            "失信行为": "虚开增值税专用发票",
            "领域": "taxation",
            "严重程度": "严重",
            "主观故意": "故意",
            "行政区划": "320100",
            "列入日期": "2025-03-01",
            "有效期至": "2026-02-28",
        }
        yield [values.get(h) for h in HEADERS]


def _copy_record(parsed: ParsedRow) -> tuple[Any, ...]:
    body = parsed.listing
    return (
        body.subject.id, body.subject.name, body.list, parsed.authority, body.basis.legal_basis,
        body.basis.decision_no, body.basis.facts, body.domain, body.severity, body.intent,
        body.region, body.effective_from, body.effective_until,
    )  # fmt: skip


async def _copy(url: str, schema: str, path: Path) -> float:
    records = []
    for number, values in read_rows(path):
        parsed = parse_row(number, values)
        assert isinstance(parsed, ParsedRow)  # noqa: S101 - the bench made them valid
        records.append(_copy_record(parsed))
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        await conn.execute(
            "CREATE TABLE copy_target (subject_id text, subject_name text, list text, "
            "authority text, legal_basis text, decision_no text, facts text, domain text, "
            "severity text, intent text, region text, effective_from timestamptz, "
            "effective_until timestamptz)"
        )
        started = time.perf_counter()
        await conn.copy_records_to_table("copy_target", records=records, columns=_COPY_COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _import(settings: Settings, path: Path) -> tuple[float, float, int]:
    hub = await build_hub(settings)
    try:
        await hub.start()
        await hub.agencies.create(AGENCY, "bench", ["publish"], ["*"])
        timings = []
        created = 0
        for _ in range(2):
            importer = Importer(hub)
            started = time.perf_counter()
            summary = await importer.run(read_records(path))
            timings.append(time.perf_counter() - started)
            created += summary.created
            if summary.rejected:
                raise RuntimeError(f"bench rows rejected: {summary.errors[:3]}")
    finally:
        await hub.stop()
    return timings[0], timings[1], created


async def _round(url: str, path: Path, n: int, commit_batch: int) -> dict[str, float]:
    """One round in a fresh schema: import, import again, COPY."""
    schema = f"bench_batch_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        settings = writer_only(Settings(database_url=url, database_schema=schema))
        settings = replace(settings, commit_batch_max=commit_batch)
        first, again, created = await _import(settings, path)
        if created != n:
            raise RuntimeError(f"imported {created} of {n} rows")
        copy = await _copy(url, schema, path)
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    return {
        "import_rows_per_s": n / first,
        "reimport_rows_per_s": n / again,
        "copy_rows_per_s": n / copy,
        "import_vs_copy": copy / first,
    }


async def _run(url: str, n: int, commit_batch: int, rounds: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        with RowWriter(path, "csv") as writer:
            for values in _rows(n):
                writer.write(values)
        return [await _round(url, path, n, commit_batch) for _ in range(rounds)]


KEYS = ("import_rows_per_s", "reimport_rows_per_s", "copy_rows_per_s", "import_vs_copy")


def run(n: int = 50_000, commit_batch: int = 64, rounds: int = 3) -> dict[str, float]:
    url = os.environ.get("HUB_BENCH_DATABASE_URL") or os.environ.get("HUB_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if not url:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = stack.enter_context(EmbeddedPostgres(Path(tmp))).url
        results = asyncio.run(_run(url, n, commit_batch, max(1, rounds)))
    result = {key: statistics.median(r[key] for r in results) for key in KEYS}
    result |= {"rows": float(n), "commit_batch": float(commit_batch), "rounds": len(results)}
    print(f"batch import, {n} rows, commit batch {commit_batch}, {len(results)} rounds")
    print(f"{'round':8} {'import/s':>10} {'reimport/s':>11} {'copy/s':>10} {'import/copy':>12}")
    for i, r in enumerate(results):
        figures = (r[k] for k in KEYS[:3])
        print(f"{i:<8} " + " ".join(f"{v:10,.0f}" for v in figures) + f" {r[KEYS[3]]:12.3f}")
    print(f"{'batch import (median of rounds)':32} {'rows/s':>12}")
    for key in KEYS[:3]:
        print(f"{key.removesuffix('_rows_per_s'):32} {result[key]:12,.0f}")
    print(f"{'import / copy (target 0.3)':32} {result['import_vs_copy']:12.3f}")
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    """`[ROWS [COMMIT_BATCH [ROUNDS]]]`, as `python -m ops.bench batch -- ROWS` passes them."""
    args = sys.argv[1:4] if argv is None else argv[:3]
    return run(*(int(a) for a in args))


if __name__ == "__main__":
    main()
