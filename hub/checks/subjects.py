"""Subject ids on the check path: the canonical form and the index key, fast.

A canonical USCC (`uscc:` and 18 upper-case characters) is recognised by
`schemas.identifiers.is_canonical_uscc`, a few C-level operations; anything else (a person's
number, lower case, white space, an error) goes through `schemas.identifiers.parse_subject_id`,
which normalises it or explains the error. Both accept exactly the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.errors import InputError
from projections.checkindex import subject_key
from schemas.identifiers import IdentifierError, is_canonical_uscc, parse_subject_id


def canonical_subject(value: str, *, field: str = "subject_id") -> str:
    """The canonical `kind:code` of a subject id; InputError naming `field` when invalid."""
    if value[:5] == "uscc:" and is_canonical_uscc(value[5:]):
        return value
    try:
        return str(parse_subject_id(value, field=field))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None


def canonical_subject_key(value: str) -> tuple[str, int]:
    """`canonical_subject(value)` and its `subject_key`, for one check: a canonical USCC (the
    usual case) is keyed inline, as `subject_key` would key it."""
    if value[:5] == "uscc:" and is_canonical_uscc(value[5:]):
        return value, int(value[5:], 36) << 1  # subject_key of a canonical USCC
    subject = canonical_subject(value)
    return subject, subject_key(subject)


def canonical_subjects(values: Sequence[str], *, prefix: str) -> tuple[list[str], list[int]]:
    """The canonical ids and index keys of many subject ids (a batch), as `canonical_subject`
    and `subject_key` give them one by one; InputError naming `<prefix>.<i>.subject_id`.

    A canonical USCC (most of a batch) is keyed inline: most of a batch's cost is per item."""
    subjects: list[str] = []
    keys: list[int] = []
    add_subject, add_key = subjects.append, keys.append
    canonical = is_canonical_uscc
    for value in values:
        if value[:5] == "uscc:" and canonical(value[5:]):
            add_subject(value)
            add_key(int(value[5:], 36) << 1)  # subject_key of a canonical USCC
            continue
        try:
            subject = canonical_subject(value)
        except InputError as exc:
            raise InputError(exc.detail, field=f"{prefix}.{len(subjects)}.{exc.field}") from None
        add_subject(subject)
        add_key(subject_key(subject))
    return subjects, keys
