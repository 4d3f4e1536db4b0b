"""Typed settings, read once from `HUB_`-prefixed environment variables.

Every field's docstring is its documentation; `hub settings` prints them with their values.
Unset `HUB_DATABASE_URL` / `HUB_NATS_URL` mean the embedded default that `hub up` starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hub.credit.rules import DEFAULT_DOMAINS, ListingRules, parse_periods


def _doc(text: str) -> dict[str, Any]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(
        default=None,
        metadata=_doc("libpq URL of PostgreSQL; unset: the embedded server under the data dir."),
    )
    database_schema: str = field(
        default="public", metadata=_doc("PostgreSQL schema for all of the hub's tables.")
    )
    nats_url: str | None = field(
        default=None,
        metadata=_doc("NATS URL (a cluster may be comma-separated); unset: the embedded server."),
    )
    admin_key: str | None = field(
        default=None,
        metadata=_doc("The admin API key; `hub up` generates one into the data dir when unset."),
    )
    host: str = field(default="127.0.0.1", metadata=_doc("Address the HTTP API listens on."))
    port: int = field(default=8080, metadata=_doc("Port of the HTTP API."))
    data_dir: str = field(default=".hub", metadata=_doc("Where embedded servers keep data."))
    hub_id: str = field(
        default="320000",
        metadata=_doc("This hub's GB/T 2260 region code; the origin of what it publishes."),
    )
    domains: str = field(
        default=",".join(DEFAULT_DOMAINS),
        metadata=_doc("Comma-separated catalogue of key domain codes a listing may name."),
    )
    publication_periods: str = field(
        default="minor=0-3,general=3-12,severe=12-36,redlist=0-36",
        metadata=_doc("Publication period per severity (and redlist), MIN-MAX in months."),
    )
    notice_days: int = field(
        default=0,
        metadata=_doc(
            "Default objection window in working days when a listing names none (0: none)."
        ),
    )
    objection_answer_days: int = field(
        default=10, metadata=_doc("Working days an authority has to answer an objection.")
    )
    commit_batch_max: int = field(
        default=256, metadata=_doc("Most commands the group committer saves in one transaction.")
    )
    db_pool_size: int = field(default=10, metadata=_doc("asyncpg pool size for reads."))
    log_level: str = field(default="info", metadata=_doc("Log level: debug, info, warning."))
    run_projections: bool = field(
        default=True,
        metadata=_doc(
            "Run the projections in this process (one process holds each, by advisory lock)."
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(f"HUB_{item.name.upper()}")
            if raw is None or raw == "":
                continue
            default = item.default
            if isinstance(default, bool):
                values[item.name] = raw.strip().lower() in {"1", "true", "yes", "y", "on"}
            elif isinstance(default, int):
                try:
                    values[item.name] = int(raw)
                except ValueError:
                    raise ValueError(f"HUB_{item.name.upper()} must be a whole number") from None
            else:
                values[item.name] = raw
        return cls(**values)

    def listing_rules(self) -> ListingRules:
        return ListingRules(
            periods=parse_periods(self.publication_periods),
            domains=frozenset(d.strip() for d in self.domains.split(",") if d.strip()),
            notice_days=self.notice_days,
            objection_answer_days=self.objection_answer_days,
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value, documentation) rows; the admin key is never shown."""
        rows = []
        for item in fields(self):
            value = getattr(self, item.name)
            shown = "(set)" if item.name == "admin_key" and value else str(value)
            rows.append((f"HUB_{item.name.upper()}", shown, item.metadata.get("doc", "")))
        return rows
