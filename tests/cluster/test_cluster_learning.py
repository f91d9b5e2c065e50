"""The learning loop as real processes on 127.0.0.1: three ``serve --cluster`` replicas, one
or two ``trainer`` processes and a real valkey-server; kill -9 of each of them under load."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess, write_config

from banditroute.cluster.central import source_file
from banditroute.cluster.outbox import line_seq, outbox_dir
from banditroute.store.journal import list_segments
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
WAIT_BOUND_S = 120.0
"""Generous bound on waits for a state to show (catches a hang only)."""
SNAPSHOT_PERIOD_S = 1.0
PROMPTS = (
    "Translate 'good morning' into German.",
    "Write a Python function that reverses a list.",
    "What is the capital of Australia?",
    "Prove that there are infinitely many primes.",
)


def wait_for(check: Callable[[], bool], what: str, bound_s: float = WAIT_BOUND_S) -> None:
    """Poll ``check`` until it holds (bounded: catches a hang only)."""
    deadline = time.monotonic() + bound_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def replica_config(tmp_path: Path, name: str, replica_id: str = "") -> Path:
    """One replica: any free port, its own log, fast heartbeats, snapshots every second;
    ``replica_id`` (default: ``name``) names it in the cluster."""
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "server": {"port": 0, "grace_s": 2.0},
            "log": {"path": str(tmp_path / f"{name}.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / f"{name}.snapshot")},
            "cluster": {
                "replica_id": replica_id or name, "heartbeat_s": 0.2, "retry_s": 0.2,
                "snapshot_period_s": SNAPSHOT_PERIOD_S,
            },
        },
    )  # fmt: skip


@dataclass
class TrainerProcess:
    """A running ``banditroute trainer``; its stderr goes to a file."""

    process: subprocess.Popen[bytes]
    stderr_path: Path
    stderr: IO[bytes]

    def log_text(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")

    @property
    def leading(self) -> bool:
        return "trainer_leading" in self.log_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=CALL_TIMEOUT_S)

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=CALL_TIMEOUT_S)


@dataclass
class Cluster:
    """Replicas and trainers of one test (all killed at teardown)."""

    tmp_path: Path
    url: str
    launcher: ServerLauncher
    trainers: list[TrainerProcess] = field(default_factory=list)
    config: Callable[..., Path] = replica_config
    """Writes the config file of ``(tmp_path, name, replica_id)`` (replicas and trainers)."""

    def replica(self, name: str, replica_id: str = "") -> ServerProcess:
        return self.launcher.start(
            self.config(self.tmp_path, name, replica_id), args=("--cluster", self.url)
        )

    @property
    def central(self) -> Path:
        """The trainers' central log."""
        return self.tmp_path / "central.duckdb"

    def trainer(self) -> TrainerProcess:
        config = self.config(self.tmp_path, "trainer")
        stderr_path = self.tmp_path / f"trainer{len(self.trainers)}.stderr"
        stderr = stderr_path.open("wb")
        command = [
            sys.executable, "-m", "banditroute.cli", "trainer", "--config", str(config),
            "--cluster", self.url, "--log", str(self.central),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=self.tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
        trainer = TrainerProcess(process, stderr_path, stderr)
        self.trainers.append(trainer)
        return trainer

    def close(self) -> None:
        for trainer in self.trainers:
            trainer.kill()
            trainer.stderr.close()
        self.launcher.close_all()


@pytest.fixture
def cluster(tmp_path: Path, valkey_server: Any) -> Iterator[Cluster]:
    started = Cluster(tmp_path, valkey_server.url, ServerLauncher(tmp_path))
    yield started
    started.close()


def stub(channel: grpc.Channel) -> pb_grpc.RouterServiceStub:
    return pb_grpc.RouterServiceStub(channel)


def cluster_status(address: str) -> pb.ClusterStatus:
    with grpc.insecure_channel(address) as channel:
        return stub(channel).GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT_S).cluster


def outbox_last(log_path: Path) -> int:
    """The number of the newest line a replica's outbox has written (it is durable before
    the Feedback that wrote it is acknowledged)."""
    for segment in reversed(list_segments(outbox_dir(log_path))):
        lines = segment.read_bytes().splitlines()
        if lines:
            return line_seq(lines[-1])
    return 0


def acknowledged(client: Any, log_path: Path, source: str) -> bool:
    """Whether the trainer has acknowledged every line replica ``source``'s outbox (beside
    ``log_path``) has written: both read now (the trainer's ack key in Valkey, set once the
    lines are committed, and the outbox files), unlike GetStats' ``stream_backlog``, which is
    as of the replica's last heartbeat."""
    written = outbox_last(log_path)
    return int(client.get(f"banditroute:ack:{source}") or 0) >= written


def _in_outbox(log_path: Path, decision_id: str) -> bool:
    """Whether a replica's outbox holds a line naming ``decision_id`` (its decision row)."""
    needle = decision_id.encode()
    return any(needle in segment.read_bytes() for segment in list_segments(outbox_dir(log_path)))


def updates_of(version: str) -> int:
    """The update count in a policy version (``NAME:SETTINGS:UPDATES``)."""
    return int(version.rsplit(":", 1)[1])


def test_feedback_to_one_replica_changes_another_replicas_decisions(cluster: Cluster) -> None:
    """Feedback sent to replica A reaches replica C through the trainer within a snapshot
    period or so: C's snapshot version changes, its decisions carry a policy version holding
    A's updates, and its probabilities for the same prompt change."""
    a, _b, c = (cluster.replica(name) for name in ("a", "b", "c"))
    trainer = cluster.trainer()
    wait_for(lambda: trainer.leading, "the trainer to lead")
    with grpc.insecure_channel(a.address) as to_a, grpc.insecure_channel(c.address) as to_c:
        before = stub(to_c).Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
        version_before = cluster_status(c.address).snapshot_version
        for index in range(40):
            decision = stub(to_a).Route(
                pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)]), timeout=CALL_TIMEOUT_S
            )
            quality = 1.0 if decision.model == before.ranking[-1].model else 0.0
            stub(to_a).Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=quality),
                timeout=CALL_TIMEOUT_S,
            )
        sent = time.monotonic()
        wait_for(
            lambda: updates_of(
                stub(to_c).Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
                .policy_version
            ) >= 40,
            "replica C to route with A's 40 updates",
        )  # fmt: skip
        print(f"A's last feedback to C routing with it: {time.monotonic() - sent:.2f} s "
              f"(snapshot period {SNAPSHOT_PERIOD_S:g} s)")  # fmt: skip
        after = stub(to_c).Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
        assert cluster_status(c.address).snapshot_version != version_before
        assert [p.probability for p in after.ranking] != [p.probability for p in before.ranking]
        assert cluster_status(c.address).HasField("snapshot_age")


@dataclass
class Load:
    """Route and Feedback round-robin over the replicas from one thread, counting what was
    acknowledged."""

    addresses: dict[str, str]
    learned: set[str] = field(default_factory=set)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index = 0
        while not self.stop.is_set():
            for name in sorted(self.addresses):
                index += 1
                try:
                    with grpc.insecure_channel(self.addresses[name]) as channel:
                        decision = stub(channel).Route(
                            pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)]), timeout=5
                        )
                        reply = stub(channel).Feedback(
                            pb.FeedbackRequest(
                                decision_id=decision.decision_id, quality=(index % 3) / 2
                            ),
                            timeout=5,
                        )
                except grpc.RpcError:
                    self.failures += 1
                    continue
                if reply.disposition == pb.FEEDBACK_DISPOSITION_LEARNED:
                    self.learned.add(decision.decision_id)

    def count(self) -> int:
        return len(self.learned)


def central_feedback(tmp_path: Path, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(decision_id, disposition) of every feedback row in the central log."""
    rows: list[tuple[str, str]] = []
    for name in names:
        path = source_file(tmp_path / "central.duckdb", name)
        with contextlib.closing(duckdb.connect(str(path), read_only=True)) as con:
            rows += con.execute("SELECT decision_id, disposition FROM feedback").fetchall()
    return rows


def test_kill_9_of_a_replica_the_trainer_and_valkey_loses_nothing_learns_nothing_twice(
    cluster: Cluster, valkey_server: Any
) -> None:
    """Under load, kill -9 a replica (restarted on its log), the leading trainer (the standby
    takes over) and valkey-server (restarted empty): afterwards every acknowledged LEARNED
    feedback is in the central log exactly once, and the trainer's learner holds exactly one
    update per LEARNED feedback row (none lost, none learned twice)."""
    names = ("a", "b", "c")
    replicas = {name: cluster.replica(name) for name in names}
    first = cluster.trainer()
    wait_for(lambda: first.leading, "the first trainer to lead")
    standby = cluster.trainer()
    load = Load({name: server.address for name, server in replicas.items()})
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: load.count() >= 30, "some learned feedback")
        replicas["b"].kill()
        wait_for(lambda: load.count() >= 60, "load on the other replicas")
        replicas["b"] = cluster.replica("b")
        load.addresses["b"] = replicas["b"].address
        wait_for(lambda: load.count() >= 90, "load with b back")
        first.kill()
        wait_for(lambda: standby.leading, "the standby to take over")
        wait_for(lambda: load.count() >= 120, "load under the new leader")
        valkey_server.kill()
        seen = load.count()
        wait_for(lambda: load.count() >= seen + 20, "routing and learning while Valkey is down")
        valkey_server.restart()
        seen = load.count()
        wait_for(lambda: load.count() >= seen + 30, "load after Valkey returned")
    finally:
        load.stop.set()
        thread.join(CALL_TIMEOUT_S)
    learned = set(load.learned)
    acks = valkey_server.client()
    wait_for(
        lambda: all(acknowledged(acks, cluster.tmp_path / f"{name}.duckdb", name)
                    for name in names),
        "every replica's rows acknowledged by the trainer",
    )  # fmt: skip
    assert standby.terminate() == 0  # commits, then the central files can be read
    rows = central_feedback(cluster.tmp_path, names)
    learned_rows = [decision for decision, disposition in rows if disposition == "LEARNED"]
    assert len(learned_rows) == len(set(learned_rows))  # no feedback row twice
    assert learned <= set(learned_rows)  # no acknowledged feedback lost
    updates = int(valkey_server.client().hget("banditroute:snapshot", "updates") or 0)
    with contextlib.closing(
        duckdb.connect(str(cluster.tmp_path / "central.trainer.duckdb"), read_only=True)
    ) as con:
        committed = con.execute("SELECT updates FROM trainer_state").fetchone()
    assert committed is not None
    assert committed[0] == len(learned_rows)  # each learned exactly once
    assert updates <= committed[0]
    print(f"acknowledged LEARNED {len(learned)}, central LEARNED rows {len(learned_rows)}, "
          f"trainer updates {committed[0]}, failed calls {load.failures}")  # fmt: skip


def test_feedback_reaching_another_replica_is_forwarded_to_the_one_that_decided(
    cluster: Cluster,
) -> None:
    """Feedback sent to replica B for A's decision is relayed to A and learned there. While A
    is down but still registered it is refused UNAVAILABLE (retry); once A's heartbeats have
    stopped, B accepts it for the trainer (FOR_TRAINER). Without a trainer to join it, A
    restarted on its log still learns the feedback relayed to it."""
    a, b = cluster.replica("a"), cluster.replica("b")
    wait_for(lambda: cluster_status(b.address).replicas_alive == 2, "two replicas")
    with grpc.insecure_channel(a.address) as to_a:
        first, second = (
            stub(to_a).Route(pb.RouteRequest(prompt=prompt), timeout=CALL_TIMEOUT_S)
            for prompt in PROMPTS[:2]
        )
    with grpc.insecure_channel(b.address) as to_b:
        reply = stub(to_b).Feedback(
            pb.FeedbackRequest(decision_id=first.decision_id, quality=1.0), timeout=CALL_TIMEOUT_S
        )
        assert reply.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
        again = stub(to_b).Feedback(
            pb.FeedbackRequest(decision_id=first.decision_id, quality=1.0), timeout=CALL_TIMEOUT_S
        )
        assert again.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE  # A's own count
        a.kill()

        def answer() -> grpc.StatusCode | int:
            try:
                return int(
                    stub(to_b)
                    .Feedback(
                        pb.FeedbackRequest(decision_id=second.decision_id, quality=1.0),
                        timeout=CALL_TIMEOUT_S,
                    )
                    .disposition
                )
            except grpc.RpcError as error:
                return error.code()

        assert answer() in (grpc.StatusCode.UNAVAILABLE, pb.FEEDBACK_DISPOSITION_FOR_TRAINER)
        wait_for(lambda: answer() == pb.FEEDBACK_DISPOSITION_FOR_TRAINER, "A to leave")
        assert cluster_status(b.address).feedback_for_trainer >= 1
        cluster.replica("a")
        wait_for(lambda: cluster_status(b.address).replicas_alive == 2, "A back")
        reply = stub(to_b).Feedback(
            pb.FeedbackRequest(decision_id=second.decision_id, quality=0.5),
            timeout=CALL_TIMEOUT_S,
        )
        assert reply.disposition == pb.FEEDBACK_DISPOSITION_LEARNED


def test_feedback_for_a_killed_replicas_decisions_is_learned_once_by_the_trainer(
    cluster: Cluster, valkey_server: Any
) -> None:
    """Replica A routes decisions, ships them and is killed (SIGKILL). Feedback for them sent
    to replica B once A's heartbeats stopped is acknowledged (FOR_TRAINER; an id whose tag no
    replica of the cluster ever had is NOT_FOUND) and the trainer
    joins each with A's decision row and learns it exactly once. A restarted with the same
    replica_id hears of the joins: the same feedback re-sent to A is a duplicate there, and
    the trainer still holds each update once."""
    count = 12
    a, b = cluster.replica("a"), cluster.replica("b")
    trainer = cluster.trainer()
    wait_for(lambda: trainer.leading, "the trainer to lead")
    wait_for(lambda: cluster_status(b.address).replicas_alive == 2, "two replicas")
    with grpc.insecure_channel(a.address) as to_a:
        decisions = [
            stub(to_a)
            .Route(pb.RouteRequest(prompt=PROMPTS[index % len(PROMPTS)]), timeout=CALL_TIMEOUT_S)
            .decision_id
            for index in range(count)
        ]
    # A decision row reaches the outbox a moment after Route answers (the log writer), and
    # GetStats' backlog is as of A's last heartbeat: wait for the rows themselves, then for the
    # trainer's acknowledgement past them.
    outbox = cluster.tmp_path / "a.duckdb"
    wait_for(lambda: all(_in_outbox(outbox, decision) for decision in decisions),
             "A's decision rows in its outbox")  # fmt: skip
    written = outbox_last(outbox)
    acks = valkey_server.client()
    wait_for(lambda: int(acks.get("banditroute:ack:a") or 0) >= written,
             "the trainer to acknowledge A's decision rows")  # fmt: skip
    assert a.kill() == -signal.SIGKILL
    wait_for(lambda: cluster_status(b.address).replicas_alive == 1, "A to leave the registry")

    def send(address: str) -> list[int]:
        with grpc.insecure_channel(address) as channel:
            return [
                stub(channel)
                .Feedback(
                    pb.FeedbackRequest(decision_id=decision_id, quality=1.0, cost_usd=0.001),
                    timeout=CALL_TIMEOUT_S,
                )
                .disposition
                for decision_id in decisions
            ]

    assert send(b.address) == [pb.FEEDBACK_DISPOSITION_FOR_TRAINER] * count
    with grpc.insecure_channel(b.address) as channel, pytest.raises(grpc.RpcError) as unknown:
        stub(channel).Feedback(  # well-formed, but no replica of the cluster makes such ids
            pb.FeedbackRequest(decision_id="f" * 32, quality=1.0), timeout=CALL_TIMEOUT_S
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    snapshot = valkey_server.client()
    wait_for(lambda: int(snapshot.hget("banditroute:snapshot", "updates") or 0) >= count,
             "the trainer to learn the forwarded feedback")  # fmt: skip
    # The same replica_id, on its log: its decisions are pending again, and joined already.
    back = cluster.replica("a")
    assert send(back.address) == [pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE] * count
    last = outbox_last(cluster.tmp_path / "a.duckdb")
    wait_for(lambda: int(snapshot.get("banditroute:ack:a") or 0) >= last,
             "the trainer to hold A's rows after its restart")  # fmt: skip
    assert trainer.terminate() == 0
    assert int(snapshot.hget("banditroute:snapshot", "updates") or 0) == count
    with contextlib.closing(
        duckdb.connect(str(cluster.tmp_path / "central.trainer.duckdb"), read_only=True)
    ) as con:
        committed = con.execute("SELECT updates FROM trainer_state").fetchone()
        outcomes = dict(con.execute("SELECT * FROM forwarded_outcomes").fetchall())
    assert committed == (count,)  # each decision learned exactly once
    assert outcomes == {"learned": count}
    with contextlib.closing(
        duckdb.connect(str(source_file(cluster.tmp_path / "central.duckdb", "b")), read_only=True)
    ) as con:
        rows = con.execute(
            "SELECT count(*), count(DISTINCT decision_id) FROM feedback "
            "WHERE disposition = 'FOR_TRAINER'"
        ).fetchone()
    assert rows == (count, count)  # B's rows in the central log, each once


def test_a_replica_restarted_under_another_name_answers_for_its_earlier_decisions(
    cluster: Cluster,
) -> None:
    """A replica restarted on its log under a new replica id (the default id changes at every
    start) still takes Feedback for the decisions it restored, although their ids carry its
    old tag, instead of looking for a replica of that name."""
    a = cluster.replica("a")
    with grpc.insecure_channel(a.address) as to_a:
        decision = stub(to_a).Route(pb.RouteRequest(prompt=PROMPTS[0]), timeout=CALL_TIMEOUT_S)
    assert a.terminate() == 0
    renamed = cluster.replica("a", replica_id="a-renamed")
    with grpc.insecure_channel(renamed.address) as channel:
        reply = stub(channel).Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0),
            timeout=CALL_TIMEOUT_S,
        )
    assert reply.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
