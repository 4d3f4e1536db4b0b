"""`hub audit`: export the log with its signed tree heads, and verify an export offline.

    hub audit export --to DIR     the log up to the latest signed head, heads, keys (docs/AUDIT.md)
    hub audit verify DIR          recompute leaves and roots, check every signature; no database
                [--key KEY]       trust only this verifier key (from GET /v1/audit/public-key)

`verify` exits 0 when the export holds, 1 naming the first altered, missing or reordered
event, 2 when the export cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rich.progress import (
    TaskID,
)

from hub.progress import console, progress_bar
from hub.settings import Settings


async def _export(settings: Settings, dest: Path, batch: int) -> int:
    import asyncpg  # noqa: PLC0415 - only export needs the database

    from hub.audit.export import ExportError, export_log  # noqa: PLC0415
    from hub.clock import SystemClock  # noqa: PLC0415

    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": f'"{settings.database_schema}"'}
    )
    try:
        with progress_bar() as progress:
            task: list[TaskID] = []

            def start(total: int) -> None:
                task.append(progress.add_task("exporting events", total=total))

            def advance(n: int) -> None:
                progress.advance(task[0], n)

            manifest = await export_log(
                conn,
                settings.database_schema,
                dest,
                SystemClock(),
                batch=batch,
                on_start=start,
                progress=advance,
            )
    except ExportError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    except asyncpg.UndefinedTableError:
        console.print(f"[red]schema {settings.database_schema} holds no audit tables yet[/red]")
        return 2
    finally:
        await conn.close()
    console.print(
        f"exported {manifest.events} events and {manifest.tree_heads} signed tree heads to "
        f"{dest}\nroot {manifest.root_hash} at size {manifest.tree_size} ({manifest.origin})"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        print("no database: set HUB_DATABASE_URL or start `hub up` first", file=sys.stderr)
        return 2
    return asyncio.run(_export(settings, Path(args.to), args.batch))


def _count(directory: Path) -> int:
    """Events in the export, from its manifest (counted when there is none)."""
    import json  # noqa: PLC0415

    from hub.audit.export import EVENTS, MANIFEST  # noqa: PLC0415

    try:
        return int(json.loads((directory / MANIFEST).read_text())["events"])
    except (OSError, ValueError, KeyError, TypeError):
        with (directory / EVENTS).open("rb") as lines:
            return sum(1 for _ in lines)


def cmd_verify(args: argparse.Namespace) -> int:
    from hub.audit.export import EVENTS  # noqa: PLC0415
    from hub.audit.verify import verify_export  # noqa: PLC0415

    directory = Path(args.directory)
    if not (directory / EVENTS).is_file():
        console.print(f"[red]{directory} holds no {EVENTS}: not an export[/red]")
        return 2
    with progress_bar() as progress:
        total = _count(directory)
        task = progress.add_task("verifying events", total=total)
        report = verify_export(
            directory, key=args.key, progress=lambda n: progress.advance(task, n)
        )
    if report.ok:
        console.print(
            f"[green]ok[/green]: {report.events} events, {report.heads} signed tree heads, "
            f"size {report.tree_size}"
        )
        return 0
    for problem in report.problems:
        console.print(f"[red]FAILED[/red]: {problem}")
    return 1


def signing_key(settings: Settings, data_dir: Path) -> str:
    """The log's signer key for `hub up`: from settings, else kept in the data dir."""
    from hub.audit.keys import key_file  # noqa: PLC0415

    return settings.log_signing_key or key_file(data_dir, settings.hub_id)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="export and verify the signed log").add_subparsers(
        dest="audit_command", required=True
    )
    export = audit.add_parser("export", help="write the log, its tree heads and keys to DIR")
    export.add_argument("--to", required=True, metavar="DIR", help="directory to write")
    export.add_argument("--batch", type=int, default=5000, help="events read per query")
    export.set_defaults(func=cmd_export)
    verify = audit.add_parser("verify", help="verify an export offline (no database)")
    verify.add_argument("directory", metavar="DIR")
    verify.add_argument("--key", default=None, help="trust only this note verifier key")
    verify.set_defaults(func=cmd_verify)
