"""`hub.serving.OneWrite` on a real uvicorn server: answers arrive whole and in order, in one
write when the app sends them in one turn, streamed answers and `Connection: close` included."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from hub.serving import OneWrite

WRITES: list[int] = []


class _Counting(OneWrite):
    """OneWrite, counting the writes that reach the real transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real_write = transport.write

        def write(data: Any) -> None:
            WRITES.append(len(data))
            real_write(data)

        transport.write = write  # type: ignore[method-assign]
        super().connection_made(transport)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/stream":  # three pieces, a turn of the loop apart
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b'{"path":"' + scope["path"].encode() + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=_Counting, log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def test_an_answer_leaves_in_one_write_and_pipelined_answers_keep_their_order() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        WRITES.clear()
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await _read_answer(reader)
        second = await _read_answer(reader)
        writer.close()
    assert first[0].startswith(b"HTTP/1.1 200")
    assert first[1] == b'{"path":"/a"}'
    assert second[1] == b'{"path":"/b"}'
    assert len(WRITES) == 2  # headers and body of each answer: one write each time


async def test_a_streamed_answer_arrives_whole_and_a_closing_answer_is_sent_before_close() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await _read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"one,two,three"
        writer.write(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = await _read_answer(reader)
        assert body == b'{"path":"/last"}'
        assert await reader.read() == b""  # then the server closed the connection
        writer.close()
