"""Webhook subscription routes (scope `subscribe`): create, list, read, delete; a
subscription's deliveries; and redelivery of its dead letters. See docs/WEBHOOKS.md."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.bootstrap import Hub
from hub.credit.service import Agency
from hub.errors import Unavailable
from hub.webhooks import SubscriptionService, parse_subscription_id
from schemas.webhooks import (
    DeliveryPage,
    DeliveryStatus,
    NewSubscription,
    Redeliver,
    Redelivered,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionView,
)


def _service(hub: Hub, agency: Agency) -> SubscriptionService:
    require_scope(agency, "subscribe")
    if hub.subscriptions is None:
        raise Unavailable("webhooks are not set up in this process", retry_after=5)
    return hub.subscriptions


class SubscriptionController(Controller):
    path = "/v1/subscriptions"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", status_code=201, summary="Subscribe a URL to the log's events (webhooks)")
    async def create(
        self, data: JSONBody[NewSubscription], agency: AgencyDep, hub: HubDep
    ) -> SubscriptionCreated:
        """Events after the log's current head that pass `filter` are POSTed to `url`, signed
        per Standard Webhooks with `secret` (generated when omitted; shown only here)."""
        return await _service(hub, agency).create(agency, data)

    @get("/", summary="The caller's subscriptions")
    async def index(self, agency: AgencyDep, hub: HubDep) -> SubscriptionList:
        return await _service(hub, agency).of_agency(agency)

    @get("/{subscription_id:str}", summary="One of the caller's subscriptions")
    async def read(
        self, subscription_id: FromPath[str], agency: AgencyDep, hub: HubDep
    ) -> SubscriptionView:
        service = _service(hub, agency)
        return await service.get(agency, parse_subscription_id(subscription_id))

    @delete("/{subscription_id:str}", status_code=204, summary="Unsubscribe (drops its queue)")
    async def remove(self, subscription_id: FromPath[str], agency: AgencyDep, hub: HubDep) -> None:
        service = _service(hub, agency)
        await service.delete(agency, parse_subscription_id(subscription_id))

    @get("/{subscription_id:str}/deliveries", summary="A subscription's deliveries, by id")
    async def deliveries(
        self,
        *,
        subscription_id: FromPath[str],
        agency: AgencyDep,
        hub: HubDep,
        status: Annotated[DeliveryStatus | None, QueryParameter()] = None,
        after: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> DeliveryPage:
        service = _service(hub, agency)
        sub_id = parse_subscription_id(subscription_id)
        return await service.deliveries(agency, sub_id, status, after, limit)

    @post("/{subscription_id:str}/redeliver", status_code=202, summary="Re-queue dead letters")
    async def redeliver(
        self,
        subscription_id: FromPath[str],
        agency: AgencyDep,
        hub: HubDep,
        data: JSONBody[Redeliver],
    ) -> Response[Redelivered]:
        """`{}`: all dead letters of the subscription; `{"delivery_ids": [...]}`: those. Each
        goes out again with a fresh set of attempts; those held behind it follow in order."""
        service = _service(hub, agency)
        sub_id = parse_subscription_id(subscription_id)
        result = await service.redeliver(agency, sub_id, data.delivery_ids)
        return Response(result, status_code=202)
