"""Properties of subject identifiers: USCC, resident identity numbers, subject ids, masking."""

from __future__ import annotations

import datetime as dt
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric as stdnum_ric
from stdnum.cn import uscc as stdnum_uscc

from schemas.identifiers import (
    USCC_ALPHABET,
    USCC_AUTHORITIES,
    IdentifierError,
    SubjectId,
    cnid_check_char,
    is_canonical_uscc,
    make_cnid,
    make_uscc,
    mask_cnid,
    mask_subject_id,
    parse_subject_id,
    uscc_check_char,
    validate_cnid,
    validate_region,
    validate_uscc,
)

CNID_CHARS = "0123456789X"
DIGITS = "0123456789"


@st.composite
def usccs(draw: st.DrawFn) -> str:
    """Valid USCCs built from their parts, the check taken from stdnum (an independent oracle)."""
    body = (
        draw(st.sampled_from(USCC_AUTHORITIES))
        + draw(st.sampled_from(USCC_ALPHABET))
        + draw(st.text(DIGITS, min_size=6, max_size=6))
        + draw(st.text(USCC_ALPHABET, min_size=9, max_size=9))
    )
    return body + stdnum_uscc.calc_check_digit(body)


@st.composite
def cnids(draw: st.DrawFn) -> str:
    """Valid identity numbers, the check taken from stdnum; regions need not exist."""
    province = draw(st.integers(11, 91))
    county = draw(st.text(DIGITS, min_size=4, max_size=4))
    birth = draw(st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)))
    sequence = draw(st.integers(0, 999))
    body = f"{province}{county}{birth:%Y%m%d}{sequence:03d}"
    return body + stdnum_ric.calc_check_digit(body + "0")


def _rejected_uscc(code: str) -> bool:
    try:
        validate_uscc(code)
    except IdentifierError:
        return True
    return False


def _rejected_cnid(code: str) -> bool:
    try:
        validate_cnid(code)
    except IdentifierError:
        return True
    return False


def _substitutions(code: str, alphabet: str) -> list[str]:
    return [
        code[:i] + c + code[i + 1 :] for i in range(len(code)) for c in alphabet if c != code[i]
    ]


def _transpositions(code: str) -> list[str]:
    return [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(len(code) - 1)
        if code[i] != code[i + 1]
    ]


# --- USCC -------------------------------------------------------------------------------------


@given(usccs())
def test_valid_uscc_passes_and_round_trips(code):
    assert validate_uscc(code) == code
    assert uscc_check_char(code[:17]) == code[17]
    assert str(parse_subject_id(f"uscc:{code}")) == f"uscc:{code}"


@given(st.randoms(use_true_random=False))
def test_generated_uscc_is_valid(rng):
    code = make_uscc(rng)
    assert validate_uscc(code) == code
    assert stdnum_uscc.calc_check_digit(code[:17]) == code[17]
    if code[:8].isdigit():
        assert stdnum_uscc.is_valid(code)


def test_generator_covers_every_authority():
    rng = random.Random(20240927)
    assert {make_uscc(rng)[0] for _ in range(2000)} == set(USCC_AUTHORITIES)


@given(usccs())
def test_every_uscc_substitution_is_rejected(code):
    assert all(_rejected_uscc(bad) for bad in _substitutions(code, USCC_ALPHABET))


@given(usccs())
def test_every_uscc_adjacent_transposition_is_rejected(code):
    assert all(_rejected_uscc(bad) for bad in _transpositions(code))


@given(usccs())
def test_uscc_lowercase_and_spaces_normalise(code):
    assert validate_uscc(f"  {code[:9].lower()} {code[9:].lower()}\t") == code


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y43",
        "914403001922038216",
        "9144030071526726XG",
        "91330100716105852F",
    ],
)
def test_known_digit_led_usccs_agree_with_stdnum(code):
    assert validate_uscc(code) == code
    assert stdnum_uscc.is_valid(code)


@pytest.mark.parametrize(
    "code",
    ["N2320100MA1MXK3L66", "A1320000MB1234567U", "Y1320500MC00000185", "N1321000MA00000015"],
)
def test_letter_led_usccs_are_accepted(code):
    assert validate_uscc(code) == code
    assert stdnum_uscc.calc_check_digit(code[:17]) == code[17]


def test_uscc_check_message_names_both_characters():
    with pytest.raises(IdentifierError, match="check character is 'X', expected '3'") as err:
        validate_uscc("91350100M000100Y4X")
    assert err.value.field == "subject.id"
    assert err.value.reason == str(err.value)


@pytest.mark.parametrize("letter", list("IOSVZ"))
def test_uscc_forbidden_letters_are_rejected(letter):
    with pytest.raises(IdentifierError, match="alphabet") as err:
        validate_uscc(f"91350100M{letter}00100Y43", field="subject.id")
    assert err.value.field == "subject.id"


@pytest.mark.parametrize(
    ("code", "match"),
    [
        ("", "18 characters, got 0"),
        ("91350100M000100Y4", "18 characters, got 17"),
        ("91350100M000100Y433", "18 characters, got 19"),
        ("B1350100M000100Y43", "registration authority 'B'"),
        ("913501A0M000100Y43", "region code"),
    ],
)
def test_malformed_uscc_is_rejected(code, match):
    with pytest.raises(IdentifierError, match=match):
        validate_uscc(code)


# --- resident identity numbers ---------------------------------------------------------------


@given(cnids())
def test_valid_cnid_passes_and_round_trips(number):
    assert validate_cnid(number) == number
    assert cnid_check_char(number[:17]) == number[17]
    assert parse_subject_id(f"cnid:{number}") == SubjectId(kind="cnid", code=number)


@given(st.randoms(use_true_random=False))
def test_generated_cnid_is_valid(rng):
    number = make_cnid(rng)
    assert validate_cnid(number) == number
    assert stdnum_ric.calc_check_digit(number) == number[17]


@given(cnids())
def test_every_cnid_substitution_is_rejected(number):
    assert all(_rejected_cnid(bad) for bad in _substitutions(number, CNID_CHARS))


@given(cnids())
def test_every_cnid_adjacent_transposition_is_rejected(number):
    assert all(_rejected_cnid(bad) for bad in _transpositions(number))


def test_known_cnids():
    assert validate_cnid("11010519491231002x") == "11010519491231002X"
    assert validate_cnid(" 360426199101010071 ") == "360426199101010071"
    # region 329999 is in no table: the number is still valid
    assert validate_cnid("329999199001011233") == "329999199001011233"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("32010219900230123", "birth date '19900230' is not a calendar date"),
        ("32010219900229123", "birth date '19900229' is not a calendar date"),
        ("32010219901301123", "not a calendar date"),
        ("44052418800101001", "before 1900-01-01"),
        ("10010519491231002", "province"),
        ("92010519491231002", "province"),
    ],
)
def test_bad_cnid_parts_are_rejected_with_field(body, match):
    number = body + cnid_check_char(body)
    with pytest.raises(IdentifierError, match=match) as err:
        validate_cnid(number, field="subject.id")
    assert err.value.field == "subject.id"


@pytest.mark.parametrize(
    "number", ["", "1101051949123100", "11010519491231002XX", "1101051949A231002X"]
)
def test_malformed_cnid_is_rejected(number):
    with pytest.raises(IdentifierError):
        validate_cnid(number)


# --- subject ids ------------------------------------------------------------------------------


def test_subject_id_normalises_and_is_frozen():
    subject = parse_subject_id(" USCC:91350100m000100y43 ")
    assert subject == SubjectId(kind="uscc", code="91350100M000100Y43")
    assert str(subject) == "uscc:91350100M000100Y43"
    with pytest.raises(AttributeError):
        subject.code = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(subject), type=SubjectId) == subject


@pytest.mark.parametrize(
    "value", ["91350100M000100Y43", "org:91350100M000100Y43", "passport:E12345678", ":", ""]
)
def test_unknown_prefix_is_rejected(value):
    with pytest.raises(IdentifierError, match="must start with") as err:
        parse_subject_id(value)
    assert err.value.field == "subject_id"


def test_bad_code_names_the_callers_field():
    with pytest.raises(IdentifierError, match="check character") as err:
        parse_subject_id("cnid:110105194912310021", field="subject.id")
    assert err.value.field == "subject.id"
    with pytest.raises(IdentifierError, match="check character") as err:
        parse_subject_id("uscc:91350100M000100Y44")
    assert err.value.field == "subject_id"


# --- regions and masking ----------------------------------------------------------------------


def test_validate_region():
    assert validate_region("320500") == "320500"
    for bad in ("32050", "3205000", "100000", "920000", "32050A"):
        with pytest.raises(IdentifierError, match="region code") as err:
            validate_region(bad)
        assert err.value.field == "region"


def test_mask_cnid():
    assert mask_cnid("11010519491231002X") == "110105********002X"
    assert mask_cnid("123") == "***"


@given(cnids())
def test_mask_hides_the_birth_date(number):
    masked = mask_cnid(number)
    assert len(masked) == len(number)
    assert masked[:6] == number[:6]
    assert masked[-4:] == number[-4:]
    assert set(masked[6:14]) == {"*"}


def test_mask_subject_id_masks_only_cnid():
    assert mask_subject_id("cnid:11010519491231002X") == "cnid:110105********002X"
    assert mask_subject_id("uscc:91350100M000100Y43") == "uscc:91350100M000100Y43"


def test_canonical_uscc_is_what_validate_uscc_returns_unchanged():
    """The hot paths' quick test is exact: a mutation anywhere (other characters, lower
    case, white space, non-ASCII digits) is canonical only if `validate_uscc` keeps it."""
    rng = random.Random(32100)
    codes = [make_uscc(rng) for _ in range(300)]
    assert all(is_canonical_uscc(c) for c in codes)
    for code in codes[:40]:
        for i in range(18):
            for c in (*USCC_ALPHABET, "I", "O", "a", " ", "٣", "²"):
                mutated = code[:i] + c + code[i + 1 :]
                try:
                    unchanged = validate_uscc(mutated) == mutated
                except IdentifierError:
                    unchanged = False
                assert is_canonical_uscc(mutated) == unchanged, mutated
    assert not is_canonical_uscc(codes[0] + "0")
    assert not is_canonical_uscc("")
