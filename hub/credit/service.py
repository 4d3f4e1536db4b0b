"""Listing commands as the API calls them: checks that need no aggregate, then a command
that the committer runs in a shared transaction.

Authority rule: only the agency that made a listing may change it, and only in the domains
its key allows. Idempotency: the listing id follows from (authority, decision number); the
same decision sent again with the same content answers the existing listing, with other
content it is a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import structlog
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from hub.clock import Clock
from hub.credit.appender import Appender
from hub.credit.application import UnitOfWork
from hub.credit.committer import Committer
from hub.credit.domainmodel import LISTING_NAMESPACE, Listing, listing_id_for
from hub.credit.rules import ListingRules
from hub.errors import Conflict, Forbidden, HubError, InputError, NotFound, RuleViolation
from hub.workdays import WorkingCalendar
from schemas.codec import canonical_json
from schemas.identifiers import (
    IdentifierError,
    is_canonical_uscc,
    parse_subject_id,
    validate_region,
)
from schemas.listing import (
    PUNITIVE_LISTS,
    Amendment,
    CommandResult,
    Delisting,
    NewListing,
    NewObjection,
    ObjectionAnswer,
)

LATEST_ENDS = 4096
"""Latest allowed ends (`ListingRules.latest_end`) remembered per (list, severity, start)."""


@dataclass(frozen=True)
class Agency:
    """The caller, as its API key tells: code, scopes and the domains it may act in."""

    code: str
    name: str
    scopes: frozenset[str]
    domains: frozenset[str]

    def may_act_in(self, domain: str) -> bool:
        return "*" in self.domains or domain in self.domains


def _digest(body: NewListing) -> str:
    return hashlib.sha256(canonical_json(msgspec.to_builtins(body))).hexdigest()


_REGISTERED_TOPIC = get_topic(Listing.Registered)
_LISTING_TOPIC = get_topic(Listing)
_LISTING_NAMESPACE = LISTING_NAMESPACE.bytes
_state_encoder = msgspec.msgpack.Encoder()
_canonical_json = msgspec.json.Encoder(order="sorted").encode
"""`canonical_json(msgspec.to_builtins(body))` for a Struct, without the builtins copy."""


class _RegisteredState(msgspec.Struct):
    """The stored state of `Listing.Registered` as eventsourcing's mapper writes it: the
    event's attributes without originator id and version, in the same order (a test holds
    the bytes equal to those `register` stores)."""

    timestamp: datetime
    originator_topic: str
    subject_id: str
    subject_name: str
    list: str
    domain: str
    severity: str | None
    intent: str | None
    decision_no: str
    legal_basis: str
    facts: str
    region: str
    authority: str
    effective_from: datetime
    effective_until: datetime | None
    notice_until: datetime | None
    digest: str
    origin_hub: None = None
    origin_position: None = None


def _registered_state(
    body: NewListing,
    *,
    authority: str,
    subject_id: str,
    region: str,
    now: datetime,
    notice_until: datetime | None,
) -> _RegisteredState:
    """The stored state of the `Listing.Registered` event that `register` records."""
    basis = body.basis
    return _RegisteredState(
        now,
        _LISTING_TOPIC,
        subject_id,
        body.subject.name,
        body.list,
        body.domain,
        body.severity,
        body.intent,
        basis.decision_no,
        basis.legal_basis,
        basis.facts,
        region,
        authority,
        body.effective_from,
        body.effective_until,
        notice_until,
        hashlib.sha256(_canonical_json(body)).hexdigest(),
    )


def _listing_id(authority: str, decision_no: str) -> bytes:
    """`listing_id_for(authority, decision_no).bytes`, without building the UUID."""
    digest = bytearray(
        hashlib.sha1(  # noqa: S324 - uuid5 is SHA-1 by definition
            _LISTING_NAMESPACE + f"{authority}\x1f{decision_no}".encode()
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return bytes(digest)


def _uuid_text(value: bytes) -> str:
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_listing_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InputError(f"{value!r} is not a listing id (a UUID)", field="listing_id") from None


@dataclass
class PreparedListings:
    """Items checked and their events encoded, ready for `ListingService.write_many`."""

    items: list[tuple[Agency, NewListing]]
    now: datetime
    answers: list[tuple[CommandResult, bool] | HubError | None]
    fresh: dict[bytes, tuple[int, int]]  # listing id: (index of its item, notice days)
    events: list[tuple[bytes, bytes]]
    notice: dict[int, datetime | None]  # notice days: the notice window's end


class ListingService:
    def __init__(
        self,
        committer: Committer,
        rules: ListingRules,
        calendar: WorkingCalendar,
        clock: Clock,
        appender: Appender | None = None,
    ) -> None:
        self.committer = committer
        self.rules = rules
        self.calendar = calendar
        self.clock = clock
        self.appender = appender
        self._latest_ends: dict[tuple[str, str | None, datetime], datetime | None] = {}
        """Where new decisions are appended (`hub.credit.appender`); without one, through the
        committer, as an aggregate."""

    # -- register ----------------------------------------------------------------------

    def _check_new(self, agency: Agency, body: NewListing) -> tuple[str, str]:
        for field, text in (
            ("subject.name", body.subject.name),
            ("basis.decision_no", body.basis.decision_no),
            ("basis.legal_basis", body.basis.legal_basis),
            ("basis.facts", body.basis.facts),
        ):
            if "\x00" in text:  # batch imports come this way too, not only the API
                raise InputError("text may not contain the NUL character", field=field)
        subject = body.subject.id
        try:  # a USCC in canonical form is its own parse (the usual case, checked quickly)
            subject = (
                subject
                if subject.startswith("uscc:") and is_canonical_uscc(subject[5:])
                else str(parse_subject_id(subject, field="subject.id"))
            )
            region = validate_region(body.region)
        except IdentifierError as exc:
            raise InputError(str(exc), field=exc.field or "region") from None
        if body.domain not in self.rules.domains:
            raise RuleViolation(
                f"domain {body.domain!r} is not in the catalogue: {sorted(self.rules.domains)}",
                field="domain",
                rule="domain.catalogue",
            )
        if not agency.may_act_in(body.domain):
            raise Forbidden(
                f"agency {agency.code} may not list in domain {body.domain!r}",
                field="domain",
                rule="authority.domain",
            )
        punitive = body.list in PUNITIVE_LISTS
        for name in ("severity", "intent"):
            given = getattr(body, name) is not None
            if punitive and not given:
                raise RuleViolation(
                    f"{name} is required on the {body.list}", field=name, rule=f"{name}.required"
                )
            if not punitive and given:
                raise RuleViolation(
                    f"{name} applies to punitive lists only",
                    field=name,
                    rule=f"{name}.punitive_only",
                )
        self._check_period(body.list, body.severity, body.effective_from, body.effective_until)
        return subject, region

    def _check_period(
        self, list_name: str, severity: str | None, start: datetime, end: datetime | None
    ) -> None:
        if end is None:
            if list_name != "market_ban":
                raise InputError(
                    "effective_until is required; only a market ban may be permanent",
                    field="effective_until",
                )
            return
        if end <= start:
            raise RuleViolation(
                "effective_until must be after effective_from",
                field="effective_until",
                rule="period.order",
            )
        key = (list_name, severity, start)
        try:
            latest = self._latest_ends[key]
        except KeyError:  # listings often share their start (a decision date, midnight)
            if len(self._latest_ends) >= LATEST_ENDS:
                self._latest_ends.clear()
            latest = self._latest_ends[key] = self.rules.latest_end(list_name, severity, start)
        if latest is not None and end > latest and list_name != "market_ban":
            period = self.rules.period_for(list_name, severity)
            months = period.max_months if period else 0
            raise RuleViolation(
                f"publication of a {severity or list_name} listing lasts at most {months} "
                f"months: effective_until may be {latest.isoformat()} at the latest",
                field="effective_until",
                rule=f"publication.max_period.{severity or list_name}",
            )

    async def register(self, agency: Agency, body: NewListing) -> tuple[CommandResult, bool]:
        subject_id, region = self._check_new(agency, body)
        raw_id = _listing_id(agency.code, body.basis.decision_no)
        text_id = _uuid_text(raw_id)
        structlog.contextvars.bind_contextvars(listing_id=text_id)
        appending = self.appender is not None and self.appender.running and not self._protected
        if appending:
            now = self.clock.now()
            days = self.rules.notice_days if body.notice_days is None else body.notice_days
            notice_until = self.calendar.deadline(now, days) if days > 0 else None
            state = _state_encoder.encode(
                _registered_state(
                    body,
                    authority=agency.code,
                    subject_id=subject_id,
                    region=region,
                    now=now,
                    notice_until=notice_until,
                )
            )
            position = await self.appender.append(text_id, state)  # type: ignore[union-attr]
            if position is not None:  # what `Listing.status_at(now)` says of a new listing
                noticed = notice_until is not None and notice_until > now
                status: Any = "noticed" if noticed else "effective"
                return CommandResult(text_id, status, position), True
            # the decision is in the log: a repeat or a conflict, read from the listing
        return await self._register_command(
            agency, body, subject_id, region, UUID(bytes=raw_id), known=appending
        )

    @property
    def _protected(self) -> bool:
        """Whether stored states are compressed or enciphered (the appender writes them as
        they are; such a log is written through the committer, whose mapper does it)."""
        mapper = self.committer.app.mapper
        return bool(mapper.compressor or mapper.cipher)

    async def _register_command(
        self,
        agency: Agency,
        body: NewListing,
        subject_id: str,
        region: str,
        listing_id: UUID,
        *,
        known: bool,
    ) -> tuple[CommandResult, bool]:
        """`register` through the committer: a new decision becomes an aggregate, a decision
        already in the log answers its listing (the same content) or a conflict. `known`: the
        decision is known to be in the log, so it is read first (not created optimistically,
        which would fail the committer's whole group on the primary key)."""
        digest = _digest(body)

        def command(uow: UnitOfWork) -> tuple[str, bool, int]:
            existing = uow.get(listing_id) if known else uow.get_for_create(listing_id)
            if existing is not None:
                assert isinstance(existing, Listing)  # noqa: S101 - ids are listing ids
                if existing.digest != digest:
                    raise Conflict(
                        f"decision {body.basis.decision_no} of {agency.code} is already "
                        f"listed with other content (listing {listing_id})",
                        field="basis.decision_no",
                        rule="listing.decision_conflict",
                    )
                return existing.status_at(uow.now), False, uow.position(listing_id)
            listing = self._new_listing(
                agency, body, subject_id=subject_id, region=region, digest=digest, now=uow.now
            )
            uow.add(listing)
            return listing.status_at(uow.now), True, 0

        (status, created, old_position), position = await self.committer.submit(command)
        result = CommandResult(str(listing_id), status, position or old_position)
        return result, created

    def _new_listing(
        self,
        agency: Agency,
        body: NewListing,
        *,
        subject_id: str,
        region: str,
        digest: str,
        now: datetime,
    ) -> Listing:
        notice_days = self.rules.notice_days if body.notice_days is None else body.notice_days
        return Listing.register(
            listing_id=listing_id_for(agency.code, body.basis.decision_no),
            now=now,
            subject_id=subject_id,
            subject_name=body.subject.name,
            list=body.list,
            domain=body.domain,
            severity=body.severity,
            intent=body.intent,
            decision_no=body.basis.decision_no,
            legal_basis=body.basis.legal_basis,
            facts=body.basis.facts,
            region=region,
            authority=agency.code,
            effective_from=body.effective_from,
            effective_until=body.effective_until,
            notice_until=self.calendar.deadline(now, notice_days) if notice_days > 0 else None,
            digest=digest,
            origin_hub=None,
            origin_position=None,
        )

    async def register_many(
        self, items: list[tuple[Agency, NewListing]], *, concurrency: int = 512
    ) -> list[tuple[CommandResult, bool] | HubError]:
        """Register many new decisions at once (batch import): one COPY under the log's lock.

        Every item passes `_check_new`, as `register` does. The events are the ones `register`
        records, byte for byte (`_RegisteredState`), written without building aggregates. A
        decision already in the log, a repeat within the items, or a bulk write that meets a
        concurrent writer goes through `register` one by one, so the answers are exactly
        those of `POST /v1/listings` (`concurrency` of them in flight at once).

        `prepare_many` and `write_many` are its two halves, for a caller that prepares the
        next batch while one is written.
        """
        return await self.write_many(self.prepare_many(items), concurrency=concurrency)

    def prepare_many(self, items: list[tuple[Agency, NewListing]]) -> PreparedListings:
        """The first half of `register_many`: check the items and encode their events."""
        now = self.clock.now()
        answers: list[tuple[CommandResult, bool] | HubError | None] = [None] * len(items)
        notice: dict[int, datetime | None] = {}
        fresh: dict[bytes, tuple[int, int]] = {}
        events: list[tuple[bytes, bytes]] = []
        encode = _state_encoder.encode
        checked: dict[tuple[object, ...], str | HubError] = {}
        for i, (agency, body) in enumerate(items):
            outcome = self._check_new_memo(agency, body, checked)
            if isinstance(outcome, HubError):
                answers[i] = outcome
                continue
            subject_id, region = outcome
            listing_id = _listing_id(agency.code, body.basis.decision_no)
            if listing_id in fresh:
                continue  # a repeat within the items goes one by one
            days = self.rules.notice_days if body.notice_days is None else body.notice_days
            if days not in notice:
                notice[days] = self.calendar.deadline(now, days) if days > 0 else None
            state = _registered_state(
                body,
                authority=agency.code,
                subject_id=subject_id,
                region=region,
                now=now,
                notice_until=notice[days],
            )
            fresh[listing_id] = (i, days)
            events.append((listing_id, encode(state)))
        return PreparedListings(items, now, answers, fresh, events, notice)

    async def write_many(
        self, prepared: PreparedListings, *, concurrency: int = 512
    ) -> list[tuple[CommandResult, bool] | HubError]:
        """The second half of `register_many`: append, then answer every item."""
        items, now, answers = prepared.items, prepared.now, prepared.answers
        fresh, notice = prepared.fresh, prepared.notice
        status: dict[int, Any] = {  # a new listing's status (`status_at`): by notice days
            days: "noticed" if until is not None and until > now else "effective"
            for days, until in notice.items()
        }
        for (listing_id, _), position in await self._append_fresh(prepared.events):
            i, days = fresh[listing_id]
            answers[i] = (CommandResult(_uuid_text(listing_id), status[days], position), True)
        await self._answer_existing(items, answers, now)
        rest = [i for i, answer in enumerate(answers) if answer is None]
        slots = asyncio.Semaphore(concurrency)

        async def one(agency: Agency, body: NewListing) -> tuple[CommandResult, bool]:
            async with slots:
                return await self.register(agency, body)

        results = await asyncio.gather(*(one(*items[i]) for i in rest), return_exceptions=True)
        for i, result in zip(rest, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, HubError):
                raise result
            answers[i] = result
        return [a for a in answers if a is not None]

    def _check_new_memo(
        self, agency: Agency, body: NewListing, memo: dict[tuple[object, ...], str | HubError]
    ) -> tuple[str, str] | HubError:
        """`_check_new`, remembering its outcome for the fields it depends on.

        When the texts have no NUL and the subject is a USCC in canonical form (so that its
        parse succeeds and gives the id unchanged), what `_check_new` answers depends only on
        the agency, region, domain, list, severity, intent and period: rows that share them
        share the outcome, which `_check_new` itself computes once. Other rows go through
        `_check_new` on their own.
        """
        subject = body.subject.id
        basis = body.basis
        if (
            "\x00" in body.subject.name
            or "\x00" in basis.decision_no
            or "\x00" in basis.legal_basis
            or "\x00" in basis.facts
            or not subject.startswith("uscc:")
            or not is_canonical_uscc(subject[5:])
        ):
            try:
                return self._check_new(agency, body)
            except HubError as exc:
                return exc
        key = (
            agency.code,
            agency.domains,
            body.region,
            body.domain,
            body.list,
            body.severity,
            body.intent,
            body.effective_from,
            body.effective_until,
        )
        outcome = memo.get(key)
        if outcome is None:
            try:
                outcome = memo[key] = self._check_new(agency, body)[1]
            except HubError as exc:
                outcome = memo[key] = exc
        return outcome if isinstance(outcome, HubError) else (subject, outcome)

    async def _answer_existing(
        self,
        items: list[tuple[Agency, NewListing]],
        answers: list[tuple[CommandResult, bool] | HubError | None],
        now: datetime,
    ) -> None:
        """Answer the unanswered items whose decision is in the log, as `register` would:
        the same content is the existing listing (not created), other content a conflict."""
        waiting = {
            i: listing_id_for(items[i][0].code, items[i][1].basis.decision_no)
            for i, answer in enumerate(answers)
            if answer is None
        }
        if not waiting:
            return
        app = self.committer.app
        loaded = await asyncio.to_thread(app.load_many, list(set(waiting.values())))
        for i, listing_id in waiting.items():
            if listing_id not in loaded:
                continue
            existing, position = loaded[listing_id]
            assert isinstance(existing, Listing)  # noqa: S101 - ids are listing ids
            agency, body = items[i]
            if existing.digest != _digest(body):
                answers[i] = Conflict(
                    f"decision {body.basis.decision_no} of {agency.code} is already "
                    f"listed with other content (listing {listing_id})",
                    field="basis.decision_no",
                    rule="listing.decision_conflict",
                )
            else:
                status: Any = existing.status_at(now)
                answers[i] = (CommandResult(str(listing_id), status, position), False)

    async def _append_fresh(
        self, events: list[tuple[bytes, bytes]]
    ) -> list[tuple[tuple[bytes, bytes], int]]:
        """COPY the events of decisions not yet in the log: (event, position) written.

        Optimistic: a first import has nothing to look up. When the COPY meets an existing
        decision, the existing ones are looked up in one query and the rest copied again.
        """
        app = self.committer.app
        for attempt in range(2):
            try:
                positions = await asyncio.to_thread(app.append_new, _REGISTERED_TOPIC, events)
            except IntegrityError:
                if attempt:
                    return []  # a concurrent writer: everything goes one by one
                ids = [UUID(bytes=listing_id) for listing_id, _ in events]
                existing = {i.bytes for i in await asyncio.to_thread(app.existing_ids, ids)}
                events = [event for event in events if event[0] not in existing]
                continue
            return list(zip(events, positions, strict=True))
        return []

    # -- changes to an existing listing -------------------------------------------------

    async def _change(self, agency: Agency, listing_id: UUID, change: Any) -> CommandResult:
        structlog.contextvars.bind_contextvars(listing_id=str(listing_id))

        def command(uow: UnitOfWork) -> tuple[str, int]:
            listing = uow.get_listing(listing_id)
            if listing is None:
                raise NotFound(f"listing {listing_id} does not exist", field="listing_id")
            if listing.authority != agency.code:
                raise Forbidden(
                    f"only the authority that made listing {listing_id} ({listing.authority}) "
                    "may change it",
                    rule="authority.owner",
                )
            if not agency.may_act_in(listing.domain):
                raise Forbidden(
                    f"agency {agency.code} may not act in domain {listing.domain!r}",
                    rule="authority.domain",
                )
            change(listing, uow.now)
            return listing.status_at(uow.now), uow.position(listing_id)

        (status, old_position), position = await self.committer.submit(command)
        return CommandResult(str(listing_id), status, position or old_position)

    async def object(self, agency: Agency, listing_id: UUID, body: NewObjection) -> CommandResult:
        def change(listing: Listing, now: datetime) -> None:
            received = body.received_at or now
            if received > now:
                raise InputError("received_at lies in the future", field="received_at")
            due = self.calendar.deadline(received, self.rules.objection_answer_days)
            listing.object(grounds=body.grounds, received_at=received, answer_due=due, now=now)

        return await self._change(agency, listing_id, change)

    async def resolve(
        self, agency: Agency, listing_id: UUID, n: int, body: ObjectionAnswer
    ) -> CommandResult:
        def change(listing: Listing, now: datetime) -> None:
            listing.resolve_objection(n=n, upheld=body.upheld, answer=body.answer, now=now)

        return await self._change(agency, listing_id, change)

    async def amend(self, agency: Agency, listing_id: UUID, body: Amendment) -> CommandResult:
        fields = (
            "severity",
            "intent",
            "effective_from",
            "effective_until",
            "legal_basis",
            "facts",
            "subject_name",
        )
        changes = {f: getattr(body, f) for f in fields if getattr(body, f) is not None}

        def change(listing: Listing, now: datetime) -> None:
            if listing.list not in PUNITIVE_LISTS and (
                "severity" in changes or "intent" in changes
            ):
                raise RuleViolation(
                    "severity and intent apply to punitive lists only",
                    field="severity",
                    rule="severity.punitive_only",
                )
            self._check_period(
                listing.list,
                changes.get("severity", listing.severity),
                changes.get("effective_from", listing.effective_from),
                changes.get("effective_until", listing.effective_until),
            )
            listing.amend(
                changes=changes, note=body.note, applies_from=body.applies_from or now, now=now
            )

        return await self._change(agency, listing_id, change)

    async def delist(self, agency: Agency, listing_id: UUID, body: Delisting) -> CommandResult:
        def change(listing: Listing, now: datetime) -> None:
            listing.delist(
                reason=body.reason, note=body.note, effective_at=body.effective_at or now, now=now
            )

        return await self._change(agency, listing_id, change)
