"""Rules of the subject's side that an operator may change without code (see `hub settings`):
working-day limits, unrepairable categories, publication of minor listings, rate limits, and
the consequence of a breached commitment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.settings import Settings
from schemas.listing import PUNITIVE_LISTS

SELECTOR_KEYS = frozenset({"domain", "list", "severity"})
LISTS = PUNITIVE_LISTS | {"redlist"}


def parse_selectors(text: str) -> tuple[tuple[str, str], ...]:
    """`domain=courts,list=market_ban` into (key, value) pairs; ValueError names the bad one."""
    out: list[tuple[str, str]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SELECTOR_KEYS or not value.strip():
            raise ValueError(
                f"unrepairable selector {item!r} is not KEY=VALUE (KEY: domain, list, severity)"
            )
        out.append((key.strip(), value.strip()))
    return tuple(out)


def parse_breach_lists(text: str) -> dict[str, str]:
    """`*=watchlist,repair=blacklist` into {type: list}; LIST `none` means no listing."""
    out: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        kind, sep, list_name = item.partition("=")
        value = list_name.strip()
        if not sep or (value not in LISTS and value != "none"):
            raise ValueError(f"commitment breach consequence {item!r} is not TYPE=LIST")
        out[kind.strip()] = value
    return out


@dataclass(frozen=True)
class SubjectRules:
    repair_decision_days: int = 3
    repair_answer_days: int = 10
    report_answer_days: int = 15
    unrepairable: tuple[tuple[str, str], ...] = (("domain", "courts"),)
    public_minor: bool = False
    public_requests_per_minute: int = 120
    public_reports_per_hour: int = 10
    breach_lists: dict[str, str] = field(default_factory=lambda: {"*": "watchlist"})

    @classmethod
    def from_settings(cls, settings: Settings) -> SubjectRules:
        return cls(
            repair_decision_days=settings.repair_decision_days,
            repair_answer_days=settings.repair_answer_days,
            report_answer_days=settings.report_answer_days,
            unrepairable=parse_selectors(settings.unrepairable),
            public_minor=settings.public_minor,
            public_requests_per_minute=settings.public_requests_per_minute,
            public_reports_per_hour=settings.public_reports_per_hour,
            breach_lists=parse_breach_lists(settings.commitment_breach_lists),
        )

    def unrepairable_rule(self, *, domain: str, list_name: str, severity: str | None) -> str | None:
        """The selector that makes a listing unrepairable, as `key=value`, or None."""
        values = {"domain": domain, "list": list_name, "severity": severity or ""}
        for key, value in self.unrepairable:
            if values[key] == value:
                return f"{key}={value}"
        return None

    def breach_list(self, commitment_type: str) -> str | None:
        """The list a breach of this type of commitment leads to; None: no listing."""
        chosen = self.breach_lists.get(commitment_type, self.breach_lists.get("*", "none"))
        return None if chosen == "none" else chosen
