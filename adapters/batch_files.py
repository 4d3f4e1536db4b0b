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
from itertools import chain, islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Literal, Self

import openpyxl
from openpyxl.cell import WriteOnlyCell

from adapters.batch import HEADERS, BatchFileError, Table, check_header

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


def _records(
    lines: Iterator[Sequence[Any]], *, text: bool, header: list[str] | None = None, start: int = 2
) -> Iterator[tuple[int, Sequence[Any]]]:
    """`_rows` with each row's cells in `HEADERS` order (None for a column the file lacks).

    `text`: every cell is a string (CSV), so a blank row is one whose cells join to blanks.
    `header`: given when `lines` start after it, their first row being number `start`.
    """
    if header is None:
        try:
            header = _header(next(lines))
        except StopIteration:
            raise BatchFileError("the file is empty: it has no header row") from None
        check_header(header)
    width = len(header)
    where = {h: i for i, h in enumerate(header) if h in HEADERS}  # the last of a repeated one
    pick = itemgetter(*(where.get(h, width) for h in HEADERS))  # `width`: the None appended
    as_is = header == list(HEADERS)  # the template itself: the cells are the record
    for number, cells in enumerate(lines, start=start):
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


Rows = Sequence[Sequence[Any]]
Chunk = tuple[list[int], Rows]
"""Rows as (their row numbers, their cells in `HEADERS` order): a list of rows, or a `Table`
of plain CSV rows."""


class Records:
    """`read_rows` with each row's values in `HEADERS` order, as `parse_records` takes them:
    iterate for `(row number, cells)`, or take `chunks()` of rows, which reads a CSV file a
    block at a time (`str.split` where the text has no quotes, the csv module from the first
    quote on: the same rows)."""

    def __init__(self, path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig") -> None:
        self.path = path
        self.fmt = file_format(path, fmt)
        self.encoding = encoding

    def __iter__(self) -> Iterator[tuple[int, Sequence[Any]]]:
        if self.fmt == "csv":
            with self.path.open(newline="", encoding=self.encoding) as handle:
                yield from _records(iter(csv.reader(handle)), text=True)
            return
        with _workbook(self.path) as book:
            yield from _records(book.worksheets[0].iter_rows(values_only=True), text=False)

    def chunks(self, sizes: Iterator[int]) -> Iterator[Chunk]:
        """The non-blank rows, `next(sizes)` rows at a time (fewer at the end)."""
        if self.fmt != "csv":
            yield from _chunked(iter(self), sizes)
            return
        with self.path.open(newline="", encoding=self.encoding) as handle:
            reader = csv.reader(handle)
            try:
                header = _header(next(reader))
            except StopIteration:
                raise BatchFileError("the file is empty: it has no header row") from None
            check_header(header)
            if header != list(HEADERS):  # columns in another order: row by row
                yield from _chunked(_records(reader, text=True, header=header), sizes)
                return
            yield from _csv_chunks(handle, sizes)


def _chunked(records: Iterator[tuple[int, Sequence[Any]]], sizes: Iterator[int]) -> Iterator[Chunk]:
    for size in sizes:
        batch = [*islice(records, size)]
        if not batch:
            return
        numbers, rows = zip(*batch, strict=True)
        yield [*numbers], [*rows]


_BLOCK = 1 << 20
_WIDTH = len(HEADERS)
_COMMAS = _WIDTH - 1


def _csv_chunks(handle: IO[str], sizes: Iterator[int]) -> Iterator[Chunk]:
    """`_csv_blocks` in chunks of `next(sizes)` rows."""
    numbers: list[int] = []
    rows: Rows = []
    size = next(sizes)
    for more_numbers, more_rows in _csv_blocks(handle):
        numbers += more_numbers
        rows = _joined(rows, more_rows)
        while len(rows) >= size:
            yield numbers[:size], rows[:size]
            numbers, rows, size = numbers[size:], rows[size:], next(sizes)
    if rows:
        yield numbers, rows


def _joined(
    rows: Sequence[Sequence[Any]], more: Sequence[Sequence[Any]]
) -> Sequence[Sequence[Any]]:
    """The rows of two blocks, as one `Table` when both are."""
    if not more:
        return rows
    if not rows:
        return more
    if isinstance(rows, Table) and isinstance(more, Table):
        return rows + more
    return [*rows, *more]


def _csv_blocks(handle: IO[str]) -> Iterator[Chunk]:
    """The rows after the header (the template's columns in order) of a CSV file opened with
    `newline=""`: lines split at commas while the text holds no quote, no lone CR and no NUL;
    from the first block that does, the csv module reads the rest."""
    number = 2
    carry = ""
    while True:
        block = handle.read(_BLOCK)
        text = carry + block
        cut = text.rfind("\n") + 1 if block else len(text)
        text, carry = text[:cut], text[cut:]
        lines = text.replace("\r\n", "\n")
        if '"' in lines or "\r" in lines or "\x00" in lines:
            whole = text + carry + handle.readline()  # to the end of a line
            rest = csv.reader(chain(io.StringIO(whole, newline=""), handle))
            records = _records(rest, text=True, header=list(HEADERS), start=number)
            yield from _chunked(records, repeat(4096))
            return
        table = _table(lines.removesuffix("\n"))
        if table is not None:
            first, number = number, number + len(table)
            yield [*range(first, number)], table
            if not block:
                return
            continue
        # Blank rows (skipped), rows of another width (cut or filled with None): row by row.
        split = [*map(str.split, lines.split("\n"), repeat(","))]
        if split and split[-1] == [""]:
            split.pop()
        first, number = number, number + len(split)
        kept = [
            (n, c) for n, c in zip(range(first, number), split, strict=True) if "".join(c).strip()
        ]
        yield [n for n, _ in kept], [_padded(c) for _, c in kept]
        if not block:
            return


def _table(text: str) -> Table | None:
    """Lines (without their final newline) as columns, when every line has the template's
    width and no line is blank; else None. One split of the whole text and a slice per
    column make the cells: no list per row."""
    if not text:
        return None
    lines = text.split()  # at whitespace: the lines themselves when it is only the newlines
    count = text.count("\n") + 1
    bare = len(lines) == count and sum(map(len, lines)) == len(text) - count + 1
    if not bare:
        lines = text.split("\n")
    if not all(map(_COMMAS.__eq__, map(str.count, lines, repeat(",")))):
        return None  # rows of another width
    cells = text.replace("\n", ",").split(",")
    columns = [cells[j::_WIDTH] for j in range(_WIDTH)]
    if not all(columns[0] if bare else map(str.strip, columns[0])):
        return None  # blank rows, perhaps (a row whose first cell is not blank is not blank)
    return Table(columns, bare=bare)


def _padded(cells: list[str]) -> Sequence[Any]:
    """A row of another width than the header's, as `_records` gives it."""
    if len(cells) == _WIDTH:
        return cells
    return [*cells[:_WIDTH], *([None] * (_WIDTH - len(cells)))]


def read_records(path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig") -> Records:
    """`read_rows` with each row's values in `HEADERS` order, as `parse_records` takes them."""
    return Records(path, fmt=fmt, encoding=encoding)


class _workbook:  # noqa: N801 - a context manager used like a function
    def __init__(self, path: Path) -> None:
        try:
            self.book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors
            raise BatchFileError(f"{path.name} is not a readable XLSX workbook: {exc}") from None

    def __enter__(self) -> Any:
        return self.book

    def __exit__(self, *_: object) -> None:
        self.book.close()


def count_rows(path: Path, *, fmt: str | None = None, encoding: str = "utf-8-sig") -> int | None:
    """How many rows follow the header (for a progress bar); None when unknown."""
    if file_format(path, fmt) == "csv":
        lines = _count_lines(path)
        if lines is None:  # quotes (a cell may hold a line break), lone CRs: count records
            with path.open(newline="", encoding=encoding) as handle:
                lines = sum(1 for _ in csv.reader(handle))
        return max(0, lines - 1)
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = book.worksheets[0].max_row
    finally:
        book.close()
    return None if rows is None else max(0, rows - 1)


def _count_lines(path: Path) -> int | None:
    """The lines of a file without quotes or lone CRs (each line then one record), counted in
    its bytes; None for any other file."""
    lines = 0
    last = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            if b'"' in block or block.count(b"\r") != block.count(b"\r\n"):
                return None
            lines += block.count(b"\n")
            last = block[-1:]
    if last == b"\r":  # a CRLF cut between two blocks is not a lone CR; be safe anyway
        return None
    return lines + (last != b"\n")


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
