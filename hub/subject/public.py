"""The public view (信用江苏): only what may be published, identity numbers masked.

A listing is public while it is in force (as `projections.listings` defines it), its maximum
publication period has not ended (by the rules, or by a `PublicationEnded` event), it is not
delisted (repaired, corrected, ...), and it is not minor unless minor listings are published.
A commitment is public when its publicity is `public`. Identity numbers are masked wherever
they appear, free text included (first 6 and last 4 characters kept).

The name search uses `subject_names`: a trigram index (pg_trgm, when the database allows the
extension) for substrings of 3 or more characters, else a prefix on `lower(name)`; keyset
pages whose cursor carries no identifier.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from hub.credit.rules import ListingRules
from hub.errors import InputError
from hub.subject.rules import SubjectRules
from projections import Connection
from schemas.identifiers import mask_cnid, mask_subject_id
from schemas.subject import PublicCommitment, PublicListing, PublicSubject

log = structlog.get_logger(__name__)
_CNID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
MAX_PER_SUBJECT = 100


def mask_text(text: str) -> str:
    """Mask every identity number that free text may carry."""
    return _CNID_IN_TEXT.sub(lambda m: mask_cnid(m.group(0)), text)


async def enable_trigram(conn: Connection) -> str | None:
    """Install pg_trgm (needs the right privilege) and index names; the extension's schema."""
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    except asyncpg.PostgresError as exc:
        log.info("pg_trgm_unavailable", error=str(exc))
    schema: str | None = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    )
    if schema is None:
        return None
    try:
        await conn.execute(
            "CREATE INDEX IF NOT EXISTS subject_names_trgm ON subject_names "
            f'USING gin (name_lower "{schema}".gin_trgm_ops)'
        )
    except asyncpg.PostgresError as exc:
        log.info("pg_trgm_index_failed", error=str(exc))
        return None
    return schema


class PublicView:
    def __init__(self, listing_rules: ListingRules, rules: SubjectRules) -> None:
        self.listing_rules = listing_rules
        self.rules = rules
        self.trigram = False

    def _publish_until(self, alias: str) -> str:
        cases = [
            f"WHEN {alias}.list = 'redlist' THEN {int(p.max_months)}"
            for g, p in self.listing_rules.periods.items()
            if g == "redlist"
        ]
        cases += [
            f"WHEN {alias}.list <> 'redlist' AND {alias}.severity = '{g}' THEN {int(p.max_months)}"
            for g, p in self.listing_rules.periods.items()
            if g in ("minor", "general", "severe")
        ]
        months = f"CASE {' '.join(cases)} END" if cases else "NULL::int"
        return f"{alias}.effective_from + make_interval(months => {months})"

    def listing_predicate(self, alias: str, now: str) -> str:
        """SQL: listing `alias` is public at `now` (a parameter such as `$2`)."""
        until = self._publish_until(alias)
        minor = "" if self.rules.public_minor else f" AND {alias}.severity IS DISTINCT FROM 'minor'"
        return (
            f"({alias}.status = 'effective' OR ({alias}.status = 'noticed' AND "
            f"{alias}.notice_until <= {now} AND {alias}.pending_objections = 0)) "
            f"AND {alias}.effective_from <= {now} "
            f"AND ({alias}.effective_until IS NULL OR {alias}.effective_until > {now}) "
            f"AND ({until} IS NULL OR {until} > {now}){minor} "
            "AND NOT EXISTS (SELECT 1 FROM listing_publication p WHERE "
            f"p.listing_id = {alias}.listing_id AND (p.delisted OR p.ended_at IS NOT NULL))"
        )

    async def subjects(
        self, conn: Connection, subject_ids: Sequence[str], now: datetime
    ) -> dict[str, PublicSubject]:
        """The public records of some subjects, keyed by their full ids (masked inside)."""
        listings = await conn.fetch(
            f"SELECT l.*, {self._publish_until('l')} AS publish_until FROM listings l "
            f"WHERE l.subject_id = ANY($1::text[]) AND {self.listing_predicate('l', '$2')} "
            "ORDER BY l.subject_id, l.effective_from",
            list(subject_ids),
            now,
        )
        commitments = await conn.fetch(
            "SELECT * FROM subject_commitments WHERE subject_id = ANY($1::text[]) "
            "AND publicity = 'public' ORDER BY subject_id, made_on DESC",
            list(subject_ids),
        )
        out: dict[str, PublicSubject] = {}
        names: dict[str, set[str]] = {}

        def entry(subject_id: str) -> PublicSubject:
            if subject_id not in out:
                out[subject_id] = PublicSubject(
                    subject_id=mask_subject_id(subject_id),
                    names=[],
                    listings=[],
                    commitments=[],
                    as_of=now,
                )
                names[subject_id] = set()
            return out[subject_id]

        for r in listings:
            found = entry(r["subject_id"])
            names[r["subject_id"]].add(r["subject_name"])
            if len(found.listings) < MAX_PER_SUBJECT:
                found.listings.append(_listing(r))
        for r in commitments:
            found = entry(r["subject_id"])
            names[r["subject_id"]].add(r["committer_name"])
            if len(found.commitments) < MAX_PER_SUBJECT:
                found.commitments.append(_commitment(r))
        for subject_id, found in out.items():
            found.names = sorted(mask_text(n) for n in names[subject_id])
        return out

    async def search(
        self, conn: Connection, name: str, now: datetime, *, limit: int, cursor: str | None
    ) -> tuple[list[PublicSubject], str | None]:
        query = name.strip().lower()
        if not query:
            raise InputError("name must not be blank", field="name")
        pattern = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        substring = self.trigram and len(query) >= 3  # noqa: PLR2004 - trigram length
        pattern = f"%{pattern}%" if substring else f"{pattern}%"
        after_name, after_id = _decode_cursor(cursor)
        rows = await conn.fetch(
            "SELECT n.id, n.subject_id, n.name_lower FROM subject_names n "
            "WHERE n.name_lower LIKE $1 ESCAPE '\\' AND (n.name_lower, n.id) > ($2, $3) AND ("
            "EXISTS (SELECT 1 FROM listings l WHERE l.subject_id = n.subject_id "
            f"AND l.subject_name = n.name AND {self.listing_predicate('l', '$4')}) "
            "OR EXISTS (SELECT 1 FROM subject_commitments c WHERE c.subject_id = n.subject_id "
            "AND c.committer_name = n.name AND c.publicity = 'public')) "
            "ORDER BY n.name_lower, n.id LIMIT $5",
            pattern,
            after_name,
            after_id,
            now,
            limit,
        )
        order = list(dict.fromkeys(r["subject_id"] for r in rows))
        found = await self.subjects(conn, order, now)
        page = [found[s] for s in order if s in found]
        last = rows[-1] if len(rows) == limit else None
        return page, _encode_cursor(last["name_lower"], last["id"]) if last else None


def _listing(r: Any) -> PublicListing:
    return PublicListing(
        list=r["list"],
        domain=r["domain"],
        severity=r["severity"],
        authority=r["authority"],
        decision_no=mask_text(r["decision_no"]),
        region=r["region"],
        effective_from=r["effective_from"],
        effective_until=r["effective_until"],
        publish_until=r["publish_until"],
    )


def _commitment(r: Any) -> PublicCommitment:
    return PublicCommitment(
        code=r["code"],
        type=r["type"],
        reason=mask_text(r["reason"]),
        content=mask_text(r["content"]),
        made_on=r["made_on"],
        valid_until=r["valid_until"],
        accepting_agency=r["accepting_agency"],
        status=r["status"],
    )


def _encode_cursor(name_lower: str, row_id: int) -> str:
    raw = json.dumps([name_lower, row_id], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "", 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name_lower, row_id = json.loads(raw)
        if isinstance(name_lower, str) and isinstance(row_id, int):
            return name_lower, row_id
    except (ValueError, TypeError):
        pass
    raise InputError("cursor is not one this API gave", field="cursor")
