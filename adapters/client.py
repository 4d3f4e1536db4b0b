"""The agency client: what an approval system embeds to check subjects against the hub.

    async with AgencyClient("https://hub.example", api_key, replica=replica) as hub:
        answer = await hub.check("uscc:91350100M000100Y43", "public_procurement.bid", "投标")
        if answer.decision == "deny": ...
        await hub.feedback(answer.check_id, "restrict_procurement", applied=True, note="...")

`check()` asks `POST /v1/checks`. When the hub cannot be reached (connection refused, a time
out, a 5xx) and a `LocalReplica` is attached, it answers from the replica instead, and says
so: `source="replica"`, `stale_after` = the last instant the replica knew it had every event
of the stream, `check_id=None`. The replica knows lists, not the measure catalogue, so its
decision is deliberately conservative: `review` (manual review) when any punitive listing is
in force, else `clear`; never `deny` or `facilitate`, which need the hub's catalogue for the
matter. A replica older than `max_staleness` is not used: the call fails instead.

Errors::

    ClientError         the hub refused the request (4xx): the problem details are attached
    HubUnreachable      no hub and no usable replica
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import msgspec
from msgspec import Struct

from adapters.client_replica import LocalReplica
from adapters.client_state import ReplicaListing
from schemas.listing import PUNITIVE_LISTS

SERVER_ERROR = 500


class ClientError(Exception):
    """The hub answered with a 4xx: the request itself is wrong (fields, scopes, rules)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status, self.problem = status, problem


class HubUnreachable(Exception):
    """The hub did not answer and no replica (or no fresh enough one) could."""


class Measure(Struct):
    code: str
    name: str
    effect: str


class Hit(Struct, kw_only=True):
    listing_id: str
    list: str
    severity: str | None
    region: str
    measures: builtins.list[Measure] = msgspec.field(default_factory=builtins.list)


class CheckOutcome(Struct, kw_only=True):
    """A check's answer, from the hub or from the local replica (`source`)."""

    check_id: str | None
    decision: str
    hits: list[Hit]
    position: int
    catalogue_version: int | None = None
    checked_at: datetime | None = None
    source: Literal["hub", "replica"] = "hub"
    stale_after: datetime | None = None


_outcome = msgspec.json.Decoder(CheckOutcome)


def _hit(listing: ReplicaListing) -> Hit:
    return Hit(
        listing_id=listing.listing_id,
        list=listing.list,
        severity=listing.severity,
        region=listing.region,
    )


class AgencyClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        replica: LocalReplica | None = None,
        timeout: float = 2.0,
        max_staleness: timedelta = timedelta(hours=24),
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.replica = replica
        self.max_staleness = max_staleness
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(
        self, subject_id: str, matter: str, purpose: str, *, min_position: int | None = None
    ) -> CheckOutcome:
        """The hub's answer; the replica's when the hub is unreachable (see the module doc).

        `min_position`: a log position the hub's answer must include (read your own writes).
        """
        body: dict[str, Any] = {"subject_id": subject_id, "matter": matter, "purpose": purpose}
        if min_position is not None:
            body["min_position"] = min_position
        try:
            response = await self._http.post("/v1/checks", json=body, headers=self._headers)
        except httpx.TransportError as exc:
            return self._from_replica(subject_id, exc)
        if response.status_code >= SERVER_ERROR:
            return self._from_replica(subject_id, HubUnreachable(f"hub: {response.status_code}"))
        self._raise_for(response)
        return _outcome.decode(response.content)

    async def feedback(
        self, check_id: str, measure_code: str, applied: bool, note: str | None = None
    ) -> dict[str, Any]:
        """Report whether a returned measure was applied (only for checks the hub answered)."""
        body = {"measure_code": measure_code, "applied": applied, "note": note}
        try:
            response = await self._http.post(
                f"/v1/checks/{check_id}/feedback", json=body, headers=self._headers
            )
        except httpx.TransportError as exc:
            raise HubUnreachable(f"feedback not delivered: {exc!r}") from exc
        self._raise_for(response)
        answer: dict[str, Any] = response.json()
        return answer

    async def info(self) -> dict[str, Any]:
        """`GET /v1/info`: the NATS URL, stream and subjects a replica follows."""
        response = await self._http.get("/v1/info", headers=self._headers)
        self._raise_for(response)
        answer: dict[str, Any] = response.json()
        return answer

    def _from_replica(self, subject_id: str, cause: Exception) -> CheckOutcome:
        replica = self.replica
        if replica is None:
            raise HubUnreachable(f"the hub did not answer: {cause!r}") from cause
        now = replica.now()
        current = replica.current_at
        if current is None or now - current > self.max_staleness:
            raise HubUnreachable(
                f"the hub did not answer and the replica is stale (current at {current})"
            ) from cause
        listings = replica.in_force(subject_id, now)
        punitive = any(x.list in PUNITIVE_LISTS for x in listings)
        return CheckOutcome(
            check_id=None,
            decision="review" if punitive else "clear",
            hits=[_hit(x) for x in listings],
            position=replica.position,
            checked_at=now,
            source="replica",
            stale_after=current,
        )

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text}
        raise ClientError(response.status_code, problem)
