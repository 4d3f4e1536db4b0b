"""Check replay: re-derive a recorded check's answer from the log and compare.

The check's record names the log position its index reflected and the catalogue version it
used. The replay builds a fresh check index holding only the subject's listings, from their
events up to that position, and a catalogue from the catalogue's events up to that version,
then runs the checks' own decision logic (`hub.checks.decide.Decider`) at the check's time.
Hits are compared as sets (by listing id): their order in an answer carries no meaning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.checks.decide import Decider
from hub.checks.records import read_record
from hub.credit.service import Agency
from hub.errors import Unavailable
from projections import Connection
from projections.audit import leaf_count_at
from projections.checkindex import CheckIndex, subject_key
from projections.checkindex_follower import IndexFollower
from schemas.audit import CheckReplay
from schemas.catalogue_events import CATALOGUE_ID
from schemas.checks import CheckRecord, Hit
from schemas.log import RawEvent

if TYPE_CHECKING:
    from hub.bootstrap import Hub


async def _events(conn: Connection, record: CheckRecord) -> list[RawEvent]:
    ids = [
        r[0]
        for r in await conn.fetch(
            "SELECT listing_id FROM listings WHERE subject_id = $1", record.subject_id
        )
    ]
    rows = await conn.fetch(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM credit_events WHERE (originator_id = ANY($1::uuid[]) AND notification_id <= $2) "
        "OR (originator_id = $3 AND originator_version <= $4) ORDER BY notification_id",
        ids,
        record.position,
        CATALOGUE_ID,
        record.catalogue_version,
    )
    return [RawEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _key(hit: Hit) -> tuple[str, str]:
    return hit.listing_id, repr(hit)


def compare(
    record: CheckRecord, decision: str, hits: list[Hit], catalogue_version: int
) -> list[str]:
    """What differs between the recorded answer and the replayed one (empty: nothing)."""
    differences = []
    if catalogue_version != record.catalogue_version:
        differences.append(
            f"the log holds catalogue version {catalogue_version}, the check used "
            f"{record.catalogue_version}"
        )
    if decision != record.decision:
        differences.append(f"decision: recorded {record.decision}, replayed {decision}")
    recorded = {h.listing_id: h for h in record.hits}
    replayed = {h.listing_id: h for h in hits}
    differences.extend(
        f"hit on listing {listing_id} differs"
        for listing_id in sorted(recorded.keys() | replayed.keys())
        if recorded.get(listing_id) != replayed.get(listing_id)
    )
    return differences


async def replay_check(hub: Hub, agency: Agency, check_id: str) -> CheckReplay:
    checks = hub.checks
    if checks is None:
        raise Unavailable("checks are not served by this process", retry_after=5)
    record = await read_record(hub.pool, agency, check_id)
    category = checks.matters.require(record.matter)
    async with hub.pool.acquire() as conn:
        events = await _events(conn, record)
        follower = IndexFollower(hub.pool, CheckIndex())
        await follower.apply(conn, events)
        tree_size = await leaf_count_at(conn, record.position)
    index = follower.index
    decision, hits = Decider(follower.catalogue, index).decide(
        index.get(subject_key(record.subject_id)),
        record.matter,
        category,
        int(record.checked_at.timestamp()),
    )
    differences = compare(record, decision, hits, follower.catalogue.version)
    return CheckReplay(
        check_id=record.check_id,
        position=record.position,
        tree_size=tree_size,
        catalogue_version=record.catalogue_version,
        checked_at=record.checked_at,
        matches=not differences,
        differences=differences,
        recorded_decision=record.decision,
        replayed_decision=decision,
        recorded_hits=sorted(record.hits, key=_key),
        replayed_hits=sorted(hits, key=_key),
    )
