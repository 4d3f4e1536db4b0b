"""`GET /v1/info`: where a subscriber connects to follow the log (scope `subscribe`)."""

from __future__ import annotations

from litestar import get
from msgspec import Struct

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.errors import Unavailable


class StreamInfo(Struct):
    """The JetStream stream the relay fills, and how far it has got."""

    nats_url: str
    stream: str
    subjects: list[str]
    position: int


@get("/v1/info", tags=["log"], summary="Where to subscribe to the log (NATS JetStream)")
async def info(agency: AgencyDep, hub: HubDep) -> StreamInfo:
    """`subjects` are the stream's subject filters; subjects follow
    `<prefix>.<list>.<event>.<region>` (docs/EVENTS.md). `position` is the last log position
    known to be in the stream: a subscriber that has it has everything up to there."""
    require_scope(agency, "subscribe")
    relay = hub.relay
    if relay is None or not hub.settings.nats_url:
        raise Unavailable("this hub publishes no stream: HUB_NATS_URL is not set", retry_after=60)
    return StreamInfo(
        nats_url=hub.settings.nats_url,
        stream=relay.spec.name,
        subjects=relay.spec.subjects,
        position=relay.position,
    )
