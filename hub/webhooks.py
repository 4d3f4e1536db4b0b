"""Webhook subscriptions as the API sees them: validation, ownership, and the queue's views.

An agency sees and changes only its own subscriptions: another agency's id answers 404, as
an unknown one does. The worker that delivers is `adapters.webhooks.WebhookWorker`; this
service only wakes it when there is something new to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from uuid import UUID

import asyncpg
import httpx

from adapters import webhooks_queue as queue
from adapters import webhooks_store as store
from adapters.webhooks import WebhookWorker
from adapters.webhooks_signing import BadSecretError, new_secret, secret_key
from hub.clock import Clock
from hub.credit.service import Agency
from hub.errors import InputError, NotFound, RuleViolation
from schemas.events import EVENT_TYPES
from schemas.webhooks import (
    DeliveryPage,
    DeliveryStatus,
    DeliveryView,
    NewSubscription,
    Redelivered,
    SubscriptionCreated,
    SubscriptionFilter,
    SubscriptionList,
    SubscriptionView,
)

MAX_PER_AGENCY = 100


def validate_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputError(f"not a URL: {exc}", field="url") from None
    if parsed.scheme not in ("http", "https"):
        raise InputError("the URL's scheme must be http or https", field="url")
    if not parsed.host:
        raise InputError("the URL names no host", field="url")
    if parsed.userinfo:
        raise InputError("the URL may not carry credentials: use the secret", field="url")
    if parsed.fragment:
        raise InputError("the URL may not carry a #fragment", field="url")
    return str(parsed)


def event_names() -> frozenset[str]:
    return frozenset(kind.name for kind in EVENT_TYPES.values())


def validate_filter(wanted: SubscriptionFilter) -> SubscriptionFilter:
    known = event_names()
    for i, name in enumerate(wanted.events):
        if name not in known:
            raise InputError(
                f"unknown event type {name!r}; known: {', '.join(sorted(known))}",
                field=f"filter.events.{i}",
            )
    return SubscriptionFilter(
        lists=sorted(set(wanted.lists)),
        events=sorted(set(wanted.events)),
        regions=sorted(set(wanted.regions)),
    )


def parse_subscription_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InputError("a subscription id is a UUID", field="subscription_id") from None


def _view(sub: store.Subscription) -> SubscriptionView:
    return SubscriptionView(
        id=str(sub.id),
        url=sub.url,
        filter=SubscriptionFilter(
            lists=list(sub.lists),  # type: ignore[arg-type]
            events=list(sub.events),
            regions=list(sub.regions),
        ),
        created_at=sub.created_at,
        created_position=sub.created_position,
    )


class SubscriptionService:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, worker: WebhookWorker) -> None:
        self.pool = pool
        self.clock = clock
        self.worker = worker

    async def create(self, agency: Agency, body: NewSubscription) -> SubscriptionCreated:
        url = validate_url(body.url)
        secret = body.secret or new_secret()
        try:
            secret_key(secret)
        except BadSecretError as exc:
            raise InputError(str(exc), field="secret") from None
        wanted = validate_filter(body.filter)
        async with self.pool.acquire() as conn, conn.transaction():
            if await store.count_subscriptions(conn, agency.code) >= MAX_PER_AGENCY:
                raise RuleViolation(
                    f"an agency holds at most {MAX_PER_AGENCY} subscriptions",
                    rule="subscription.limit",
                )
            await store.lock_cursor(conn, share=True)  # fan-out waits: no event falls between
            sub = store.Subscription(
                id=uuid.uuid4(),
                agency=agency.code,
                url=url,
                secret=secret,
                lists=tuple(wanted.lists),
                events=tuple(wanted.events),
                regions=tuple(wanted.regions),
                created_at=self.clock.now(),
                created_position=await store.head(conn),
            )
            await store.insert_subscription(conn, sub)
        return SubscriptionCreated(str(sub.id), secret)

    async def of_agency(self, agency: Agency) -> SubscriptionList:
        async with self.pool.acquire() as conn:
            subs = await store.agency_subscriptions(conn, agency.code)
        return SubscriptionList([_view(s) for s in subs])

    async def _own(
        self, conn: store.Connection, agency: Agency, sub_id: UUID
    ) -> store.Subscription:
        sub = await store.subscription(conn, agency.code, sub_id)
        if sub is None:
            raise NotFound(f"subscription {sub_id} does not exist", field="subscription_id")
        return sub

    async def get(self, agency: Agency, sub_id: UUID) -> SubscriptionView:
        async with self.pool.acquire() as conn:
            return _view(await self._own(conn, agency, sub_id))

    async def delete(self, agency: Agency, sub_id: UUID) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.lock_cursor(conn, share=True)
            if not await store.delete_subscription(conn, agency.code, sub_id):
                raise NotFound(f"subscription {sub_id} does not exist", field="subscription_id")

    async def deliveries(
        self,
        agency: Agency,
        sub_id: UUID,
        status: DeliveryStatus | None,
        after: int,
        limit: int,
    ) -> DeliveryPage:
        async with self.pool.acquire() as conn:
            await self._own(conn, agency, sub_id)
            rows = await queue.deliveries(conn, sub_id, status, after, limit)
        page = [DeliveryView(**dict(r)) for r in rows]
        return DeliveryPage(page, page[-1].id if page else after)

    async def redeliver(
        self, agency: Agency, sub_id: UUID, ids: Sequence[int] | None
    ) -> Redelivered:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._own(conn, agency, sub_id)
            count = await queue.redeliver(conn, sub_id, self.clock.now(), ids)
        if count:
            self.worker.wake()
        return Redelivered(count)
