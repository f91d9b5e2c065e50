"""Faults a running service must survive: ``kill -9`` under load, a corrupt policy snapshot at
start, a full disk under the decision log, and slow or stalled Feedback clients beside Route
traffic.

The kill, snapshot and slow-client tests run real ``banditroute serve`` processes; the full-disk
test runs an in-process service whose log lives on a small tmpfs it fills up (where mounting is
not permitted, an injected write failure stands in for the full disk).
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from fault_helpers import (
    FailingConnection,
    InjectedSpace,
    ServerLauncher,
    StalledClient,
    failing_journal_writes,
    fill,
    mount_tmpfs,
    unmount,
    write_config,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from banditroute.server.app import Service
from banditroute.snapshots import MAGIC
from banditroute.store import journal
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
"""Deadline of every call the tests make: generous, so that only a hang exceeds it on a loaded
machine (a call held up behind blocked threads fails DEADLINE_EXCEEDED)."""
HANG_S = 120.0
"""Bound on waits for something the server does in the background: catches a hang only."""
PROMPTS = (
    "What is the capital of Australia?",
    "Write a Python function that reverses a string.",
    "Solve 12 * 7 + 3 and explain each step.",
    "Summarize the plot of Hamlet in two sentences.",
)
FEEDBACK = "/banditroute.v1.RouterService/Feedback"
ROUTE = "/banditroute.v1.RouterService/Route"


def _config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """A config on a free port with the log and snapshot under tmp_path, synchronous feedback
    and a one-hour reward window; ``sections`` adds or overrides keys."""
    base: dict[str, dict[str, Any]] = {
        "server": {"port": 0, "grace_s": 2.0},
        "log": {"path": str(tmp_path / "log.duckdb"), "sync_feedback": True},
        "policy": {"snapshot_path": str(tmp_path / "policy.snapshot")},
        "reward": {"window_s": 3600.0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return write_config(tmp_path / "banditroute.toml", base)


# -- kill -9 under load ----------------------------------------------------------------------------


@dataclass
class Load:
    """Two client threads against one server: one routes and reports feedback for each
    decision, the other only routes. Records what the server acknowledged, and when."""

    address: str
    routed: list[tuple[str, float]] = field(default_factory=list)
    """(decision_id, monotonic time the answer arrived) of every Route answered."""
    acknowledged: list[str] = field(default_factory=list)
    """Decision ids whose Feedback was acknowledged."""
    last_ack_sent: float = 0.0
    """When (monotonic) the last acknowledged Feedback was sent: its durable write carried every
    row the server had queued before it, so every decision answered before then is logged."""
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for target in (self._route_and_feedback, self._route_only):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _route(self, stub: pb_grpc.RouterServiceStub, index: int) -> str:
        request = pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)] + f" ({index})")
        decision = stub.Route(request, timeout=CALL_TIMEOUT_S)
        with self.lock:
            self.routed.append((decision.decision_id, time.monotonic()))
        return str(decision.decision_id)

    def _route_and_feedback(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.RouterServiceStub(channel)
            for index in range(100_000):
                if self.stop.is_set():
                    return
                try:
                    decision_id = self._route(stub, index)
                    sent = time.monotonic()
                    stub.Feedback(
                        pb.FeedbackRequest(decision_id=decision_id, quality=index % 2),
                        timeout=CALL_TIMEOUT_S,
                    )
                except grpc.RpcError:
                    return  # the server is gone
                with self.lock:
                    self.acknowledged.append(decision_id)
                    self.last_ack_sent = sent

    def _route_only(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.RouterServiceStub(channel)
            for index in range(100_000):
                if self.stop.is_set():
                    return
                try:
                    self._route(stub, index)
                except grpc.RpcError:
                    return
                time.sleep(0.002)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CALL_TIMEOUT_S * 2)
            assert not thread.is_alive()


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_feedback(
    tmp_path: Path, launcher: ServerLauncher
) -> None:
    """SIGKILL a server while clients route and report feedback (sync_feedback = true): every
    acknowledged feedback is in the log once its journal is moved in (as the next start does),
    and the only decisions missing are ones answered after the last acknowledged feedback was
    sent (whose durable write carried every row queued before it; how long before the kill
    that was is printed, not asserted: a loaded machine may starve the writer). A restart on
    the same files restores the policy snapshot and every logged decision, recognises a
    repeated feedback as a duplicate, learns from a logged decision that had none, reports a
    lost decision as NOT_FOUND and exits 0 on SIGTERM."""
    config = _config(tmp_path, policy={"snapshot_interval_s": 1.0})
    snapshot = tmp_path / "policy.snapshot"
    server = launcher.start(config)
    load = Load(server.address)
    started = time.monotonic()
    load.start()
    for _ in range(400):  # at most 20 s: run 2 s, until a snapshot exists and feedback flows
        time.sleep(0.05)
        if time.monotonic() - started >= 2.0 and snapshot.exists() and len(load.acknowledged):
            break
    killed_at = time.monotonic()
    assert server.kill() == -9
    load.join()
    assert load.acknowledged, server.log_text()

    DuckDBLog(tmp_path / "log.duckdb").close()  # what the next start does first
    with duckdb.connect(str(tmp_path / "log.duckdb"), read_only=True) as log:
        logged = {r[0] for r in log.execute("SELECT decision_id FROM decisions").fetchall()}
        feedback = {r[0] for r in log.execute("SELECT decision_id FROM feedback").fetchall()}
    lost_feedback = [d for d in load.acknowledged if d not in feedback]
    lost = [(d, killed_at - t) for d, t in load.routed if d not in logged]
    oldest = max((age for _, age in lost), default=0.0) * 1000
    print(
        f"\nkill -9 after {killed_at - started:.2f}s: {len(load.routed)} decisions answered, "
        f"{len(load.acknowledged)} feedback acknowledged; lost: {len(lost_feedback)} "
        f"acknowledged feedback, {len(lost)} decisions (answered at most "
        + (f"{oldest:.0f} ms before the kill)" if oldest >= 0 else "as the kill was sent)")
    )
    assert lost_feedback == []
    assert set(load.acknowledged) <= logged
    # Event-based, not a time bound (the writer may be starved on a loaded machine): a lost
    # decision was answered after the last acknowledged feedback was sent.
    covered = {d for d, t in load.routed if t <= load.last_ack_sent}
    assert covered <= logged, sorted(covered - logged)

    restarted = launcher.start(config)
    line = restarted.listening_line()
    assert "snapshot_restored=True" in line, line
    assert f"pending_restored={len(logged)}" in line, line
    unanswered = sorted(logged - feedback)
    with grpc.insecure_channel(restarted.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        assert stub.Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S).model
        repeat = stub.Feedback(
            pb.FeedbackRequest(decision_id=load.acknowledged[-1], quality=1.0),
            timeout=CALL_TIMEOUT_S,
        )
        assert repeat.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE
        assert unanswered, "the route-only client made no logged decision"
        late = stub.Feedback(
            pb.FeedbackRequest(decision_id=unanswered[0], quality=1.0), timeout=CALL_TIMEOUT_S
        )
        assert late.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        if lost:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Feedback(
                    pb.FeedbackRequest(decision_id=lost[0][0], quality=1.0), timeout=CALL_TIMEOUT_S
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert restarted.terminate() == 0, restarted.log_text()


# -- a corrupt snapshot ----------------------------------------------------------------------------


def _route_and_learn(address: str, rounds: int) -> str:
    """Route and report feedback ``rounds`` times; returns the last policy version seen."""
    version = ""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        for index in range(rounds):
            decision = stub.Route(
                pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)]), timeout=CALL_TIMEOUT_S
            )
            stub.Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=0.5),
                timeout=CALL_TIMEOUT_S,
            )
            version = decision.policy_version
        final = stub.Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
    return str(final.policy_version or version)


@pytest.mark.slow
def test_corrupt_snapshot_is_set_aside_and_the_server_starts_fresh(
    tmp_path: Path, launcher: ServerLauncher
) -> None:
    """A snapshot of random bytes, and then one with a valid header and a corrupt VW model,
    do not stop the server: each is logged as unreadable and moved to ``.corrupt``, the server
    serves with a fresh policy (update count 0) and exits 0 on SIGTERM, writing a good
    snapshot that the next start restores."""
    config = _config(tmp_path)
    snapshot = tmp_path / "policy.snapshot"
    aside = tmp_path / "policy.snapshot.corrupt"
    rng = random.Random(20261127)
    # Random bytes, and a header with a valid checksum over a corrupt model (so the policy's
    # own restore, not the checksum, has to refuse it).
    body = b"costaware\n12\n" + rng.randbytes(2048)
    valid_header = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    for corrupt in (rng.randbytes(4096), valid_header):
        snapshot.write_bytes(corrupt)
        server = launcher.start(config)
        assert "snapshot_unreadable" in server.log_text(), server.log_text()
        assert "snapshot_restored=False" in server.listening_line()
        assert aside.read_bytes() == corrupt
        assert not snapshot.exists()
        assert _route_and_learn(server.address, 3).endswith(":3")
        assert server.terminate() == 0, server.log_text()
        assert snapshot.exists()

    server = launcher.start(config)
    assert "snapshot_restored=True" in server.listening_line(), server.log_text()
    assert "snapshot_unreadable" not in server.log_text()
    assert _route_and_learn(server.address, 1).endswith(":4")
    assert server.terminate() == 0, server.log_text()


# -- a full disk -----------------------------------------------------------------------------------


class Disk:
    """Where the log lives, and how to fill it up and free it again: a 16 MB tmpfs filled with
    a file to its last byte, or (where mounting is not permitted) a plain directory, journal
    writes that fail and a wrapper around the writer's DuckDB connection whose inserts fail
    while the disk is full."""

    def __init__(self, path: Path, *, tmpfs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.tmpfs = tmpfs
        self._monkeypatch = monkeypatch
        self._filler = path / "filler"
        self._connection: FailingConnection | None = None
        self._space = InjectedSpace()

    def attach(self, service: Service) -> None:
        """Prepare the service's log writer for failure injection (no-op on a tmpfs)."""
        if not self.tmpfs:
            log = service.event_log
            self._connection = FailingConnection(log._con)
            log._con = self._connection  # type: ignore[assignment]
            writes = failing_journal_writes(self._connection.failing, self._space)
            self._monkeypatch.setattr(journal, "_write_all", writes)

    def fill(self) -> None:
        if self.tmpfs:
            fill(self._filler)
        else:
            assert self._connection is not None
            self._connection.failing.set()

    def free(self) -> None:
        if self.tmpfs:
            self._filler.unlink(missing_ok=True)
        else:
            assert self._connection is not None
            self._space.room = None
            self._connection.failing.clear()

    def free_some(self, room: int) -> None:
        """Free only ``room`` bytes: less than a write of the whole backlog needs."""
        if self.tmpfs:
            os.truncate(self._filler, max(0, self._filler.stat().st_size - room))
        else:
            assert self._connection is not None
            self._space.room = room
            self._connection.failing.clear()


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """A 16 MB tmpfs under tmp_path (unmounted at teardown), else a plain directory."""
    path = tmp_path / "disk"
    if mount_tmpfs(path, "16m"):
        yield Disk(path, tmpfs=True, monkeypatch=monkeypatch)
        unmount(path)
    else:
        yield Disk(path, tmpfs=False, monkeypatch=monkeypatch)


def _wait(condition: Callable[[], bool], seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_full_disk_fails_feedback_cleanly_and_the_batch_lands_later(
    disk: Disk,
    start_service: Callable[..., Service],
    api: Callable[..., Any],
    connect: Callable[[Service], grpc.Channel],
) -> None:
    """With the log's disk full, Feedback answers UNAVAILABLE promptly with a message saying
    it was not committed and to retry, Route keeps answering and health stays SERVING; once
    space is free again the retried batch (the decisions and the unacknowledged feedback)
    lands, Feedback is acknowledged again, and nothing was set aside."""
    service = start_service(
        {"log": {"path": str(disk.path / "log.duckdb")}, "reward": {"window_s": 3600.0}}
    )
    disk.attach(service)
    client = api(service)
    health = health_pb2_grpc.HealthStub(connect(service))
    before = client.route()
    assert client.feedback(decision_id=before.decision_id, quality=1.0).feedback_count == 1

    disk.fill()
    try:
        during = [client.route(prompt=p) for p in PROMPTS]
        details = client.fails(
            "Feedback",
            pb.FeedbackRequest(decision_id=during[0].decision_id, quality=0.5),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert "not committed" in details, details
        assert "retry" in details, details
        after_failure = client.route(prompt=PROMPTS[1])
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        disk.free()  # also when failing: stopping the service flushes the log
    assert _wait(lambda: service.event_log.last_error is None, 20.0), service.event_log.last_error
    ack = client.feedback(decision_id=during[1].decision_id, quality=0.5)
    assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    # The unacknowledged feedback was kept and retried: a client's retry is a duplicate.
    retry = client.feedback(decision_id=during[0].decision_id, quality=0.5)
    assert retry.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE

    service.stop()
    with duckdb.connect(str(disk.path / "log.duckdb"), read_only=True) as log:
        decisions = {r[0] for r in log.execute("SELECT decision_id FROM decisions").fetchall()}
        feedback = [r[0] for r in log.execute("SELECT decision_id FROM feedback").fetchall()]
    routed = [before, *during, after_failure]
    assert {d.decision_id for d in routed} <= decisions
    assert sorted(feedback) == sorted(
        [before.decision_id, during[0].decision_id, during[1].decision_id, during[0].decision_id]
    )
    assert not (disk.path / "log.duckdb.rejected").exists()
    print(f"\nfull disk simulated with {'a full tmpfs' if disk.tmpfs else 'injected errors'}")


BACKLOG_MB = 1
"""log.max_backlog_mb of the backlog test: the bound on rows a full disk keeps in memory."""


def _route_until_shed(client: Any, routed: list[pb.RouteResponse]) -> str:
    """Route distinct prompts until Route fails; assert it is UNAVAILABLE and return the
    details."""
    for index in range(200_000):  # about 1,000 routes fill a megabyte
        request = pb.RouteRequest(prompt=f"{PROMPTS[index % len(PROMPTS)]} ({index})")
        try:
            routed.append(client.call("Route", request))
        except grpc.RpcError as error:
            shed = error
            break
    else:
        pytest.fail("Route was never shed while the disk was full")
    assert isinstance(shed, grpc.Call)
    assert shed.code() == grpc.StatusCode.UNAVAILABLE, shed.details()
    return shed.details() or ""


@pytest.mark.parametrize("stop_at_once", [False, True], ids=["drained", "stopped-at-once"])
def test_a_backlog_larger_than_the_space_freed_drains_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_service: Callable[..., Service],
    api: Callable[..., Any],
    stop_at_once: bool,
) -> None:
    """While the log's disk is full, routed decisions wait in memory only up to
    log.max_backlog_mb: then Route (and Feedback) answer UNAVAILABLE saying to retry later,
    instead of memory growing. Space then returns, but less than one write of the whole
    backlog needs (injected: a journal write of more than a quarter of it fails). That is
    enough: the backlog goes out and into the database a chunk at a time, Feedback is
    acknowledged again, and after a stop (once drained, or at once: the stop drains it)
    every decision Route answered and every acknowledged feedback is in the log, nothing set
    aside and nothing reported lost."""
    disk = Disk(tmp_path / "disk", tmpfs=False, monkeypatch=monkeypatch)
    service = start_service(
        {
            "log": {"path": str(disk.path / "log.duckdb"), "max_backlog_mb": BACKLOG_MB},
            "reward": {"window_s": 3600.0},
        }
    )
    disk.attach(service)
    client = api(service)
    routed = [client.route()]
    acknowledged = [routed[0].decision_id]
    assert client.feedback(decision_id=acknowledged[0], quality=1.0).feedback_count == 1

    disk.fill()
    try:
        assert "retry later" in _route_until_shed(client, routed)
        backlog = service.event_log._journal.buffered_bytes
        assert BACKLOG_MB << 20 <= backlog < (BACKLOG_MB + 1) << 20, backlog
        client.fails(
            "Feedback",
            pb.FeedbackRequest(decision_id=routed[1].decision_id, quality=0.5),
            grpc.StatusCode.UNAVAILABLE,
        )
    finally:
        disk.free_some(backlog // 4)
    with capture_logs() as logged:
        if not stop_at_once:
            drained = _wait(lambda: service.event_log.last_error is None, 60.0)
            assert drained, service.event_log.last_error
            for decision in routed[2:12]:
                ack = client.feedback(decision_id=decision.decision_id, quality=0.5)
                assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
                acknowledged.append(decision.decision_id)
            routed.append(client.route())
        service.stop()
    assert not [e for e in logged if e["event"].startswith("log_close_")], logged
    with duckdb.connect(str(disk.path / "log.duckdb"), read_only=True) as log:
        decisions = {r[0] for r in log.execute("SELECT decision_id FROM decisions").fetchall()}
        feedback = {r[0] for r in log.execute("SELECT decision_id FROM feedback").fetchall()}
    missing = {d.decision_id for d in routed} - decisions
    print(f"\nbacklog {backlog} bytes, room {backlog // 4}: {len(routed)} routed, "
          f"{len(missing)} missing; {len(acknowledged)} feedback acknowledged, "
          f"{len(set(acknowledged) - feedback)} missing")  # fmt: skip
    assert not missing
    assert set(acknowledged) <= feedback
    assert not (disk.path / "log.duckdb.rejected").exists()


# -- slow and stalled feedback clients -------------------------------------------------------------


def _route_latencies(stub: pb_grpc.RouterServiceStub, calls: int) -> list[float]:
    latencies = []
    for index in range(calls):
        start = time.perf_counter()
        stub.Route(pb.RouteRequest(prompt=f"What is {index} plus 2?"), timeout=CALL_TIMEOUT_S)
        latencies.append(time.perf_counter() - start)
    return latencies


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Helper processes the test starts; killed at teardown if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.mark.slow
def test_stalled_and_blocking_feedback_clients_do_not_slow_route(
    tmp_path: Path, launcher: ServerLauncher, processes: list[subprocess.Popen[str]]
) -> None:
    """While one client holds 12 Feedback calls open with half their request sent and never
    reads (more calls than the server's 8 worker threads), and another process keeps 8 threads
    blocked in Feedback calls with a 10-minute deadline, Route is not held up: every call
    completes within its deadline (a Route waiting for one of Feedback's threads would wait
    10 minutes). The medians are printed, not asserted: speed is not behaviour."""
    server = launcher.start(_config(tmp_path, server={"max_workers": 8}))
    port = int(server.address.rsplit(":", 1)[1])
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        _route_latencies(stub, 30)  # warm up
        before = statistics.median(_route_latencies(stub, 200))

        stalled = StalledClient(port, FEEDBACK, streams=12)
        try:
            flood = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("fault_helpers.py")), "flood",
                 server.address, "8", "3"],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            processes.append(flood)
            assert flood.stdout is not None
            assert flood.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            loaded = _route_latencies(stub, 200)
            output, _ = flood.communicate(timeout=HANG_S)
        finally:
            stalled.close()
        after = statistics.median(_route_latencies(stub, 200))
    calls = int(output.split()[-1])
    print(
        f"\nRoute median {before * 1000:.2f} / {after * 1000:.2f} ms unloaded (before / after), "
        f"{statistics.median(loaded) * 1000:.2f} ms loaded (max {max(loaded) * 1000:.1f} ms); "
        f"flood: {calls} Feedback calls"
    )
    assert len(loaded) == 200  # every Route answered within its deadline
    assert calls > 0
    assert server.terminate() == 0, server.log_text()


def _route_status(stub: pb_grpc.RouterServiceStub) -> tuple[grpc.StatusCode, float]:
    """The status of one Route call and how long it took (s)."""
    start = time.monotonic()
    try:
        stub.Route(pb.RouteRequest(prompt="Anyone there?"), timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code(), time.monotonic() - start
    return grpc.StatusCode.OK, time.monotonic() - start


def test_half_sent_routes_past_the_concurrency_limit_fail_fast_not_hang(
    tmp_path: Path, launcher: ServerLauncher
) -> None:
    """With max_concurrent_rpcs = 4, a client holding 4 Route calls open half-sent fills the
    limit: the next Route fails with RESOURCE_EXHAUSTED (instead of waiting for a thread until
    its deadline), and once the stalled client goes, Route answers again. The waits for the
    stalled calls to arrive and to go are bounded only to catch a hang (HANG_S). (It used to
    fail on a loaded machine: a probe Route holding a slot when the last stalled call arrived
    got that call refused, and the probes then always found a free slot.)"""
    server = launcher.start(_config(tmp_path, server={"max_workers": 4, "max_concurrent_rpcs": 4}))
    port = int(server.address.rsplit(":", 1)[1])
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        assert _route_status(stub)[0] == grpc.StatusCode.OK
        stalled = StalledClient(port, ROUTE, streams=4)
        try:
            deadline = time.monotonic() + HANG_S
            # The stalled streams reach the server some time after their connection opens; a
            # probe that holds a slot as one arrives gets that one refused, so the stalled
            # client reopens refused streams until they hold every slot.
            reopened = 0
            while (status := _route_status(stub))[0] == grpc.StatusCode.OK:
                assert time.monotonic() < deadline, "the stalled calls never filled the limit"
                reopened += stalled.refill()
                time.sleep(0.05)
            print(f"\nstalled calls refused and reopened before the limit was full: {reopened}")
            # Not DEADLINE_EXCEEDED: the call was refused, not left waiting for a thread.
            assert status[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            stalled.close()
        deadline = time.monotonic() + HANG_S
        while (status := _route_status(stub))[0] != grpc.StatusCode.OK:
            assert status[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "the limit was not freed"
            time.sleep(0.1)
    assert server.terminate() == 0, server.log_text()
