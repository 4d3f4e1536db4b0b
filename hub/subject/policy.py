"""The breach policy: a process that follows the log and turns each breached commitment into
the listing its consequence names, exactly once.

It is a `Projection` run by `projections.ProjectionRunner` (advisory lock, tracked position,
wake-ups), but its `apply` writes commands through the group committer instead of rows. The
listing's id follows from the commitment's code (`listing_id_for(agency, breach_decision_no)`)
and the command appends nothing when that listing exists, so a crash between the command and
the position update (the runner's transaction rolls back, the batch runs again) can never
create a second listing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime

import structlog
from prometheus_client import Counter

from hub.credit.application import UnitOfWork
from hub.credit.committer import Command, Committer
from hub.credit.domainmodel import Listing, listing_id_for
from hub.credit.rules import ListingRules
from hub.errors import HubError
from hub.subject.commitment_service import breach_decision_no
from hub.subject.commitments import Commitment
from hub.workdays import WorkingCalendar
from projections import Connection, RawEvent
from schemas import events as ev
from schemas import subject_events as se
from schemas.codec import canonical_json
from schemas.listing import PUNITIVE_LISTS

log = structlog.get_logger(__name__)
BREACH_TOPIC = f"{se.COMMITMENT_TOPIC}.Breached"
LISTED = Counter(
    "hub_commitment_breach_listings_total",
    "Breach policy outcomes: listed, existing (already listed), refused.",
    ["outcome"],
)


class PolicyRetry(OSError):
    """The committer failed for a reason other than a rule: the runner retries the batch."""


class BreachPolicy:
    name = "policy:commitment_breach"

    def __init__(
        self, committer: Committer, rules: ListingRules, calendar: WorkingCalendar
    ) -> None:
        self.committer = committer
        self.rules = rules
        self.calendar = calendar

    async def setup(self, conn: Connection) -> None:
        """Nothing to create: the policy's only state is its tracked position."""

    async def reset(self, conn: Connection) -> None:
        """Nothing to empty: re-running the policy appends nothing new (its ids are fixed)."""

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:  # noqa: ARG002
        commands = []
        for event in events:
            if event.topic != BREACH_TOPIC:
                continue
            payload = ev.decode_payload(event.topic, event.state)
            assert isinstance(payload, se.CommitmentBreached)  # noqa: S101 - by topic
            if payload.consequence != "none":
                commands.append(self.command(event, payload))
        if not commands:
            return
        outcomes = await asyncio.gather(
            *(self.committer.submit(c) for c in commands), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, HubError):
                LISTED.labels("refused").inc()
                log.warning("breach_policy_refused", error=outcome.detail, rule=outcome.rule)
            elif isinstance(outcome, BaseException):
                raise PolicyRetry(f"breach policy could not commit: {outcome}") from outcome
            else:
                LISTED.labels("listed" if outcome[0] else "existing").inc()

    def command(self, event: RawEvent, breach: se.CommitmentBreached) -> Command:
        at = breach.timestamp

        def list_breach(uow: UnitOfWork) -> bool:
            commitment = uow.get(event.originator_id)
            assert isinstance(commitment, Commitment)  # noqa: S101 - the event's aggregate
            decision_no = breach_decision_no(commitment.code)
            listing_id = listing_id_for(commitment.accepting_agency, decision_no)
            if uow.get(listing_id) is not None:
                return False
            list_name = breach.consequence
            punitive = list_name in PUNITIVE_LISTS
            severity = breach.severity if punitive else None
            digest = {"commitment": commitment.code, "list": list_name, "severity": severity}
            notice = self.rules.notice_days
            listing = Listing.register(
                listing_id=listing_id,
                now=uow.now,
                subject_id=commitment.committer_code,
                subject_name=commitment.committer_name,
                list=list_name,
                domain=breach.domain,
                severity=severity,
                intent="intentional" if punitive else None,
                decision_no=decision_no,
                legal_basis=f"credit commitment {commitment.code}: {commitment.liability}",
                facts=breach.facts,
                region=commitment.code[:6],
                authority=commitment.accepting_agency,
                effective_from=at,
                effective_until=self._until(list_name, severity, at),
                notice_until=self.calendar.deadline(at, notice) if notice > 0 else None,
                digest=hashlib.sha256(canonical_json(digest)).hexdigest(),
                origin_hub=None,
                origin_position=None,
            )
            uow.add(listing)
            return True

        return list_breach

    def _until(self, list_name: str, severity: str | None, start: datetime) -> datetime | None:
        return self.rules.latest_end(list_name, severity, start)
