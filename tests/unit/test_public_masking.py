"""Pure parts of the public side: masking free text, the token bucket, and the rule parsers."""

from __future__ import annotations

import random

import pytest

from hub.errors import TooManyRequests
from hub.subject.public import mask_text
from hub.subject.ratelimit import TokenBucket
from hub.subject.rules import SubjectRules, parse_breach_lists, parse_selectors
from schemas.identifiers import make_cnid


def test_mask_text_hides_every_identity_number():
    rng = random.Random(7)
    for _ in range(200):
        number = make_cnid(rng)
        masked = mask_text(f"决定书 {number}号，另见{number}")  # noqa: RUF001 - Chinese text
        assert number not in masked
        assert masked.count(number[:6] + "*" * 8 + number[-4:]) == 2
    assert mask_text("uscc:91350100M000100Y43") == "uscc:91350100M000100Y43"


def test_token_bucket_refills_over_time():
    now = [0.0]
    bucket = TokenBucket(2, 60, monotonic=lambda: now[0])
    assert [bucket.take("a"), bucket.take("a")] == [0, 0]
    assert bucket.take("a") == pytest.approx(30)
    assert bucket.take("b") == 0  # per client
    now[0] = 30.0
    assert bucket.take("a") == 0
    with pytest.raises(TooManyRequests) as caught:
        bucket.check("a", "requests")
    assert caught.value.retry_after == 30


def test_token_bucket_forgets_the_oldest_clients():
    bucket = TokenBucket(1, 60, max_clients=3, monotonic=lambda: 0.0)
    for client in "abcd":
        bucket.take(client)
    assert bucket.take("a") == 0  # forgotten, so a fresh bucket


def test_rule_parsers():
    assert parse_selectors(" domain=courts, list=market_ban ,") == (
        ("domain", "courts"),
        ("list", "market_ban"),
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_selectors("colour=red")
    assert parse_breach_lists("*=watchlist,repair=none") == {"*": "watchlist", "repair": "none"}
    with pytest.raises(ValueError, match="TYPE=LIST"):
        parse_breach_lists("repair=jail")
    rules = SubjectRules(breach_lists={"repair": "none", "*": "blacklist"})
    assert (rules.breach_list("repair"), rules.breach_list("voluntary")) == (None, "blacklist")
    assert rules.unrepairable_rule(domain="courts", list_name="blacklist", severity=None) == (
        "domain=courts"
    )
    assert (
        rules.unrepairable_rule(domain="taxation", list_name="blacklist", severity="minor") is None
    )
