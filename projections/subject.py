"""The subject side's read models: commitments, repair cases, public reports, objection
deadlines, listing publication, and subject names for the public search.

Rows come from the log only (`schemas.subject_events` and the listing events). Nothing here
depends on settings: periods and overdue flags are computed by the queries with `now`.
Creations are inserted with `executemany` in batches; other events update in log order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections._runner import Connection
from schemas import events as ev
from schemas import subject_events as se
from schemas.log import RawEvent

DDL = """
CREATE TABLE IF NOT EXISTS listing_publication (
    listing_id uuid PRIMARY KEY,
    subject_id text NOT NULL,
    authority text NOT NULL,
    pub_group text NOT NULL,
    effective_from timestamptz NOT NULL,
    delisted boolean NOT NULL DEFAULT false,
    ended_at timestamptz
);
CREATE INDEX IF NOT EXISTS listing_publication_due ON listing_publication
    (pub_group, effective_from, listing_id) WHERE NOT delisted AND ended_at IS NULL;
CREATE TABLE IF NOT EXISTS objection_deadlines (
    listing_id uuid NOT NULL,
    n integer NOT NULL,
    authority text NOT NULL,
    received_at timestamptz NOT NULL,
    answer_due timestamptz NOT NULL,
    resolved boolean NOT NULL DEFAULT false,
    PRIMARY KEY (listing_id, n)
);
CREATE INDEX IF NOT EXISTS objection_deadlines_open ON objection_deadlines
    (authority, answer_due) WHERE NOT resolved;
CREATE INDEX IF NOT EXISTS objection_deadlines_due ON objection_deadlines (answer_due)
    WHERE NOT resolved;
CREATE TABLE IF NOT EXISTS subject_names (
    id bigserial PRIMARY KEY,
    subject_id text NOT NULL,
    name text NOT NULL,
    name_lower text NOT NULL,
    UNIQUE (subject_id, name)
);
CREATE INDEX IF NOT EXISTS subject_names_prefix ON subject_names (name_lower text_pattern_ops, id);
CREATE TABLE IF NOT EXISTS subject_commitments (
    commitment_id uuid PRIMARY KEY,
    code text NOT NULL UNIQUE,
    subject_id text NOT NULL,
    committer_name text NOT NULL,
    committer_category text NOT NULL,
    type text NOT NULL,
    reason text NOT NULL,
    content text NOT NULL,
    liability text NOT NULL,
    made_on date NOT NULL,
    valid_until date,
    accepting_agency text NOT NULL,
    publicity text NOT NULL,
    domain text,
    status text NOT NULL,
    recorded_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS subject_commitments_subject ON subject_commitments (subject_id);
CREATE TABLE IF NOT EXISTS repair_cases (
    repair_id uuid PRIMARY KEY,
    listing_id uuid NOT NULL,
    subject_id text NOT NULL,
    authority text NOT NULL,
    filed_by text NOT NULL,
    status text NOT NULL,
    received_at timestamptz NOT NULL,
    decision_due timestamptz NOT NULL,
    answer_due timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS repair_cases_decision ON repair_cases (authority, decision_due)
    WHERE status = 'applied';
CREATE INDEX IF NOT EXISTS repair_cases_answer ON repair_cases (authority, answer_due)
    WHERE status IN ('applied', 'accepted');
CREATE INDEX IF NOT EXISTS repair_cases_decision_due ON repair_cases (decision_due)
    WHERE status = 'applied';
CREATE INDEX IF NOT EXISTS repair_cases_answer_due ON repair_cases (answer_due)
    WHERE status IN ('applied', 'accepted');
CREATE TABLE IF NOT EXISTS public_reports (
    report_id uuid PRIMARY KEY,
    agency text NOT NULL,
    kind text NOT NULL,
    content text NOT NULL,
    listing_id text,
    subject_name text,
    contact text,
    received_at timestamptz NOT NULL,
    answer_due timestamptz NOT NULL,
    status text NOT NULL,
    answer text,
    upheld boolean,
    answered_at timestamptz,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS public_reports_agency ON public_reports (agency, report_id);
CREATE INDEX IF NOT EXISTS public_reports_open ON public_reports (agency, answer_due)
    WHERE status = 'filed';
CREATE INDEX IF NOT EXISTS public_reports_due ON public_reports (answer_due)
    WHERE status = 'filed';
"""
TABLES = (
    "listing_publication",
    "objection_deadlines",
    "subject_names",
    "subject_commitments",
    "repair_cases",
    "public_reports",
)

_PUBLICATION = (
    "INSERT INTO listing_publication (listing_id, subject_id, authority, pub_group, "
    "effective_from) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (listing_id) DO NOTHING"
)
_NAME = (
    "INSERT INTO subject_names (subject_id, name, name_lower) VALUES ($1, $2, lower($2)) "
    "ON CONFLICT (subject_id, name) DO NOTHING"
)
_COMMITMENT = (
    "INSERT INTO subject_commitments (commitment_id, code, subject_id, committer_name, "
    "committer_category, type, reason, content, liability, made_on, valid_until, "
    "accepting_agency, publicity, domain, status, recorded_at, position) VALUES ($1, $2, $3, "
    "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending', $15, $16) "
    "ON CONFLICT (commitment_id) DO NOTHING"
)
_REPAIR = (
    "INSERT INTO repair_cases (repair_id, listing_id, subject_id, authority, filed_by, status, "
    "received_at, decision_due, answer_due, position) VALUES ($1, $2::text::uuid, $3, $4, $5, "
    "'applied', $6, $7, $8, $9) ON CONFLICT (repair_id) DO NOTHING"
)
_REPORT = (
    "INSERT INTO public_reports (report_id, agency, kind, content, listing_id, subject_name, "
    "contact, received_at, answer_due, status, position) VALUES ($1, $2, $3, $4, $5, $6, $7, "
    "$8, $9, 'filed', $10) ON CONFLICT (report_id) DO NOTHING"
)
_OBJECTION = (
    "INSERT INTO objection_deadlines (listing_id, n, authority, received_at, answer_due) "
    "SELECT $1, $2, authority, $3, $4 FROM listing_publication WHERE listing_id = $1 "
    "ON CONFLICT (listing_id, n) DO NOTHING"
)


def pub_group(list_name: str, severity: str | None) -> str:
    """The publication-period group of a listing: `redlist`, or its severity."""
    return "redlist" if list_name == "redlist" else (severity or "none")


def _created(event: RawEvent, p: ev.EventPayload) -> list[tuple[str, tuple[Any, ...]]]:
    """Insert-only statements for a creation event (safe to batch), else []."""
    oid, pos = event.originator_id, event.position
    match p:
        case ev.ListingRegistered():
            group = pub_group(p.list, p.severity)
            return [
                (_PUBLICATION, (oid, p.subject_id, p.authority, group, p.effective_from)),
                (_NAME, (p.subject_id, p.subject_name)),
            ]
        case se.CommitmentMade():
            row = (oid, p.code, p.committer_code, p.committer_name, p.committer_category, p.type)
            rest = (p.reason, p.content, p.liability, p.made_on, p.valid_until)
            more = (p.accepting_agency, p.publicity, p.domain, p.timestamp, pos)
            return [(_COMMITMENT, row + rest + more), (_NAME, (p.committer_code, p.committer_name))]
        case se.RepairApplied():
            args = (oid, p.listing_id, p.subject_id, p.authority, p.filed_by, p.received_at)
            return [(_REPAIR, (*args, p.decision_due, p.answer_due, pos))]
        case se.ReportFiled():
            head = (oid, p.agency, p.kind, p.content, p.listing_id, p.subject_name, p.contact)
            return [(_REPORT, (*head, p.received_at, p.answer_due, pos))]
    return []


_REPAIR_STATUS = {
    f"{se.REPAIR_TOPIC}.Accepted": "accepted",
    f"{se.REPAIR_TOPIC}.Rejected": "rejected",
    f"{se.REPAIR_TOPIC}.Approved": "approved",
    f"{se.REPAIR_TOPIC}.Denied": "denied",
}


_NAME_CHANGE = (
    "INSERT INTO subject_names (subject_id, name, name_lower) SELECT subject_id, $2, lower($2) "
    "FROM listing_publication WHERE listing_id = $1 ON CONFLICT (subject_id, name) DO NOTHING"
)
_FROM_CHANGE = "UPDATE listing_publication SET effective_from = $2 WHERE listing_id = $1"
_SEVERITY_CHANGE = (
    "UPDATE listing_publication SET pub_group = $2 WHERE listing_id = $1 AND pub_group <> 'redlist'"
)
_DELISTED = "UPDATE listing_publication SET delisted = true WHERE listing_id = $1"
_ENDED = "UPDATE listing_publication SET ended_at = $2 WHERE listing_id = $1"
_RESOLVED = "UPDATE objection_deadlines SET resolved = true WHERE listing_id = $1 AND n = $2"
_FULFILLED = "UPDATE subject_commitments SET status = $2, position = $3 WHERE commitment_id = $1"
_DECIDED = "UPDATE repair_cases SET status = $2, position = $3 WHERE repair_id = $1"
_ANSWERED = (
    "UPDATE public_reports SET status = 'answered', answer = $2, upheld = $3, answered_at = $4, "
    "position = $5 WHERE report_id = $1"
)
Ops = list[tuple[str, tuple[Any, ...]]]


def _amended(oid: Any, p: ev.ListingAmended) -> Ops:
    ops: Ops = []
    if "subject_name" in p.changes:
        ops.append((_NAME_CHANGE, (oid, p.changes["subject_name"])))
    if "effective_from" in p.changes:
        ops.append((_FROM_CHANGE, (oid, p.changes["effective_from"])))
    if "severity" in p.changes:
        ops.append((_SEVERITY_CHANGE, (oid, p.changes["severity"] or "none")))
    return ops


def _changed(event: RawEvent, p: ev.EventPayload) -> Ops:
    """Statements for a change, to run in log order."""
    oid, pos = event.originator_id, event.position
    ops: Ops = []
    match p:
        case ev.ListingAmended():
            ops = _amended(oid, p)
        case ev.ListingDelisted():
            ops = [(_DELISTED, (oid,))]
        case ev.ListingPublicationEnded():
            ops = [(_ENDED, (oid, p.ended_at))]
        case ev.ListingObjected():
            ops = [(_OBJECTION, (oid, p.n, p.received_at, p.answer_due))]
        case ev.ListingObjectionResolved():
            ops = [(_RESOLVED, (oid, p.n))]
        case se.CommitmentFulfilled():
            ops = [(_FULFILLED, (oid, p.status, pos))]
        case se.CommitmentBreached():
            ops = [(_FULFILLED, (oid, "not_fulfilled", pos))]
        case se.RepairDecided():
            ops = [(_DECIDED, (oid, _REPAIR_STATUS[event.topic], pos))]
        case se.ReportAnswered():
            ops = [(_ANSWERED, (oid, p.answer, p.upheld, p.timestamp, pos))]
    return ops


class SubjectProjection:
    name = "subject"

    async def setup(self, conn: Connection) -> None:
        await conn.execute(DDL)

    async def reset(self, conn: Connection) -> None:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        batch: dict[str, list[tuple[Any, ...]]] = {}

        async def flush() -> None:
            for sql, rows in batch.items():
                await conn.executemany(sql, rows)
            batch.clear()

        for event in events:
            if event.topic not in ev.EVENT_TYPES:
                continue
            payload = ev.decode_payload(event.topic, event.state)
            created = _created(event, payload)
            for sql, args in created:
                batch.setdefault(sql, []).append(args)
            if created:
                continue
            changed = _changed(event, payload)
            if changed:
                await flush()
                for sql, args in changed:
                    await conn.execute(sql, *args)
        await flush()
