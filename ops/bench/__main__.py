"""Run benches: `python -m ops.bench [name ...] [-- bench options]`.

Without names, every bench module in this package runs (`ops/bench/<name>.py`), each in an
interpreter of its own, so none measures in a heap, collector and pools another has filled;
its `main(args)` prints a table. Options after `--` go to every bench named.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
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
    chosen = names or known
    results: dict[str, Any] = {}
    if len(chosen) > 1:  # each in a fresh interpreter: no heap, collector or pools left over
        failed = []
        for name in chosen:
            print(f"\n== {name} ==", flush=True)
            args = [sys.executable, "-m", "ops.bench", name, "--", *rest]
            done = subprocess.run(args, check=False)
            results[name] = done.returncode
            if done.returncode:
                failed.append(name)
        if failed:
            print(f"\nbenches that failed: {', '.join(failed)}", file=sys.stderr)
            raise SystemExit(1)
        return results
    module = importlib.import_module(f"ops.bench.{chosen[0]}")
    results[chosen[0]] = module.main(rest)
    return results


if __name__ == "__main__":
    main()
