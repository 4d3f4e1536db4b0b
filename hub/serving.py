"""The HTTP protocol `hub serve` runs: uvicorn's httptools protocol, one write per answer.

uvicorn writes an answer's status line and headers when the app sends
`http.response.start`, and its body when the app sends `http.response.body`: two `write()`
calls on the transport, and uvloop makes each a `send` system call at once. On this machine
a system call costs several microseconds (strace of `hub serve` under load: 2 writes and 1
read per request), which is a tenth of the whole CPU cost of a check. `OneWrite` gives the
protocol a transport whose `write()` gathers what is written within one turn of the event
loop and hands it on as one piece at the end of that turn (`call_soon`): the headers and the
body of an answer leave in one system call. Nothing waits longer than the current turn, and
`close()` hands on what was gathered before it closes, so nothing is lost or reordered.
Everything else (flow control, `is_closing`, extra info, upgrades) is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _GatheringTransport:
    """A transport whose writes within one loop turn reach the real one as one write."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        pending = self._pending
        if pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            pending.append(bytes(data))

    def flush(self) -> None:
        """Hand what was gathered to the real transport (a no-op when nothing is)."""
        pending, self._pending = self._pending, None
        if not pending or self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # an upgrade: what follows is the new protocol's
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWrite(HttpToolsProtocol):
    """uvicorn's httptools protocol on a gathering transport (see the module's docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gathering: Any = _GatheringTransport(transport, asyncio.get_running_loop())
        super().connection_made(gathering)
