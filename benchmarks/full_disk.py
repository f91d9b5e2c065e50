"""A full disk under load, and less space back than the backlog: what is acknowledged, what is lost.

Starts ``banditroute serve`` with its log on a small tmpfs (mounting needs root) and drives it
from ``--clients`` threads that route and report feedback for every third decision. After
``--warm-s`` the disk is filled to its last byte; the backlog of routed decisions grows in the
server's memory for ``--full-s``; then ``--free-mb`` is freed (less than the backlog's journal
lines take once ``--full-s`` is long enough) and the load goes on for ``--after-s``. Then
SIGTERM, and the log is read back the way a restart with room to spare reads it (a copy of the
file, its write-ahead log and the journal, moved in on the ordinary disk). Reports the
decisions Route answered and how many of them are missing, the feedback acknowledged and how
many are missing, Feedback answers after the space returned, and the server's
``log_close_*`` lines (rows it could not write at the stop).

    sudo .venv/bin/python benchmarks/full_disk.py [--disk-mb 16] [--free-mb 7] [--full-s 6]
        [--after-s 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import grpc

from banditroute.store.duckdb_log import DuckDBLog
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

_ADDRESS = re.compile(r"\blistening\b.*\baddress=(\S+:\d+)")


@dataclass
class Load:
    """What the client threads saw."""

    routed: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    after: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    space_returned: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    target: int | None = None
    """Set ``reached`` once this many decisions have been routed (None: never)."""
    reached: threading.Event = field(default_factory=threading.Event)

    def client(self, address: str, number: int) -> None:
        """Route distinct prompts; report feedback for every third decision."""
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.RouterServiceStub(channel)
            for index in range(10_000_000):
                if self.stop.is_set():
                    return
                request = pb.RouteRequest(prompt=f"Explain topic {number}-{index} briefly.")
                try:
                    decision = stub.Route(request, timeout=5.0)
                except grpc.RpcError:
                    time.sleep(0.01)  # shed (backlog full) or gone
                    continue
                with self.lock:
                    self.routed.append(decision.decision_id)
                    if self.target is not None and len(self.routed) >= self.target:
                        self.reached.set()
                if index % 3:
                    continue
                returned = self.space_returned.is_set()
                try:
                    stub.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id), timeout=5.0)
                except grpc.RpcError:
                    with self.lock:
                        self.after["failed"] += returned
                    continue
                with self.lock:
                    self.acknowledged.append(decision.decision_id)
                    self.after["ok"] += returned


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full, to its last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)


def _serve(workdir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], Path, str]:
    """Start a server logging to ``log_path``; its process, stderr file and address."""
    config = workdir / "banditroute.toml"
    config.write_text(
        f'[server]\nport = 0\ngrace_s = 2.0\n[log]\npath = "{log_path}"\n'
        f'[policy]\nsnapshot_path = "{workdir / "policy.snapshot"}"\n'
        "[reward]\nwindow_s = 3600.0\n",
        encoding="utf-8",
    )
    stderr = workdir / "serve.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "banditroute.cli", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    for _ in range(600):
        match = _ADDRESS.search(stderr.read_text("utf-8", errors="replace"))
        if match:
            return process, stderr, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not start:\n{stderr.read_text(errors='replace')}")


def run(
    workdir: Path, *, disk_mb: int, free_mb: float, clients: int, warm_s: float, full_s: float,
    after_s: float, after_routes: int = 0, after_timeout_s: float = 120.0,
) -> dict[str, Any]:  # fmt: skip
    """One run on a tmpfs mounted under ``workdir``; the figures described above. With
    ``after_routes``, the load also goes on after ``after_s`` until that many more decisions
    have been routed since the space returned (or ``after_timeout_s``, a bound that only
    catches a server that never recovers), so a slow machine is not taken for a lost one."""
    disk = workdir / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        raise PermissionError("cannot mount a tmpfs (run as root)")
    process: subprocess.Popen[bytes] | None = None
    try:
        process, stderr, address = _serve(workdir, disk / "log.duckdb")
        load = Load()
        threads = [
            threading.Thread(target=load.client, args=(address, n), daemon=True)
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(warm_s)
        filler = disk / "filler"
        _fill(filler)
        time.sleep(full_s)
        with load.lock:
            routed_while_full = len(load.routed)
            if after_routes:
                load.target = routed_while_full + after_routes
        os.truncate(filler, max(0, filler.stat().st_size - int(free_mb * (1 << 20))))
        load.space_returned.set()
        time.sleep(after_s)
        if after_routes:
            load.reached.wait(after_timeout_s)
        load.stop.set()
        for thread in threads:
            thread.join(30.0)
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(120)
        close_lines = [
            line for line in stderr.read_text(errors="replace").splitlines() if "log_close_" in line
        ]
        # Read it back as a restart with room to spare does (not on the tiny disk itself, where
        # moving in what the journal still holds may not fit): file, write-ahead log, journal.
        kept = workdir / "kept"
        kept.mkdir()
        for item in disk.iterdir():
            if item.name.startswith("log.duckdb"):
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, kept / item.name)
        DuckDBLog(kept / "log.duckdb").close()  # moves in what the journal still holds
        with duckdb.connect(str(kept / "log.duckdb"), read_only=True) as con:
            decisions = {r[0] for r in con.execute("SELECT decision_id FROM decisions").fetchall()}
            feedback = {r[0] for r in con.execute("SELECT decision_id FROM feedback").fetchall()}
        return {
            "exit_code": exit_code,
            "routed": len(load.routed),
            "routed_before_space_returned": routed_while_full,
            "decisions_missing": len(set(load.routed) - decisions),
            "feedback_acknowledged": len(load.acknowledged),
            "feedback_missing": len(set(load.acknowledged) - feedback),
            "feedback_after_space_returned": dict(load.after),
            "set_aside": (kept / "log.duckdb.rejected").exists(),
            "close_lines": close_lines,
        }
    finally:
        if process is not None and process.poll() is None:  # a failure left it running
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # keep the first error
                process.wait(30)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-mb", type=int, default=16)
    parser.add_argument("--free-mb", type=float, default=7.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warm-s", type=float, default=3.0)
    parser.add_argument("--full-s", type=float, default=6.0)
    parser.add_argument("--after-s", type=float, default=4.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp), disk_mb=args.disk_mb, free_mb=args.free_mb, clients=args.clients,
            warm_s=args.warm_s, full_s=args.full_s, after_s=args.after_s,
        )  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
