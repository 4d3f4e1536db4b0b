"""Imports every event family module so that their topics are registered.

Each family (catalogue, commitments, repairs, reports, regional, ...) lives in its own
`schemas/<family>_events.py`, defines `EventPayload` subclasses and calls
`schemas.events.register(topic, name, payload)` at import. Add one import line per family.
"""

from __future__ import annotations

from schemas import (
    catalogue_events,  # noqa: F401 - the measure catalogue
    subject_events,  # noqa: F401 - commitments, repairs, public reports
)
