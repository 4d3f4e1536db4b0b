"""Regional docking, the hub's side: which peer listings this hub recognises, and the
commands that append them to its own log (the transport is `adapters.regional`).

A peer's registration is recognised when it is native to the peer (`origin_hub` empty: a
listing the peer imported from elsewhere, this hub's own included, is never taken again,
which is what keeps listings from echoing between hubs), its (list, domain) matches
`HUB_REGIONAL_RECOGNISE`, its domain is in this hub's catalogue and its identifiers are
valid. The copy is a `Listing.Registered` with:

- id `uuid5(REGIONAL_NAMESPACE, "<origin hub>\\x1f<origin listing id>")`: a redelivered
  message finds the copy it made, so each remote listing has exactly one copy;
- authority `<origin hub>/<remote authority>` (no local agency can change it), and
  `origin_hub`, `origin_position` (the position of the registration in the peer's log).

Later events of the remote listing (amended, delisted, objections, took effect, publication
ended) are applied to the copy when it exists, each through the domain's own method, and
only when the copy's state does not already show it: applying one twice appends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, get_args
from uuid import NAMESPACE_URL, UUID, uuid5

import asyncpg
import msgspec
import structlog
from prometheus_client import Counter

from adapters.cloudevents import hub_source
from adapters.regional import Docking, DockingConfig, RemoteEvent
from adapters.regional_stream import parse_peers
from hub.credit.application import UnitOfWork
from hub.credit.committer import Command, Committer
from hub.credit.domainmodel import Listing
from hub.errors import HubError
from hub.settings import Settings
from schemas import events as ev
from schemas.identifiers import IdentifierError, parse_subject_id, validate_region
from schemas.listing import ListName

log = structlog.get_logger(__name__)
REGIONAL_NAMESPACE = uuid5(NAMESPACE_URL, "urn:credit-hub:regional-copy")
LISTS: tuple[str, ...] = get_args(ListName)
OUTCOMES = Counter(
    "hub_regional_events_total", "Peer events by what docking did with them.", ["peer", "outcome"]
)
_DATETIME_CHANGES = frozenset({"effective_from", "effective_until"})
Change = Callable[[Listing, datetime], str]
P = TypeVar("P", bound=ev.EventPayload)


def copy_id_for(origin_hub: str, origin_listing_id: str) -> UUID:
    return uuid5(REGIONAL_NAMESPACE, f"{origin_hub}\x1f{origin_listing_id}")


@dataclass(frozen=True)
class Recognition:
    """`blacklist:*,market_ban:taxation`: (list, domain) pairs, `*` for any of either."""

    rules: frozenset[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> Recognition:
        rules: set[tuple[str, str]] = set()
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, domain = item.partition(":")
            name, domain = name.strip(), domain.strip() or "*"
            if name != "*" and name not in LISTS:
                raise ValueError(f"recognition rule {item!r}: {name!r} is not a list {LISTS}")
            rules.add((name, domain if sep else "*"))
        return cls(frozenset(rules))

    def recognises(self, list_name: str, domain: str) -> bool:
        return any(rl in ("*", list_name) and rd in ("*", domain) for rl, rd in self.rules)

    def lists(self) -> tuple[str, ...]:
        """The lists to source from peers."""
        return tuple(n for n in LISTS if any(rl in ("*", n) for rl, _ in self.rules))


def _payload(event: RemoteEvent, kind: type[P]) -> P:
    return msgspec.convert({**event.data, "timestamp": event.time}, kind, strict=False)


class DockingService:
    """Turns a peer's events into commands for the committer, in order."""

    def __init__(
        self, committer: Committer, recognition: Recognition, domains: frozenset[str]
    ) -> None:
        self.committer = committer
        self.recognition = recognition
        self.domains = domains

    async def apply(self, events: list[RemoteEvent]) -> None:
        """Append what is recognised; raise (the batch is retried) when the log cannot."""
        planned: list[tuple[RemoteEvent, Command]] = []
        for event in events:
            try:
                outcome = self.plan(event)
            except (msgspec.ValidationError, TypeError, ValueError) as exc:
                log.warning("regional_invalid", peer=event.peer, event=event.id, error=str(exc))
                outcome = "invalid"
            if isinstance(outcome, str):
                OUTCOMES.labels(event.peer, outcome).inc()
            else:
                planned.append((event, outcome))
        results = await asyncio.gather(
            *(self.committer.submit(command) for _, command in planned), return_exceptions=True
        )
        for (event, _), result in zip(planned, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            OUTCOMES.labels(event.peer, result[0]).inc()

    def plan(self, event: RemoteEvent) -> Command | str:
        """A command that applies `event`, or why it is skipped."""
        family, _, name = event.type.partition(".")
        if family != "listing":
            return "other_family"
        if event.source != hub_source(event.peer):
            return "wrong_source"
        if name == "registered":
            return self._registered(event, _payload(event, ev.ListingRegistered))
        change = self._change_for(name, event)
        return "unknown_type" if change is None else self._change(event, change)

    def _registered(self, event: RemoteEvent, p: ev.ListingRegistered) -> Command | str:
        if p.origin_hub:
            return "not_native"
        if not self.recognition.recognises(p.list, p.domain) or p.domain not in self.domains:
            return "unrecognised"
        try:
            subject_id = str(parse_subject_id(p.subject_id))
            region = validate_region(p.region)
        except IdentifierError:
            return "invalid"
        copy_id = copy_id_for(event.peer, event.aggregate_id)
        fields: dict[str, Any] = {
            name: getattr(p, name)
            for name in ev.ListingRegistered.__struct_fields__
            if name not in ("timestamp", "origin_hub", "origin_position")
        }
        fields.update(
            subject_id=subject_id,
            region=region,
            authority=f"{event.peer}/{p.authority}",
            origin_hub=event.peer,
            origin_position=event.position,
        )

        def command(uow: UnitOfWork) -> str:
            if uow.get_for_create(copy_id) is not None:
                return "applied_before"
            uow.add(Listing.register(listing_id=copy_id, now=uow.now, **fields))
            return "appended"

        return command

    def _change(self, event: RemoteEvent, change: Change) -> Command:
        copy_id = copy_id_for(event.peer, event.aggregate_id)

        def command(uow: UnitOfWork) -> str:
            listing = uow.get_listing(copy_id)
            if listing is None:
                return "no_copy"
            try:
                return change(listing, uow.now)
            except HubError as exc:  # the copy's rules refuse it; the copy stays as it is
                log.warning("regional_refused", listing=str(copy_id), rule=exc.rule)
                return "refused"

        return command

    def _change_for(self, name: str, event: RemoteEvent) -> Change | None:
        builder = _CHANGES.get(name)
        return None if builder is None else builder(event)


def _amended(event: RemoteEvent) -> Change:
    p = _payload(event, ev.ListingAmended)
    changes = {
        k: msgspec.convert(v, datetime | None, strict=False) if k in _DATETIME_CHANGES else v
        for k, v in p.changes.items()
    }

    def amend(listing: Listing, now: datetime) -> str:
        if listing.status == "delisted":
            return "closed"
        if all(getattr(listing, k, None) == v for k, v in changes.items()):
            return "applied_before"
        listing.amend(changes=changes, note=p.note, applies_from=p.applies_from, now=now)
        return "appended"

    return amend


def _delisted(event: RemoteEvent) -> Change:
    d = _payload(event, ev.ListingDelisted)

    def delist(listing: Listing, now: datetime) -> str:
        if listing.status == "delisted":
            return "applied_before"
        listing.delist(reason=d.reason, note=d.note, effective_at=d.effective_at, now=now)
        return "appended"

    return delist


def _objected(event: RemoteEvent) -> Change:
    o = _payload(event, ev.ListingObjected)

    def object_(listing: Listing, now: datetime) -> str:
        if len(listing.objections) >= o.n:
            return "applied_before"
        if len(listing.objections) != o.n - 1:
            return "out_of_order"
        listing.object(
            grounds=o.grounds, received_at=o.received_at, answer_due=o.answer_due, now=now
        )
        return "appended"

    return object_


def _objection_resolved(event: RemoteEvent) -> Change:
    r = _payload(event, ev.ListingObjectionResolved)

    def resolve(listing: Listing, now: datetime) -> str:
        found = [x for x in listing.objections if x["n"] == r.n]
        if not found:
            return "out_of_order"
        if found[0]["resolved"]:
            return "applied_before"
        listing.resolve_objection(n=r.n, upheld=r.upheld, answer=r.answer, now=now)
        return "appended"

    return resolve


def _took_effect(_: RemoteEvent) -> Change:
    def take_effect(listing: Listing, now: datetime) -> str:
        return "appended" if listing.take_effect(now=now) else "applied_before"

    return take_effect


def _publication_ended(event: RemoteEvent) -> Change:
    e = _payload(event, ev.ListingPublicationEnded)

    def end(listing: Listing, now: datetime) -> str:
        ended = listing.end_publication(ended_at=e.ended_at, now=now)
        return "appended" if ended else "applied_before"

    return end


_CHANGES: dict[str, Callable[[RemoteEvent], Change]] = {
    "amended": _amended,
    "delisted": _delisted,
    "objected": _objected,
    "objection_resolved": _objection_resolved,
    "took_effect": _took_effect,
    "publication_ended": _publication_ended,
}


def docking(settings: Settings, pool: asyncpg.Pool, committer: Committer) -> Docking | None:
    """The regional docking worker, when `HUB_REGIONAL_PEERS` names peers (and NATS is set)."""
    if not settings.regional_peers or not settings.nats_url or not settings.database_url:
        return None
    peers = parse_peers(
        settings.regional_peers, stream=settings.nats_stream, prefix=settings.nats_subject_prefix
    )
    if any(peer.hub_id == settings.hub_id for peer in peers):
        raise ValueError(f"HUB_REGIONAL_PEERS names this hub itself ({settings.hub_id})")
    recognition = Recognition.parse(settings.regional_recognise)
    if not recognition.lists():
        log.warning("regional_recognises_nothing", peers=settings.regional_peers)
        return None
    service = DockingService(committer, recognition, settings.listing_rules().domains)
    config = DockingConfig(
        database_url=settings.database_url,
        nats_url=settings.nats_url,
        peers=peers,
        lists=recognition.lists(),
        database_schema=settings.database_schema,
        stream=settings.regional_stream,
    )
    return Docking(config, pool, service.apply)
