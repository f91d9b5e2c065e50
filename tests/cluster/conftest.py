"""Cluster test fixtures: a real valkey-server started on a free loopback port in the test's
temporary folder, killed at teardown, and killable (SIGKILL), pausable (SIGSTOP) and
restartable on the same port for failure tests (:class:`valkey_helpers.ValkeyProcess`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from valkey_helpers import ValkeyProcess

# The real-server helpers (ServerLauncher, write_config) live beside the server tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))


@pytest.fixture
def make_valkey(tmp_path: Path) -> Iterator[Callable[..., ValkeyProcess]]:
    """Start valkey-servers (``make_valkey(aof=True)`` for one that persists); all are
    stopped at teardown."""
    started: list[ValkeyProcess] = []

    def make(*, aof: bool = False) -> ValkeyProcess:
        server = ValkeyProcess(tmp_path / f"valkey{len(started)}", aof=aof)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def valkey_server(make_valkey: Callable[..., ValkeyProcess]) -> ValkeyProcess:
    """A started valkey-server without persistence."""
    return make_valkey()
