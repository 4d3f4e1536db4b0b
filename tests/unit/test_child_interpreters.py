"""Our child interpreters import our package, not one in their working directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import projections
from projections._child import environment, python


def test_a_decoy_package_in_the_working_directory_is_not_imported(tmp_path: Path) -> None:
    decoy = tmp_path / "projections"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy was imported')\n")
    done = subprocess.run(  # noqa: S603 - our interpreter
        python("-c", "import projections; print(projections.__file__)"),
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == Path(projections.__file__).resolve()
