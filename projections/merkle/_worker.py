"""A process that hashes leaf blocks into their roots beside the appending one.

Appending spends about as much CPU on the internal nodes (one node hash per leaf, mostly
per-call overhead) as on the leaf hashes; `HashWorker` moves the nodes of whole blocks (levels 1
to 8, all but ~1/256 of them) to a second process, so that an append uses two cores. The
appender hands over the leaf hashes of each chunk's completed blocks while it hashes the next
chunk, and waits only for the last chunk (`MerkleAppender`).

The worker runs `main()` in a fresh `python -c`, not multiprocessing spawn (which imports the
caller's main module in the child). It reads requests on stdin and answers on stdout, in
order: a request is a 4-byte length and k * 8 KiB of leaf hashes, the answer a 4-byte length,
the worker's CPU time so far (a double, for benches) and the k block roots. It computes them
with `block_roots`, the function the appender uses in-process, so the trees are the same.

The worker exits when its stdin closes (`close()`, or the parent's death); it ignores SIGINT.
If it dies, the pending and later requests fail with `HashWorkerError` and the appender hashes
in-process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import struct
import sys
import time

import structlog

from projections._child import environment, python
from projections.merkle._edge import BLOCK_BYTES, block_roots
from projections.merkle._errors import MerkleError

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct("<I")
_CPU = struct.Struct("<d")


class HashWorkerError(MerkleError):
    """The hash worker is gone (or gave a malformed answer)."""


class HashWorker:
    """A worker process hashing block roots. Build it with `await HashWorker.start()`, in the
    event loop that uses it; `await close()` ends it."""

    def __init__(self, process: asyncio.subprocess.Process, stdin: asyncio.WriteTransport) -> None:
        self.process = process
        self._stdin = stdin
        self.cpu_time = 0.0
        """The worker's CPU time (time.process_time()) as of its last answer."""
        self._pending: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._alive = True
        self._reader = asyncio.ensure_future(self._read_answers())

    @classmethod
    async def start(cls) -> HashWorker:
        # The request pipe is made here, not by the loop: uvloop (the loop `hub serve` runs)
        # gives a subprocess a socket pair for stdin, whose buffer cannot be widened past
        # `net.core.wmem_max`, and hides it (`get_extra_info("pipe")` is None; an earlier
        # version failed on that, and the hub hashed in-process).
        read_end, write_end = os.pipe()
        try:
            _widen(write_end)
            process = await asyncio.create_subprocess_exec(
                *python("-c", f"from {__name__} import main; main()"),
                stdin=read_end,
                stdout=asyncio.subprocess.PIPE,
                env=environment(),
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        try:
            pipe = os.fdopen(write_end, "wb", buffering=0)
        except BaseException:
            os.close(write_end)
            process.kill()
            raise
        try:
            stdin, _ = await asyncio.get_running_loop().connect_write_pipe(asyncio.Protocol, pipe)
        except BaseException:
            pipe.close()
            process.kill()
            raise
        log.info("merkle_hash_worker_started", pid=process.pid)
        return cls(process, stdin)

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int:
        return self.process.pid

    def submit(self, blocks: bytes | memoryview) -> asyncio.Future[bytes] | None:
        """Send whole blocks' leaf hashes; the future gives their roots. None if the worker is
        gone. `blocks` may be reused as soon as this returns (the pipe or its buffer has it)."""
        if len(blocks) % BLOCK_BYTES:
            raise ValueError("whole blocks only")
        stdin = self._stdin
        if not self._alive or stdin.is_closing():
            return None
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            stdin.write(b"".join((_LENGTH.pack(len(blocks)), blocks)))  # one write(2)
        except (OSError, RuntimeError) as exc:
            self._gone(exc)
            return None
        self._pending.append(future)
        return future

    async def _read_answers(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None  # noqa: S101 - created with stdout=PIPE
        data = b""
        try:
            while chunk := await stdout.read(1 << 16):  # all the answers that have come
                data += chunk
                while len(data) >= _LENGTH.size:
                    (length,) = _LENGTH.unpack_from(data)
                    end = _LENGTH.size + length
                    if len(data) < end:
                        break
                    (self.cpu_time,) = _CPU.unpack_from(data, _LENGTH.size)
                    future = self._pending.popleft()
                    if not future.done():  # not abandoned by a failed append
                        future.set_result(data[_LENGTH.size + _CPU.size : end])
                    data = data[end:]
            self._gone(EOFError("the hash worker closed its output"))
        except asyncio.CancelledError:
            self._gone(None)
            raise
        except (IndexError, OSError, struct.error) as exc:
            self._gone(exc)

    def _gone(self, exc: BaseException | None) -> None:
        if self._alive and exc is not None:  # not closed by us: a crash, or killed
            log.warning("merkle_hash_worker_gone", pid=self.process.pid, error=repr(exc))
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self._alive = False
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(HashWorkerError("the hash worker is gone"))
                future.exception()  # retrieved: whoever awaits it still gets it

    async def close(self) -> None:
        """End the worker: close its stdin, wait for it (kill it after 5 s)."""
        self._alive = False
        if not self._stdin.is_closing():
            self._stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


PIPE_BYTES = 1 << 20
"""Capacity of the request pipe: two rounds of leaf hashes. The appender hashes without
yielding to the event loop, which alone would flush requests the pipe cannot take at once, so
with the default 64 KiB the worker would get a round's first chunk only."""


def _widen(fd: int) -> None:
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError as exc:  # over /proc/sys/fs/pipe-max-size: slower, still right
        log.warning("merkle_hash_worker_pipe", error=repr(exc))


async def start_hash_worker(workers: int) -> HashWorker | None:
    """The hash worker for a `HUB_MERKLE_HASH_WORKERS` setting: None for 0 (hash in-process)
    or when it cannot start (logged: appends then hash in-process)."""
    if workers <= 0:
        return None
    try:
        return await HashWorker.start()
    except OSError as exc:
        log.warning("merkle_hash_worker_failed", error=repr(exc))
        return None


def main() -> None:
    """The worker: answer requests until stdin closes."""
    # Ctrl-C reaches the whole process group: the parent ends the worker when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    read = sys.stdin.buffer.read
    out = sys.stdout.buffer
    try:
        while header := read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            data = read(length)
            if len(data) != length:
                return
            roots = block_roots(data)
            out.write(_LENGTH.pack(_CPU.size + len(roots)))
            out.write(_CPU.pack(time.process_time()) + roots)
            out.flush()
    except BrokenPipeError:  # the parent is gone
        return
