"""Subject ids on the check path: the canonical form and the index key, fast.

A canonical USCC (`uscc:` and 18 upper-case characters) is checked here with a few C-level
operations; anything else (a person's number, lower case, white space, an error) goes
through `schemas.identifiers.parse_subject_id`, which normalises it or explains the error.
Both accept exactly the same ids.

The check character: the weights of GB 32100 are 3**i mod 31, so the weighted sum of the
first 17 values mod 31 is those values read as a number in base 34 (34 = 3 mod 31), lowest
first, mod 31. `bytes.translate` turns each character into its value as a base-34 digit and
`int(..., 34)` reads them: two C calls instead of a multiply and an add per character.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from hub.errors import InputError
from projections.checkindex import subject_key
from schemas.identifiers import (
    USCC_ALPHABET,
    USCC_AUTHORITIES,
    IdentifierError,
    parse_subject_id,
)

_BASE = 34
_DIGITS = (string.digits + string.ascii_lowercase)[:_BASE]
_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_TABLE = bytes(ord(_DIGITS[_VALUE[chr(b)]]) if chr(b) in _VALUE else ord("~") for b in range(256))
"""`bytes.translate` table: a character to its USCC value as a base-34 digit; `~` (which
`int` refuses) when not in the alphabet."""
_CANONICAL_LENGTH = 23


def _canonical_uscc(value: str) -> bool:
    """Whether `value` is a canonical USCC id (only `parse_subject_id` explains a no)."""
    if len(value) != _CANONICAL_LENGTH or value[:5] != "uscc:" or not value.isascii():
        return False
    code = value[5:]
    try:
        total = int(code.encode().translate(_TABLE)[16::-1], _BASE)
    except ValueError:  # a character outside the alphabet
        return False
    return (
        USCC_ALPHABET[-total % 31] == code[17]
        and code[0] in USCC_AUTHORITIES
        and code[2:8].isdigit()
    )


def canonical_subject(value: str, *, field: str = "subject_id") -> str:
    """The canonical `kind:code` of a subject id; InputError naming `field` when invalid."""
    if _canonical_uscc(value):
        return value
    try:
        return str(parse_subject_id(value, field=field))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None


def canonical_subject_key(value: str) -> tuple[str, int]:
    """`canonical_subject(value)` and its `subject_key`, for one check: a canonical USCC (the
    usual case) is tested inline and keyed without a call, as in `canonical_subjects`."""
    if len(value) == _CANONICAL_LENGTH and value[:5] == "uscc:" and value.isascii():
        code = value[5:]
        try:
            total = int(code.encode().translate(_TABLE)[16::-1], _BASE)
        except ValueError:  # outside the alphabet: parse_subject_id explains
            total = -1
        if (
            total >= 0
            and USCC_ALPHABET[-total % 31] == code[17]
            and code[0] in USCC_AUTHORITIES
            and code[2:8].isdigit()
        ):
            return value, int(code, 36) << 1  # subject_key of a canonical USCC
    subject = canonical_subject(value)
    return subject, subject_key(subject)


def canonical_subjects(values: Sequence[str], *, prefix: str) -> tuple[list[str], list[int]]:
    """The canonical ids and index keys of many subject ids (a batch), as `canonical_subject`
    and `subject_key` give them one by one; InputError naming `<prefix>.<i>.subject_id`.

    The canonical USCC test is inlined (no call per id): most of a batch's cost is per item."""
    subjects: list[str] = []
    keys: list[int] = []
    add_subject, add_key = subjects.append, keys.append
    table, alphabet, authorities = _TABLE, USCC_ALPHABET, USCC_AUTHORITIES
    for value in values:
        if len(value) == _CANONICAL_LENGTH and value[:5] == "uscc:" and value.isascii():
            code = value[5:]
            try:
                total = int(code.encode().translate(table)[16::-1], _BASE)
            except ValueError:  # outside the alphabet: parse_subject_id explains
                total = -1
            if (
                total >= 0
                and alphabet[-total % 31] == code[17]
                and code[0] in authorities
                and code[2:8].isdigit()
            ):
                add_subject(value)
                add_key(int(code, 36) << 1)  # subject_key of a canonical USCC
                continue
        try:
            subject = canonical_subject(value)
        except InputError as exc:
            raise InputError(exc.detail, field=f"{prefix}.{len(subjects)}.{exc.field}") from None
        add_subject(subject)
        add_key(subject_key(subject))
    return subjects, keys
