"""Agencies and their API keys.

A key is `hub_<random>`; the hub stores only its SHA-256 (keys carry 256 bits of entropy, so
a fast hash is safe) and looks keys up through a short in-process cache, so API processes
stay stateless and a revoked key (its row deleted or its hash changed) stops working within
`CACHE_SECONDS` of the lookup that found it. A key found is also remembered by its
`Authorization` header with that same lookup's time, so a request of a known key neither
hashes nor reads the database (the SHA-256 was ~0.4 us of every check). The admin key comes
from settings and is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

import asyncpg

from hub.credit.service import Agency
from hub.errors import Conflict, Forbidden, Unauthenticated

SCOPES = frozenset({"admin", "publish", "check", "subscribe", "audit"})
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000
ADMIN = Agency("admin", "Hub administrator", frozenset(SCOPES), frozenset({"*"}))

DDL = """
CREATE TABLE IF NOT EXISTS agencies (
    code text PRIMARY KEY,
    name text NOT NULL,
    scopes text[] NOT NULL,
    domains text[] NOT NULL,
    key_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
)"""


def new_key() -> str:
    return "hub_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Agencies:
    def __init__(self, pool: asyncpg.Pool, admin_key: str | None) -> None:
        self.pool = pool
        self._admin_hash = key_hash(admin_key) if admin_key else None
        self._cache: dict[str, tuple[float, Agency | None]] = {}
        self._known: dict[str, tuple[float, Agency | None]] = {}
        self._swept = time.monotonic()
        """Entries of `_cache` (or the admin's) that found an agency, by `Authorization`."""

    async def create(
        self, code: str, name: str, scopes: Iterable[str], domains: Iterable[str]
    ) -> str:
        key = new_key()
        try:
            await self.pool.execute(
                "INSERT INTO agencies (code, name, scopes, domains, key_hash) "
                "VALUES ($1, $2, $3, $4, $5)",
                code,
                name,
                sorted(set(scopes)),
                sorted(set(domains)),
                key_hash(key),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"agency {code} already exists", field="code", rule="agency.exists"
            ) from None
        return key

    def known(self, authorization: str | None) -> Agency | None:
        """The agency of an `Authorization` header that found one within `CACHE_SECONDS`,
        without a coroutine (the check fast path's usual case); None: ask `authenticate`."""
        known = self._known.get(authorization)  # type: ignore[arg-type] # None is never a key
        if known is not None and time.monotonic() - known[0] <= CACHE_SECONDS:
            return known[1]
        return None

    async def authenticate(self, authorization: str | None) -> Agency:
        if authorization is not None:
            known = self._known.get(authorization)
            if known is not None and time.monotonic() - known[0] <= CACHE_SECONDS:
                return known[1]  # type: ignore[return-value] # only agencies are remembered
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("send `Authorization: Bearer <api key>`", field="authorization")
        digest = key_hash(authorization[7:].strip())
        now = time.monotonic()
        if self._admin_hash and hmac.compare_digest(digest, self._admin_hash):
            self._remember(authorization, (now, ADMIN))
            return ADMIN
        cached = self._cache.get(digest)
        if cached is None or now - cached[0] > CACHE_SECONDS:
            row = await self.pool.fetchrow(
                "SELECT code, name, scopes, domains FROM agencies WHERE key_hash = $1", digest
            )
            agency = (
                None
                if row is None
                else Agency(
                    row["code"], row["name"], frozenset(row["scopes"]), frozenset(row["domains"])
                )
            )
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.clear()
            self._cache[digest] = cached = (now, agency)
        if cached[1] is None:
            raise Unauthenticated("the API key is not known to the hub", field="authorization")
        self._remember(authorization, cached)
        return cached[1]

    def _remember(self, authorization: str, entry: tuple[float, Agency | None]) -> None:
        """Remember a header that found an agency. The headers are secrets: those past
        `CACHE_SECONDS` are forgotten at least every `CACHE_SECONDS`, not kept until they
        are presented again (a revoked key never is)."""
        now = entry[0]
        if now - self._swept > CACHE_SECONDS or len(self._known) > CACHE_ENTRIES:
            self._swept = now
            self._known = {
                header: found
                for header, found in self._known.items()
                if now - found[0] <= CACHE_SECONDS
            }
            if len(self._known) > CACHE_ENTRIES:
                self._known.clear()
        self._known[authorization] = entry


def require_scope(agency: Agency, *scopes: str) -> None:
    if not agency.scopes.intersection(scopes):
        raise Forbidden(
            f"this key lacks the scope {' or '.join(repr(s) for s in scopes)}",
            rule="auth.scope",
        )
