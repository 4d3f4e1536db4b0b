"""Every route handler of the API, in one list that `create_app()` mounts.

A feature adds its handlers here, one import line and one entry each.
"""

from __future__ import annotations

from typing import Any

from hub.api.admin import create_agency, events, healthz, metrics, readyz
from hub.api.audit import ROUTES as AUDIT_ROUTES
from hub.api.commitments import CommitmentController, subject_commitments
from hub.api.info import info
from hub.api.listings import ListingController, subject_profile
from hub.api.public import public_report, public_search, public_subject
from hub.api.repairs import RepairController, overdue
from hub.api.reports import answer_report, list_reports
from hub.api.subscriptions import SubscriptionController
from hub.checks.api import ROUTES as CHECK_ROUTES

ROUTES: list[Any] = [
    ListingController,
    subject_profile,
    create_agency,
    events,
    healthz,
    readyz,
    metrics,
    info,
    *AUDIT_ROUTES,
    CommitmentController,
    subject_commitments,
    RepairController,
    overdue,
    list_reports,
    answer_report,
    public_subject,
    public_search,
    public_report,
    *CHECK_ROUTES,
    SubscriptionController,
]
