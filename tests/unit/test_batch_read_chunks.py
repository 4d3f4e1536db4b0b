"""`Records.chunks` reads a CSV file a block at a time and gives the rows that reading it row
by row (the csv module) gives: the same numbers, the same cells, blank rows skipped."""

from __future__ import annotations

import csv
from itertools import chain, repeat

import pytest

from adapters import batch_files
from adapters.batch import HEADERS, Table
from adapters.batch_files import count_rows, read_records

HEADER = ",".join(HEADERS)
ROW = ",".join(f"v{i}" for i in range(len(HEADERS)))
SPACED = ROW.replace(",", " ,\u3000")  # an ideographic space is stripped too
FILES = {
    "plain": f"{HEADER}\n{ROW}\n{ROW}\n",
    "crlf, no final newline": f"{HEADER}\r\n{ROW}\r\n{ROW}",
    "blank rows": f"{HEADER}\n{ROW}\n\n,,,\n  ,  \n{ROW}\n",
    "first cell blank": f"{HEADER}\n ,{ROW[3:]}\n{ROW}\n",
    "other widths": f"{HEADER}\n{ROW}\n1,2\n{ROW},extra\n",
    "a quoted newline": f'{HEADER}\n{ROW}\n"a\nb",{ROW[3:]}\n{ROW}\n',
    "a lone CR": f"{HEADER}\n{ROW}\r{ROW}\n{ROW}\n",
    "quoted header": f'"主体名称",{HEADER.split(",", 1)[1]}\n{ROW}\n',
    "other column order": ",".join(reversed(HEADERS)) + f"\n{ROW}\n",
    "byte-order mark": f"\ufeff{HEADER}\n{ROW}\n",
    "blanks around cells": f"{HEADER}\n{ROW}\n {ROW} \n{SPACED}\n{ROW}\n",
    "a row of commas only": f"{HEADER}\n{ROW}\n{',' * (len(HEADERS) - 1)}\n{ROW}\n",
    "a blank first cell only": f"{HEADER}\n{ROW}\n,{ROW.split(',', 1)[1]}\n{ROW}\n",
    "one row": f"{HEADER}\n{ROW}",
}


@pytest.mark.parametrize("text", FILES.values(), ids=FILES.keys())
@pytest.mark.parametrize("block", [5, 64, 1 << 20])
def test_chunks_are_the_rows(tmp_path, monkeypatch, text, block):
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(batch_files, "_BLOCK", block)
    expected = [(n, list(cells)) for n, cells in read_records(path)]
    chunks = list(read_records(path).chunks(chain([1, 2], repeat(3))))
    got = [
        (n, list(cells)) for numbers, rows in chunks for n, cells in zip(numbers, rows, strict=True)
    ]
    assert got == expected
    assert expected  # every file has rows
    assert all(len(rows) <= 3 for _, rows in chunks)


@pytest.mark.parametrize("text", FILES.values(), ids=FILES.keys())
@pytest.mark.parametrize("block", [5, 1 << 20])
def test_count_rows_counts_as_the_csv_module(tmp_path, monkeypatch, text, block):
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(batch_files, "_BLOCK", block)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        expected = sum(1 for _ in csv.reader(handle)) - 1
    assert count_rows(path) == expected


@pytest.mark.parametrize("name", ["plain", "blanks around cells", "one row"])
def test_plain_blocks_come_as_tables(tmp_path, name):
    """Blocks of rows of the template's width with no blank row are read as columns."""
    path = tmp_path / "rows.csv"
    path.write_bytes(FILES[name].encode("utf-8"))
    chunks = list(read_records(path).chunks(repeat(1000)))
    assert all(isinstance(rows, Table) for _, rows in chunks)
    assert [rows.bare for _, rows in chunks] == [name != "blanks around cells"]
