"""Credit commitments as the API calls them: validation that needs no aggregate, then a
command through the group committer; and the views of a commitment.

The accepting agency records a commitment it received and later records its fulfilment or
breach; a breach names its consequence (a list, from `SubjectRules.breach_list`), which the
breach policy (`hub.subject.policy`) turns into exactly one listing.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import date, datetime
from typing import Any
from uuid import UUID

from hub.clock import Clock, local_date
from hub.credit.application import CreditApplication, UnitOfWork
from hub.credit.committer import Committer
from hub.credit.domainmodel import listing_id_for
from hub.credit.rules import ListingRules
from hub.credit.service import Agency
from hub.errors import Conflict, Forbidden, InputError, NotFound, RuleViolation
from hub.subject.commitments import Commitment, commitment_id_for
from hub.subject.rules import SubjectRules
from schemas.codec import canonical_json
from schemas.identifiers import IdentifierError, parse_subject_id, validate_region
from schemas.subject import Breach, CommitmentView, Fulfilment, NewCommitment
from schemas.subject import Committer as CommitterRef

_CATEGORY_KINDS = {
    "organisation": {"uscc"},
    "person": {"cnid"},
    "individual_business": {"uscc", "cnid"},
}


def breach_decision_no(code: str) -> str:
    """The decision number of the listing that a breach of commitment `code` leads to."""
    return f"commitment-breach:{code}"


def parse_code(code: str, *, field: str = "code") -> date:
    """Check a commitment code (region + date + serial); returns the date it carries."""
    try:
        validate_region(code[:6], field=field)
        return date(int(code[6:10]), int(code[10:12]), int(code[12:14]))
    except (IdentifierError, ValueError):
        raise InputError(
            f"commitment code {code!r} must be a GB/T 2260 region, a date YYYYMMDD and a serial",
            field=field,
        ) from None


class CommitmentService:
    def __init__(
        self,
        app: CreditApplication,
        committer: Committer,
        listing_rules: ListingRules,
        rules: SubjectRules,
        clock: Clock,
    ) -> None:
        self.app = app
        self.committer = committer
        self.listing_rules = listing_rules
        self.rules = rules
        self.clock = clock

    def _check_new(self, agency: Agency, body: NewCommitment) -> dict[str, Any]:
        code_date = parse_code(body.code)
        made_on = body.made_on or code_date
        if made_on != code_date:
            raise InputError(
                f"made_on {made_on} differs from the date in the code ({code_date})",
                field="made_on",
            )
        if made_on > local_date(self.clock.now()):
            raise InputError("made_on lies in the future", field="made_on")
        if body.valid_until is not None and body.valid_until < made_on:
            raise InputError("valid_until is before made_on", field="valid_until")
        try:
            subject = parse_subject_id(body.committer.code, field="committer.code")
        except IdentifierError as exc:
            raise InputError(str(exc), field=exc.field) from None
        if subject.kind not in _CATEGORY_KINDS[body.committer.category]:
            raise InputError(
                f"a {body.committer.category} is identified by "
                f"{' or '.join(sorted(_CATEGORY_KINDS[body.committer.category]))}",
                field="committer.code",
            )
        accepting = body.accepting_agency or agency.code
        if accepting != agency.code:
            raise Forbidden(
                f"agency {agency.code} may record only commitments it accepts itself",
                field="accepting_agency",
                rule="commitment.accepting_agency",
            )
        if body.domain is not None and body.domain not in self.listing_rules.domains:
            raise RuleViolation(
                f"domain {body.domain!r} is not in the catalogue",
                field="domain",
                rule="domain.catalogue",
            )
        fields = {
            "code": body.code,
            "committer_name": body.committer.name,
            "committer_category": body.committer.category,
            "committer_code": str(subject),
            "type": body.type,
            "reason": body.reason,
            "content": body.content,
            "liability": body.liability,
            "made_on": made_on.isoformat(),
            "valid_until": body.valid_until.isoformat() if body.valid_until else None,
            "accepting_agency": accepting,
            "publicity": body.publicity,
            "domain": body.domain,
        }
        fields["digest"] = hashlib.sha256(canonical_json(fields)).hexdigest()
        return fields

    async def make(self, agency: Agency, body: NewCommitment) -> tuple[CommitmentView, bool]:
        fields = self._check_new(agency, body)
        cid = commitment_id_for(body.code)

        def command(uow: UnitOfWork) -> tuple[Commitment, bool, int]:
            existing = uow.get_for_create(cid)
            if isinstance(existing, Commitment):
                if existing.digest != fields["digest"]:
                    raise Conflict(
                        f"commitment {body.code} is already recorded with other content",
                        field="code",
                        rule="commitment.code_conflict",
                    )
                return existing, False, uow.position(cid)
            commitment = Commitment.make(now=uow.now, **fields)
            uow.add(commitment)
            return commitment, True, 0

        (commitment, created, old), position = await self.committer.submit(command)
        return self.view(commitment, position or old), created

    async def _change(self, agency: Agency, code: str, change: Any) -> tuple[Commitment, int]:
        parse_code(code)
        cid = commitment_id_for(code)

        def command(uow: UnitOfWork) -> tuple[Commitment, int]:
            commitment = uow.get(cid)
            if not isinstance(commitment, Commitment):
                raise NotFound(f"commitment {code} does not exist", field="code")
            if commitment.accepting_agency != agency.code:
                raise Forbidden(
                    f"only the accepting agency ({commitment.accepting_agency}) may record "
                    f"what became of commitment {code}",
                    rule="authority.owner",
                )
            change(commitment, uow.now)
            return commitment, uow.position(cid)

        (commitment, old), position = await self.committer.submit(command)
        return commitment, position or old

    async def fulfil(self, agency: Agency, code: str, body: Fulfilment) -> CommitmentView:
        def change(commitment: Commitment, now: datetime) -> None:
            commitment.fulfil(status=body.status, note=body.note, now=now)

        return self.view(*await self._change(agency, code, change))

    async def breach(self, agency: Agency, code: str, body: Breach) -> CommitmentView:
        def change(commitment: Commitment, now: datetime) -> None:
            domain = body.domain or commitment.domain
            consequence = self.rules.breach_list(commitment.type)
            if consequence is not None:
                if domain is None:
                    raise InputError(
                        "the breach lists the committer: name the domain of the matter",
                        field="domain",
                    )
                if domain not in self.listing_rules.domains:
                    raise RuleViolation(
                        f"domain {domain!r} is not in the catalogue",
                        field="domain",
                        rule="domain.catalogue",
                    )
                if not agency.may_act_in(domain):
                    raise Forbidden(
                        f"agency {agency.code} may not list in domain {domain!r}",
                        field="domain",
                        rule="authority.domain",
                    )
            commitment.breach_by(
                severity=body.severity,
                facts=body.facts,
                domain=domain or "",
                consequence=consequence or "none",
                note=body.note,
                now=now,
            )

        return self.view(*await self._change(agency, code, change))

    async def get(self, code: str) -> CommitmentView:
        parse_code(code)
        aggregate, position = await asyncio.to_thread(self.app.load, commitment_id_for(code))
        if not isinstance(aggregate, Commitment):
            raise NotFound(f"commitment {code} does not exist", field="code")
        return self.view(aggregate, position)

    @staticmethod
    def view(c: Commitment, position: int = 0) -> CommitmentView:
        breach_listing: UUID | None = None
        if c.breach is not None and c.breach["consequence"] != "none":
            breach_listing = listing_id_for(c.accepting_agency, breach_decision_no(c.code))
        return CommitmentView(
            commitment_id=str(c.id),
            code=c.code,
            committer=CommitterRef(c.committer_name, c.committer_category, c.committer_code),  # type: ignore[arg-type]
            type=c.type,  # type: ignore[arg-type]
            reason=c.reason,
            content=c.content,
            liability=c.liability,
            made_on=date.fromisoformat(c.made_on),
            valid_until=date.fromisoformat(c.valid_until) if c.valid_until else None,
            accepting_agency=c.accepting_agency,
            publicity=c.publicity,  # type: ignore[arg-type]
            domain=c.domain,
            status=c.status,  # type: ignore[arg-type]
            recorded_at=c.created_on,
            breach_listing_id=str(breach_listing) if breach_listing else None,
            position=position,
        )


__all__ = ["CommitmentService", "breach_decision_no", "parse_code"]
