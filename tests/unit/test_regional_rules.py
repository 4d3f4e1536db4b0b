"""Regional docking without servers: peer and recognition settings, the inbound stream's
sources, the runs a batch is applied in, and what the hub plans for each peer event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.regional_stream import (
    Peer,
    PeerConfigError,
    RemoteEvent,
    inbound_config,
    parse_peers,
    segments,
)
from hub.regional import DockingService, Recognition, copy_id_for

NOW = datetime(2025, 3, 3, 2, tzinfo=UTC)


def test_peers_default_to_this_hubs_stream_and_prefix():
    peers = parse_peers(
        " 310000=js310000 , 330000=js330000/ZJ/zj", stream="CREDIT", prefix="credit"
    )
    assert peers == (
        Peer("310000", "js310000", "CREDIT", "credit"),
        Peer("330000", "js330000", "ZJ", "zj"),
    )
    assert parse_peers("", stream="CREDIT", prefix="credit") == ()


@pytest.mark.parametrize(
    "text", ["310000", "310000=", "310000=js.31", "310000=a/b/c/d", "310000=a,310000=b"]
)
def test_bad_peer_settings_are_refused(text):
    with pytest.raises(PeerConfigError):
        parse_peers(text, stream="CREDIT", prefix="credit")


def test_recognition_by_list_and_domain():
    rules = Recognition.parse("blacklist:*, market_ban:taxation")
    assert rules.recognises("blacklist", "courts")
    assert rules.recognises("market_ban", "taxation")
    assert not rules.recognises("market_ban", "environment")
    assert not rules.recognises("redlist", "taxation")
    assert rules.lists() == ("blacklist", "market_ban")
    assert Recognition.parse("*:taxation").lists() == (
        "blacklist",
        "watchlist",
        "market_ban",
        "redlist",
    )
    assert Recognition.parse("").lists() == ()
    with pytest.raises(ValueError, match="greylist"):
        Recognition.parse("greylist:*")


def test_inbound_stream_sources_each_peer_filtered_and_tagged():
    config = inbound_config(
        "REGIONAL_IN", [Peer("310000", "js310000")], ("blacklist", "market_ban")
    ).as_dict()
    (source,) = config["sources"]
    assert source["name"] == "CREDIT"
    assert source["external"]["api"] == "$JS.js310000.API"
    assert [(t["src"], t["dest"]) for t in source["subject_transforms"]] == [
        ("credit.blacklist.>", "regional.310000.blacklist.>"),
        ("credit.market_ban.>", "regional.310000.market_ban.>"),
    ]
    assert not config.get("subjects")


def event(aggregate_id, position, type_="listing.delisted", peer="310000", **data):
    return RemoteEvent(
        peer=peer,
        source=f"/hubs/{peer}",
        position=position,
        id=f"e{position}",
        type=type_,
        time=NOW,
        aggregate_id=aggregate_id,
        version=1,
        data={"position": position, "aggregate_id": aggregate_id, "version": 1, **data},
    )


def test_a_run_never_holds_one_listing_twice():
    batch = [event("a", 1), event("b", 2), event("a", 3), event("c", 4), event("b", 5)]
    runs = [[e.position for e in run] for run in segments(batch)]
    assert runs == [[1, 2], [3, 4, 5]]
    assert list(segments([])) == []


def registration(**changes):
    data = {
        "subject_id": "uscc:91350100M000100Y43",
        "subject_name": "Acme",
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "decision_no": "沪税罚[2025]1号",
        "legal_basis": "law",
        "facts": "facts",
        "region": "310100",
        "authority": "310000-tax",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
        "notice_until": None,
        "digest": "d",
        "origin_hub": None,
        "origin_position": None,
    }
    data.update(changes)
    return event("4f0c9a52-7f7e-4a3e-9d43-6b1a9f0e2a11", 9, "listing.registered", **data)


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({"origin_hub": "320000"}, "not_native"),  # our own listing, echoed back
        ({"origin_hub": "330000"}, "not_native"),  # a third hub's, imported by the peer
        ({"list": "redlist", "severity": None, "intent": None}, "unrecognised"),
        ({"domain": "unknown_domain"}, "unrecognised"),
        ({"subject_id": "uscc:123"}, "invalid"),
    ],
)
def test_registrations_the_hub_does_not_take(changes, outcome):
    service = DockingService(None, Recognition.parse("blacklist:*"), frozenset({"taxation"}))
    assert service.plan(registration(**changes)) == outcome


def test_a_recognised_registration_and_what_is_never_a_listing():
    service = DockingService(None, Recognition.parse("blacklist:*"), frozenset({"taxation"}))
    assert callable(service.plan(registration()))
    other = event("x", 3, "catalogue.measure_put")
    assert service.plan(other) == "other_family"
    spoofed = registration()
    spoofed.source = "/hubs/330000"
    assert service.plan(spoofed) == "wrong_source"
    assert copy_id_for("310000", "x") == copy_id_for("310000", "x") != copy_id_for("330000", "x")
