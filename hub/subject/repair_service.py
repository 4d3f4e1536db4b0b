"""Credit repair as the API calls it: the rules of an application, the authority's decisions,
and the view of a case with its working-day deadlines and overdue flags.

Rules (DOMAIN.md, configurable in `SubjectRules`): no application before the listing's minimum
publication period; unrepairable categories refused with the selector named; every case needs a
repair commitment (a material, or a registered `repair` commitment of the same subject) and
proof that the penalty was performed; severe cases also need a training certificate and a
credit report. Approval delists the listing (`repaired`) in the same transaction as the
approval event, so every reader of the log learns of both at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from uuid import UUID

import msgspec

from hub.clock import Clock
from hub.credit.application import CreditApplication, UnitOfWork
from hub.credit.committer import Committer
from hub.credit.domainmodel import Listing
from hub.credit.rules import ListingRules
from hub.credit.service import Agency, parse_listing_id
from hub.errors import Conflict, Forbidden, NotFound, RuleViolation
from hub.subject.commitment_service import parse_code
from hub.subject.commitments import Commitment, commitment_id_for
from hub.subject.repairs import RepairCase, repair_id_for
from hub.subject.rules import SubjectRules
from hub.workdays import WorkingCalendar
from schemas.codec import canonical_json
from schemas.listing import PUNITIVE_LISTS
from schemas.subject import Material, NewRepair, RepairCreated, RepairStep, RepairView

MAX_CASES = 1000


def _require(kinds: set[str], kind: str, rule: str, why: str) -> None:
    if kind not in kinds:
        raise RuleViolation(why, field="materials", rule=rule)


class RepairService:
    def __init__(
        self,
        *,
        app: CreditApplication,
        committer: Committer,
        listing_rules: ListingRules,
        rules: SubjectRules,
        calendar: WorkingCalendar,
        clock: Clock,
    ) -> None:
        self.app = app
        self.committer = committer
        self.listing_rules = listing_rules
        self.rules = rules
        self.calendar = calendar
        self.clock = clock

    def _check(self, uow: UnitOfWork, listing_id: UUID, body: NewRepair) -> Listing:
        listing = uow.get_listing(listing_id)
        if listing is None:
            raise NotFound(f"listing {listing_id} does not exist", field="listing_id")
        if listing.status == "delisted":
            raise Conflict(
                f"listing {listing_id} is already delisted ({listing.delist_reason})",
                field="listing_id",
                rule="listing.delisted",
            )
        if listing.list not in PUNITIVE_LISTS:
            raise RuleViolation(
                "only punitive listings are repaired", field="listing_id", rule="repair.punitive"
            )
        selector = self.rules.unrepairable_rule(
            domain=listing.domain, list_name=listing.list, severity=listing.severity
        )
        if selector is not None:
            raise RuleViolation(
                f"listings with {selector} cannot be ended by credit repair",
                field="listing_id",
                rule=f"repair.unrepairable.{selector}",
            )
        earliest = self.listing_rules.earliest_repair(listing.severity, listing.effective_from)
        if uow.now < earliest:
            raise RuleViolation(
                f"a {listing.severity} listing may apply for repair after its minimum "
                f"publication period, from {earliest.isoformat()}",
                field="listing_id",
                rule="repair.min_period",
            )
        self._check_materials(uow, listing, body)
        return listing

    def _check_materials(self, uow: UnitOfWork, listing: Listing, body: NewRepair) -> None:
        kinds: set[str] = {m.kind for m in body.materials}
        if body.commitment_code is not None:
            commitment = uow.get(commitment_id_for(body.commitment_code))
            if not isinstance(commitment, Commitment) or commitment.type != "repair":
                raise RuleViolation(
                    f"{body.commitment_code} is not a registered repair commitment",
                    field="commitment_code",
                    rule="repair.commitment",
                )
            if commitment.committer_code != listing.subject_id:
                raise RuleViolation(
                    "the repair commitment was made by another subject",
                    field="commitment_code",
                    rule="repair.commitment",
                )
            kinds.add("commitment")
        _require(
            kinds, "commitment", "repair.materials.commitment", "a repair commitment is needed"
        )
        _require(
            kinds,
            "penalty_performed",
            "repair.materials.penalty_performed",
            "proof that the penalty was performed is needed",
        )
        if listing.severity == "severe":
            if body.training_certificate is None and "training_certificate" not in kinds:
                raise RuleViolation(
                    "a severe listing needs a credit repair training certificate",
                    field="training_certificate",
                    rule="repair.severe.training",
                )
            _require(
                kinds,
                "credit_report",
                "repair.severe.credit_report",
                "a severe listing needs a credit report",
            )

    async def apply(self, agency: Agency, body: NewRepair) -> tuple[RepairCreated, bool]:
        listing_id = parse_listing_id(body.listing_id)
        if body.commitment_code is not None:
            parse_code(body.commitment_code, field="commitment_code")
        materials = [msgspec.to_builtins(m) for m in body.materials]
        digest = hashlib.sha256(canonical_json(msgspec.to_builtins(body))).hexdigest()

        def command(uow: UnitOfWork) -> tuple[UUID, str, bool, int]:
            n = 1
            while n <= MAX_CASES:
                found = uow.get(repair_id_for(listing_id, n))
                if not isinstance(found, RepairCase):
                    break
                if found.is_open:
                    if found.digest == digest:
                        return found.id, found.status, False, uow.position(found.id)
                    raise Conflict(
                        f"repair case {found.id} of this listing is still open",
                        field="listing_id",
                        rule="repair.already_open",
                    )
                n += 1
            listing = self._check(uow, listing_id, body)
            now = uow.now
            case = RepairCase.apply_for(
                repair_id=repair_id_for(listing_id, n),
                now=now,
                listing_id=str(listing_id),
                subject_id=listing.subject_id,
                authority=listing.authority,
                filed_by=agency.code,
                materials=materials,
                commitment_code=body.commitment_code,
                training_certificate=body.training_certificate,
                received_at=now,
                decision_due=self.calendar.deadline(now, self.rules.repair_decision_days),
                answer_due=self.calendar.deadline(now, self.rules.repair_answer_days),
                digest=digest,
            )
            uow.add(case)
            return case.id, case.status, True, 0

        (repair_id, status, created, old), position = await self.committer.submit(command)
        return RepairCreated(str(repair_id), status, position or old), created

    async def decide(self, agency: Agency, repair_id: UUID, action: str, reason: str) -> RepairView:
        def command(uow: UnitOfWork) -> tuple[RepairCase, int]:
            case = uow.get(repair_id)
            if not isinstance(case, RepairCase):
                raise NotFound(f"repair case {repair_id} does not exist", field="repair_id")
            if case.authority != agency.code:
                raise Forbidden(
                    f"only the listing's authority ({case.authority}) decides on its repair",
                    rule="authority.owner",
                )
            case.decide(action, by=agency.code, reason=reason, now=uow.now)
            if action == "approve":
                listing = uow.get_listing(UUID(case.listing_id))
                if listing is not None and listing.status != "delisted":
                    listing.delist(
                        reason="repaired", note=reason, effective_at=uow.now, now=uow.now
                    )
            return case, uow.position(repair_id)

        (case, old), position = await self.committer.submit(command)
        return self.view(case, self.clock.now(), position or old)

    async def get(self, agency: Agency, repair_id: UUID) -> RepairView:
        case, position = await asyncio.to_thread(self.app.load, repair_id)
        if not isinstance(case, RepairCase):
            raise NotFound(f"repair case {repair_id} does not exist", field="repair_id")
        if agency.code not in (case.authority, case.filed_by) and "audit" not in agency.scopes:
            raise Forbidden(
                "a repair case is shown to its authority, its filer and auditors",
                rule="repair.visibility",
            )
        return self.view(case, self.clock.now(), position)

    @staticmethod
    def view(case: RepairCase, now: datetime, position: int = 0) -> RepairView:
        return RepairView(
            repair_id=str(case.id),
            status=case.status,  # type: ignore[arg-type]
            listing_id=case.listing_id,
            subject_id=case.subject_id,
            authority=case.authority,
            filed_by=case.filed_by,
            materials=[msgspec.convert(m, Material) for m in case.materials],
            commitment_code=case.commitment_code,
            training_certificate=case.training_certificate,
            received_at=case.received_at,
            decision_due=case.decision_due,
            answer_due=case.answer_due,
            decision_overdue=case.status == "applied" and now > case.decision_due,
            answer_overdue=case.is_open and now > case.answer_due,
            decisions=[msgspec.convert(d, RepairStep) for d in case.decisions],
            position=position,
        )
