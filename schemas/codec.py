"""The byte format of stored event state: msgpack through msgspec.

Stored events are dicts of plain values (str, int, bool, None, lists, dicts) plus datetimes,
which msgpack carries as its timestamp extension, so an untyped decode gives them back as
tz-aware datetimes and a typed decode (see `schemas.events`) gives Structs directly. UUIDs
never appear inside event state: ids are strings there, and the originator id is stored in
its own column.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_canonical = msgspec.json.Encoder(order="sorted")


def encode_state(state: dict[str, Any]) -> bytes:
    """Encode one event's state for storage."""
    return _encoder.encode(state)


def decode_state(data: bytes) -> dict[str, Any]:
    """Decode one event's stored state without a schema."""
    value = _decoder.decode(data)
    if not isinstance(value, dict):
        raise TypeError("stored event state is not a map")
    return value


def canonical_json(value: object) -> bytes:
    """Canonical JSON: sorted keys, no insignificant white space, UTF-8."""
    return _canonical.encode(value)
