"""Helpers for the fault-injection tests: a real ``banditroute serve`` subprocess, a TOML writer,
a stalled HTTP/2 client, a full disk (a small tmpfs, or an injected write failure where mounting
is not permitted) and a feedback flood run as its own process.

Run as a script, ``python fault_helpers.py flood ADDRESS THREADS SECONDS`` routes a few
decisions and then sends Feedback for them from THREADS threads, each blocking in one call at a
time with a 10-minute deadline, for SECONDS; it prints ``ready`` when the flood starts and
``calls N`` when it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb

from banditroute.store import journal

START_TIMEOUT_S = 90.0
"""Longest wait for a server's ``listening`` line."""
STOP_TIMEOUT_S = 20.0
"""Longest wait for a server process to exit."""
_ADDRESS = re.compile(r"\blistening\b.*\baddress=(\S+:\d+)")


# -- configuration -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{section: {key: value}}`` as a TOML file (plain tables of scalars and lists)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# -- a real server process -------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A running ``banditroute serve`` subprocess; its stderr goes to a file."""

    process: subprocess.Popen[bytes]
    stderr_path: Path
    stderr: IO[bytes]
    address: str = ""

    def log_text(self) -> str:
        """Everything the server has written to stderr so far."""
        return self.stderr_path.read_text("utf-8", errors="replace")

    def listening_line(self) -> str:
        """The ``listening`` log line (address, snapshot_restored, pending_restored, ...)."""
        return next(line for line in self.log_text().splitlines() if _ADDRESS.search(line))

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit code (-9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait (bounded) for the exit code; SIGKILL if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM:\n{self.log_text()}") from None

    def close(self) -> None:
        """Kill the process if it still runs and close its stderr file (teardown)."""
        if self.process.poll() is None:
            self.kill()
        self.stderr.close()


def worker_pid(server: ServerProcess, index: int) -> int:
    """The pid of worker ``index`` of a ``--workers`` server: the supervisor's child process
    holding its log file (``*.wINDEX.duckdb``) open."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split():
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{child}/fd").iterdir()]
        except OSError:
            continue
        if any(link.endswith(f".w{index}.duckdb") for link in links):
            return int(child)
    raise AssertionError(f"no worker process holds a .w{index}.duckdb log")


class ServerLauncher:
    """Starts ``python -m banditroute.cli serve --config FILE`` processes and remembers them, so
    that ``close_all`` (the fixture's teardown) kills whatever still runs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[ServerProcess] = []

    def start(
        self,
        config: Path,
        *,
        log_level: str | None = None,
        timeout_s: float = START_TIMEOUT_S,
        args: tuple[str, ...] = (),
    ) -> ServerProcess:
        """Start a server (at ``log_level`` if given, with ``args`` after ``serve --config
        FILE``) and wait up to ``timeout_s`` for its listening address."""
        stderr_path = self.workdir / f"serve{len(self.servers)}.stderr"
        stderr = stderr_path.open("wb")
        level = [] if log_level is None else ["--log-level", log_level]
        command = [sys.executable, "-m", "banditroute.cli", *level, "serve", "--config"]
        process = subprocess.Popen(
            [*command, str(config), *args],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        server = ServerProcess(process, stderr_path, stderr)
        self.servers.append(server)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = _ADDRESS.search(server.log_text())
            if match:
                server.address = match.group(1)
                return server
            if process.poll() is not None:
                raise AssertionError(
                    f"server exited with {process.returncode}:\n{server.log_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no listening line within {timeout_s}s:\n{server.log_text()}")

    def close_all(self) -> None:
        """Kill every server still running."""
        for server in self.servers:
            server.close()


# -- a stalled HTTP/2 client -----------------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)


def _hpack_literal(name: str, value: str) -> bytes:
    """One header as an HPACK literal without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    encoded = b""
    for text in (name, value):
        data = text.encode("ascii")
        if len(data) >= 127:
            raise ValueError("header too long for this minimal encoder")
        encoded += bytes([len(data)]) + data
    return b"\x00" + encoded


class StalledClient:
    """Opens ``streams`` gRPC calls of ``method`` over one raw HTTP/2 connection, sends each one's
    headers and the first bytes of a request message that announces more, and then never sends
    the rest: the calls stay open until ``close``. It reads nothing unless :meth:`refill` is
    called."""

    def __init__(self, port: int, method: str, streams: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        authority = f"127.0.0.1:{port}"
        self._headers = b"".join(
            _hpack_literal(k, v)
            for k, v in (
                (":method", "POST"), (":scheme", "http"), (":path", method),
                (":authority", authority), ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )  # fmt: skip
        self._next_stream = 1
        self.open: set[int] = set()
        self._received = b""
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0, b"")
        self.sock.sendall(out + b"".join(self._stream() for _ in range(streams)))

    def _stream(self) -> bytes:
        """The frames that open one more stalled call."""
        stream = self._next_stream
        self._next_stream += 2
        self.open.add(stream)
        # gRPC message prefix: not compressed, 100 bytes announced; 5 sent (field 1, 3 of 5).
        partial = b"\x00" + struct.pack(">I", 100) + b"\x0a\x05abc"
        return (
            _frame(0x1, 0x4, stream, self._headers) + self._headers  # HEADERS, END_HEADERS
            + _frame(0x0, 0, stream, partial) + partial  # DATA, no END_STREAM
        )  # fmt: skip

    def refill(self) -> int:
        """Read what the server sent; open a new stalled call for each one it ended (a call
        refused because the limit was full when it arrived: say a probe held the last slot),
        so the stalled calls end up holding the slots. Returns how many were reopened."""
        self.sock.settimeout(0.0)  # read only what is there
        try:
            with contextlib.suppress(BlockingIOError):
                while chunk := self.sock.recv(65536):
                    self._received += chunk
        finally:
            self.sock.settimeout(5.0)
        ended = 0
        replies = b""
        data = self._received
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            length, kind, flags = int.from_bytes(data[:3], "big"), data[3], data[4]
            stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
            payload, data = data[9 : 9 + length], data[9 + length :]
            if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledge, as a client must
                replies += _frame(0x4, 0x1, 0, b"")
            elif kind == 0x6 and not flags & 0x1:  # PING: answer
                replies += _frame(0x6, 0x1, 0, payload) + payload
            elif stream in self.open and (kind == 0x3 or (kind in (0x0, 0x1) and flags & 0x1)):
                self.open.discard(stream)  # RST_STREAM, or the response's END_STREAM
                ended += 1
        self._received = data
        self.sock.sendall(replies + b"".join(self._stream() for _ in range(ended)))
        return ended

    def close(self) -> None:
        """Drop the connection (the server then cancels the calls)."""
        with contextlib.suppress(OSError):
            self.sock.close()


# -- a full disk -----------------------------------------------------------------------------------


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` (for example "16m") at ``path``; False if not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily if something still holds it open)."""
    result = subprocess.run(["umount", str(path)], capture_output=True, timeout=10, check=False)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full, down to the last byte; returns the bytes
    written. Bounded: stops at ENOSPC, or after 1 GiB."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            block = b"\0" * chunk
            while written < 1 << 30:
                try:
                    written += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written


class InjectedDiskFull(OSError):
    """The journal write failure :func:`failing_journal_writes` raises (stands for ENOSPC)."""


@dataclass
class InjectedSpace:
    """What an injected full disk has free once partly freed: while ``room`` is set, a journal
    write of more than ``room`` bytes fails as ENOSPC and a smaller one succeeds (as if each
    segment moved into the database freed what the next write needs)."""

    room: int | None = None


def failing_journal_writes(
    failing: threading.Event, space: InjectedSpace | None = None
) -> Callable[[int, bytes], None]:
    """A stand-in for ``banditroute.store.journal._write_all`` that fails while ``failing``,
    and when ``space`` has less room than the write needs."""
    real = journal._write_all

    def write(fd: int, data: bytes) -> None:
        if failing.is_set() or (space and space.room is not None and len(data) > space.room):
            raise InjectedDiskFull(28, "No space left on device (injected)")
        real(fd, data)

    return write


@dataclass
class FailingConnection:
    """Wraps a DuckDB connection; while ``failing`` is set, every statement that inserts raises
    as a full disk would. Everything else (ROLLBACK, cursors, close) goes to the real one."""

    real: Any
    failing: threading.Event = field(default_factory=threading.Event)

    def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        if self.failing.is_set() and "INSERT INTO" in query.upper():
            raise duckdb.IOException("No space left on device (injected)")
        return self.real.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


# -- a server of several workers ------------------------------------------------------------------


def workers_config(tmp_path: Path, *, before: str = "", server: str = "") -> Path:
    """A config file for a two-worker server on any free port, its log and snapshot in
    ``tmp_path``; ``before`` goes ahead of the ``[server]`` table, ``server`` inside it."""
    config = tmp_path / "workers.toml"
    config.write_text(
        f"""{before}
[server]
port = 0
grace_s = 2.0
workers = 2
merge_interval_s = 1.0
{server}
[log]
path = "{tmp_path / "log.duckdb"}"

[policy]
snapshot_path = "{tmp_path / "policy.snapshot"}"
"""
    )
    return config


def worker_stub(address: str) -> tuple[Any, Any]:
    """A channel and stub with a connection of their own (a private subchannel pool), so
    SO_REUSEPORT may send them to either worker."""
    import grpc

    from banditroute.v1 import router_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, pb_grpc.RouterServiceStub(channel)


# -- a feedback flood in its own process -----------------------------------------------------------


def flood(address: str, threads: int, seconds: float) -> int:
    """Route 20 decisions, then send Feedback for them from ``threads`` threads for
    ``seconds``; returns the number of calls made."""
    import grpc

    from banditroute.v1 import router_pb2 as pb
    from banditroute.v1 import router_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address)
    stub = pb_grpc.RouterServiceStub(channel)
    ids = [
        stub.Route(pb.RouteRequest(prompt=f"flood prompt {i}"), timeout=10.0).decision_id
        for i in range(20)
    ]
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(index: int) -> None:
        own = pb_grpc.RouterServiceStub(grpc.insecure_channel(address))
        for call in range(1_000_000):
            if time.monotonic() >= stop:
                return
            request = pb.FeedbackRequest(decision_id=ids[(index + call) % len(ids)], quality=0.5)
            try:
                own.Feedback(request, timeout=600.0)
            except grpc.RpcError:
                time.sleep(0.05)
            counts[index] += 1

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    print("ready", flush=True)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30.0)
    return sum(counts)


def main(argv: list[str]) -> int:
    """``flood ADDRESS THREADS SECONDS`` (see the module docstring)."""
    if len(argv) != 4 or argv[0] != "flood":
        print("usage: fault_helpers.py flood ADDRESS THREADS SECONDS", file=sys.stderr)
        return 2
    calls = flood(argv[1], int(argv[2]), float(argv[3]))
    print(f"calls {calls}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
