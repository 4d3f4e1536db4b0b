"""Regional docking: Jiangsu (320000) and Shanghai (310000), each a hub with its own log and its
own NATS server in its own JetStream domain, joined by a leafnode. Each appends the other's
listings that it recognises, once, with their origin; nothing comes back; a consumer deleted
under a running worker and a replay from nothing append no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec
import nats
import nats.js.errors
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from relay_support import wait_until

from hub.api.app import create_app
from hub.clock import SettableClock
from hub.regional import copy_id_for
from hub.settings import Settings
from ops.embedded import EmbeddedNats, LeafnodeConfig, free_port
from schemas.codec import decode_state
from schemas.identifiers import make_uscc

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer hub_admin_test_key"}
JS, SH = "320000", "310000"
PREFIX = {JS: "credit", SH: "credit_sh"}
LISTING_TOPIC = "hub.credit.domainmodel:Listing."
INBOUND, DURABLE = "REGIONAL_IN", "docking"
_numbers = itertools.count(1)
_rng = random.Random(31)


@pytest.fixture(name="servers")
def fx_servers(tmp_path):
    """Two JetStream servers in domains js320000 and js310000; Shanghai's dials Jiangsu's."""
    leaf_port = free_port()
    jiangsu = EmbeddedNats(
        tmp_path / "js",
        free_port(),
        server_name="jiangsu",
        js_domain=f"js{JS}",
        leafnode=LeafnodeConfig(port=leaf_port),
    )
    shanghai = EmbeddedNats(
        tmp_path / "sh",
        free_port(),
        server_name="shanghai",
        js_domain=f"js{SH}",
        leafnode=LeafnodeConfig(remotes=(f"nats-leaf://127.0.0.1:{leaf_port}",)),
    )
    with jiangsu, shanghai:
        yield {JS: jiangsu.url, SH: shanghai.url}


@pytest.fixture(name="second_schema")
async def fx_second_schema(db):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(db.url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture(name="settings_by_hub")
def fx_settings_by_hub(db, second_schema, servers):
    """Each hub subjects its stream with its own prefix: a leafnode joins the two servers'
    subject spaces, so equal prefixes would store each hub's events in both streams."""

    def settings(hub_id, schema, peer, recognise):
        return Settings(
            database_url=db.url,
            database_schema=schema,
            admin_key=ADMIN["Authorization"].removeprefix("Bearer "),
            nats_url=servers[hub_id],
            nats_subject_prefix=PREFIX[hub_id],
            hub_id=hub_id,
            regional_peers=f"{peer}=js{peer}/CREDIT/{PREFIX[peer]}",
            regional_recognise=recognise,
            run_scheduler=False,
        )

    return {
        JS: settings(JS, db.schema, SH, "blacklist:*"),
        SH: settings(SH, second_schema, JS, "blacklist:*,market_ban:taxation"),
    }


def body(list_name, domain, region):
    n = next(_numbers)
    punitive = list_name != "redlist"
    return {
        "subject": {"id": f"uscc:{make_uscc(_rng)}", "name": f"Subject {n}"},
        "list": list_name,
        "domain": domain,
        "severity": "severe" if punitive else None,
        "intent": "intentional" if punitive else None,
        "basis": {"decision_no": f"{region}[2025]{n}号", "legal_basis": "law", "facts": "facts"},
        "region": region,
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }


@dataclass
class Hub:
    """One running hub as the test drives it."""

    settings: Settings
    client: AsyncTestClient
    db_url: str
    key: dict[str, str] | None = None

    async def agency(self, code, domains):
        response = await self.client.post(
            "/v1/agencies",
            json={"code": code, "name": code, "scopes": ["publish"], "domains": domains},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        self.key = {"Authorization": f"Bearer {response.json()['api_key']}"}

    async def post(self, path, json):
        response = await self.client.post(path, json=json, headers=self.key)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def rows(self, *, listings_only=True):
        """The log's listing events (other families, such as the catalogue, are not docked)."""
        conn = await asyncpg.connect(
            self.db_url, server_settings={"search_path": self.settings.database_schema}
        )
        try:
            rows = await conn.fetch(
                "SELECT notification_id, originator_id, topic, state "
                "FROM credit_events ORDER BY notification_id"
            )
        finally:
            await conn.close()
        return [r for r in rows if r["topic"].startswith(LISTING_TOPIC) or not listings_only]

    async def registrations(self):
        return {
            str(r["originator_id"]): (r["notification_id"], decode_state(r["state"]))
            for r in await self.rows()
            if r["topic"].endswith(".Registered")
        }

    async def events_of(self, listing_id):
        rows = await self.rows()
        return [
            (r["topic"].rpartition(".")[2], decode_state(r["state"]))
            for r in rows
            if r["originator_id"] == listing_id
        ]

    async def quiet(self, count):
        """`count` listing events, all relayed, the inbound stream sourced and applied."""
        rows = await self.rows(listings_only=False)
        if sum(r["topic"].startswith(LISTING_TOPIC) for r in rows) != count:
            return False
        hub = self.client.app.state.hub
        if hub.relay.position != rows[-1]["notification_id"]:
            return False
        async with js_context(self.settings.nats_url) as js:
            stream = await js.stream_info(INBOUND)
        if any(source.lag for source in stream.sources or ()):
            return False
        return hub.regional.cursor == stream.state.last_seq


@contextlib.asynccontextmanager
async def js_context(url):
    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running(settings_by_hub, db):
    clock = SettableClock(datetime(2025, 3, 3, 2, 0, tzinfo=UTC))
    async with (
        AsyncTestClient(create_app(settings_by_hub[JS], clock)) as js_client,
        AsyncTestClient(create_app(settings_by_hub[SH], clock)) as sh_client,
    ):
        yield (
            Hub(settings_by_hub[JS], js_client, db.url),
            Hub(settings_by_hub[SH], sh_client, db.url),
        )


async def settled(jiangsu, shanghai, js_count, sh_count):
    """Both logs hold the expected listing events, everything has caught up, and stays so."""

    async def both():
        return await jiangsu.quiet(js_count) and await shanghai.quiet(sh_count)

    await wait_until(both, 30, f"the logs to settle at {js_count}/{sh_count}", step=0.2)
    await asyncio.sleep(1.0)
    assert await both(), "the logs moved after settling"


async def inbound_messages(url):
    async with js_context(url) as js:
        info = await js.stream_info(INBOUND)
        seqs = range(info.state.first_seq, info.state.last_seq + 1)
        return [msgspec.json.decode((await js.get_msg(INBOUND, seq)).data) for seq in seqs]


def outcomes(peer, outcome):
    value = REGISTRY.get_sample_value(
        "hub_regional_events_total", {"peer": peer, "outcome": outcome}
    )
    return value or 0.0


async def exchange(jiangsu, shanghai):
    """Listings on both sides; each side recognises some of the other's."""
    await jiangsu.agency("320000-tax", ["taxation", "environment"])
    await shanghai.agency("310000-tax", ["taxation"])
    a1 = await jiangsu.post("/v1/listings", body("blacklist", "taxation", "320100"))
    await jiangsu.post("/v1/listings", body("redlist", "taxation", "320100"))  # not for SH
    await jiangsu.post("/v1/listings", body("market_ban", "environment", "320500"))  # nor this
    a4 = await jiangsu.post("/v1/listings", body("market_ban", "taxation", "320500"))
    b1 = await shanghai.post("/v1/listings", body("blacklist", "taxation", "310100"))
    await shanghai.post("/v1/listings", body("market_ban", "taxation", "310100"))  # not for JS
    await settled(jiangsu, shanghai, 4 + 1, 2 + 2)

    js_regs, sh_regs = await jiangsu.registrations(), await shanghai.registrations()
    b1_copy = str(copy_id_for(SH, b1["listing_id"]))
    a_copies = {str(copy_id_for(JS, a["listing_id"])): a for a in (a1, a4)}
    assert {k for k, (_, s) in js_regs.items() if s["origin_hub"]} == {b1_copy}
    assert {k for k, (_, s) in sh_regs.items() if s["origin_hub"]} == set(a_copies)
    copy = js_regs[b1_copy][1]
    assert (copy["origin_hub"], copy["origin_position"]) == (SH, b1["position"])
    assert copy["authority"] == "310000/310000-tax"
    for copy_id, original in a_copies.items():
        state = sh_regs[copy_id][1]
        assert (state["origin_hub"], state["origin_position"]) == (JS, original["position"])
    shown = await jiangsu.client.get(f"/v1/listings/{b1_copy}", headers=jiangsu.key)
    assert shown.status_code == 200, shown.text  # a listing like any other, read-only
    return a1, a4, b1


async def changes_follow(jiangsu, shanghai, a1, a4, b1):
    """A delisting and an amendment from Jiangsu, a delisting (repaired) from Shanghai."""
    delist = {"reason": "corrected", "note": "wrong decision"}
    await jiangsu.post(f"/v1/listings/{a1['listing_id']}/delist", delist)
    amend = {"note": "shorter", "effective_until": "2025-12-01T00:00:00+08:00"}
    await jiangsu.post(f"/v1/listings/{a4['listing_id']}/amend", amend)
    repaired = {"reason": "repaired", "note": "credit repaired"}
    await shanghai.post(f"/v1/listings/{b1['listing_id']}/delist", repaired)
    await settled(jiangsu, shanghai, 5 + 3, 4 + 3)

    a1_copy = await shanghai.events_of(copy_id_for(JS, a1["listing_id"]))
    assert [(kind, state.get("reason")) for kind, state in a1_copy] == [
        ("Registered", None),
        ("Delisted", "corrected"),
    ]
    a4_copy = await shanghai.events_of(copy_id_for(JS, a4["listing_id"]))
    assert [kind for kind, _ in a4_copy] == ["Registered", "Amended"]
    assert a4_copy[1][1]["changes"]["effective_until"] == datetime(2025, 11, 30, 16, tzinfo=UTC)
    b1_copy = await jiangsu.events_of(copy_id_for(SH, b1["listing_id"]))
    assert [(kind, state.get("reason")) for kind, state in b1_copy] == [
        ("Registered", None),
        ("Delisted", "repaired"),
    ]


async def no_echo(jiangsu, shanghai, servers):
    """Each inbound stream received the peer's copy of one listing of its own (the peer's
    relay publishes its whole log), and the hub appended nothing for it."""
    for hub in (jiangsu, shanghai):
        hub_id = hub.settings.hub_id
        inbound = await inbound_messages(servers[hub_id])
        echoes = [m for m in inbound if m["data"].get("origin_hub") == hub_id]
        assert len(echoes) == 1, echoes
        regs = await hub.registrations()
        assert [s for _, s in regs.values() if s["origin_hub"] == hub_id] == []
    assert len(inbound) == 7  # Shanghai's: Jiangsu's blacklist and market_ban events
    native = [not s["origin_hub"] for _, s in (await jiangsu.registrations()).values()]
    assert sorted(native) == [False, True, True, True, True]


async def consumer_deleted_under_the_worker(shanghai, servers):
    """The worker recreates its consumer right after the last sequence it applied."""
    cursor = shanghai.client.app.state.hub.regional.cursor
    async with js_context(servers[SH]) as js:
        await js.delete_consumer(INBOUND, DURABLE)

        async def recreated():
            try:
                return await js.consumer_info(INBOUND, DURABLE)
            except nats.js.errors.NotFoundError:
                return None

        info = await wait_until(recreated, 15, "the docking consumer to be recreated", step=0.2)
    assert info.config.opt_start_seq == cursor + 1


async def forget_shanghai_place(db, shanghai_settings, servers):
    conn = await asyncpg.connect(
        db.url, server_settings={"search_path": shanghai_settings.database_schema}
    )
    try:
        await conn.execute("DELETE FROM regional_marks")
    finally:
        await conn.close()
    async with js_context(servers[SH]) as js:
        await js.delete_consumer(INBOUND, DURABLE)


async def test_two_hubs_exchange_recognised_listings_once_without_echo(
    db, settings_by_hub, servers
):
    async with running(settings_by_hub, db) as (jiangsu, shanghai):
        listings = await exchange(jiangsu, shanghai)
        await changes_follow(jiangsu, shanghai, *listings)
        await no_echo(jiangsu, shanghai, servers)
        await consumer_deleted_under_the_worker(shanghai, servers)
        await settled(jiangsu, shanghai, 8, 7)

    # Replay from nothing: Shanghai's marks and consumer are gone, so its worker receives
    # every inbound message again; the copies already show each event, and nothing is added.
    await forget_shanghai_place(db, settings_by_hub[SH], servers)
    before = outcomes(JS, "applied_before"), outcomes(JS, "appended")
    async with running(settings_by_hub, db) as (jiangsu, shanghai):
        await settled(jiangsu, shanghai, 8, 7)
        assert shanghai.client.app.state.hub.regional.cursor == 7
    # a1 and a4 registered, a1 delisted, a4 amended: each found applied already
    assert outcomes(JS, "applied_before") - before[0] == 4
    assert outcomes(JS, "appended") == before[1]
