"""Run benches: `python -m ops.bench [name ...] [-- bench options]`.

Without names, every bench module in this package runs (`ops/bench/<name>.py`); each is
imported only when it runs, and its `main(args)` prints a table and returns a dict. Options
after `--` go to every bench named.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any


def available() -> list[str]:
    """The benches in this package, by module name."""
    here = str(Path(__file__).parent)
    return sorted(
        m.name for m in pkgutil.iter_modules([here]) if not m.name.startswith("_") and not m.ispkg
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    names, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"no bench {', '.join(unknown)}; there are: {', '.join(known)}", file=sys.stderr)
        raise SystemExit(2)
    results: dict[str, Any] = {}
    for name in names or known:
        print(f"\n== {name} ==", flush=True)
        module = importlib.import_module(f"ops.bench.{name}")
        results[name] = module.main(rest)
    return results


if __name__ == "__main__":
    main()
