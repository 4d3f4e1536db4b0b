"""`hub audit export` and `hub audit verify`: an intact export verifies offline; one altered
byte, one removed event or two swapped events fail at that event."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil

import asyncpg
import pytest

from hub.audit.export import EVENTS, LEAVES, export_log
from hub.audit.verify import verify_export
from hub.cli import main
from hub.settings import Settings
from projections.merkle import NoteSigner, hash_from_hex, leaf_hash, verify_consistency

EVENT_COUNT = 11


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    return Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        log_signing_key=NoteSigner.generate("credit-hub.320000/log").private_key(),
        tree_head_every_events=4,
        tree_head_every_seconds=1,
    )


def listing(n: int) -> dict:
    return {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
        "list": "watchlist",
        "domain": "taxation",
        "severity": "general",
        "intent": "unintentional",
        "basis": {"decision_no": f"E-{n}", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2025-09-01T00:00:00+08:00",
    }


@pytest.fixture(name="export_dir")
async def fx_export_dir(client, make_agency, db, tmp_path, clock):
    tax = await make_agency()
    conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
    try:
        for group in range(0, EVENT_COUNT, 4):  # a signed head after each group
            for n in range(group, min(group + 4, EVENT_COUNT)):
                response = await client.post("/v1/listings", json=listing(n), headers=tax)
                assert response.status_code == 201, response.text
            total = await conn.fetchval("SELECT count(*) FROM credit_events")
            for _ in range(400):
                head = (await client.get("/v1/audit/tree-head", headers=tax)).json()
                if head["tree_size"] == total:
                    break
                await asyncio.sleep(0.025)
            assert head["tree_size"] == total
        manifest = await export_log(conn, db.schema, tmp_path / "export", clock, batch=3)
    finally:
        await conn.close()
    assert manifest.events == total
    assert manifest.tree_heads >= 3
    return tmp_path / "export"


def _copy(source, tmp_path, name: str):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def _alter(line: bytes) -> bytes:
    """The line with one byte of its base64 state changed."""
    at = line.index(b'"state":"') + 20
    changed = line[:at] + (b"B" if line[at : at + 1] != b"B" else b"C") + line[at + 1 :]
    assert len(changed) == len(line)
    assert changed != line
    return changed


def _lines(directory) -> list[bytes]:
    return (directory / EVENTS).read_bytes().splitlines(keepends=True)


async def test_intact_export_verifies(export_dir, tmp_path, capsys):
    report = verify_export(export_dir)
    assert report.ok, report.problems
    assert report.events == report.tree_size >= EVENT_COUNT
    assert main(["audit", "verify", str(export_dir)]) == 0
    key = (export_dir / "public_key.txt").read_text().strip()
    assert verify_export(export_dir, key=key).ok
    other = NoteSigner.generate("credit-hub.320000/log").verifier.key
    assert not verify_export(export_dir, key=other).ok


async def test_one_altered_byte_is_named(export_dir, tmp_path):
    target = _copy(export_dir, tmp_path, "altered")
    lines = _lines(target)
    entry = json.loads(lines[6])
    lines[6] = _alter(lines[6])
    (target / EVENTS).write_bytes(b"".join(lines))
    report = verify_export(target)
    assert not report.ok
    assert report.problems[0] == (
        f"event at position {entry['position']} (line 7) altered: leaf hash differs"
    )
    assert main(["audit", "verify", str(target)]) == 1


async def test_removed_event_is_named(export_dir, tmp_path):
    target = _copy(export_dir, tmp_path, "removed")
    lines = _lines(target)
    removed, following = json.loads(lines[4]), json.loads(lines[5])
    del lines[4]
    (target / EVENTS).write_bytes(b"".join(lines))
    report = verify_export(target)
    assert not report.ok
    problem = report.problems[0]
    assert problem.startswith(f"event after position {removed['position'] - 1} missing")
    assert f"before position {following['position']} (line 5)" in problem


async def test_removed_last_event_is_named(export_dir, tmp_path):
    target = _copy(export_dir, tmp_path, "truncated")
    lines = _lines(target)
    last = json.loads(lines[-2])
    (target / EVENTS).write_bytes(b"".join(lines[:-1]))
    report = verify_export(target)
    assert report.problems[0].startswith(f"event missing after position {last['position']}")


async def test_swapped_events_are_named(export_dir, tmp_path):
    target = _copy(export_dir, tmp_path, "swapped")
    lines = _lines(target)
    first, second = json.loads(lines[2]), json.loads(lines[3])
    lines[2], lines[3] = lines[3], lines[2]
    (target / EVENTS).write_bytes(b"".join(lines))
    report = verify_export(target)
    assert report.problems[0] == (
        f"event at position {first['position']} (line 4) reordered: it is swapped with "
        f"position {second['position']} (line 3)"
    )


async def test_leaf_file_altered_with_the_event_still_fails(export_dir, tmp_path):
    target = _copy(export_dir, tmp_path, "both")
    lines = _lines(target)
    lines[1] = _alter(lines[1])
    (target / EVENTS).write_bytes(b"".join(lines))
    leaves = bytearray((target / LEAVES).read_bytes())
    leaves[32:64] = leaf_hash(lines[1].rstrip(b"\n"))
    (target / LEAVES).write_bytes(bytes(leaves))
    report = verify_export(target)
    assert not report.ok
    assert "do not match the signed tree head" in report.problems[0]


async def test_cli_export_then_verify(export_dir, db, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", db.url)
    monkeypatch.setenv("HUB_DATABASE_SCHEMA", db.schema)
    target = tmp_path / "cli"
    code = await asyncio.to_thread(main, ["audit", "export", "--to", str(target)])
    assert code == 0
    assert (target / EVENTS).read_bytes() == (export_dir / EVENTS).read_bytes()
    assert await asyncio.to_thread(main, ["audit", "verify", str(target)]) == 0


async def test_consistency_proofs_link_every_stored_head(export_dir, client, make_agency):
    auditor = await make_agency("320000-audit", scopes=("audit",))
    lines = (export_dir / "tree_heads.jsonl").read_text().splitlines()
    heads = [json.loads(line) for line in lines]
    heads = [h for h in heads if h["tree_size"] > 0]
    assert len(heads) >= 3
    for first, second in itertools.pairwise(heads):
        response = await client.get(
            f"/v1/audit/proof/consistency?first={first['tree_size']}&second={second['tree_size']}",
            headers=auditor,
        )
        assert response.status_code == 200, response.text
        verify_consistency(
            first["tree_size"],
            second["tree_size"],
            hash_from_hex(first["root_hash"]),
            hash_from_hex(second["root_hash"]),
            [hash_from_hex(h) for h in response.json()["proof"]],
        )
