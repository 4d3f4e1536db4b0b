"""`hub import` and `hub export`: batch docking with city and county systems.

    hub import FILE [--authority CODE] [--errors FILE]    listings from a CSV or XLSX template
    hub export [--list L] [--format csv|xlsx] [--out FILE] the listings in force, same template

Both build the hub as the API does (`hub.bootstrap.build_hub`), without its followers
(`writer_only`); the work is in `hub.batch`, the files in `adapters.batch` /
`adapters.batch_files`, the template in docs/BATCH.md. Import exits 0 when every row went in
(or was already there), 1 when some rows were rejected, 2 when the file could not be read at
all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapters.batch import BatchFileError, RowError, to_template_row
from adapters.batch_files import RowWriter, count_rows, file_format, read_records
from hub.batch import Importer, export_records, wait_for_listings
from hub.bootstrap import build_hub
from hub.progress import progress_bar
from hub.settings import Settings

ERROR_HEADER = ("行号", "列名", "原因")  # row, column, reason


def writer_only(settings: Settings) -> Settings:
    """The settings of `hub import` and `hub export`: none of the followers that act for the
    hub (projections, the check index, the scheduler, webhooks, the tree-head signer; the
    JetStream relay and regional docking, both off without a NATS URL). The API processes'
    followers do that work, or catch up when they start: an import only appends, an export
    runs the listings projection alone (`_export`). A batch process never loads every listing
    in force into memory, never delivers webhooks, and never signs tree heads (with hub.env
    alone it has no signing key, and a key made up for the process would sign heads no
    auditor can check)."""
    return replace(
        settings,
        run_projections=False,
        run_checks=False,
        run_scheduler=False,
        run_webhooks=False,
        nats_url=None,
    )


async def _import(
    settings: Settings, args: argparse.Namespace, report: Callable[[RowError], None]
) -> int:
    path = Path(args.file)
    fmt = file_format(path, args.format)
    total = count_rows(path, fmt=fmt, encoding=args.encoding)
    hub = await build_hub(writer_only(settings))
    try:
        await hub.start()
        importer = Importer(
            hub, authority=args.authority, concurrency=args.concurrency, on_error=report
        )
        with progress_bar() as bar:
            task = bar.add_task(f"importing {path.name}", total=total)
            summary = await importer.run(
                read_records(path, fmt=fmt, encoding=args.encoding),
                lambda n: bar.advance(task, n),
            )
    finally:
        await hub.stop()
    print(f"created {summary.created}, unchanged {summary.unchanged}, rejected {summary.rejected}")
    return 1 if summary.rejected else 0


def cmd_import(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        print("no database: set HUB_DATABASE_URL or start `hub up` first", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        writer = None
        if args.errors:
            out = stack.enter_context(Path(args.errors).open("w", newline="", encoding="utf-8-sig"))
            writer = csv.writer(out)
            writer.writerow(ERROR_HEADER)

        def report(error: RowError) -> None:
            print(f"row {error.row}, {error.column}: {error.reason}", file=sys.stderr)
            if writer:
                writer.writerow((error.row, error.column, error.reason))

        try:
            return asyncio.run(_import(settings, args, report))
        except (BatchFileError, OSError, UnicodeDecodeError) as exc:
            print(f"hub import: {exc}", file=sys.stderr)
            return 2
    return 2  # unreachable; mypy cannot see that ExitStack does not swallow


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out and args.out != "-" else None
    fmt = file_format(out, args.format) if out else file_format(Path("-.csv"), args.format)
    if out is None and fmt == "xlsx":
        print("hub export: XLSX needs --out FILE", file=sys.stderr)
        return 2
    hub = await build_hub(writer_only(settings))
    stop = asyncio.Event()
    listings: asyncio.Task[None] | None = None
    try:
        await hub.start()
        # the read model it exports, current even when no API process runs (else the API's
        # runner holds the projection's lock and this one waits)
        listings = asyncio.create_task(hub.runners["listings"].run(stop, poll_seconds=0.05))
        if not await wait_for_listings(hub, args.wait):
            print(
                "hub export: the listings read model is behind the log; try again", file=sys.stderr
            )
            return 3
        with RowWriter(out or sys.stdout.buffer, fmt) as writer:
            async for records in export_records(hub, list_name=args.list):
                for record in records:
                    writer.write(to_template_row(record))
    finally:
        stop.set()
        if listings is not None:
            await listings
        await hub.stop()
    print(f"exported {writer.count} listings", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        print("no database: set HUB_DATABASE_URL or start `hub up` first", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_export(settings, args))
    except (BatchFileError, OSError) as exc:
        print(f"hub export: {exc}", file=sys.stderr)
        return 2


def register(sub: Any) -> None:
    """Add `import` and `export` to the `hub` command's subparsers."""
    imp = sub.add_parser("import", help="import listings from a CSV or XLSX template")
    imp.add_argument("file", help="a .csv or .xlsx file in the template of docs/BATCH.md")
    imp.add_argument("--authority", help="import every row for this agency code")
    imp.add_argument("--errors", help="also write the bad rows (行号, 列名, 原因) to this CSV")
    imp.add_argument("--format", choices=("csv", "xlsx"), help="default: from the file name")
    imp.add_argument("--encoding", default="utf-8-sig", help="CSV encoding (e.g. gb18030)")
    imp.add_argument(
        "--concurrency",
        type=int,
        default=512,
        help="rows sent one by one at once (a repeat the bulk write cannot take)",
    )
    imp.set_defaults(func=cmd_import)
    exp = sub.add_parser("export", help="export the listings in force to the template")
    exp.add_argument("--list", choices=("blacklist", "watchlist", "market_ban", "redlist"))
    exp.add_argument("--format", choices=("csv", "xlsx"), help="default: from --out, else csv")
    exp.add_argument("--out", help="file to write (default: CSV on standard output)")
    exp.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the read model")
    exp.set_defaults(func=cmd_export)
