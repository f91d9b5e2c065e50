"""Every command in README.md runs as written, in order, on what a fresh clone has.

The README's ```sh blocks are split into commands (a trailing backslash continues a line;
comment lines are output or explanation) and each must exit 0; its ```python blocks run as
scripts. They run in a scratch directory holding what a clone has after `make serve`: the
repository's examples/ and a .venv/bin with `python` and `banditroute` (this interpreter, with
the source under test first on the path). A server (`banditroute serve`, as `make serve` starts
it, logging to var/banditroute.duckdb, with its metrics endpoint on) runs on a free port while
a block talks to 127.0.0.1:50051 or its metrics at 127.0.0.1:9464 (the ports are substituted),
and is stopped (SIGTERM, which moves its journal
into the log) before a command reads var/banditroute.duckdb, as the README says to.

```toml blocks are loaded as configuration files. Other fences are not commands: ini (a
systemd unit), yaml (a Prometheus configuration), text (docker commands: no Docker daemon
where the tests run). Commands that cannot run here are listed in NOT_RUN with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banditroute.config import load_settings

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
ADDRESS = "127.0.0.1:50051"
METRICS_ADDRESS = "127.0.0.1:9464"
LOG = "var/banditroute.duckdb"
COMMAND_TIMEOUT_S = 300.0
"""Longest any one command may take (only catches a hang)."""

NOT_RUN: dict[str, str] = {
    "make serve": "installs into .venv and serves in the foreground; the test starts the same "
    "`banditroute serve` itself (tests/test_makefile.py checks what make installs)",
    "make test": "runs the whole suite, this test included",
    ".venv/bin/pip install": "installs an extra into the venv; the tests' environment has "
    "every extra already (make test installs them), which the blocks after it use",
    "go install": "needs the Go toolchain and the Go module proxy (no network here)",
    "npx buf generate": "needs the Go or Java protoc plugins; tests/proto/test_buf_templates.py "
    "runs each template with stand-in plugins",
    ".venv/bin/banditroute promote --server": "needs a server configured with an admin key "
    "([auth] admin_key_sha256); tests/server/test_server_promote.py runs PromotePolicy and "
    "RollbackPolicy against one",
}
"""Commands (by how they start) the test does not run, each with the reason (keep it small)."""

EXIT_CODES: dict[str, frozenset[int]] = {
    "banditroute promote --log": frozenset({0, 1}),
}
"""Commands whose documented answer is an exit code: `promote` exits 1 for "the candidate
does not clear the gate", a valid outcome on the README's small example traffic."""

FENCES = {"sh", "python", "toml", "ini", "yaml", "text"}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LISTENING = re.compile(r"\blistening\b.*\baddress=(\S+:\d+).*\bmetrics=(\S+:\d+)")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text and the README line it starts on."""

    language: str
    text: str
    line: int


def readme_blocks() -> list[Block]:
    """The fenced code blocks of README.md, in order."""
    text = README.read_text("utf-8")
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]


def shell_commands(text: str) -> list[str]:
    """The commands of a sh block: continuation lines joined, comments and blanks left out."""
    commands: list[str] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        commands.append(" ".join((current + line).split()))
        current = ""
    assert not current, f"a command ends with a backslash: {current!r}"
    return commands


class Workspace:
    """A scratch clone layout with a server that is started and stopped on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if k != "BANDITROUTE_CONFIG"}
        source = str(ROOT / "src")
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (source, os.environ.get("PYTHONPATH", "")) if p
        )
        bin_dir = path / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        self._shim(bin_dir / "python", f'exec "{sys.executable}" "$@"')
        self._shim(bin_dir / "banditroute", f'exec "{sys.executable}" -m banditroute.cli "$@"')
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        (path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
        self.server: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.metrics_address = ""
        self.starts = 0

    @staticmethod
    def _shim(path: Path, line: str) -> None:
        path.write_text(f"#!/bin/sh\n{line}\n", encoding="utf-8")
        path.chmod(0o755)

    def start(self) -> None:
        """`banditroute serve` as `make serve ARGS='--metrics-port 9464'` runs it, on free
        ports; waits to listen."""
        self.starts += 1
        stderr_path = self.path / f"serve{self.starts}.stderr"
        with socket.socket() as probe:  # a free port for the metrics (0 would turn them off)
            probe.bind(("127.0.0.1", 0))
            metrics_port = probe.getsockname()[1]
        argv = ["serve", "--port", "0", "--metrics-port", str(metrics_port)]
        with stderr_path.open("wb") as stderr:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "banditroute.cli", *argv],
                cwd=self.path,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while time.monotonic() < deadline:
            log = stderr_path.read_text("utf-8", errors="replace")
            match = _LISTENING.search(log)
            if match:
                self.address, self.metrics_address = match.group(1), match.group(2)
                return
            assert self.server.poll() is None, f"the server exited:\n{log}"
            time.sleep(0.05)
        raise AssertionError(f"the server did not listen within {COMMAND_TIMEOUT_S} s")

    def stop(self) -> None:
        """SIGTERM and wait: the server moves its journal into the log file and exits 0."""
        if self.server is None:
            return
        self.server.send_signal(signal.SIGTERM)
        try:
            code = self.server.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
            raise AssertionError("the server ignored SIGTERM") from None
        self.server = None
        assert code == 0, f"the server exited with {code}"

    def prepare(self, text: str) -> str:
        """Start or stop the server as ``text`` needs; returns it with the port substituted."""
        if LOG in text:
            self.stop()
        if ADDRESS in text or METRICS_ADDRESS in text:
            if self.server is None:
                self.start()
            text = text.replace(ADDRESS, self.address)
            text = text.replace(METRICS_ADDRESS, self.metrics_address)
        return text

    def run(self, argv: list[str], what: str, codes: frozenset[int] = frozenset({0})) -> None:
        """Run ``argv`` in the workspace; fail naming ``what`` unless it exits with ``codes``."""
        done = subprocess.run(
            argv,
            cwd=self.path,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert done.returncode in codes, (
            f"{what} exited with {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """The scratch clone layout; its server is stopped at the end whatever happened."""
    space = Workspace(tmp_path)
    yield space
    if space.server is not None and space.server.poll() is None:
        space.server.kill()
        space.server.wait()


@pytest.mark.slow
def test_every_readme_command_runs_as_written(workspace: Workspace) -> None:
    """Each sh command exits 0 (or its documented exit code), each python block runs without
    error and each toml block is a valid configuration, in README order, on a fresh layout
    with only the shipped example data (the README's `simulate --outcomes
    routerbench_train.parquet` failed with "no such file")."""
    skipped: list[str] = []
    ran = 0
    for block in readme_blocks():
        where = f"README.md line {block.line}"
        if block.language == "sh":
            for command in shell_commands(block.text):
                skip = next((prefix for prefix in NOT_RUN if command.startswith(prefix)), None)
                if skip is not None:
                    skipped.append(skip)
                    continue
                codes = next(
                    (c for prefix, c in EXIT_CODES.items() if prefix in command), frozenset({0})
                )
                runnable = workspace.prepare(command)
                workspace.run(["bash", "-c", runnable], f"{where}: {command}", codes)
                ran += 1
        elif block.language == "python":
            script = workspace.path / f"block{block.line}.py"
            script.write_text(workspace.prepare(block.text), encoding="utf-8")
            workspace.run([sys.executable, str(script)], f"{where} (python)")
            ran += 1
        elif block.language == "toml":
            config = workspace.path / f"block{block.line}.toml"
            config.write_text(block.text, encoding="utf-8")
            load_settings(config)
            ran += 1
    workspace.stop()
    assert sorted(set(skipped)) == sorted(NOT_RUN), "NOT_RUN lists commands the README lacks"
    assert ran >= 10


def test_readme_uses_only_known_fences() -> None:
    """A new kind of code block must be either run by this test or named as not a command."""
    assert {block.language for block in readme_blocks()} <= FENCES


def test_shell_commands_join_continuations_and_drop_comments() -> None:
    """The sh splitter joins backslash continuations and leaves comment lines out."""
    text = "# a comment\nmake serve\n# out: listening\n\nrun --a 1 \\\n    --b 2\n"
    assert shell_commands(text) == ["make serve", "run --a 1 --b 2"]
