"""Subject identifiers through the HTTP API, property-based: every valid Unified Social Credit
Code (letter-led registration authorities N, A, Y included) and resident identity number is
accepted, and every single-character corruption of one is refused with 400 naming `subject.id`.

Single substitutions are always caught: both check schemes weigh each position by a weight
that is non-zero modulo a prime (31 for the USCC, 11 for the identity number).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.identifiers import USCC_ALPHABET, make_cnid, make_uscc, uscc_check_char

BASE = {
    "subject": {"id": "", "name": "Subject"},
    "list": "watchlist",
    "domain": "taxation",
    "severity": "general",
    "intent": "unintentional",
    "basis": {"decision_no": "I-0", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2025-09-01T00:00:00+08:00",
}
PROPERTY = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CNID_CHARS = "0123456789X"
USCC_CHARS = USCC_ALPHABET + "IOSVZ"  # the alphabet and the letters GB 32100 leaves out
_numbers = itertools.count(1)


def listing(subject_id: str) -> dict:
    body = copy.deepcopy(BASE)
    body["subject"]["id"] = subject_id
    body["basis"]["decision_no"] = f"I-{next(_numbers)}"  # a fresh decision per example
    return body


def corrupt(code: str, position: int, replacement_index: int, alphabet: str) -> str:
    """`code` with the character at `position` replaced by another one of `alphabet`."""
    position %= len(code)
    others = [c for c in alphabet if c != code[position]]
    return code[:position] + others[replacement_index % len(others)] + code[position + 1 :]


async def accepted(client, headers, subject_id):
    response = await client.post("/v1/listings", json=listing(subject_id), headers=headers)
    assert response.status_code == 201, (subject_id, response.text)
    return response.json()


async def refused(client, headers, subject_id):
    response = await client.post("/v1/listings", json=listing(subject_id), headers=headers)
    assert response.status_code == 400, (subject_id, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == "subject.id", response.text


seeds = st.integers(min_value=0, max_value=2**64)


@PROPERTY
@given(seed=seeds)
@example(seed=0)
async def test_valid_usccs_are_accepted(client, make_agency, seed):
    headers = await _agency(client, make_agency)
    code = make_uscc(random.Random(seed))
    await accepted(client, headers, f"uscc:{code}")


@PROPERTY
@given(
    seed=seeds,
    position=st.integers(min_value=0, max_value=17),
    replacement=st.integers(min_value=0, max_value=64),
)
async def test_corrupted_usccs_are_refused(client, make_agency, seed, position, replacement):
    headers = await _agency(client, make_agency)
    code = make_uscc(random.Random(seed))
    await refused(client, headers, f"uscc:{corrupt(code, position, replacement, USCC_CHARS)}")


@PROPERTY
@given(seed=seeds)
async def test_valid_identity_numbers_are_accepted(client, make_agency, seed):
    headers = await _agency(client, make_agency)
    await accepted(client, headers, f"cnid:{make_cnid(random.Random(seed))}")


@PROPERTY
@given(
    seed=seeds,
    position=st.integers(min_value=0, max_value=17),
    replacement=st.integers(min_value=0, max_value=64),
)
async def test_corrupted_identity_numbers_are_refused(
    client, make_agency, seed, position, replacement
):
    headers = await _agency(client, make_agency)
    number = make_cnid(random.Random(seed))
    await refused(client, headers, f"cnid:{corrupt(number, position, replacement, CNID_CHARS)}")


@PROPERTY
@given(
    authority=st.sampled_from("ANY"),
    rest=st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9),
    region=st.integers(min_value=110000, max_value=659999),
)
async def test_letter_led_usccs_are_accepted(client, make_agency, authority, rest, region):
    headers = await _agency(client, make_agency)
    body = f"{authority}1{region}{rest}"
    created = await accepted(client, headers, f"uscc:{body}{uscc_check_char(body)}")
    state = await client.get(f"/v1/listings/{created['listing_id']}", headers=headers)
    assert state.json()["listing"]["subject"]["id"] == f"uscc:{body}{uscc_check_char(body)}"


async def test_identifiers_are_normalised(client, make_agency):
    headers = await make_agency()
    created = await accepted(client, headers, "USCC: 91350100m000100y43 ")
    state = await client.get(f"/v1/listings/{created['listing_id']}", headers=headers)
    assert state.json()["listing"]["subject"]["id"] == "uscc:91350100M000100Y43"
    # The canonical form is what the read side keys on.
    for _ in range(10):  # 503 while the read model is behind
        profile = await client.get(
            "/v1/subjects/uscc:91350100M000100Y43",
            params={"min_position": created["position"]},
            headers=headers,
        )
        if profile.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert [i["listing_id"] for i in profile.json()["active"]] == [created["listing_id"]]


async def test_known_codes(client, make_agency):
    headers = await make_agency()
    letter_led = "N2320000MB0000000"  # python-stdnum rejects codes like this
    for valid in (
        "uscc:91350100M000100Y43",
        f"uscc:{letter_led}{uscc_check_char(letter_led)}",
        "cnid:11010519491231002X",
    ):
        await accepted(client, headers, valid)
    for invalid in (
        "uscc:91350100M000100Y4",  # 17 characters
        "uscc:91350100M000100I43",  # I is not in the alphabet, and 19 characters
        "uscc:Z1350100M000100Y43",  # no such registration authority
        "uscc:9135A100M000100Y43",  # region code with a letter
        "cnid:11010519491331002X",  # 31 December written as month 13
        "cnid:11010518991231002X",  # before 1900
        "cnid:01010519491231002X",  # no province 01
        "cnid:1101051949123100X2",  # X inside the number
        "person:11010519491231002X",
        "",
    ):
        await refused(client, headers, invalid)


_agencies: dict[int, dict[str, str]] = {}


async def _agency(client, make_agency) -> dict[str, str]:
    """One agency per client (hypothesis runs every example with the same fixtures)."""
    key = id(client)
    if key not in _agencies:
        _agencies.clear()
        _agencies[key] = await make_agency()
    return _agencies[key]
