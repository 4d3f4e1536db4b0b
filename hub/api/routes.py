"""Every route handler of the API, in one list that `create_app()` mounts.

A feature adds its handlers here, one import line and one entry each.
"""

from __future__ import annotations

from typing import Any

from hub.api.admin import create_agency, events, healthz, metrics, readyz
from hub.api.listings import ListingController, subject_profile

ROUTES: list[Any] = [
    ListingController,
    subject_profile,
    create_agency,
    events,
    healthz,
    readyz,
    metrics,
]
