"""The agency client's replica state: which listings are in force, from the stream's events,
each message applied once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from adapters.client_state import Replica, ReplicaState
from adapters.cloudevents import CloudEvent

T0 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
SUBJECT = "uscc:91350100M000100Y43"


def event(kind, listing="L1", position=1, **data):
    return CloudEvent(
        id=f"{listing}-{position}", source="/hubs/320000", type=f"cn.gov.credit.listing.{kind}",
        subject=SUBJECT, time=T0, data={"aggregate_id": listing, "position": position, **data},
    )  # fmt: skip


def registered(listing="L1", position=1, list_name="blacklist", notice_until=None, **extra):
    return event(
        "registered", listing, position, subject_id=SUBJECT, subject_name="Acme",
        list=list_name, domain="taxation", region="320100", severity="severe",
        authority="320000-tax", decision_no=f"D-{listing}",
        effective_from=(T0 - timedelta(days=1)).isoformat(),
        effective_until=(T0 + timedelta(days=365)).isoformat(),
        notice_until=notice_until, **extra,
    )  # fmt: skip


def listed(replica, at=T0):
    return [(x.listing_id, x.list) for x in replica.in_force(SUBJECT, at)]


def test_registration_delisting_and_idempotence():
    replica = Replica()
    assert replica.apply(1, registered(), T0)
    assert not replica.apply(1, registered(), T0)  # the same stream sequence again
    assert listed(replica) == [("L1", "blacklist")]
    assert replica.apply(2, registered("L2", 2, "redlist"), T0)
    assert listed(replica) == [("L1", "blacklist"), ("L2", "redlist")]
    assert replica.apply(3, event("delisted", "L1", 3, reason="repaired"), T0)
    assert listed(replica) == [("L2", "redlist")]
    assert (replica.state.stream_seq, replica.state.position) == (3, 3)


def test_notice_window_objections_and_amendments():
    replica = Replica()
    notice_until = (T0 + timedelta(days=5)).isoformat()
    replica.apply(1, registered(notice_until=notice_until), T0)
    assert listed(replica) == []  # noticed: not in force yet
    later = T0 + timedelta(days=6)
    assert listed(replica, later) == [("L1", "blacklist")]  # the window ended quietly
    replica.apply(2, event("objected", position=2, n=1), T0)
    assert listed(replica, later) == []  # an objection is pending
    replica.apply(3, event("objection_resolved", position=3, n=1, upheld=False), T0)
    assert listed(replica, later) == [("L1", "blacklist")]
    replica.apply(4, event("took_effect", position=4), T0)
    assert listed(replica) == [("L1", "blacklist")]
    until = (T0 + timedelta(days=2)).isoformat()
    replica.apply(5, event("amended", position=5, changes={"effective_until": until,
                                                           "severity": "general"}), T0)  # fmt: skip
    [listing] = replica.in_force(SUBJECT, T0)
    assert listing.severity == "general"
    assert listed(replica, T0 + timedelta(days=3)) == []  # expired


def test_state_survives_a_round_trip_through_its_file_format():
    replica = Replica()
    replica.apply(1, registered(), T0)
    replica.state.current_at = T0
    saved = msgspec.json.encode(replica.state)
    again = Replica(msgspec.json.decode(saved, type=ReplicaState))
    assert listed(again) == [("L1", "blacklist")]
    assert again.state.current_at == T0
    assert not again.apply(1, registered(), T0)
    again.apply(2, event("delisted", position=2, reason="revoked"), T0)
    assert listed(again) == []
