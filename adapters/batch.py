"""Batch docking with city and county systems: the Chinese-header listing template.

A row of the template becomes a `schemas.listing.NewListing` plus the code of its determining
authority (认定部门), or a list of `RowError` (row number, column header, reason). Rows are
numbered as a spreadsheet shows them: the header is row 1, the first listing row 2. Reading
and writing the files themselves (CSV, XLSX) is in `adapters.batch_files`; the exact template
is documented in `docs/BATCH.md`.

Dates are China dates (UTC+8). 列入日期 D starts the listing at 00:00 on D; 有效期至 D keeps it
in force through D, so it ends at 00:00 on the next day. A value with a time of day is that
exact instant (with its offset, or China time without one); export writes such instants in
full so that a round trip changes nothing.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import repeat
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from schemas.identifiers import (
    IdentifierError,
    is_canonical_uscc,
    validate_cnid,
    validate_uscc,
)
from schemas.listing import Basis, NewListing, SubjectRef

CHINA: Final = ZoneInfo("Asia/Shanghai")

NAME, USCC, CNID = "主体名称", "统一社会信用代码", "身份证号码"
LIST, AUTHORITY, BASIS, DECISION = "名单类型", "认定部门", "认定依据", "决定文书号"
FACTS, DOMAIN, SEVERITY, INTENT = "失信行为", "领域", "严重程度", "主观故意"
REGION, START, UNTIL = "行政区划", "列入日期", "有效期至"

TEMPLATE: Final = (NAME, USCC, CNID, LIST, AUTHORITY, BASIS, DECISION, FACTS, DOMAIN)
TEMPLATE_TAIL: Final = (SEVERITY, INTENT, REGION, START, UNTIL)
HEADERS: Final = TEMPLATE + TEMPLATE_TAIL
"""Every column of the template, in the order export writes them."""
REQUIRED: Final = frozenset(HEADERS) - {USCC, CNID, AUTHORITY, SEVERITY, INTENT}
"""Columns a file must have; it must also have 统一社会信用代码 or 身份证号码 (or both)."""

LISTS: Final = {
    "严重失信主体名单": "blacklist",
    "重点关注名单": "watchlist",
    "市场禁入名单": "market_ban",
    "守信激励对象名单": "redlist",
}
SEVERITIES: Final = {"轻微": "minor", "一般": "general", "严重": "severe"}
INTENTS: Final = {"故意": "intentional", "无意": "unintentional"}
DOMAINS: Final = {
    "税务": "taxation",
    "生态环境": "environment",
    "市场监管": "market_regulation",
    "食品药品": "food_drug",
    "住房城乡建设": "construction",
    "交通运输": "transport",
    "人力资源社会保障": "human_resources",
    "金融": "finance",
    "司法": "courts",
    "海关": "customs",
}
"""Chinese names accepted in 领域 for the default catalogue; the domain code is accepted too."""

FIELD_COLUMNS: Final = {
    "subject.name": NAME,
    "list": LIST,
    "domain": DOMAIN,
    "severity": SEVERITY,
    "intent": INTENT,
    "basis.decision_no": DECISION,
    "basis.legal_basis": BASIS,
    "basis.facts": FACTS,
    "region": REGION,
    "effective_from": START,
    "effective_until": UNTIL,
    "authority": AUTHORITY,
}

_DATE_FORMATS: Final = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y%m%d")
_ONE_DAY: Final = timedelta(days=1)


class BatchFileError(ValueError):
    """The file as a whole cannot be read: unknown format, missing header columns."""


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    reason: str


class ParsedRow(msgspec.Struct, frozen=True, gc=False):
    row: int
    authority: str | None
    listing: NewListing


class BatchRecord(msgspec.Struct, kw_only=True):
    """One listing as export writes it (API vocabulary; the writer translates)."""

    subject_id: str
    subject_name: str
    list: str
    authority: str
    legal_basis: str
    decision_no: str
    facts: str
    domain: str
    severity: str | None
    intent: str | None
    region: str
    effective_from: datetime
    effective_until: datetime | None


def column_of(field: str | None, subject_column: str) -> str:
    """The template column that an API field path (from a refusal) refers to."""
    if field is None:
        return ""
    if field.startswith("subject.id"):
        return subject_column
    return FIELD_COLUMNS.get(field, field)


def check_header(columns: list[str]) -> None:
    missing = [c for c in HEADERS if c in REQUIRED and c not in columns]
    if USCC not in columns and CNID not in columns:
        missing.insert(1, f"{USCC} or {CNID}")
    if missing:
        raise BatchFileError(f"the header lacks the columns: {', '.join(missing)}")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _to_instant(value: object, *, end: bool) -> datetime:
    """A cell as an instant; whole days as explained in the module docstring."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value
        if value.time() != time(0):
            return value.replace(tzinfo=CHINA)
        day = value.date()
    elif isinstance(value, date):
        day = value
    else:
        text = str(value).strip()
        day_or_none = None
        if len(text) == 10 and text[4] == "-":  # noqa: PLR2004 - YYYY-MM-DD, the common case
            with contextlib.suppress(ValueError):
                day_or_none = date.fromisoformat(text)
        for fmt in () if day_or_none else _DATE_FORMATS:
            try:
                day_or_none = datetime.strptime(text, fmt).date()  # noqa: DTZ007 - a date only
                break
            except ValueError:
                continue
        if day_or_none is None:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
                ) from None
            return moment if moment.tzinfo else moment.replace(tzinfo=CHINA)
        day = day_or_none
    return datetime.combine(day + _ONE_DAY if end else day, time(0), CHINA)


Fail = Callable[[str, str], None]


def _lookup(value: str | None, names: dict[str, str], column: str, fail: Fail) -> str | None:
    if value is None or value in names.values():
        return value
    if value in names:
        return names[value]
    fail(column, f"{value!r} is not one of {', '.join(names)}")
    return None


def _subject(text: dict[str, str | None], fail: Fail) -> str | None:
    uscc, cnid = text.get(USCC), text.get(CNID)
    try:
        if uscc is not None:
            return "uscc:" + validate_uscc(uscc)
        if cnid is not None:
            return "cnid:" + validate_cnid(cnid)
    except IdentifierError as exc:
        fail(USCC if uscc is not None else CNID, exc.reason)
        return None
    fail(USCC, f"a value is required in {USCC} (organisations) or {CNID} (people)")
    return None


def _dates(values: dict[str, object], fail: Fail) -> dict[str, datetime | None]:
    dates: dict[str, datetime | None] = {"effective_from": None, "effective_until": None}
    for key, column in (("effective_from", START), ("effective_until", UNTIL)):
        raw = values.get(column)
        if _text(raw) is not None:
            try:
                dates[key] = _to_instant(raw, end=column == UNTIL)
            except ValueError as exc:
                fail(column, str(exc))
    return dates


def parse_row(row: int, values: dict[str, object]) -> ParsedRow | list[RowError]:
    """One template row as a listing command, or every problem found in it (in column order)."""
    text = {column: _text(value) for column, value in values.items()}
    errors: list[RowError] = []

    def fail(column: str, reason: str) -> None:
        errors.append(RowError(row, column, reason))

    for column in HEADERS:
        if column in REQUIRED and column != UNTIL and text.get(column) is None:
            fail(column, "a value is required")
    subject_id = _subject(text, fail)
    domain = text.get(DOMAIN)
    body: dict[str, Any] = {
        "subject": {"id": subject_id, "name": text.get(NAME)},
        "list": _lookup(text.get(LIST), LISTS, LIST, fail),
        "domain": DOMAINS.get(domain or "", domain),
        "basis": {
            "decision_no": text.get(DECISION),
            "legal_basis": text.get(BASIS),
            "facts": text.get(FACTS),
        },
        "region": text.get(REGION),
        "severity": _lookup(text.get(SEVERITY), SEVERITIES, SEVERITY, fail),
        "intent": _lookup(text.get(INTENT), INTENTS, INTENT, fail),
        **_dates(values, fail),
    }
    if errors:
        return sorted(errors, key=lambda e: HEADERS.index(e.column))
    try:
        listing = msgspec.convert(body, NewListing)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = message.rpartition("at `$.")[2].rstrip("`") if "at `$." in message else None
        subject_column = USCC if text.get(USCC) is not None else CNID
        return [RowError(row, column_of(path, subject_column), message.partition(" - at")[0])]
    return ParsedRow(row, text.get(AUTHORITY), listing)


# -- the fast path: a chunk of text rows at a time -------------------------------------------
#
# `parse_records` gives exactly what `parse_row` gives, row for row. It takes the common case
# (every cell text, the subject a USCC in canonical form, names and dates as the template
# has them) with a few dict lookups per row and checks the chunk's field constraints with
# one `msgspec.convert`; any row it is not sure of goes through `parse_row` itself.

Record = tuple[int, Sequence[object]]
"""A row as (row number, its cells in `HEADERS` order, None for a column the file lacks)."""


def _either(names: dict[str, str]) -> dict[str, str]:
    """A vocabulary that takes the Chinese name or the code."""
    return {**names, **{code: code for code in names.values()}}


_strip: Final = str.strip
_LIST_CODES: Final = _either(LISTS)
_SEVERITY_CODES: Final = {**_either(SEVERITIES), "": None}
_INTENT_CODES: Final = {**_either(INTENTS), "": None}


def _fields_of(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return typing.get_type_hints(struct, include_extras=True)


_LISTING, _SUBJECT, _BASIS = _fields_of(NewListing), _fields_of(SubjectRef), _fields_of(Basis)
_Checked = msgspec.defstruct(
    "_Checked",
    [
        ("subject_id", _SUBJECT["id"]),
        ("subject_name", _SUBJECT["name"]),
        ("list", _LISTING["list"]),
        ("domain", _LISTING["domain"]),
        ("decision_no", _BASIS["decision_no"]),
        ("legal_basis", _BASIS["legal_basis"]),
        ("facts", _BASIS["facts"]),
        ("region", _LISTING["region"]),
        ("effective_from", _LISTING["effective_from"]),
        ("effective_until", _LISTING["effective_until"]),
        ("severity", _LISTING["severity"]),
        ("intent", _LISTING["intent"]),
    ],
    array_like=True,
    gc=False,
)
"""`NewListing`'s fields, flat, with `NewListing`'s own types and constraints."""
_CHECKED_LIST: Any = list[_Checked]  # type: ignore[valid-type]  # a Struct made at run time


def _as_listing(checked: Any) -> NewListing:
    return NewListing(
        subject=SubjectRef(checked.subject_id, checked.subject_name),
        list=checked.list,
        domain=checked.domain,
        basis=Basis(checked.decision_no, checked.legal_basis, checked.facts),
        region=checked.region,
        effective_from=checked.effective_from,
        effective_until=checked.effective_until,
        severity=checked.severity,
        intent=checked.intent,
    )


def _slow(number: int, values: Sequence[object]) -> ParsedRow | list[RowError]:
    return parse_row(number, dict(zip(HEADERS, values, strict=True)))


def _quick(
    values: Sequence[Any], starts: dict[str, datetime], ends: dict[str, datetime]
) -> tuple[tuple[Any, ...], str | None] | None:
    """The fields of `_Checked` and the authority, or None to leave the row to `parse_row`."""
    try:
        try:
            cells: list[str] = [*map(_strip, values)]
        except TypeError:  # a column the file lacks
            cells = [v.strip() if v is not None else "" for v in values]
        (name, uscc, _, lst, authority, basis, decision, facts, domain, severity, intent, region,
         start, until) = cells  # fmt: skip
        if not (name and lst and basis and decision and facts and domain and region and start):
            return None  # a value is missing: parse_row says which
        if not (uscc and is_canonical_uscc(uscc)):
            return None  # identity numbers, other spellings, bad codes
        since = starts.get(start) or starts.setdefault(start, _to_instant(start, end=False))
        through = None
        if until:
            through = ends.get(until) or ends.setdefault(until, _to_instant(until, end=True))
        fields = (
            "uscc:" + uscc, name, _LIST_CODES[lst], DOMAINS.get(domain, domain), decision, basis,
            facts, region, since, through, _SEVERITY_CODES[severity], _INTENT_CODES[intent],
        )  # fmt: skip
    except (LookupError, ValueError, AttributeError):  # not text, not a name, not a date
        return None
    return fields, authority or None


def parse_records(records: Sequence[Record]) -> list[ParsedRow | list[RowError]]:
    """`parse_row` for each record, in order, in much less time for plain text rows."""
    results: list[ParsedRow | list[RowError] | None] = [None] * len(records)
    fields: list[tuple[Any, ...]] = []
    authorities: list[str | None] = []
    where: list[int] = []
    starts: dict[str, datetime] = {}
    ends: dict[str, datetime] = {}
    for index, (number, values) in enumerate(records):
        row = _quick(values, starts, ends)
        if row is None:
            results[index] = _slow(number, values)
        else:
            fields.append(row[0])
            authorities.append(row[1])
            where.append(index)
    try:
        checked: list[Any] = msgspec.convert(fields, _CHECKED_LIST)
    except msgspec.ValidationError:  # some row breaks a constraint: parse_row says how
        checked = [_checked_or_none(row) for row in fields]
    for index, authority, one in zip(where, authorities, checked, strict=True):
        number, values = records[index]
        if one is None:
            results[index] = _slow(number, values)
        else:
            results[index] = ParsedRow(number, authority, _as_listing(one))
    return results  # type: ignore[return-value]  # every index is set


def _checked_or_none(fields: tuple[Any, ...]) -> Any:
    try:
        return msgspec.convert(fields, _Checked)
    except msgspec.ValidationError:
        return None


def _china(moment: datetime) -> datetime:
    return moment.astimezone(CHINA)


def _day_or_instant(moment: datetime | None, *, end: bool) -> date | str | None:
    if moment is None:
        return None
    local = _china(moment)
    if local.time() != time(0):
        return local.isoformat()
    return local.date() - _ONE_DAY if end else local.date()


def to_template_row(record: BatchRecord) -> list[object]:
    """A listing as a row of `HEADERS` (dates as `date`, exact instants as ISO strings)."""
    kind, _, code = record.subject_id.partition(":")
    names = {v: k for k, v in LISTS.items()}
    severity = {v: k for k, v in SEVERITIES.items()}
    intent = {v: k for k, v in INTENTS.items()}
    return [
        record.subject_name,
        code if kind == "uscc" else None,
        code if kind == "cnid" else None,
        names.get(record.list, record.list),
        record.authority,
        record.legal_basis,
        record.decision_no,
        record.facts,
        record.domain,
        severity.get(record.severity or ""),
        intent.get(record.intent or ""),
        record.region,
        _day_or_instant(record.effective_from, end=False),
        _day_or_instant(record.effective_until, end=True),
    ]


# -- the columnar path: a chunk of text rows as columns --------------------------------------
#
# `parse_columns` gives, for the plain rows of a chunk (every cell text, no NUL, the subject a
# canonical USCC, names, codes and dates as the template has them), the same listing that
# `parse_row` gives, held as columns: each step is one C-level pass over a column (`map`,
# `all`, one `msgspec.convert` for the constraints) instead of Python work per row. The other
# rows go through `parse_records`, row by row, exactly as before.


class Table(Sequence[list[str]]):
    """Rows of text cells held as columns, as a CSV file's plain blocks are read
    (`adapters.batch_files`): `columns[j][i]` is cell j of row i, every row `HEADERS` wide.
    `bare`: no cell has whitespace around it (nothing to strip). A row is `table[i]`."""

    __slots__ = ("bare", "columns")

    def __init__(self, columns: list[list[str]], *, bare: bool) -> None:
        self.columns = columns
        self.bare = bare

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @typing.overload
    def __getitem__(self, index: int) -> list[str]: ...
    @typing.overload
    def __getitem__(self, index: slice) -> Table: ...
    def __getitem__(self, index: int | slice) -> list[str] | Table:
        if isinstance(index, slice):
            return Table([column[index] for column in self.columns], bare=self.bare)
        return [column[index] for column in self.columns]

    def __add__(self, other: Table) -> Table:
        return Table(
            [a + b for a, b in zip(self.columns, other.columns, strict=True)],
            bare=self.bare and other.bare,
        )


@dataclass(slots=True)
class Columns:
    """Plain rows of a chunk, parsed: index i of every list is one row (`listing(i)`)."""

    rows: list[int]
    authority: list[str]  # "" where the row leaves 认定部门 empty
    subject_id: list[str]
    name: list[str]
    list_name: list[str]
    domain: list[str]
    decision_no: list[str]
    legal_basis: list[str]
    facts: list[str]
    region: list[str]
    effective_from: list[datetime]
    effective_until: list[datetime | None]
    severity: list[str | None]
    intent: list[str | None]

    def __len__(self) -> int:
        return len(self.rows)

    def listing(self, i: int) -> NewListing:
        """Row i as the `NewListing` that `parse_row` makes of it."""
        return NewListing(
            subject=SubjectRef(self.subject_id[i], self.name[i]),
            list=self.list_name[i],  # type: ignore[arg-type]  # checked against ListName
            domain=self.domain[i],
            basis=Basis(self.decision_no[i], self.legal_basis[i], self.facts[i]),
            region=self.region[i],
            effective_from=self.effective_from[i],
            effective_until=self.effective_until[i],
            severity=self.severity[i],  # type: ignore[arg-type]  # checked against Severity
            intent=self.intent[i],  # type: ignore[arg-type]  # checked against Intent
        )

    def select(self, keep: Sequence[int]) -> Columns:
        """The rows at these indexes, in this order."""
        return Columns(*([column[i] for i in keep] for column in self._columns()))

    def _columns(self) -> tuple[list[Any], ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


_COLUMN_CHECKS = msgspec.defstruct(
    "_ColumnChecks",
    [(name, list[hint]) for name, hint in _fields_of(_Checked).items()],  # type: ignore[valid-type]
    array_like=True,
    gc=False,
)
"""`_Checked` by columns: one `msgspec.convert` checks every value of a chunk."""
_MISSING: Final = object()


def _texts(column: Sequence[object], bad: set[int]) -> list[str]:
    """A column's cells stripped; None is empty, and other values (XLSX numbers and dates)
    are too, their rows added to `bad`."""
    try:
        return [*map(_strip, column)]  # type: ignore[arg-type]
    except TypeError:
        bad.update(i for i, v in enumerate(column) if v is not None and not isinstance(v, str))
        return [v.strip() if isinstance(v, str) else "" for v in column]


def _mark(values: Sequence[object], bad: set[int], *, wrong: object) -> None:
    """Add to `bad` the rows whose value is `wrong`, if any is."""
    if wrong in set(values):  # (hashing each value once beats comparing it with `wrong`)
        bad.update(i for i, v in enumerate(values) if v is wrong)


def _instants(column: list[str], bad: set[int], *, end: bool) -> list[Any]:
    """The column as instants (`_to_instant`, once per distinct value), None where empty;
    rows whose value is not a date are added to `bad`."""
    known: dict[str, Any] = {"": None}
    for text in set(column) - {""}:
        try:
            known[text] = _to_instant(text, end=end)
        except ValueError:
            known[text] = _MISSING
    values = [*map(known.__getitem__, column)]
    _mark(values, bad, wrong=_MISSING)
    return values


def parse_columns(
    numbers: Sequence[int], records: Sequence[Sequence[object]]
) -> tuple[Columns, list[ParsedRow | list[RowError]]]:
    """`parse_row` for a chunk of rows in `HEADERS` order: the plain rows as `Columns` (in
    order), every other row as `parse_row` answers it (in order, by `parse_records`)."""
    bad: set[int] = set()
    if isinstance(records, Table) and len(records):
        cells = records.columns if records.bare else [_texts(c, bad) for c in records.columns]
    elif not records or {*map(len, records)} != {len(HEADERS)}:
        return Columns(*([] for _ in HEADERS)), parse_records([*zip(numbers, records, strict=True)])
    else:
        cells = [_texts(column, bad) for column in zip(*records, strict=True)]
    (name, uscc, _, lst, authority, basis, decision, facts, domain, severity, intent, region,
     start, until) = cells  # fmt: skip
    for column in (name, lst, basis, decision, facts, domain, region, start, uscc):
        if not all(column):  # a value is missing: parse_row says which
            bad.update(i for i, v in enumerate(column) if not v)
    for column in (name, basis, decision, facts):
        if "\x00" in "".join(column):  # the rules refuse it; `parse_records` keeps the row
            bad.update(i for i, v in enumerate(column) if "\x00" in v)
    canonical = [*map(is_canonical_uscc, uscc)]
    _mark(canonical, bad, wrong=False)  # identity numbers, other spellings, bad codes
    lists = [*map(_LIST_CODES.get, lst)]
    _mark(lists, bad, wrong=None)
    severities = [*map(_SEVERITY_CODES.get, severity, repeat(_MISSING))]
    _mark(severities, bad, wrong=_MISSING)
    intents = [*map(_INTENT_CODES.get, intent, repeat(_MISSING))]
    _mark(intents, bad, wrong=_MISSING)
    parsed = Columns(
        [*numbers],
        authority,
        [*map("uscc:".__add__, uscc)],
        name,
        lists,  # type: ignore[arg-type]  # None only in bad rows
        [*map(DOMAINS.get, domain, domain)],  # a code, or the text
        decision,
        basis,
        facts,
        region,
        _instants(start, bad, end=False),
        _instants(until, bad, end=True),
        severities,  # type: ignore[arg-type]  # _MISSING only in bad rows
        intents,  # type: ignore[arg-type]  # same
    )
    if bad:
        parsed = parsed.select([i for i in range(len(records)) if i not in bad])
    try:  # each distinct value once: most columns hold a few values many times
        msgspec.convert(_check_order(parsed, distinct=True), _COLUMN_CHECKS)
    except msgspec.ValidationError:  # some row breaks a constraint: parse_row says how
        rows = [*zip(*_check_order(parsed), strict=True)]
        failed = {i for i, row in enumerate(rows) if _checked_or_none(row) is None}
        where = {number: i for i, number in enumerate(numbers)}
        bad.update(where[parsed.rows[i]] for i in failed)
        parsed = parsed.select([i for i in range(len(parsed)) if i not in failed])
    return parsed, parse_records([(numbers[i], records[i]) for i in sorted(bad)])


def _check_order(parsed: Columns, *, distinct: bool = False) -> list[list[Any]]:
    """The columns in `_Checked`'s field order; `distinct`: those other than the subject,
    the name and the decision number (which differ from row to row) with each value once."""
    few: Callable[[list[Any]], list[Any]] = (lambda c: [*set(c)]) if distinct else list
    return [
        parsed.subject_id, parsed.name, few(parsed.list_name), few(parsed.domain),
        parsed.decision_no, few(parsed.legal_basis), few(parsed.facts), few(parsed.region),
        few(parsed.effective_from), few(parsed.effective_until), few(parsed.severity),
        few(parsed.intent),
    ]  # fmt: skip
