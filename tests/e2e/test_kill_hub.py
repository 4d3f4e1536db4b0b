"""Kill the hub (SIGKILL) while 16 clients create listings; after a restart on the same database
every listing answered 2xx is there, no decision is in the log twice, and resending what got
no answer is 201 or 200, never a duplicate.

The hub runs as a user runs it: `hub serve` in a process of its own.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops.embedded import free_port

pytestmark = pytest.mark.slow

ADMIN_KEY = "hub_admin_e2e_kill"
CLIENTS = 16
KILL_AFTER = 150  # answered listings before the kill
BASE = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme Trading Co."},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "general",
    "intent": "intentional",
    "basis": {"decision_no": "", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}


def listing(decision_no: str) -> dict:
    return BASE | {"basis": BASE["basis"] | {"decision_no": decision_no}}


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own command


class Hub:
    """`hub serve` as a subprocess on a fixed port, its output in a log file."""

    def __init__(self, db, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env |= {
            "HUB_DATABASE_URL": db.url,
            "HUB_DATABASE_SCHEMA": db.schema,
            "HUB_ADMIN_KEY": ADMIN_KEY,
            "HUB_LOG_LEVEL": "warning",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"hub-{self.starts}.log"

    async def start(self) -> None:
        self.starts += 1
        argv = [sys.executable, "-m", "hub.cli", "serve", "--port", str(self.port)]
        self.process = process = spawn(argv, self.env, self.workdir, self.log_path)
        deadline = time.monotonic() + 45
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"the hub exited with {process.returncode}:\n{self.tail()}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"the hub did not get ready:\n{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


async def registered(client: httpx.AsyncClient) -> collections.Counter[str]:
    """Registered events per decision number, read from the log page by page."""
    counts: collections.Counter[str] = collections.Counter()
    after, last = 0, 0
    while True:
        response = await client.get("/v1/events", params={"after": after, "limit": 500})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return counts
        for event in page["events"]:
            assert event["position"] > last
            last = event["position"]
            if event["type"] == "listing.registered":
                counts[event["data"]["decision_no"]] += 1
        after = page["next_after"]


async def agency_key(hub: Hub) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as admin:
        created = await admin.post(
            "/v1/agencies",
            json={
                "code": "320000-tax",
                "name": "Jiangsu Tax",
                "scopes": ["publish", "audit"],
                "domains": ["taxation"],
            },
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['api_key']}"}


async def load_until_killed(hub: Hub, auth: dict[str, str]) -> tuple[dict[str, dict], list[str]]:
    """16 clients post distinct listings; the hub is killed after KILL_AFTER answers.
    Returns (decision -> 2xx answer, decisions that got no answer)."""
    answered: dict[str, dict] = {}
    unanswered: list[str] = []
    enough, killed = asyncio.Event(), asyncio.Event()

    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=hub.url, headers=auth, timeout=10) as client:
            for i in range(100_000):
                decision = f"K-{n}-{i}"
                try:
                    response = await client.post("/v1/listings", json=listing(decision))
                except httpx.TransportError:
                    unanswered.append(decision)
                    return
                assert response.status_code == 201, response.text
                answered[decision] = response.json()
                if len(answered) >= KILL_AFTER:
                    enough.set()
                if killed.is_set():  # answered, though sent while the kill was under way
                    return

    async def killer() -> None:
        await enough.wait()
        hub.kill()
        killed.set()

    await asyncio.wait_for(asyncio.gather(killer(), *(client_loop(n) for n in range(CLIENTS))), 30)
    return answered, unanswered


async def test_sigkill_loses_no_answered_listing_and_duplicates_none(db, tmp_path):
    hub = Hub(db, tmp_path)
    await hub.start()
    try:
        auth = await agency_key(hub)
        answered, unanswered = await load_until_killed(hub, auth)
        assert len(answered) >= KILL_AFTER
        assert unanswered, "the kill interrupted no request"
        assert not set(answered) & set(unanswered)

        await hub.start()
        async with httpx.AsyncClient(base_url=hub.url, headers=auth, timeout=10) as client:
            limit = asyncio.Semaphore(16)

            async def check(decision: str, answer: dict) -> None:
                """An answered listing is there, as it was answered."""
                async with limit:
                    found = await client.get(f"/v1/listings/{answer['listing_id']}")
                assert found.status_code == 200, found.text
                assert found.json()["listing"]["basis"]["decision_no"] == decision
                assert found.json()["events"][0]["position"] == answer["position"]

            await asyncio.gather(*(check(d, a) for d, a in answered.items()))
            counts = await registered(client)
            assert set(answered) <= set(counts)
            assert max(counts.values()) == 1, counts.most_common(3)
            assert set(counts) <= set(answered) | set(unanswered)

            async def resend(decision: str) -> int:
                """No answer: created now (201) or found committed before the kill (200)."""
                async with limit:
                    response = await client.post("/v1/listings", json=listing(decision))
                assert response.status_code in (200, 201), response.text
                assert (response.status_code == 200) == (decision in counts)
                return response.status_code

            statuses = await asyncio.gather(*(resend(d) for d in unanswered))
            assert set(await asyncio.gather(*(resend(d) for d in list(answered)[:20]))) == {200}
            after = await registered(client)
            assert set(after) == set(answered) | set(unanswered)
            assert max(after.values()) == 1
        print(
            f"answered {len(answered)}, unanswered {len(unanswered)} "
            f"(committed before the kill: {statuses.count(200)})"
        )
    finally:
        hub.stop()
