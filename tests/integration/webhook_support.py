"""Helpers for the webhook tests: a minimal HTTP/1.1 receiver on 127.0.0.1 (asyncio streams,
keep-alive) that records every request and can be told to fail; fixtures; API shortcuts.

`Receiver.respond` decides the status per request; `fail_next(n)` makes the next n answer 503.
The app runs on the test client's own event loop (a thread): `on_app` runs a coroutine there.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from standardwebhooks.webhooks import Webhook

from schemas.identifiers import make_uscc


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    requests: list[Request] = field(default_factory=list)
    respond: Callable[[Request], int] = field(default=lambda _: 204)
    failures_left: int = 0
    server: asyncio.Server | None = None
    port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int) -> None:
        self.failures_left = n

    def at(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def wait_for(self, count: int, within: float = 10.0) -> list[Request]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), within
            )
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(path, headers, body, time.time())
                if self.failures_left > 0:
                    self.failures_left -= 1
                    status = 503
                else:
                    status = self.respond(request)
                async with self._arrived:
                    self.requests.append(request)
                    self._arrived.notify_all()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode("latin-1"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


BASE = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {"decision_no": "D-0", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}
_numbers = itertools.count(1)
_rng = random.Random(20250303)


def new_subject() -> str:
    return f"uscc:{make_uscc(_rng)}"


@pytest.fixture(name="settings")
def fx_settings(settings):
    return dataclasses.replace(settings, run_webhooks=False)


@pytest.fixture(name="receiver")
async def fx_receiver():
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


def worker(client):
    return client.app.state.hub.webhooks


async def on_app(client, fn, *args):
    """Run `fn(*args)` on the app's event loop (the test client runs it in its own thread)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def run_once(client):
    return await on_app(client, worker(client).run_once)


async def stats(client):
    return await on_app(client, worker(client).stats)


async def list_subject(client, headers, subject, **changes):
    body = copy.deepcopy(BASE)
    body["subject"]["id"] = subject
    body["basis"]["decision_no"] = f"苏税罚〔2025〕{next(_numbers)}号"  # noqa: RUF001
    body.update(changes)
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def delist(client, headers, listing_id):
    response = await client.post(
        f"/v1/listings/{listing_id}/delist",
        json={"reason": "corrected", "note": "纠错"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def subscribe(client, headers, url, **body):
    response = await client.post("/v1/subscriptions", json={"url": url, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(client, headers, sub_id, status=None):
    query = f"?status={status}" if status else ""
    response = await client.get(f"/v1/subscriptions/{sub_id}/deliveries{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def verify(secret, request):
    return Webhook(secret).verify(request.body, request.headers)


def subjects_of(requests):
    return [r.json["subject"] for r in requests]
