"""`hub up` as `make up` runs it: embedded PostgreSQL and NATS from their wheels, the API, an
admin key in the data dir; a SIGTERM stops the hub and the servers it started. And the README's
first block names `make up` and `make test` (its curl session is run by
tests/integration/test_listings_readme.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from ops.embedded import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own command


def logged_errors(log_path: Path) -> list[str]:
    """The error and critical lines of a hub's JSON log."""
    return [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if '"level":"error"' in line or '"level":"critical"' in line
    ]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block, in order."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.slow
async def test_hub_up_serves_with_embedded_servers_and_stops_them(tmp_path):
    port = free_port()
    data_dir = tmp_path / "hub-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    log_path = tmp_path / "hub-up.log"
    process = spawn(
        [sys.executable, "-m", "hub.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
        env,
        tmp_path,
        log_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)

            admin_key = (data_dir / "admin_key").read_text().strip()
            assert admin_key.startswith("hub_admin_")
            assert admin_key in log_path.read_text()  # printed for the user, once
            agency = await client.post(
                "/v1/agencies",
                json={
                    "code": "320000-tax",
                    "name": "Jiangsu Tax",
                    "scopes": ["publish", "audit"],
                    "domains": ["taxation"],
                },
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            assert agency.status_code == 201, agency.text
            key = {"Authorization": f"Bearer {agency.json()['api_key']}"}
            created = await client.post(
                "/v1/listings",
                json={
                    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
                    "list": "redlist",
                    "domain": "taxation",
                    "basis": {"decision_no": "UP-1", "legal_basis": "l", "facts": "f"},
                    "region": "320100",
                    "effective_from": "2025-03-01T00:00:00+08:00",
                    "effective_until": "2026-03-01T00:00:00+08:00",
                },
                headers=key,
            )
            assert created.status_code == 201, created.text
            events = await client.get("/v1/events", headers=key)
            listed = [e for e in events.json()["events"] if e["type"].startswith("listing.")]
            assert [e["type"] for e in listed] == ["listing.registered"]

        written = dict(
            line.split("=", 1) for line in (data_dir / "hub.env").read_text().splitlines()
        )
        pg = conninfo_to_dict(written["HUB_DATABASE_URL"])
        pg_host, pg_port = str(pg.get("host") or "127.0.0.1"), int(pg.get("port") or 5432)
        nats = urlsplit(written["HUB_NATS_URL"].split(",")[0])
        servers = [(pg_host, pg_port), (nats.hostname or "127.0.0.1", nats.port or 4222)]
        assert all(port_open(host, p) for host, p in servers)
        assert (data_dir / "postgres").is_dir()

        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        assert time.monotonic() - stopping < 15
        left = [f"{host}:{p}" for host, p in [("127.0.0.1", port), *servers] if port_open(host, p)]
        assert not left, f"still listening after `hub up` got SIGTERM: {left}"
        assert process.returncode in (0, 143), log_path.read_text(errors="replace")[-3000:]
        # a served hub differs from the tests' (uvloop, its own processes): nothing it did
        # here may have logged an error (the merkle hash worker once failed only here)
        assert not (errors := logged_errors(log_path)), "\n".join(errors)[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        stop_leftovers(data_dir)


def stop_leftovers(data_dir: Path) -> None:
    """Stop the embedded servers this test's hub started, if it left them running: found by
    their data directory (unique to this test) on their command line, ended by pid."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if os.fsencode(str(data_dir)) in cmdline and b"postgres" in cmdline.split(b"\0")[0]:
            if b"-D" in cmdline.split(b"\0"):  # the postmaster, not its children
                os.kill(int(proc.name), signal.SIGQUIT)
        elif os.fsencode(str(data_dir)) in cmdline and b"nats-server" in cmdline:
            os.kill(int(proc.name), signal.SIGTERM)


def test_readme_opens_with_make_up_and_make_test():
    blocks = fenced_blocks(README.read_text())
    assert blocks, "README has no code block"
    first = blocks[0][1]
    assert re.search(r"^make up\b", first, flags=re.MULTILINE), first
    assert re.search(r"^make test\b", first, flags=re.MULTILINE), first
