"""The importer's fast path parses exactly as `parse_row` does, row for row, good or bad."""

# ruff: noqa: RUF001 - decision numbers use tortoise-shell brackets, as Chinese documents do
from __future__ import annotations

import random
from datetime import date, datetime

import pytest

from adapters import batch
from adapters.batch import HEADERS, ParsedRow, Table, parse_columns, parse_records, parse_row
from schemas.identifiers import (
    cnid_check_char,
    make_uscc,
)

RNG = random.Random(11)
PERSON = "32010219800101001"
PERSON += cnid_check_char(PERSON)


def good(**values: object) -> list[object]:
    base: dict[str, object] = {
        "主体名称": "南京某某贸易有限公司",
        "统一社会信用代码": make_uscc(RNG),
        "身份证号码": None,
        "名单类型": "严重失信主体名单",
        "认定部门": "320000-tax",
        "认定依据": "《税收征收管理法》第六十三条",
        "决定文书号": f"苏税罚〔2025〕{RNG.randrange(10**6)}号",
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


CODE = make_uscc(RNG)
VARIANTS = [
    {},
    {"统一社会信用代码": CODE.lower()},
    {"统一社会信用代码": f" {CODE[:9]} {CODE[9:]} "},
    {"统一社会信用代码": CODE[:17] + next(c for c in "0123456789" if c != CODE[17])},
    {"统一社会信用代码": CODE[:-1]},
    {"统一社会信用代码": "", "身份证号码": PERSON},
    {"统一社会信用代码": None, "身份证号码": PERSON.lower()},
    {"统一社会信用代码": "", "身份证号码": ""},
    {"名单类型": "黑名单"},
    {"名单类型": "watchlist", "严重程度": "general", "主观故意": "unintentional"},
    {"名单类型": "守信激励对象名单", "严重程度": "", "主观故意": ""},
    {"名单类型": "市场禁入名单", "有效期至": ""},
    {"严重程度": "很严重"},
    {"主观故意": "  "},
    {"领域": "税务"},
    {"领域": "Taxation"},
    {"领域": "生态环境"},
    {"行政区划": "32010"},
    {"行政区划": " 320100 "},
    {"列入日期": "2025/03/01", "有效期至": "2026年2月28日"},
    {"列入日期": "2025-03-02T09:30:00+08:00"},
    {"列入日期": "2025-03-02T09:30:00"},
    {"列入日期": "yesterday"},
    {"有效期至": "2026-02-30"},
    {"列入日期": "", "有效期至": ""},
    {"列入日期": date(2025, 3, 1), "有效期至": datetime(2026, 2, 28)},  # noqa: DTZ001 - XLSX
    {"主体名称": "名" * 200},
    {"主体名称": "名" * 201},
    {"决定文书号": "号" * 129},
    {"失信行为": "实" * 4001},
    {"主体名称": "  "},
    {"决定文书号": 20250001},
    {"决定文书号": 20250001.0},
    {"严重程度": 0},
    {"认定部门": ""},
    {"认定部门": " 320000-env "},
    {"决定文书号": "苏税罚\x001号"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[str(i) for i in range(len(VARIANTS))])
def test_fast_path_parses_as_parse_row(variant):
    records = [(n, good(**variant)) for n in range(2, 6)]
    records.insert(2, (9, good()))  # a good neighbour in the same chunk
    expected = [parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in records]
    assert parse_records(records) == expected


def test_fast_path_keeps_order_and_neighbours_of_bad_rows():
    records = [(n + 2, good(**VARIANTS[n % len(VARIANTS)])) for n in range(300)]
    expected = [parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in records]
    assert parse_records(records) == expected


def test_plain_rows_take_the_fast_path(monkeypatch):
    def slow(number, values):
        raise AssertionError(f"row {number} left the fast path")

    monkeypatch.setattr(batch, "_slow", slow)
    variants = [{}, VARIANTS[9], VARIANTS[10], VARIANTS[11], VARIANTS[14], VARIANTS[18]]
    records = [(n, good(**variants[n % len(variants)])) for n in range(2, 50)]
    assert len(parse_records(records)) == len(records)


def _by_columns(records):
    """`parse_columns` as a list of what `parse_row` answers, in row order."""
    columns, others = parse_columns([n for n, _ in records], [v for _, v in records])
    answers = {
        row: ParsedRow(row, columns.authority[i] or None, columns.listing(i))
        for i, row in enumerate(columns.rows)
    }
    answers.update({o.row if isinstance(o, ParsedRow) else o[0].row: o for o in others})
    assert len(answers) == len(records)
    return [answers[n] for n, _ in records], len(columns)


@pytest.mark.parametrize("variant", VARIANTS, ids=[str(i) for i in range(len(VARIANTS))])
def test_columns_parse_as_parse_row(variant):
    records = [(n, good(**variant)) for n in range(2, 6)]
    records.insert(2, (9, good()))  # a good neighbour in the same chunk
    expected = [parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in records]
    assert _by_columns(records)[0] == expected


def test_columns_keep_order_and_take_the_plain_rows():
    records = [(n + 2, good(**VARIANTS[n % len(VARIANTS)])) for n in range(300)]
    expected = [parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in records]
    parsed, plain = _by_columns(records)
    assert parsed == expected
    assert plain >= 100  # the plain variants' rows took the columns


def test_columns_of_an_empty_chunk():
    assert _by_columns([]) == ([], 0)


TEXT_VARIANTS = [v for v in VARIANTS if all(x is None or isinstance(x, str) for x in v.values())]


@pytest.mark.parametrize("variant", TEXT_VARIANTS, ids=[str(i) for i in range(len(TEXT_VARIANTS))])
def test_a_table_parses_as_parse_row(variant):
    """A CSV block read as a `Table` (cells as text, None as empty): the same answers, with
    and (when no cell has whitespace) without stripping."""
    rows = [[v or "" for v in good(**variant)] for _ in range(4)]
    rows.insert(2, [v or "" for v in good()])
    numbers = [2, 3, 9, 4, 5]
    expected = [
        parse_row(n, dict(zip(HEADERS, v, strict=True))) for n, v in zip(numbers, rows, strict=True)
    ]
    bare = not any(c != c.strip() or " " in c for row in rows for c in row)
    for flag in {False, bare}:
        table = Table([list(column) for column in zip(*rows, strict=True)], bare=flag)
        records = [*zip(numbers, table, strict=True)]
        columns, others = parse_columns(numbers, table)
        answers = {
            row: ParsedRow(row, columns.authority[i] or None, columns.listing(i))
            for i, row in enumerate(columns.rows)
        }
        answers.update({o.row if isinstance(o, ParsedRow) else o[0].row: o for o in others})
        assert [answers[n] for n, _ in records] == expected
