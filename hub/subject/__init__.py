"""The subject's side of the hub: credit commitments, objections' deadlines, credit repair,
publication end, the public view and public reports.

`build_subject_side()` (called by `hub.bootstrap.build_hub`) composes the services; its
projection and breach policy run in the hub's projection runners, its jobs in the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from hub.clock import Clock
from hub.credit.application import CreditApplication
from hub.credit.committer import Committer
from hub.credit.rules import ListingRules
from hub.scheduler import Job
from hub.settings import Settings
from hub.subject.commitment_service import CommitmentService
from hub.subject.deadlines import OverdueJob, PublicationEndJob
from hub.subject.policy import BreachPolicy
from hub.subject.public import PublicView, enable_trigram
from hub.subject.ratelimit import TokenBucket
from hub.subject.repair_service import RepairService
from hub.subject.report_service import ReportService
from hub.subject.rules import SubjectRules
from hub.workdays import WorkingCalendar

__all__ = ["SubjectSide", "build_subject_side"]


@dataclass
class SubjectSide:
    rules: SubjectRules
    commitments: CommitmentService
    repairs: RepairService
    reports: ReportService
    public: PublicView
    policy: BreachPolicy
    jobs: list[Job] = field(default_factory=list)
    public_limit: TokenBucket = field(default_factory=lambda: TokenBucket(120, 60))
    report_limit: TokenBucket = field(default_factory=lambda: TokenBucket(10, 3600))

    async def setup(self, pool: asyncpg.Pool) -> None:
        """After the subject projection's tables exist: the trigram index, when allowed."""
        async with pool.acquire() as conn:
            self.public.trigram = await enable_trigram(conn) is not None


def build_subject_side(
    *,
    settings: Settings,
    app: CreditApplication,
    pool: asyncpg.Pool,
    committer: Committer,
    listing_rules: ListingRules,
    calendar: WorkingCalendar,
    clock: Clock,
) -> SubjectSide:
    rules = SubjectRules.from_settings(settings)
    return SubjectSide(
        rules=rules,
        commitments=CommitmentService(app, committer, listing_rules, rules, clock),
        repairs=RepairService(
            app=app,
            committer=committer,
            listing_rules=listing_rules,
            rules=rules,
            calendar=calendar,
            clock=clock,
        ),
        reports=ReportService(pool, committer, rules, calendar, clock),
        public=PublicView(listing_rules, rules),
        policy=BreachPolicy(committer, listing_rules, calendar),
        jobs=[PublicationEndJob(listing_rules), OverdueJob()],
        public_limit=TokenBucket(rules.public_requests_per_minute, 60),
        report_limit=TokenBucket(rules.public_reports_per_hour, 3600),
    )
