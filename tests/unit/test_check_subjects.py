"""The check path's fast subject parsing accepts, canonicalises and refuses exactly what
`schemas.identifiers.parse_subject_id` does, one by one and for a batch."""

from __future__ import annotations

import random

import pytest

from hub.checks.subjects import canonical_subject, canonical_subjects
from hub.errors import InputError
from projections.checkindex import subject_key
from schemas.identifiers import USCC_ALPHABET, IdentifierError, make_uscc, parse_subject_id

_NOISE = USCC_ALPHABET + "IOZSVabc-~é0 "


def _reference(value: str) -> str | None:
    try:
        return str(parse_subject_id(value))
    except IdentifierError:
        return None


def _variants(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    values = []
    for _ in range(n):
        code = make_uscc(rng)
        roll = rng.random()
        if roll < 0.4:  # one character changed: a wrong check character or outside the alphabet
            i = rng.randrange(18)
            code = code[:i] + rng.choice(_NOISE) + code[i + 1 :]
        elif roll < 0.5:
            code = code.lower()
        values.append("uscc:" + code)
    return values


def test_one_by_one_as_the_schema_parses() -> None:
    for value in _variants(3, 20_000):
        expected = _reference(value)
        if expected is None:
            with pytest.raises(InputError):
                canonical_subject(value)
        else:
            assert canonical_subject(value) == expected


def test_a_batch_as_one_by_one_with_the_item_named() -> None:
    values = _variants(4, 5_000)
    valid = [v for v in values if _reference(v) is not None]
    subjects, keys = canonical_subjects(valid, prefix="items")
    assert subjects == [canonical_subject(v) for v in valid]
    assert keys == [subject_key(s) for s in subjects]
    bad = next(v for v in values if _reference(v) is None)
    with pytest.raises(InputError) as caught:
        canonical_subjects([*valid[:7], bad, *valid[7:9]], prefix="items")
    assert caught.value.field == "items.7.subject_id"
