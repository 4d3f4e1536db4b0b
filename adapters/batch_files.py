"""Reading and writing batch files: CSV (UTF-8, a byte-order mark accepted and written) and
XLSX (openpyxl in read-only and write-only mode, so that files of any size stream).

`read_rows()` yields `(row number, {column header: cell value})` for every non-empty row
after the header; header cells are trimmed, and a trailing `*` (a "required" mark some
templates carry) is dropped. Columns the template does not know are ignored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Literal, Self

import openpyxl
from openpyxl.cell import WriteOnlyCell

from adapters.batch import HEADERS, BatchFileError, check_header

Format = Literal["csv", "xlsx"]
_TEXT_COLUMNS = frozenset(HEADERS) - {"列入日期", "有效期至"}


def file_format(path: Path, given: str | None = None) -> Format:
    name = (given or path.suffix.lstrip(".")).lower()
    if name in ("csv", "txt"):
        return "csv"
    if name in ("xlsx", "xlsm"):
        return "xlsx"
    raise BatchFileError(f"{path.name}: unknown format {name!r}; use .csv or .xlsx")


def _header(cells: Sequence[object]) -> list[str]:
    return [str(c or "").strip().lstrip("\ufeff").rstrip("*").strip() for c in cells]


def _rows(lines: Iterator[Sequence[Any]]) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        header = _header(next(lines))
    except StopIteration:
        raise BatchFileError("the file is empty: it has no header row") from None
    check_header(header)
    known = [(i, h) for i, h in enumerate(header) if h in HEADERS]
    for number, cells in enumerate(lines, start=2):
        if not any(c is not None and str(c).strip() for c in cells):
            continue
        yield number, {h: cells[i] if i < len(cells) else None for i, h in known}


def read_rows(
    path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig"
) -> Iterator[tuple[int, dict[str, object]]]:
    """Stream the rows of a CSV or XLSX file (the first sheet of a workbook)."""
    if file_format(path, fmt) == "csv":
        with path.open(newline="", encoding=encoding) as handle:
            yield from _rows(iter(csv.reader(handle)))
        return
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors
        raise BatchFileError(f"{path.name} is not a readable XLSX workbook: {exc}") from None
    try:
        yield from _rows(book.worksheets[0].iter_rows(values_only=True))
    finally:
        book.close()


def _records(lines: Iterator[Sequence[Any]], *, text: bool) -> Iterator[tuple[int, Sequence[Any]]]:
    """`_rows` with each row's cells in `HEADERS` order (None for a column the file lacks).

    `text`: every cell is a string (CSV), so a blank row is one whose cells join to blanks.
    """
    try:
        header = _header(next(lines))
    except StopIteration:
        raise BatchFileError("the file is empty: it has no header row") from None
    check_header(header)
    width = len(header)
    where = {h: i for i, h in enumerate(header) if h in HEADERS}  # the last of a repeated one
    pick = itemgetter(*(where.get(h, width) for h in HEADERS))  # `width`: the None appended
    as_is = header == list(HEADERS)  # the template itself: the cells are the record
    for number, cells in enumerate(lines, start=2):
        if text:
            if not "".join(cells).strip():
                continue
        elif not any(c is not None and str(c).strip() for c in cells):
            continue
        if as_is and len(cells) == width:
            yield number, cells
        elif len(cells) == width and isinstance(cells, list):
            cells.append(None)
            yield number, pick(cells)
        else:
            yield number, pick([*cells[:width], *([None] * (width - len(cells))), None])


def read_records(
    path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig"
) -> Iterator[tuple[int, Sequence[Any]]]:
    """`read_rows` with each row's values in `HEADERS` order, as `parse_records` takes them."""
    if file_format(path, fmt) == "csv":
        with path.open(newline="", encoding=encoding) as handle:
            yield from _records(iter(csv.reader(handle)), text=True)
        return
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors
        raise BatchFileError(f"{path.name} is not a readable XLSX workbook: {exc}") from None
    try:
        yield from _records(book.worksheets[0].iter_rows(values_only=True), text=False)
    finally:
        book.close()


def count_rows(path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig") -> int | None:
    """How many rows follow the header (for a progress bar); None when unknown."""
    if file_format(path, fmt) == "csv":
        with path.open(newline="", encoding=encoding) as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = book.worksheets[0].max_row
    finally:
        book.close()
    return None if rows is None else max(0, rows - 1)


class RowWriter:
    """Write `HEADERS`, then rows one by one, to a path or a binary stream; `close()` ends it.

    CSV goes out as it is written; XLSX (write-only mode) is assembled in a temporary file by
    openpyxl and saved on `close()`.
    """

    def __init__(self, target: Path | IO[bytes], fmt: Format) -> None:
        self.fmt = fmt
        self.count = 0
        self._stack = ExitStack()
        binary = target.open("wb") if isinstance(target, Path) else target
        if isinstance(target, Path):
            self._stack.enter_context(binary)
        self._binary = binary
        if fmt == "csv":
            self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            self._csv = csv.writer(self._text)
            self._csv.writerow(HEADERS)
        else:
            self._book = openpyxl.Workbook(write_only=True)
            self._sheet = self._book.create_sheet("名单")
            self._sheet.append(list(HEADERS))

    def write(self, row: Sequence[object]) -> None:
        if self.fmt == "csv":
            self._csv.writerow(["" if v is None else v for v in row])
        else:
            self._sheet.append(
                [_cell(self._sheet, c, v) for c, v in zip(HEADERS, row, strict=True)]
            )
        self.count += 1

    def close(self) -> None:
        with self._stack:
            if self.fmt == "csv":
                self._text.flush()
                self._text.detach()  # a caller's stream stays open
            else:
                self._book.save(self._binary)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _cell(sheet: Any, column: str, value: object) -> object:
    if value is None:
        return None
    if column in _TEXT_COLUMNS or isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=str(value))
        cell.data_type = "s"
        return cell
    cell = WriteOnlyCell(sheet, value=value)
    cell.number_format = "yyyy-mm-dd"
    return cell
