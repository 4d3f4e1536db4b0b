"""Pure parts of the audit: the entry format, listing timelines in effective time, the offline
verifier's incremental roots, and the comparison of a replayed check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hub.audit.keys import key_file, signer_from
from hub.audit.replay import compare
from hub.audit.verify import _Edge
from hub.settings import Settings
from projections.history_timeline import Timeline, fold
from projections.merkle import NoteSigner, root_from_leaves
from schemas import events as ev
from schemas.audit import entry_bytes, entry_reference
from schemas.checks import CheckRecord, Hit
from schemas.log import RawEvent

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@given(
    position=st.integers(1, 2**62),
    version=st.integers(1, 2**31),
    topic=st.text(min_size=1, max_size=80),
    state=st.binary(max_size=600),
)
def test_fast_entry_is_the_canonical_entry(position, version, topic, state):
    raw = RawEvent(position, uuid.uuid4(), version, topic, state)
    assert entry_bytes(raw) == entry_reference(raw)


@given(st.integers(0, 700))
def test_incremental_root_equals_the_rfc_root(size):
    leaves = [bytes([i % 256]) * 32 for i in range(size)]
    edge = _Edge()
    for leaf in leaves:
        edge.push(leaf)
    assert edge.root() == root_from_leaves(leaves)


def registered(notice_until=None, **changes) -> ev.ListingRegistered:
    fields = {
        "timestamp": day(0),
        "subject_id": "uscc:91350100M000100Y43",
        "subject_name": "Acme",
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "decision_no": "D-1",
        "legal_basis": "law",
        "facts": "facts",
        "region": "320100",
        "authority": "320000-tax",
        "effective_from": day(0),
        "effective_until": day(100),
        "notice_until": notice_until,
        "digest": "x",
    }
    return ev.ListingRegistered(**{**fields, **changes})


def timeline(*events) -> Timeline:
    found = fold("L", list(enumerate(events, 1)))
    assert found is not None
    return found


def test_notice_window_holds_until_it_ends():
    t = timeline(registered(notice_until=day(5)))
    assert t.status_at(day(2)) == "noticed"
    assert not t.in_force_at(day(4.9))
    assert t.in_force_at(day(5))
    assert [(s.valid_from, s.valid_to) for s in t.segments()] == [(day(5), day(100))]


def test_an_objection_answered_late_holds_until_its_answer():
    t = timeline(
        registered(notice_until=day(5)),
        ev.ListingObjected(
            timestamp=day(3), n=1, grounds="g", received_at=day(3), answer_due=day(9)
        ),
    )
    assert t.status_at(day(4)) == "objected"
    assert t.status_at(day(2)) == "noticed"
    assert t.segments() == []
    t.apply(3, ev.ListingObjectionResolved(timestamp=day(8), n=1, upheld=False, answer="no"))
    assert not t.in_force_at(day(7))
    assert t.in_force_at(day(8))
    assert t.segments()[0].valid_from == day(8)


def test_an_upheld_objection_means_it_never_applied():
    t = timeline(
        registered(notice_until=day(5)),
        ev.ListingObjected(
            timestamp=day(3), n=1, grounds="g", received_at=day(3), answer_due=day(9)
        ),
        ev.ListingObjectionResolved(timestamp=day(4), n=1, upheld=True, answer="yes"),
        ev.ListingDelisted(
            timestamp=day(4), reason="objection_upheld", note="n", effective_at=day(0)
        ),
    )
    assert t.segments() == []
    assert not any(t.in_force_at(day(n)) for n in range(0, 120, 5))


def test_corrections_apply_from_their_effective_instant_in_recording_order():
    t = timeline(
        registered(),
        ev.ListingAmended(
            timestamp=day(30), changes={"severity": "general"}, note="n", applies_from=day(30)
        ),
        ev.ListingAmended(
            timestamp=day(40),
            changes={"effective_from": day(-10), "effective_until": day(80)},
            note="correction",
            applies_from=day(-10),
        ),
        ev.ListingDelisted(timestamp=day(60), reason="repaired", note="n", effective_at=day(60)),
    )
    assert t.terms_at(day(-5))["severity"] == "severe"
    assert t.in_force_at(day(-5))
    assert t.terms_at(day(35))["severity"] == "general"
    assert not t.in_force_at(day(60))
    assert [(s.valid_from, s.valid_to, s.term("severity")) for s in t.segments()] == [
        (day(-10), day(30), "severe"),
        (day(30), day(60), "general"),
    ]


def test_recorded_time_is_monotonic_when_the_clock_goes_back():
    t = timeline(
        registered(),
        ev.ListingAmended(
            timestamp=day(-1), changes={"severity": "general"}, note="n", applies_from=day(0)
        ),
    )
    assert t.recorded_at == day(0)


def test_replay_comparison_names_what_differs():
    hit = Hit(listing_id="a", list="blacklist", severity="severe", region="320100", measures=[])
    record = CheckRecord(
        check_id="c",
        agency="x",
        subject_id="s",
        matter="bidding",
        purpose="p",
        decision="deny",
        hits=[hit],
        position=5,
        catalogue_version=3,
        checked_at=T0,
    )
    assert compare(record, "deny", [hit], 3) == []
    other = Hit(listing_id="a", list="blacklist", severity="general", region="320100", measures=[])
    assert compare(record, "review", [other], 4) == [
        "the log holds catalogue version 4, the check used 3",
        "decision: recorded deny, replayed review",
        "hit on listing a differs",
    ]


def test_the_signing_key_is_made_once_in_the_data_dir(tmp_path):
    key = key_file(tmp_path, "320500")
    assert (tmp_path / "log_signing_key").stat().st_mode & 0o777 == 0o600
    assert key_file(tmp_path, "320500") == key
    signer = signer_from(Settings(log_signing_key=key))
    assert signer.name == "credit-hub.320500/log"
    assert NoteSigner.from_key(key).verifier.key == signer.verifier.key
    assert key not in str(Settings(log_signing_key=key).describe())
