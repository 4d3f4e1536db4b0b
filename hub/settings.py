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
    nats_stream: str = field(
        default="CREDIT", metadata=_doc("JetStream stream the relay publishes the log to.")
    )
    nats_subject_prefix: str = field(
        default="credit", metadata=_doc("First token of every subject the relay publishes.")
    )
    nats_replicas: int = field(
        default=1, metadata=_doc("Replicas of the relay's stream (3 on a 3-node cluster).")
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
    repair_decision_days: int = field(
        default=3,
        metadata=_doc("Working days an authority has to accept or reject a repair application."),
    )
    repair_answer_days: int = field(
        default=10,
        metadata=_doc(
            "Working days from receipt until a repair application is approved or denied."
        ),
    )
    report_answer_days: int = field(
        default=15, metadata=_doc("Working days an agency has to answer a public report.")
    )
    unrepairable: str = field(
        default="domain=courts",
        metadata=_doc(
            "Listings that credit repair cannot end, as comma-separated KEY=VALUE selectors "
            "(keys: domain, list, severity). Default: court judgment defaulters (domain=courts), "
            "who leave by the court's own procedure. Empty: everything is repairable."
        ),
    )
    public_minor: bool = field(
        default=False,
        metadata=_doc("Publish minor (轻微) listings in the public view (rules allow either)."),
    )
    public_requests_per_minute: int = field(
        default=120, metadata=_doc("Public view requests per client IP per minute (burst alike).")
    )
    public_reports_per_hour: int = field(
        default=10, metadata=_doc("Public reports accepted per client IP per hour.")
    )
    commitment_breach_lists: str = field(
        default="*=watchlist",
        metadata=_doc(
            "The list a breached commitment puts its committer on, per commitment type: "
            "TYPE=LIST pairs, '*' for any type, LIST 'none' for no listing."
        ),
    )
    log_signing_key: str | None = field(
        default=None,
        metadata=_doc(
            "Ed25519 note signer key of the audit log (PRIVATE+KEY+<name>+<hash>+<key>); `hub up`"
            " generates one into the data dir when unset. Its name is the log's origin."
        ),
    )
    tree_head_every_events: int = field(
        default=1000, metadata=_doc("Sign a tree head after at most this many new log events.")
    )
    tree_head_every_seconds: int = field(
        default=10, metadata=_doc("Sign a tree head at most this many seconds after an event.")
    )
    commit_batch_max: int = field(
        default=256, metadata=_doc("Most commands the group committer saves in one transaction.")
    )
    merkle_hash_workers: int = field(
        default=1 if (os.cpu_count() or 1) > 1 else 0,
        metadata=_doc(
            "Processes hashing the audit tree's internal nodes beside the projection's (0: in"
            " the projection's process; more than 1 is the same as 1). Default: 1 with 2+ CPUs."
        ),
    )
    db_pool_size: int = field(default=10, metadata=_doc("asyncpg pool size for reads."))
    log_level: str = field(default="info", metadata=_doc("Log level: debug, info, warning."))
    run_projections: bool = field(
        default=True,
        metadata=_doc(
            "Run the projections in this process (one process holds each, by advisory lock)."
        ),
    )
    run_checks: bool = field(
        default=True,
        metadata=_doc(
            "Serve checks from this process: load the in-memory check index, follow the log"
            " and write the usage log (off only for processes that never answer checks)."
        ),
    )
    run_scheduler: bool = field(
        default=True,
        metadata=_doc(
            "Run the scheduler in this process: appends expiries and notice-window ends when"
            " due (one process leads, by advisory lock)."
        ),
    )
    run_webhooks: bool = field(
        default=True,
        metadata=_doc(
            "Run the webhook worker in this process: fans the log out to subscriptions and"
            " delivers (one process leads, by advisory lock)."
        ),
    )
    webhook_max_attempts: int = field(
        default=8,
        metadata=_doc(
            "Attempts of a webhook delivery before it is dead-lettered (then redeliver by API)."
        ),
    )
    regional_peers: str = field(
        default="",
        metadata=_doc(
            "Hubs to dock with (docs/REGIONAL.md): comma-separated HUB_ID=JS_DOMAIN[/STREAM"
            "[/PREFIX]], the peer's JetStream domain reached over a leafnode; stream and prefix"
            " default to this hub's own. Empty: no regional docking."
        ),
    )
    regional_recognise: str = field(
        default="blacklist:*,market_ban:*",
        metadata=_doc(
            "Peer listings this hub recognises and appends, as LIST:DOMAIN pairs ('*' for any),"
            " e.g. 'blacklist:*,market_ban:taxation'."
        ),
    )
    regional_stream: str = field(
        default="REGIONAL_IN",
        metadata=_doc("JetStream stream that sources the peers' listings (regional docking)."),
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
            secret = item.name in ("admin_key", "log_signing_key")
            shown = "(set)" if secret and value else str(value)
            rows.append((f"HUB_{item.name.upper()}", shown, item.metadata.get("doc", "")))
        return rows
