"""The wire form of a credit-log event: a NATS subject and a CloudEvents 1.0 envelope.

Subjects (the taxonomy of `docs/EVENTS.md`)::

    <prefix>.<list>.<event>.<region>      listing events: credit.blacklist.registered.320100
    <prefix>.<family>.<event>.<region|_>  other families: credit.catalogue.measure_put._
    <prefix>._unknown.<event>._           a topic this reader has no name for

`<event>` is the short type (`registered`, `delisted`, ...). Listing events other than the
registration carry no list or region of their own; the relay looks them up from the
registration (`ListingContext`), which never changes (an amendment cannot change them).

Envelope: CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`). `id` is
the event id (`schemas.log.event_id`), the same as the `Nats-Msg-Id` header; `data` is the
event's own fields plus `position`, `aggregate_id`, `version` and, for listing events, the
listing's `subject_id`, `list`, `region` and `domain`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from msgspec import Struct

from schemas.log import LogEvent

CONTENT_TYPE = "application/cloudevents+json"
TYPE_PREFIX = "cn.gov.credit."
LISTING_FAMILY = "listing"
UNKNOWN_FAMILY = "_unknown"
NO_REGION = "_"
_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


class ListingContext(NamedTuple):
    """What every event of one listing is routed by: fixed at registration."""

    subject_id: str
    list: str
    region: str
    domain: str


class CloudEvent(Struct, kw_only=True):
    """A CloudEvents 1.0 event, structured mode; only the attributes we use."""

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: str = "application/json"
    data: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CloudEvent)


def token(value: str) -> str:
    """A NATS subject token: no dots, wildcards or white space; never empty."""
    return _TOKEN.sub("_", value) or NO_REGION


def split_type(type_name: str) -> tuple[str, str]:
    """`listing.registered` -> (`listing`, `registered`); an unnamed topic -> `_unknown`."""
    if ":" in type_name or "." not in type_name:  # a raw `module:Class.Event` topic
        return UNKNOWN_FAMILY, token(type_name.rpartition(".")[2] or type_name)
    family, _, event = type_name.partition(".")
    return token(family), token(event)


def context_of(event: LogEvent) -> ListingContext | None:
    """The routing context a registration carries in its own data."""
    data = event.data
    if "list" in data and "subject_id" in data:
        return ListingContext(
            str(data["subject_id"]),
            str(data["list"]),
            str(data.get("region") or NO_REGION),
            str(data.get("domain") or ""),
        )
    return None


def subject_for(prefix: str, event: LogEvent, context: ListingContext | None) -> str:
    family, name = split_type(event.type)
    if family == LISTING_FAMILY and context is not None:
        return f"{prefix}.{token(context.list)}.{name}.{token(context.region)}"
    region = event.data.get("region")
    return f"{prefix}.{family}.{name}.{token(str(region)) if region else NO_REGION}"


def to_cloudevent(event: LogEvent, source: str, context: ListingContext | None) -> CloudEvent:
    data = dict(event.data)
    data["position"] = event.position
    data["aggregate_id"] = event.aggregate_id
    data["version"] = event.version
    if context is not None:
        data.setdefault("subject_id", context.subject_id)
        data.setdefault("list", context.list)
        data.setdefault("region", context.region)
        data.setdefault("domain", context.domain)
    subject = context.subject_id if context is not None else event.aggregate_id
    return CloudEvent(
        id=event.id,
        source=source,
        type=TYPE_PREFIX + event.type,
        subject=subject,
        time=event.time,
        data=data,
    )


def encode(event: CloudEvent) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes) -> CloudEvent:
    """Read an envelope back (the agency client's replica does)."""
    return _decoder.decode(payload)


def hub_source(hub_id: str) -> str:
    return f"/hubs/{hub_id}"
