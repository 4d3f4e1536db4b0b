"""The relay's fast path equals the reference CloudEvents mapping; the subject taxonomy; the
event id computed without `uuid.UUID` equals `schemas.log.event_id`."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime

import pytest
from cloudevents.core.formats.json import JSONFormat

from adapters import cloudevents as ce
from adapters.relay_wire import fast_event_id, outgoing, registration_context
from schemas.codec import decode_state, encode_state
from schemas.log import RawEvent, event_id, to_log_event

LISTING = "hub.credit.domainmodel:Listing"
NOW = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
REGISTERED = {
    "timestamp": NOW, "originator_topic": LISTING,
    "subject_id": "uscc:91350100M000100Y43", "subject_name": "Acme", "list": "blacklist",
    "domain": "taxation", "severity": "severe", "intent": "intentional", "decision_no": "D-1",
    "legal_basis": "law", "facts": "facts", "region": "320100", "authority": "320000-tax",
    "effective_from": NOW, "effective_until": None, "notice_until": None, "digest": "0" * 64,
    "origin_hub": None, "origin_position": None,
}  # fmt: skip
AGGREGATE = uuid.UUID("0f6b1f4e-52a4-4a51-9d1b-6b2c7d1f0a11")


def raw(position, version, topic, state, originator=AGGREGATE):
    return RawEvent(position, originator, version, topic, encode_state(state))


def reference(event, context):
    log_event = to_log_event(event)
    envelope = ce.to_cloudevent(log_event, "/hubs/320000", context)
    return ce.subject_for("credit", log_event, context), json.loads(ce.encode(envelope))


def fast(event, context):
    out = outgoing(event.position, event.originator_id, event.version, event.topic,
                   decode_state(event.state), context, "credit", "/hubs/320000")  # fmt: skip
    assert out.id == event_id(event.originator_id, event.version)
    assert out.position == event.position
    return out.subject, json.loads(out.payload)


def test_event_id_matches_uuid5():
    rng = random.Random(7)
    for _ in range(500):
        originator = uuid.UUID(int=rng.getrandbits(128))
        version = rng.randrange(1, 10_000)
        assert fast_event_id(originator, version) == event_id(originator, version)


CASES = [
    (f"{LISTING}.Registered", 1, REGISTERED),
    (f"{LISTING}.Delisted", 2, {"timestamp": NOW, "reason": "repaired", "note": "n",
                                "effective_at": NOW}),
    (f"{LISTING}.Amended", 3, {"timestamp": NOW, "changes": {"severity": "general"},
                               "note": "n", "applies_from": NOW}),
    (f"{LISTING}.Objected", 2, {"timestamp": NOW, "n": 1, "grounds": "g", "received_at": NOW,
                                "answer_due": NOW}),
    ("hub.credit.catalogue:Catalogue.MeasurePut", 1, {"timestamp": NOW, "code": "x.y"}),
    ("some.module:Thing.Happened", 1, {"timestamp": NOW, "region": "320500", "class_version": 2}),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "version", "state"), CASES)
def test_fast_path_equals_the_reference(topic, version, state):
    context = registration_context(REGISTERED) if topic.startswith(LISTING) else None
    event = raw(7, version, topic, dict(state))
    assert fast(event, context) == reference(event, context)
    JSONFormat().read(None, json.dumps(fast(event, context)[1]))  # a valid CloudEvent


def test_subject_taxonomy():
    context = registration_context(REGISTERED)
    assert fast(raw(1, 1, f"{LISTING}.Registered", REGISTERED), context)[0] == (
        "credit.blacklist.registered.320100"
    )
    delisted = raw(2, 2, f"{LISTING}.Delisted", CASES[1][2])
    assert fast(delisted, context)[0] == "credit.blacklist.delisted.320100"
    unknown = raw(3, 1, "some.module:Thing.Happened", {"timestamp": NOW, "region": "32.05 *"})
    assert fast(unknown, None)[0] == "credit._unknown.Happened.32_05__"
    assert ce.split_type("listing.objection_resolved") == ("listing", "objection_resolved")
    assert ce.token("") == "_"
    assert ce.token("a.b*>c d") == "a_b__c_d"


def test_envelope_round_trips_for_the_client():
    event = raw(9, 1, f"{LISTING}.Registered", REGISTERED)
    out = outgoing(9, AGGREGATE, 1, event.topic, decode_state(event.state),
                   registration_context(REGISTERED), "credit", "/hubs/320000")  # fmt: skip
    envelope = ce.decode(out.payload)
    assert envelope.type == "cn.gov.credit.listing.registered"
    assert envelope.subject == "uscc:91350100M000100Y43"
    assert envelope.time == NOW
    assert envelope.data["position"] == 9
    assert envelope.data["aggregate_id"] == str(AGGREGATE)
    assert "originator_topic" not in envelope.data
