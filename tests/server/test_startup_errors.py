"""Start-up failures of ``banditroute serve``: one clear line naming the file (or port) and the
cause, exit status 2, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from banditroute.cli import main

HANG_S = 120.0
"""Bound on waiting for the helper process that holds a log's lock: catches a hang only."""

Serve = Callable[..., tuple[int, str]]


@pytest.fixture
def serve(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Serve:
    """``serve(*args)``: run ``banditroute serve --port 0 ARGS`` (policy snapshot in tmp_path)
    in-process; returns its exit status and its stderr."""

    def run(*args: str) -> tuple[int, str]:
        code = main(["serve", "--port", "0", *args])
        return code, capsys.readouterr().err

    return run


def _one_error_line(err: str, *expected: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_config_path_that_is_a_directory(serve: Serve, tmp_path: Path) -> None:
    """--config naming a directory: exit 2, one line naming the path and "Is a directory"."""
    folder = tmp_path / "conf.d"
    folder.mkdir()
    code, err = serve("--config", str(folder), "--log", str(tmp_path / "log.duckdb"))
    assert code == 2
    _one_error_line(err, "--config", "conf.d", "Is a directory")


def test_an_unreadable_config(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config naming a file that cannot be read (no permission: simulated, since root reads
    anything): exit 2, one line naming the file and the cause."""
    config = tmp_path / "secret.toml"
    config.write_text("[server]\n", encoding="utf-8")
    read_text = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self == config:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", denied)
    code, err = serve("--config", str(config), "--log", str(tmp_path / "log.duckdb"))
    assert code == 2
    _one_error_line(err, "--config", "secret.toml", "Permission denied")


def test_a_config_that_is_not_utf8(serve: Serve, tmp_path: Path) -> None:
    """A config file with bytes that are not UTF-8: exit 2, one line naming the file."""
    config = tmp_path / "latin1.toml"
    config.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    code, err = serve("--config", str(config), "--log", str(tmp_path / "log.duckdb"))
    assert code == 2
    _one_error_line(err, "--config", "latin1.toml", "not UTF-8")


def test_a_corrupt_log_file(serve: Serve, tmp_path: Path) -> None:
    """A log path holding something that is not a DuckDB database: exit 2, one line naming
    log.path, the file and the cause; the file is left as it was."""
    log = tmp_path / "log.duckdb"
    junk = bytes(range(256)) * 40
    log.write_bytes(junk)
    code, err = serve("--log", str(log))
    assert code == 2
    _one_error_line(err, "log.path", "log.duckdb", "not a valid DuckDB database file")
    assert log.read_bytes() == junk


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """Another process holding a DuckDB log open (as a running server does): (path, pid)."""
    log = tmp_path / "held.duckdb"
    script = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "ready"
            yield log, holder.pid
        finally:
            assert holder.stdin is not None
            holder.stdin.close()  # the helper's read ends: it exits
            holder.wait(timeout=HANG_S)


def test_a_second_server_on_the_same_log(serve: Serve, lock_holder: tuple[Path, int]) -> None:
    """A log another process holds open (a server already running on it): exit 2, one line
    naming the file and the process holding it."""
    log, pid = lock_holder
    code, err = serve("--log", str(log))
    assert code == 2
    _one_error_line(err, "log.path", "held.duckdb", f"PID {pid}")


def test_a_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A port another socket listens on: exit 2, one line naming server.port and the address
    and saying what to do (`make serve` in a second shell said only "in use")."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--log", str(tmp_path / "log.duckdb")])
    assert code == 2
    _one_error_line(capsys.readouterr().err, "server.port", f"127.0.0.1:{port}", "--port")


def test_a_corrupt_worker_log_under_workers(tmp_path: Path) -> None:
    """With --workers 2 and worker 1's log file corrupt, the server stops the worker that did
    start and exits 2 with one line naming worker 1's file (subprocess: workers are spawned)."""
    (tmp_path / "log.w1.duckdb").write_bytes(bytes(range(256)) * 40)
    result = subprocess.run(
        [sys.executable, "-m", "banditroute.cli", "serve", "--port", "0", "--workers", "2",
         "--log", str(tmp_path / "log.duckdb")],
        capture_output=True, text=True, timeout=HANG_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    _one_error_line(result.stderr, "worker 1", "log.w1.duckdb", "not a valid DuckDB")
