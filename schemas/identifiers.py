"""Subject identifiers: USCC (GB 32100-2015), resident identity numbers (GB 11643-1999), regions.

Pure functions and msgspec types; no I/O and nothing of ours is imported.

Exceptions::

    ValueError
    └── IdentifierError      (field: str, reason: str)

On the wire a subject is ``uscc:<18-character code>`` or ``cnid:<18-character number>``.
The USCC check is implemented here rather than taken from ``stdnum.cn.uscc``, which rejects
valid codes whose first characters are letters (``N...``, ``A...``, ``Y...``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final, Literal

import msgspec

if TYPE_CHECKING:
    import random

__all__ = [
    "CNID_LENGTH",
    "USCC_ALPHABET",
    "USCC_AUTHORITIES",
    "USCC_LENGTH",
    "IdentifierError",
    "SubjectId",
    "cnid_check_char",
    "is_canonical_uscc",
    "make_cnid",
    "make_uscc",
    "mask_cnid",
    "mask_subject_id",
    "parse_subject_id",
    "uscc_check_char",
    "validate_cnid",
    "validate_region",
    "validate_uscc",
]

USCC_LENGTH: Final = 18
CNID_LENGTH: Final = 18
USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters of GB 32100-2015: digits and A-Y without I, O, S, V, Z."""
USCC_AUTHORITIES: Final = "123456789ANY"
"""Registration-authority codes in use (first character)."""

_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CNID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CNID_CHECK: Final = "0123456789X"
_MIN_PROVINCE: Final = 11
_MAX_PROVINCE: Final = 91
_MIN_BIRTH: Final = dt.date(1900, 1, 1)
_REGION_LENGTH: Final = 6
_MASK_HEAD: Final = 6
_MASK_TAIL: Final = 4
_PROVINCES: Final = (
    *(11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37),
    *(41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65),
)


class IdentifierError(ValueError):
    """An identifier failed validation; ``field`` names the input, ``reason`` says why."""

    def __init__(self, reason: str, *, field: str = "subject.id") -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class SubjectId(msgspec.Struct, frozen=True, gc=False):
    """A validated subject identifier; ``str()`` gives the canonical ``kind:code``."""

    kind: Literal["uscc", "cnid"]
    code: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.code}"


def _is_ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _normalise(value: str) -> str:
    return "".join(value.split()).upper()


def uscc_check_char(first17: str) -> str:
    """Return the GB 32100-2015 check character for the first 17 characters of a USCC."""
    if len(first17) != USCC_LENGTH - 1 or any(c not in _USCC_VALUE for c in first17):
        raise IdentifierError(f"USCC body must be 17 characters of {USCC_ALPHABET}")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


_BASE34_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwx"
_BASE34_TABLE: Final = bytes(
    ord(_BASE34_DIGITS[_USCC_VALUE[chr(b)]]) if chr(b) in _USCC_VALUE else ord("~")
    for b in range(256)
)
"""`bytes.translate` table: a USCC character to its value as a base-34 digit, anything else
to `~`, which `int(..., 34)` refuses."""


def is_canonical_uscc(code: str) -> bool:
    """Whether `validate_uscc(code)` would return `code` itself: a quick, sufficient test for
    the hot paths (checks, imports), which leave any other code to `validate_uscc`.

    The weights of GB 32100 are 3**i mod 31 and 34 = 3 (mod 31), so the weighted sum of the
    first 17 values mod 31 is those values read as one base-34 number, lowest first: two C
    calls (`translate`, `int`) instead of a multiply and an add per character.
    """
    if len(code) != USCC_LENGTH or not code.isascii() or code[0] not in USCC_AUTHORITIES:
        return False
    try:
        total = int(code.encode().translate(_BASE34_TABLE)[16::-1], 34)
    except ValueError:  # a character outside the alphabet
        return False
    return code[2:8].isdigit() and USCC_ALPHABET[-total % 31] == code[17]


def validate_uscc(code: str, *, field: str = "subject.id") -> str:
    """Validate a Unified Social Credit Code and return it upper-cased without whitespace."""
    value = _normalise(code)
    if len(value) != USCC_LENGTH:
        raise IdentifierError(
            f"USCC must be {USCC_LENGTH} characters, got {len(value)}", field=field
        )
    bad = sorted({c for c in value if c not in _USCC_VALUE})
    if bad:
        listed = ", ".join(repr(c) for c in bad)
        raise IdentifierError(
            f"USCC contains characters outside its alphabet: {listed}", field=field
        )
    if value[0] not in USCC_AUTHORITIES:
        raise IdentifierError(
            f"USCC registration authority {value[0]!r} is not one of {USCC_AUTHORITIES}",
            field=field,
        )
    if not _is_ascii_digits(value[2:8]):
        raise IdentifierError(
            f"USCC region code {value[2:8]!r} (characters 3-8) must be 6 digits", field=field
        )
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        raise IdentifierError(
            f"USCC check character is {value[17]!r}, expected {expected!r}", field=field
        )
    return value


def cnid_check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character for the 17-digit body of an identity number."""
    if len(first17) != CNID_LENGTH - 1 or not _is_ascii_digits(first17):
        raise IdentifierError("identity number body must be 17 digits")
    total = sum(int(c) * w for c, w in zip(first17, _CNID_WEIGHTS, strict=True))
    return _CNID_CHECK[(12 - total % 11) % 11]


def _has_province(code: str) -> bool:
    return _MIN_PROVINCE <= int(code[:2]) <= _MAX_PROVINCE


def validate_cnid(number: str, *, field: str = "subject.id") -> str:
    """Validate an 18-digit resident identity number and return it (check ``X`` upper-cased)."""
    value = _normalise(number)
    if len(value) != CNID_LENGTH:
        raise IdentifierError(
            f"identity number must be {CNID_LENGTH} characters, got {len(value)}", field=field
        )
    if not _is_ascii_digits(value[:17]) or value[17] not in _CNID_CHECK:
        raise IdentifierError(
            "identity number must be 17 digits followed by a digit or 'X'", field=field
        )
    if not _has_province(value):
        raise IdentifierError(
            f"identity number region {value[:6]!r} has no province code 11-91", field=field
        )
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise IdentifierError(
            f"identity number birth date {value[6:14]!r} is not a calendar date", field=field
        ) from None
    if birth < _MIN_BIRTH:
        raise IdentifierError(
            f"identity number birth date {birth.isoformat()} is before 1900-01-01", field=field
        )
    expected = cnid_check_char(value[:17])
    if value[17] != expected:
        raise IdentifierError(
            f"identity number check character is {value[17]!r}, expected {expected!r}",
            field=field,
        )
    return value


def validate_region(code: str, *, field: str = "region") -> str:
    """Validate a GB/T 2260 administrative region code (6 digits, province 11-91)."""
    value = code.strip()
    if len(value) != _REGION_LENGTH or not _is_ascii_digits(value) or not _has_province(value):
        raise IdentifierError(
            f"region code {value!r} must be 6 digits starting with a province code 11-91",
            field=field,
        )
    return value


def parse_subject_id(value: str, *, field: str = "subject_id") -> SubjectId:
    """Parse ``uscc:<code>`` or ``cnid:<number>`` into a validated, normalised SubjectId."""
    prefix, sep, code = value.strip().partition(":")
    kind = prefix.strip().lower()
    if not sep or kind not in {"uscc", "cnid"}:
        raise IdentifierError(
            f"subject id {value!r} must start with 'uscc:' or 'cnid:'", field=field
        )
    if kind == "uscc":
        return SubjectId(kind="uscc", code=validate_uscc(code, field=field))
    return SubjectId(kind="cnid", code=validate_cnid(code, field=field))


def mask_cnid(number: str) -> str:
    """Keep the first 6 and last 4 characters of an identity number; the rest become '*'."""
    value = number.strip()
    if len(value) <= _MASK_HEAD + _MASK_TAIL:
        return "*" * len(value)
    hidden = len(value) - _MASK_HEAD - _MASK_TAIL
    return value[:_MASK_HEAD] + "*" * hidden + value[-_MASK_TAIL:]


def mask_subject_id(subject_id: str) -> str:
    """Mask the number of a ``cnid:`` subject for public view; other subjects are unchanged."""
    prefix, sep, code = subject_id.strip().partition(":")
    if sep and prefix.strip().lower() == "cnid":
        return f"cnid:{mask_cnid(code)}"
    return subject_id


def _region(rng: random.Random) -> str:
    province = rng.choice(_PROVINCES)
    return f"{province:02d}{rng.randrange(10_000):04d}"


def make_uscc(rng: random.Random) -> str:
    """A random valid USCC, letter-led authorities (A, N, Y) included."""
    body = (
        rng.choice(USCC_AUTHORITIES)
        + rng.choice("123459")
        + _region(rng)
        + "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    )
    return body + uscc_check_char(body)


def make_cnid(rng: random.Random) -> str:
    """A random valid resident identity number born 1900-2020."""
    birth = _MIN_BIRTH + dt.timedelta(days=rng.randrange(44_194))
    body = f"{_region(rng)}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    return body + cnid_check_char(body)
