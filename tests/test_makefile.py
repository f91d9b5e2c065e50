"""The Makefile's install paths: `make serve` installs the runtime only, `make test` the rest.

Checked with `make -n` (print the commands, run none) on a copy of the Makefile and
pyproject.toml, with the install stamps set by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEV_ONLY = ("mypy", "pytest", "ruff", "pandas", "scikit-learn", "hypothesis", "grpcio-tools")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the Makefile and pyproject.toml (older than any stamp set later)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (1_000_000, 1_000_000))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    return tmp_path


def _stamp(project: Path, name: str) -> None:
    (project / ".venv" / name).touch()
    os.utime(project / ".venv" / name, (2_000_000, 2_000_000))


def _dry_run(project: Path, target: str) -> list[str]:
    """The pip commands `make TARGET` would run."""
    done = subprocess.run(
        ["make", "-n", target], cwd=project, capture_output=True, text=True, timeout=60, check=True
    )
    return [line for line in done.stdout.splitlines() if "pip install" in line]


def test_serve_installs_the_runtime_dependencies_only(project: Path) -> None:
    """On a fresh clone `make serve` installs the package without the dev extra, obp or the
    embedding model (the whole toolchain made the first start take minutes)."""
    commands = _dry_run(project, "serve")
    assert len(commands) == 1
    assert commands[0].rstrip().endswith("-e .")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = " ".join(dependencies["dependencies"])
    assert not [name for name in DEV_ONLY if name in names]


def test_serve_after_test_installs_nothing(project: Path) -> None:
    """The full install stamps the runtime level too: `make serve` after `make test` goes
    straight to serving."""
    _stamp(project, ".installed")
    _stamp(project, ".installed-serve")
    assert _dry_run(project, "serve") == []


def test_test_after_serve_adds_the_dev_extra(project: Path) -> None:
    """`make test` (here its lint step) after `make serve` installs the dev extra and the
    --no-deps packages, and `make serve` afterwards still installs nothing."""
    _stamp(project, ".installed-serve")
    commands = _dry_run(project, "lint")
    assert any("-e '.[dev]'" in command for command in commands)
    assert any("obp==" in command for command in commands)
    assert _dry_run(project, "serve") == []


def test_a_changed_pyproject_reinstalls(project: Path) -> None:
    """Editing pyproject.toml (a new dependency) makes both levels install again."""
    _stamp(project, ".installed")
    _stamp(project, ".installed-serve")
    os.utime(project / "pyproject.toml", (3_000_000, 3_000_000))
    assert len(_dry_run(project, "serve")) == 1
    assert any("-e '.[dev]'" in command for command in _dry_run(project, "lint"))
