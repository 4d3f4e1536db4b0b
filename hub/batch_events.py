"""The `Listing.Registered` events of a chunk of imported rows, encoded by columns.

`ListingService.prepare_many` encodes one event per row: a `NewListing`, its digest (SHA-256
of its canonical JSON), the `_RegisteredState` struct and its msgpack bytes, and the listing
id (uuid5 of the authority and the decision number). For the plain rows of an import chunk
(`adapters.batch.Columns`) this module makes the same bytes from the columns: every value is
encoded once per column (or once per distinct value) by the same msgspec encoders, and each
row's JSON and state are joined from those pieces and the constant parts between them, which
are cut out of the encoders' own output for a struct holding a marker in every field. Every
chunk's first row is also encoded the service's way and compared; a difference is a bug and
stops the import (a test compares whole files' events with those `POST /v1/listings` makes).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import repeat
from operator import methodcaller
from typing import Any, Final

import msgspec

from adapters.batch import Columns
from hub.credit.domainmodel import LISTING_NAMESPACE
from hub.credit.service import (
    _LISTING_TOPIC,
    _digest,
    _listing_id,
    _RegisteredState,
    _state_encoder,
)
from schemas.listing import Basis, NewListing, SubjectRef

_json: Final = msgspec.json.Encoder(order="sorted").encode
"""The canonical JSON of a listing's digest (`_digest`)."""
_msgpack: Final = _state_encoder.encode
"""The stored state's encoder."""

_ROW_FIELDS: Final = (
    "subject_id", "name", "list_name", "domain", "decision_no", "legal_basis", "facts",
    "region", "effective_from", "effective_until", "severity", "intent",
)  # fmt: skip
"""`Columns` fields that the digest's JSON holds."""
_UNIQUE: Final = frozenset({"subject_id", "name", "decision_no", "digest"})
"""Columns whose values differ from row to row; the others are encoded once per value."""
_STATE_SOURCES: Final = {
    "timestamp": "now",
    "originator_topic": None,
    "subject_id": "subject_id",
    "subject_name": "name",
    "list": "list_name",
    "domain": "domain",
    "severity": "severity",
    "intent": "intent",
    "decision_no": "decision_no",
    "legal_basis": "legal_basis",
    "facts": "facts",
    "region": "region",
    "authority": "authority",
    "effective_from": "effective_from",
    "effective_until": "effective_until",
    "notice_until": "notice_until",
    "digest": "digest",
    "origin_hub": None,
    "origin_position": None,
}
"""Where each field of the stored state comes from: a column, the chunk (`now`,
`notice_until`), the digest, or a constant (None: the value `prepare_many` gives it)."""
_CHUNK_VALUES: Final = frozenset({"now", "notice_until"})
_ENCODED: Final = frozenset({"digest"})
"""Columns whose values come encoded for the stored state: the digest, 64 hex digits as a
msgpack str 8 (`_DIGEST_HEADER`), made from the hash's bytes without a str between."""
_DIGEST_HEADER: Final = b"\xd9\x40"


def _marker(name: str) -> str:
    return f"\ue000{name}\ue001"


Template = list[bytes | str]
"""Constant bytes and, between them, the names of the values that go there."""


def _template(encoded: bytes, names: Iterable[str], encode: Any) -> Template:
    """Cut an encoding of markers into its constant pieces and the markers' names."""
    found = sorted((encoded.index(encode(_marker(name))), name) for name in names)
    template: Template = []
    at = 0
    for where, name in found:
        template += (encoded[at:where], name)
        at = where + len(encode(_marker(name)))
    template.append(encoded[at:])
    return template


def _digest_template() -> Template:
    m: Any = _marker
    sample = NewListing(
        subject=SubjectRef(m("subject_id"), m("name")),
        list=m("list_name"),
        domain=m("domain"),
        basis=Basis(m("decision_no"), m("legal_basis"), m("facts")),
        region=m("region"),
        effective_from=m("effective_from"),
        effective_until=m("effective_until"),
        severity=m("severity"),
        intent=m("intent"),
    )
    return _template(_json(sample), _ROW_FIELDS, _json)


def _state_template() -> Template:
    fields = _RegisteredState.__struct_fields__
    if set(fields) != set(_STATE_SOURCES):
        raise RuntimeError(f"the stored state's fields changed: {fields}; see {__name__}")
    constants = {"originator_topic": _LISTING_TOPIC, "origin_hub": None, "origin_position": None}
    sample = _RegisteredState(
        **{f: constants[f] if f in constants else _marker(f) for f in fields}  # type: ignore[arg-type]
    )
    names = [f for f in fields if f not in constants]
    template = _template(_msgpack(sample), names, _msgpack)
    return [part if isinstance(part, bytes) else _STATE_SOURCES[part] or "" for part in template]


_DIGEST: Final = _digest_template()
_STATE: Final = _state_template()
_NAMESPACE: Final = LISTING_NAMESPACE.bytes
_VERSION: Final = bytes((b & 0x0F) | 0x50 for b in range(256))
_VARIANT: Final = bytes((b & 0x3F) | 0x80 for b in range(256))
_SIXTEEN_OF_TWENTY: Final = re.compile(rb"(.{16}).{4}", re.DOTALL)


def listing_ids(authority: list[str], decision_no: list[str]) -> list[bytes]:
    """`_listing_id(authority[i], decision_no[i])` for every row (uuid5: SHA-1, then the
    version and variant bits, set here for all rows at once)."""
    if len(set(authority)) == 1:
        prefix = _NAMESPACE + f"{authority[0]}\x1f".encode()
        names: Iterator[bytes] = map(prefix.__add__, map(str.encode, decision_no))
    else:
        keys = map(str.__add__, map(str.__add__, authority, repeat("\x1f")), decision_no)
        names = map(_NAMESPACE.__add__, map(str.encode, keys))
    digests = bytearray(b"".join(map(methodcaller("digest"), map(hashlib.sha1, names))))
    digests[6::20] = digests[6::20].translate(_VERSION)
    digests[8::20] = digests[8::20].translate(_VARIANT)
    return _SIXTEEN_OF_TWENTY.findall(digests)


def _join(
    template: Template, columns: dict[str, list[Any]], chunk: dict[str, Any], encode: Any
) -> Iterator[bytes]:
    """Each row's encoding: the template's pieces with each row's values between them. A
    column with one value in the chunk (often: the list, the domain, the dates) is part of
    the constant between its neighbours; one with a few values is encoded once per value."""
    parts: list[Iterable[bytes]] = []
    constant = b""
    for part in template:
        if isinstance(part, bytes):
            constant += part
            continue
        if part in chunk:
            constant += encode(chunk[part])
            continue
        values = columns[part]
        if part in _ENCODED:
            encoded: Iterable[bytes] = values
        elif part in _UNIQUE:
            encoded = map(encode, values)
        else:
            distinct = set(values)
            if len(distinct) == 1:
                constant += encode(values[0])
                continue
            encoded = map({v: encode(v) for v in distinct}.__getitem__, values)
        parts += (repeat(constant), encoded)
        constant = b""
    parts.append(repeat(constant))
    return map(b"".join, zip(*parts, strict=False))  # the constants repeat without end


def encode_events(
    rows: Columns, authority: list[str], *, now: datetime, notice_until: datetime | None
) -> list[tuple[bytes, bytes]]:
    """The (listing id, stored state) of each row's `Listing.Registered` event, as
    `prepare_many` encodes them, the authority being `authority[i]`."""
    if not rows.rows:
        return []
    columns: dict[str, list[Any]] = {name: getattr(rows, name) for name in _ROW_FIELDS}
    columns["authority"] = authority
    json = _join(_DIGEST, columns, {}, _json)
    hexes = map(binascii.hexlify, map(methodcaller("digest"), map(hashlib.sha256, json)))
    columns["digest"] = [*map(_DIGEST_HEADER.__add__, hexes)]  # already msgpack: see _join
    chunk = {"now": now, "notice_until": notice_until}
    events = [
        *zip(
            listing_ids(authority, rows.decision_no),
            _join(_STATE, columns, chunk, _msgpack),
            strict=True,
        )
    ]
    _compare(rows, authority, now, notice_until, events[0])
    return events


def _compare(
    rows: Columns,
    authority: list[str],
    now: datetime,
    notice_until: datetime | None,
    event: tuple[bytes, bytes],
) -> None:
    """Encode the first row as `prepare_many` does and compare."""
    body = rows.listing(0)
    expected = _msgpack(
        _RegisteredState(
            now,
            _LISTING_TOPIC,
            rows.subject_id[0],
            body.subject.name,
            body.list,
            body.domain,
            body.severity,
            body.intent,
            body.basis.decision_no,
            body.basis.legal_basis,
            body.basis.facts,
            rows.region[0],
            authority[0],
            body.effective_from,
            body.effective_until,
            notice_until,
            _digest(body),
        )
    )
    if event != (_listing_id(authority[0], body.basis.decision_no), expected):
        raise RuntimeError("the import encodes an event otherwise than register: a bug")
