"""Subject ids on the check path: the canonical form and the index key, fast.

A canonical USCC (`uscc:` and 18 upper-case characters) is checked here with a few C-level
operations; anything else (a person's number, lower case, white space, an error) goes
through `schemas.identifiers.parse_subject_id`, which normalises it or explains the error.
Both accept exactly the same ids.
"""

from __future__ import annotations

from operator import mul

from hub.errors import InputError
from schemas.identifiers import (
    USCC_ALPHABET,
    USCC_AUTHORITIES,
    IdentifierError,
    parse_subject_id,
)

_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_INVALID = 255
_TABLE = bytes(_VALUE.get(chr(b), _INVALID) for b in range(256))
"""`bytes.translate` table: an ASCII character to its USCC value, 255 when not in the alphabet."""
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CANONICAL_LENGTH = 23


def canonical_subject(value: str, *, field: str = "subject_id") -> str:
    """The canonical `kind:code` of a subject id; InputError naming `field` when invalid."""
    if len(value) == _CANONICAL_LENGTH and value.startswith("uscc:") and value.isascii():
        code = value[5:]
        digits = code.encode().translate(_TABLE)
        if (
            _INVALID not in digits
            and (31 - sum(map(mul, digits, _WEIGHTS)) % 31) % 31 == digits[17]
            and code[0] in USCC_AUTHORITIES
            and code[2:8].isdigit()
        ):
            return value
    try:
        return str(parse_subject_id(value, field=field))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None
