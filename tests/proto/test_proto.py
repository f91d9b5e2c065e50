"""The proto passes buf's STANDARD lint and format, and the committed Python code matches it.

buf comes from node_modules (``make test`` installs it with ``npm ci``); the Python code is
regenerated with grpc_tools exactly as ``make proto`` does and compared byte for byte.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("banditroute/v1/router.proto")
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py")
BUF = ROOT / "node_modules" / ".bin" / "buf"
TIMEOUT_S = 60


def buf(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run buf from node_modules in the repository root (``env``: its environment)."""
    if not BUF.exists():
        pytest.fail(
            f"{BUF.relative_to(ROOT)} is missing: install the Node tooling with `make test` "
            "(or `npm ci` in the repository root)"
        )
    return subprocess.run(
        [str(BUF), *args],
        cwd=ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_buf_lint_passes() -> None:
    """`buf lint` (STANDARD rules from buf.yaml) reports nothing for the proto module."""
    result = buf("lint")
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == ""


def test_buf_format_is_clean() -> None:
    """`buf format --diff --exit-code` finds nothing to reformat."""
    result = buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, f"buf format wants changes:\n{result.stdout}{result.stderr}"


def test_generated_python_code_does_not_drift(tmp_path: Path) -> None:
    """Regenerating router_pb2.py, .pyi and _grpc.py as `make proto` does reproduces the
    committed files byte for byte."""
    outputs = [f"--{kind}_out={tmp_path}" for kind in ("python", "pyi", "grpc_python")]
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", *outputs, str(PROTO)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}"
    stale = [
        name
        for name in GENERATED
        if (tmp_path / PROTO.parent / name).read_bytes()
        != (ROOT / "src" / PROTO.parent / name).read_bytes()
    ]
    assert not stale, (
        f"src/banditroute/v1/{', '.join(stale)} out of date with {PROTO}: run `make proto`"
    )
