"""Public reports (监督举报): anyone files one without a key; it goes to the agency responsible
(the agency it names, else the authority of the listing it names) with a working-day answer
limit; that agency alone lists and answers it.

Listing reports reads the `public_reports` read model, keyset-paged, so an agency with many
reports never loads them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from hub.clock import Clock
from hub.credit.application import UnitOfWork
from hub.credit.committer import Committer
from hub.credit.service import Agency, parse_listing_id
from hub.errors import InputError, NotFound, RuleViolation
from hub.subject.reports import Report
from hub.subject.rules import SubjectRules
from hub.workdays import WorkingCalendar
from schemas.subject import NewReport, ReportAnswer, ReportPage, ReportReceipt, ReportView


def parse_report_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InputError(f"{value!r} is not a report id (a UUID)", field="report_id") from None


def _view(row: Any, now: datetime) -> ReportView:
    return ReportView(
        report_id=str(row["report_id"]),
        kind=row["kind"],
        content=row["content"],
        agency=row["agency"],
        listing_id=row["listing_id"],
        subject_name=row["subject_name"],
        contact=row["contact"],
        received_at=row["received_at"],
        answer_due=row["answer_due"],
        status=row["status"],
        overdue=row["status"] == "filed" and now > row["answer_due"],
        answer=row["answer"],
        upheld=row["upheld"],
        answered_at=row["answered_at"],
    )


class ReportService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        committer: Committer,
        rules: SubjectRules,
        calendar: WorkingCalendar,
        clock: Clock,
    ) -> None:
        self.pool = pool
        self.committer = committer
        self.rules = rules
        self.calendar = calendar
        self.clock = clock

    async def file(self, body: NewReport) -> ReportReceipt:
        listing_id = parse_listing_id(body.listing_id) if body.listing_id else None
        if body.agency is not None:
            known = await self.pool.fetchval("SELECT 1 FROM agencies WHERE code = $1", body.agency)
            if not known:
                raise NotFound(f"agency {body.agency!r} is not known to the hub", field="agency")
        elif listing_id is None:
            raise RuleViolation(
                "name the listing or the agency the report is about",
                field="listing_id",
                rule="report.no_agency",
            )
        report_id = uuid4()

        def command(uow: UnitOfWork) -> Report:
            agency, subject_id = body.agency, None
            if listing_id is not None:
                listing = uow.get_listing(listing_id)
                if listing is None:
                    raise NotFound(f"listing {listing_id} does not exist", field="listing_id")
                agency, subject_id = agency or listing.authority, listing.subject_id
            assert agency is not None  # noqa: S101 - one of the two was checked above
            report = Report.file(
                report_id=report_id,
                now=uow.now,
                kind=body.kind,
                content=body.content,
                agency=agency,
                listing_id=str(listing_id) if listing_id else None,
                subject_id=subject_id,
                subject_name=body.subject_name,
                contact=body.contact,
                received_at=uow.now,
                answer_due=self.calendar.deadline(uow.now, self.rules.report_answer_days),
            )
            uow.add(report)
            return report

        report, _ = await self.committer.submit(command)
        return ReportReceipt(str(report.id), report.agency, report.answer_due)

    async def answer(self, agency: Agency, report_id: UUID, body: ReportAnswer) -> ReportView:
        def command(uow: UnitOfWork) -> Report:
            report = uow.get(report_id)
            if not isinstance(report, Report):
                raise NotFound(f"report {report_id} does not exist", field="report_id")
            if report.agency != agency.code:
                raise NotFound(f"report {report_id} does not exist", field="report_id")
            report.answer_with(by=agency.code, answer=body.answer, upheld=body.upheld, now=uow.now)
            return report

        report, _ = await self.committer.submit(command)
        answer = report.answer or {}
        return ReportView(
            report_id=str(report.id),
            kind=report.kind,
            content=report.content,
            agency=report.agency,
            listing_id=report.listing_id,
            subject_name=report.subject_name,
            contact=report.contact,
            received_at=report.received_at,
            answer_due=report.answer_due,
            status="answered",
            overdue=False,
            answer=answer.get("answer"),
            upheld=answer.get("upheld"),
            answered_at=answer.get("at"),
        )

    async def list_for(
        self,
        agency: Agency,
        *,
        after: UUID | None,
        limit: int,
        status: str | None,
        overdue: bool | None,
    ) -> ReportPage:
        now = self.clock.now()
        clauses = ["agency = $1", "report_id > $2"]
        args: list[Any] = [agency.code, after or UUID(int=0), now]
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if overdue is not None:
            clauses.append(
                "(status = 'filed' AND answer_due < $3)"
                if overdue
                else "NOT (status = 'filed' AND answer_due < $3)"
            )
        args.append(limit)
        rows = await self.pool.fetch(
            f"SELECT *, $3::timestamptz AS now FROM public_reports WHERE {' AND '.join(clauses)} "
            f"ORDER BY report_id LIMIT ${len(args)}",
            *args,
        )
        page = [_view(r, now) for r in rows]
        return ReportPage(page, page[-1].report_id if len(page) == limit else None)


__all__ = ["ReportService", "parse_report_id"]
