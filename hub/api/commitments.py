"""Commitment routes: record a commitment, its fulfilment or breach; read one; a subject's."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.bootstrap import Hub
from hub.errors import InputError, Unavailable
from hub.subject import SubjectSide
from schemas.identifiers import IdentifierError, parse_subject_id
from schemas.subject import (
    Breach,
    CommitmentList,
    CommitmentView,
    Committer,
    Fulfilment,
    NewCommitment,
)

READ_SCOPES = ("publish", "check", "audit", "subscribe")


def side(hub: Hub) -> SubjectSide:
    if hub.subject is None:
        raise Unavailable("the subject side is not running in this process", retry_after=5)
    return hub.subject


class CommitmentController(Controller):
    path = "/v1/commitments"
    tags = ["commitments"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", status_code=201, summary="Record a credit commitment (idempotent per code)")
    async def create(
        self, data: JSONBody[NewCommitment], agency: AgencyDep, hub: HubDep
    ) -> Response[CommitmentView]:
        require_scope(agency, "publish")
        view, created = await side(hub).commitments.make(agency, data)
        return Response(view, status_code=201 if created else 200)

    @get("/{code:str}", summary="A commitment and its fulfilment status")
    async def read(self, code: FromPath[str], agency: AgencyDep, hub: HubDep) -> CommitmentView:
        require_scope(agency, *READ_SCOPES)
        return await side(hub).commitments.get(code)

    @post("/{code:str}/fulfil", status_code=200, summary="Record that it was (partly) kept")
    async def fulfil(
        self, code: FromPath[str], data: JSONBody[Fulfilment], agency: AgencyDep, hub: HubDep
    ) -> CommitmentView:
        require_scope(agency, "publish")
        return await side(hub).commitments.fulfil(agency, code, data)

    @post("/{code:str}/breach", status_code=200, summary="Record a breach; it lists the committer")
    async def breach(
        self, code: FromPath[str], data: JSONBody[Breach], agency: AgencyDep, hub: HubDep
    ) -> CommitmentView:
        require_scope(agency, "publish")
        return await side(hub).commitments.breach(agency, code, data)


@get(
    "/v1/subjects/{subject_id:str}/commitments",
    tags=["subjects"],
    summary="A subject's credit commitments (every publicity: agencies see all)",
)
async def subject_commitments(
    subject_id: FromPath[str], agency: AgencyDep, hub: HubDep
) -> CommitmentList:
    require_scope(agency, *READ_SCOPES)
    try:
        subject = str(parse_subject_id(subject_id, field="subject_id"))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None
    rows = await hub.pool.fetch(
        "SELECT * FROM subject_commitments WHERE subject_id = $1 ORDER BY made_on DESC, code "
        "LIMIT 1000",
        subject,
    )
    return CommitmentList(
        subject,
        [
            CommitmentView(
                commitment_id=str(r["commitment_id"]),
                code=r["code"],
                committer=Committer(r["committer_name"], r["committer_category"], r["subject_id"]),
                type=r["type"],
                reason=r["reason"],
                content=r["content"],
                liability=r["liability"],
                made_on=r["made_on"],
                valid_until=r["valid_until"],
                accepting_agency=r["accepting_agency"],
                publicity=r["publicity"],
                domain=r["domain"],
                status=r["status"],
                recorded_at=r["recorded_at"],
                position=r["position"],
            )
            for r in rows
        ],
    )
