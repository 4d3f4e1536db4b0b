"""Child interpreters of ours (the Merkle hash worker, the bulk-rebuild workers).

`python -c`/`-m` would put the working directory first on the import path, so a child
started from a directory holding a `projections/` of its own would import that instead of
ours. Children run with `-P` (nothing prepended) and find the package where the parent did.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
"""The directory holding the `projections` package this process imported."""


def python(*args: str) -> list[str]:
    """The argv of a child interpreter running `args` (e.g. `-m`, a module of ours)."""
    return [sys.executable, "-P", *args]


def environment() -> dict[str, str]:
    """The child's environment: ours, with our package's directory first on its path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": _ROOT if not path else f"{_ROOT}{os.pathsep}{path}"}
