"""structlog as JSON lines, with request id, agency and listing id bound per request through
context variables: on stdout for the servers (`hub up`, `hub serve`), on stderr for the other
commands, whose stdout is their output (`hub export > listings.csv`)."""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=str)


def _serialize(event: object, **_: object) -> bytes:
    """structlog passes `default=`; msgspec's encoder has its own hook."""
    return _encoder.encode(event)


class _Stream:
    """Whatever `sys.stdout` (or `sys.stderr`) is when a line is written (a test's capture, a
    redirect)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, data: bytes) -> int:
        written: int = getattr(sys, self.name).buffer.write(data)
        return written

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def configure_logging(level: str = "info", *, stderr: bool = False) -> None:
    """JSON lines at `level` and above, on stdout (or stderr: a command's own output is on
    stdout)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stream = sys.stderr if stderr else sys.stdout
    sink = _Stream("stderr" if stderr else "stdout")
    logging.basicConfig(stream=stream, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
