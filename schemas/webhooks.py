"""Webhook subscriptions: the bodies of `/v1/subscriptions` and the views it answers with.

A subscription asks the hub to POST every credit-log event that passes its `filter` to `url`,
signed per the Standard Webhooks specification with `secret`. Empty filter lists mean "all".
Inbound bodies forbid unknown fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from schemas.listing import ListName, RegionCode

DeliveryStatus = Literal["pending", "held", "delivered", "dead"]
"""`pending`: due (now or at `due_at`); `held`: waits behind an earlier delivery for the same
subject; `delivered`: the receiver answered 2xx; `dead`: gave up after the last attempt."""

EventName = Annotated[str, Meta(min_length=1, max_length=100, examples=["listing.registered"])]
Url = Annotated[str, Meta(min_length=8, max_length=2000, examples=["https://example.org/hook"])]
Secret = Annotated[
    str, Meta(min_length=10, max_length=200, examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
]


class SubscriptionFilter(Struct, forbid_unknown_fields=True, kw_only=True):
    """Which events a subscription receives: all of `lists` x `events` x `regions`."""

    lists: Annotated[list[ListName], Meta(max_length=10)] = []
    events: Annotated[list[EventName], Meta(max_length=100)] = []
    regions: Annotated[list[RegionCode], Meta(max_length=500)] = []


class NewSubscription(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/subscriptions`. Without `secret` the hub generates one (`whsec_` + base64)."""

    url: Url
    filter: SubscriptionFilter = msgspec.field(default_factory=SubscriptionFilter)
    secret: Secret | None = None


class SubscriptionCreated(Struct):
    """The secret is shown once, here; keep it to verify signatures."""

    id: str
    secret: str


class SubscriptionView(Struct):
    id: str
    url: str
    filter: SubscriptionFilter
    created_at: datetime
    created_position: int
    """Events after this log position are delivered (the log's head at creation)."""


class SubscriptionList(Struct):
    subscriptions: list[SubscriptionView]


class DeliveryView(Struct):
    id: int
    event_id: str
    position: int
    type: str
    subject: str
    status: DeliveryStatus
    attempts: int
    due_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryPage(Struct):
    deliveries: list[DeliveryView]
    next_after: int
    """Pass as `after` for the next page (delivery ids ascend)."""


class Redeliver(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/subscriptions/{id}/redeliver`: re-queue dead letters (`{}`: all of them)."""

    delivery_ids: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(max_length=10_000)] | None = None


class Redelivered(Struct):
    requeued: int
