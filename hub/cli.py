"""The `hub` command.

    hub up            embedded PostgreSQL and NATS under ./.hub, then the API (what `make up` runs)
    hub serve         the API against external servers (HUB_DATABASE_URL, HUB_NATS_URL)
    hub events tail   print the credit log as JSON lines, optionally following it
    hub settings      every HUB_ variable with its value and meaning
    hub replay        rebuild a read model from position 0; `--verify` compares it with a replay
    hub project       run the read-model projections in a process of their own

`hub up` writes `<data dir>/hub.env` with the URLs it started, so the other commands find the
embedded servers without any variable set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hub.logs import configure_logging
from hub.settings import Settings

ENV_FILE = "hub.env"


def _load_env_file(data_dir: Path) -> None:
    """Fill unset HUB_ variables from the file `hub up` wrote."""
    path = data_dir / ENV_FILE
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("HUB_") and not os.environ.get(key):
            os.environ[key] = value


def _admin_key(data_dir: Path) -> tuple[str, bool]:
    path = data_dir / "admin_key"
    if path.exists():
        return path.read_text().strip(), False
    key = "hub_admin_" + secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key, True


def _serve(settings: Settings, workers: int = 1) -> None:
    import uvicorn  # noqa: PLC0415 - only the serving commands need it

    from hub.serving import OneWrite  # noqa: PLC0415 - uvicorn's protocol, one write per answer

    if workers > 1:
        uvicorn.run(
            "hub.api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            loop="uvloop",
            http=OneWrite,
            log_level="warning",
            access_log=False,
        )
        return
    from hub.api.app import create_app  # noqa: PLC0415

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=OneWrite,
        log_level="warning",
        access_log=False,
    )


def cmd_up(args: argparse.Namespace) -> int:
    from ops.embedded import EmbeddedNats, EmbeddedPostgres  # noqa: PLC0415

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    stack = contextlib.ExitStack()
    with stack:
        database_url = settings.database_url
        if not database_url:
            print(f"starting embedded PostgreSQL in {data_dir / 'postgres'} ...", flush=True)
            database_url = stack.enter_context(EmbeddedPostgres(data_dir / "postgres")).url
        nats_url = settings.nats_url
        if not nats_url:
            print(f"starting embedded NATS in {data_dir / 'nats'} ...", flush=True)
            nats_url = stack.enter_context(EmbeddedNats(data_dir / "nats")).url
        admin_key, created = (
            (settings.admin_key, False) if settings.admin_key else _admin_key(data_dir)
        )
        from hub.cli_audit import signing_key  # noqa: PLC0415 - the log's key in the data dir

        settings = replace(
            settings,
            database_url=database_url,
            nats_url=nats_url,
            admin_key=admin_key,
            log_signing_key=signing_key(settings, data_dir),
            port=args.port or settings.port,
            data_dir=str(data_dir),
        )
        (data_dir / ENV_FILE).write_text(
            f"HUB_DATABASE_URL={database_url}\nHUB_NATS_URL={nats_url}\n"
            f"HUB_API_URL=http://{settings.host}:{settings.port}\n"
        )
        print(f"database  {database_url}\nnats      {nats_url}", flush=True)
        print(f"api       http://{settings.host}:{settings.port}  (docs at /docs)", flush=True)
        if created:
            print(f"admin key {admin_key}  (saved in {data_dir / 'admin_key'})", flush=True)
        else:
            print(f"admin key in {data_dir / 'admin_key'} or HUB_ADMIN_KEY", flush=True)
        # uvicorn re-raises SIGTERM after its shutdown, which would kill us before the
        # servers we started are stopped: turn it into a normal exit that unwinds the stack.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _serve(settings)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        print("hub serve needs HUB_DATABASE_URL (or use `hub up`)", file=sys.stderr)
        return 2
    if args.port:
        settings = replace(settings, port=args.port)
        os.environ["HUB_PORT"] = str(args.port)
    _serve(settings, workers=args.workers)
    return 0


async def _tail(settings: Settings, after: int, follow: bool, limit: int) -> None:
    import asyncpg  # noqa: PLC0415
    import msgspec  # noqa: PLC0415

    from projections import read_events  # noqa: PLC0415
    from schemas.log import to_log_event  # noqa: PLC0415

    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    encoder = msgspec.json.Encoder()
    try:
        printed = 0
        while True:
            batch = await read_events(conn, after, 1000)
            for raw in batch:
                sys.stdout.buffer.write(encoder.encode(to_log_event(raw)) + b"\n")
                printed += 1
                if limit and printed >= limit:
                    return
            sys.stdout.flush()
            if batch:
                after = batch[-1].position
            elif not follow:
                return
            else:
                await asyncio.sleep(0.5)
    finally:
        await conn.close()


def cmd_events_tail(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        print("no database: set HUB_DATABASE_URL or start `hub up` first", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(settings, args.after, args.follow, args.limit))
    return 0


def cmd_settings(_: argparse.Namespace) -> int:
    for name, value, doc in Settings.from_env().describe():
        print(f"{name:28} {value:40} {doc}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hub", description="The joint credit hub.")
    top.add_argument(
        "--data-dir",
        default=os.environ.get("HUB_DATA_DIR", ".hub"),
        help="where embedded servers keep their data (default ./.hub)",
    )
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start embedded PostgreSQL and NATS, then the API")
    up.add_argument("--port", type=int, default=None, help="API port (default 8080)")
    up.add_argument("--data-dir", default=argparse.SUPPRESS, help="as `hub --data-dir`")
    up.set_defaults(func=cmd_up)
    serve = sub.add_parser("serve", help="serve the API against external servers")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1, help="API processes (stateless)")
    serve.set_defaults(func=cmd_serve)
    events = sub.add_parser("events", help="the credit log").add_subparsers(
        dest="events_command", required=True
    )
    tail = events.add_parser("tail", help="print events as JSON lines")
    tail.add_argument("--after", type=int, default=0, help="start after this position")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--limit", type=int, default=0, help="stop after this many events")
    tail.set_defaults(func=cmd_events_tail)
    sub.add_parser("settings", help="show every setting").set_defaults(func=cmd_settings)
    from hub import cli_replay  # noqa: PLC0415 - keeps `hub --help` light

    cli_replay.register(sub)
    from hub import cli_batch  # noqa: PLC0415 - `hub import` / `hub export`

    cli_batch.register(sub)
    from hub import cli_audit  # noqa: PLC0415 - `hub audit export` / `hub audit verify`

    cli_audit.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "up":
        _load_env_file(Path(args.data_dir))
    # JSON lines: the long-running processes on stdout (`up` and `serve` through the app),
    # the other commands on stderr, their stdout being their output (`hub export > f.csv`)
    if args.command not in ("up", "serve"):
        level = os.environ.get("HUB_LOG_LEVEL", Settings.log_level)  # as `Settings.from_env`
        configure_logging(level, stderr=args.command != "project")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
