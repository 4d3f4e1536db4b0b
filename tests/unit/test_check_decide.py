"""Decisions from listings in force and the default catalogue."""

from __future__ import annotations

import uuid

import pytest

from hub.checks.catalogue import load_default_catalogue
from hub.checks.decide import Decider
from projections.checkindex import EFFECTIVE, NOTICED, CheckIndex, flags
from projections.checkindex_follower import CatalogueState
from schemas.catalogue import Measure

NOW = 1_740_000_000


@pytest.fixture(name="decide")
def fx_decide():
    catalogue = CatalogueState()
    for measure in load_default_catalogue().measures:
        catalogue.measures[measure.code] = measure
    catalogue.version = 1 + len(catalogue.measures)
    index = CheckIndex()
    decider = Decider(catalogue, index)

    def decide(listings, matter, category=None, now=NOW):
        packed = b"".join(
            index.pack(
                uuid.uuid4().bytes,
                start=item.get("start", NOW - 10),
                end=item.get("end", NOW + 10),
                notice=item.get("notice", 0),
                domain=item.get("domain", "taxation"),
                region="320100",
                flags=flags(
                    item["list"],
                    item.get("severity"),
                    item.get("intent"),
                    item.get("status", EFFECTIVE),
                ),
            )
            for item in listings
        )
        decision, hits = decider.decide(
            packed or None, matter, category or matter.split(".")[0], now
        )
        return decision, [[m.code for m in h.measures] for h in hits]

    decide.catalogue = catalogue
    return decide


SEVERE = {"list": "blacklist", "severity": "severe", "intent": "intentional"}
REDLIST = {"list": "redlist"}


def test_severe_blacklist_denies_procurement_and_bidding(decide):
    assert decide([SEVERE], "government_procurement") == ("deny", [["procurement.exclude"]])
    assert decide([SEVERE], "bidding.construction_project") == ("deny", [["bidding.exclude"]])
    assert decide([SEVERE], "public_honours") == ("deny", [["honours.exclude"]])


def test_effects_order_the_decision(decide):
    minor = {**SEVERE, "severity": "minor"}
    assert decide([minor], "government_procurement") == ("alert", [["procurement.alert"]])
    watch = {"list": "watchlist", "severity": "general", "intent": "unintentional"}
    assert decide([watch], "state_funding") == ("review", [["watchlist.review"]])
    assert decide([watch], "bidding")[0] == "alert"
    assert decide([{"list": "market_ban"}], "bidding") == ("deny", [["market_ban.prohibit"]])


def test_redlist_facilitates_unless_punished(decide):
    decision, [measures] = decide([REDLIST], "administrative_licensing")
    assert decision == "facilitate"
    assert "licensing.green_channel" in measures
    decision, hits = decide(
        [REDLIST, {"list": "watchlist", "severity": "minor", "intent": "unintentional"}],
        "state_funding",
    )
    assert decision == "review"
    assert hits[0] == []  # the incentive is suspended
    # a punitive listing with no measure for the matter still suspends incentives
    watch = {"list": "watchlist", "severity": "minor", "intent": "unintentional"}
    assert decide([REDLIST, watch], "public_honours") == ("review", [[], ["watchlist.review"]])
    decide.catalogue.measures.pop("watchlist.review")
    decide.catalogue.version += 1
    assert decide([REDLIST, watch], "public_honours") == ("clear", [[], []])


def test_specific_matters_and_domains(decide):
    food = {**SEVERE, "domain": "food_drug"}
    decision, [measures] = decide([food], "administrative_licensing.food_business")
    assert decision == "deny"
    assert measures[0] == "food.licence_ban"
    assert decide([food], "administrative_licensing.road_transport")[0] == "review"
    assert decide([SEVERE], "administrative_licensing.food_business")[0] == "review"


def test_only_listings_in_force_count(decide):
    assert decide([], "bidding") == ("clear", [])
    assert decide([{**SEVERE, "end": NOW}], "bidding") == ("clear", [])
    assert decide([{**SEVERE, "start": NOW + 1}], "bidding") == ("clear", [])
    noticed = {**SEVERE, "status": NOTICED, "notice": NOW + 5}
    assert decide([noticed], "bidding") == ("clear", [])
    assert decide([noticed], "bidding", now=NOW + 5)[0] == "deny"


def test_a_new_catalogue_version_is_used_at_once(decide):
    assert decide([SEVERE], "bidding")[0] == "deny"
    old = decide.catalogue.measures["bidding.exclude"]
    decide.catalogue.measures["bidding.exclude"] = Measure(
        **{**{f: getattr(old, f) for f in old.__struct_fields__}, "effect": "alert"}
    )
    decide.catalogue.version += 1
    assert decide([SEVERE], "bidding") == ("alert", [["bidding.exclude"]])
    inactive = decide.catalogue.measures["bidding.exclude"]
    decide.catalogue.measures["bidding.exclude"] = Measure(
        **{**{f: getattr(inactive, f) for f in inactive.__struct_fields__}, "active": False}
    )
    decide.catalogue.version += 1
    assert decide([SEVERE], "bidding") == ("clear", [[]])
