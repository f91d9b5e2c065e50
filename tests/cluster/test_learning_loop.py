"""The cluster's learning loop in one process, against a real valkey-server: outbox, shipper,
trainer (with its leader lock and central log) and snapshot follower."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import valkey
from structlog.testing import capture_logs

from banditroute.catalog import Catalog
from banditroute.cli import main
from banditroute.cluster import replica_tag
from banditroute.cluster import trainer as trainer_module
from banditroute.cluster.central import CentralLog, source_file
from banditroute.cluster.events import Batch, Keys, encode_batch
from banditroute.cluster.learning import ReplicaLearning
from banditroute.cluster.orphans import FeedbackForTrainer
from banditroute.cluster.outbox import Line, Outbox, outbox_dir, stamp
from banditroute.cluster.trainer import Trainer, build_learner
from banditroute.config import Settings, load_settings
from banditroute.decisions import Disposition, FeedbackReport, RouteQuery
from banditroute.errors import InvalidArgument, NotFound
from banditroute.features import extract
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy
from banditroute.router import DecisionIds, Router
from banditroute.snapshots import parse_snapshot, snapshot_bytes, snapshot_payload
from banditroute.store.journal_rows import decision_line, trainer_feedback_line
from banditroute.store.memory import MemoryLog
from banditroute.store.records import DecisionRecord, FeedbackRecord

ERRORS = (valkey.exceptions.ValkeyError, OSError)
BOUND_S = 60.0
"""Only catches a hang: every wait is on an event or a condition."""

PROMPTS = ("Translate 'cat' into French.", "Prove that sqrt(2) is irrational.", "Hi there")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


def wait_for(condition: Callable[[], bool], what: str, bound_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Replica:
    router: Router
    learning: ReplicaLearning


@pytest.fixture
def keys() -> Keys:
    return Keys("test")


@pytest.fixture
def make_replica(
    settings: Settings, valkey_server: Any, tmp_path: Path, keys: Keys
) -> Iterator[Callable[[str], Replica]]:
    started: list[Replica] = []

    def make(name: str) -> Replica:
        learning = ReplicaLearning(
            tmp_path / f"{name}.duckdb", name, keys,
            client=valkey_server.client(), follower_client=valkey_server.client(),
            snapshot_period_s=0.2, errors=ERRORS,
        )  # fmt: skip
        router = Router(
            settings, build_learner(settings), learning.wrap(MemoryLog()),
            new_id=DecisionIds(prefix=replica_tag(name)),
        )  # fmt: skip
        learning.attach(router, lambda: build_learner(settings))
        replica = Replica(router, learning)
        started.append(replica)
        return replica

    yield make
    for replica in started:
        replica.learning.stop()


@pytest.fixture
def make_trainer(
    settings: Settings, valkey_server: Any, tmp_path: Path, keys: Keys
) -> Iterator[Callable[[], tuple[Trainer, threading.Event]]]:
    running: list[tuple[threading.Thread, threading.Event]] = []

    def make() -> tuple[Trainer, threading.Event]:
        client = valkey_server.client(socket_timeout=5)
        trainer = Trainer(
            settings, tmp_path / "central.duckdb", client, keys,
            snapshot_period_s=0.2, errors=ERRORS, lock_ttl_ms=1000,
        )  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
        thread.start()
        running.append((thread, stop))
        return trainer, stop

    yield make
    for thread, stop in running:
        stop.set()
        thread.join(BOUND_S)


def route_and_learn(replica: Replica, count: int) -> int:
    """Route ``count`` prompts on the replica and report each; returns the feedback learned."""
    learned = 0
    for index in range(count):
        decision = replica.router.route(RouteQuery(prompt=PROMPTS[index % len(PROMPTS)]))
        result = replica.router.feedback(
            FeedbackReport(decision.decision_id, quality=float(index % 2), cost_usd=0.001)
        )
        learned += result.disposition == Disposition.LEARNED
    return learned


def test_outbox_numbers_continue_after_a_restart_and_trim_keeps_unacknowledged(
    tmp_path: Path,
) -> None:
    """Lines are numbered 1, 2, ... across a restart of the outbox (what was written stays),
    trimming deletes only segments whose every line is acknowledged, and reads (also on from
    the last one, and back from an earlier number: a resend) give exactly the lines after
    the number asked for."""
    directory = outbox_dir(tmp_path / "log.duckdb")
    outbox = Outbox(directory, "r1")
    for _ in range(3):
        outbox.append(b'{"k":"d","decision_id":"x"}\n')
    outbox.sync()
    outbox.close()
    again = Outbox(directory, "another-name")
    assert again.source == "r1"  # the identity the lines were numbered under
    assert again.append(b'{"k":"d"}\n') == 4
    again.write()
    assert [line.seq for line in again.read(0, max_lines=10, max_bytes=1 << 20)] == [1, 2, 3, 4]
    assert [line.seq for line in again.read(2, max_lines=10, max_bytes=1 << 20)] == [3, 4]
    again.trim(2)  # the first segment holds 1..3: 3 is not acknowledged
    assert next(line.seq for line in again.read(0, max_lines=10, max_bytes=1 << 20)) == 1
    again.trim(3)
    assert [line.seq for line in again.read(0, max_lines=10, max_bytes=1 << 20)] == [4]
    for _ in range(3):  # reading on from where the last read ended gives exactly the new lines
        again.append(b'{"k":"s"}\n')
    again.write()
    assert [line.seq for line in again.read(4, max_lines=2, max_bytes=1 << 20)] == [5, 6]
    assert [line.seq for line in again.read(6, max_lines=10, max_bytes=1 << 20)] == [7]
    assert again.read(7, max_lines=10, max_bytes=1 << 20) == []
    assert [line.seq for line in again.read(5, max_lines=10, max_bytes=1 << 20)] == [6, 7]


def test_feedback_on_one_replica_reaches_another_through_the_trainer(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
) -> None:
    """Updates learned on replica A are learned once by the trainer, published, and swapped
    into replica C, whose decisions then carry the new policy version."""
    a, c = make_replica("a"), make_replica("c")
    _trainer, _ = make_trainer()
    a.learning.start()
    c.learning.start()
    learned = route_and_learn(a, 30)
    assert learned == 30
    wait_for(lambda: c.learning.follower.version > 0 and c.router.policy.updates == 30,
             "replica C to run a snapshot holding A's 30 updates")  # fmt: skip
    decision = c.router.route(RouteQuery(prompt="Hi there"))
    assert decision.policy_version == c.router.policy.version
    assert c.router.policy.updates == 30
    wait_for(lambda: a.learning.shipper.acked == a.learning.outbox.last_seq, "A acknowledged")
    assert a.learning.shipper.backlog == 0


def test_resent_and_duplicated_batches_are_learned_once(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
    valkey_server: Any,
    keys: Keys,
) -> None:
    """Every line is sent twice (a resend) and the stream is wiped once (Valkey losing its
    data): the trainer still learns each update exactly once and the central log holds each
    row once."""
    a = make_replica("a")
    trainer, _ = make_trainer()
    route_and_learn(a, 20)
    a.learning.shipper.cycle()
    a.learning.shipper.shipped = 0  # send everything again
    a.learning.shipper.cycle()
    wait_for(lambda: a.learning.shipper.cycle() == 0 and a.learning.shipper.acked >= 20,
             "the trainer to acknowledge the first rows")  # fmt: skip
    valkey_server.client().flushall()  # the stream, the acks and the snapshot are gone
    route_and_learn(a, 10)
    wait_for(
        lambda: (a.learning.shipper.cycle() >= 0 and trainer.policy is not None
                 and trainer.policy.updates == 30
                 and a.learning.shipper.acked == a.learning.outbox.last_seq),
        "the trainer to hold all 30 updates",
    )  # fmt: skip
    assert trainer.policy is not None
    assert trainer.policy.updates == 30


def test_a_standby_takes_over_and_learns_nothing_twice(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
    tmp_path: Path,
) -> None:
    """The leader stops (its lock expires); the standby takes over from the committed state
    and the resent lines: the final learner holds each update once, and the central log
    each feedback row once."""
    a = make_replica("a")
    a.learning.start()
    first, stop_first = make_trainer()
    wait_for(first.leading.is_set, "the first trainer to lead")
    second, stop_second = make_trainer()
    route_and_learn(a, 15)
    wait_for(lambda: a.learning.shipper.acked == a.learning.outbox.last_seq, "acknowledged")
    stop_first.set()
    wait_for(second.leading.is_set, "the standby to lead")
    route_and_learn(a, 15)
    wait_for(
        lambda: second.policy is not None and second.policy.updates == 30
        and a.learning.shipper.acked == a.learning.outbox.last_seq,
        "the standby to learn the rest",
    )  # fmt: skip
    second_policy = second.policy
    assert second_policy is not None
    assert second_policy.updates == 30
    stop_second.set()
    wait_for(lambda: second.central is None, "the trainer to close the central log")
    con = duckdb.connect(str(source_file(tmp_path / "central.duckdb", "a")), read_only=True)
    feedback = con.execute("SELECT count(*), count(DISTINCT decision_id) FROM feedback").fetchone()
    assert feedback == (30, 30)


def test_feedback_for_a_gone_replica_waits_for_its_decision_across_a_takeover(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
) -> None:
    """Replica B accepts feedback for A's decisions (A gone) only as A would (a report out
    of range is refused naming the field, an id no replica makes is NOT_FOUND) and ships it
    with the caller's tenant. A's decision rows arrive only after the leader stopped: the
    standby takes over the held feedback and learns each once when they arrive. A then hears
    of the joins: the same feedback sent to A is a duplicate, sent to B again it is a
    duplicate at the trainer, and the learner holds each decision once."""
    a, b = make_replica("a"), make_replica("b")
    b.learning.start()
    accept = FeedbackForTrainer(b.router, b.learning.shipping_log).accept
    decisions = [a.router.route(RouteQuery(prompt=p)).decision_id for p in PROMPTS]
    with pytest.raises(NotFound):
        accept(FeedbackReport("not-a-decision-id"))
    with pytest.raises(InvalidArgument) as refused:
        accept(FeedbackReport(decisions[0], quality=2.0))
    assert refused.value.field == "quality"
    for decision_id in decisions:
        result = accept(FeedbackReport(decision_id, quality=1.0, cost_usd=0.001))
        assert result.disposition == Disposition.FOR_TRAINER
    first, stop_first = make_trainer()
    wait_for(lambda: first.joiner is not None and len(first.joiner.held) == len(decisions)
             and b.learning.shipper.backlog == 0, "the leader to hold B's feedback")  # fmt: skip
    second, _ = make_trainer()
    stop_first.set()
    wait_for(second.leading.is_set, "the standby to lead")
    a.learning.start()  # A's decision rows reach the trainer now
    wait_for(lambda: second.policy is not None and second.policy.updates == len(decisions),
             "the standby to join and learn the held feedback")  # fmt: skip
    wait_for(lambda: a.learning.settle_joined() >= 0
             and a.learning.settled_joined == len(decisions), "A to hear of the joins")  # fmt: skip
    for decision_id in decisions:
        retry = a.router.feedback(FeedbackReport(decision_id, quality=0.0))
        assert retry.disposition == Disposition.IGNORED_DUPLICATE
        assert accept(FeedbackReport(decision_id, quality=1.0)).disposition == (
            Disposition.FOR_TRAINER
        )
    wait_for(lambda: a.learning.shipper.backlog == 0 and b.learning.shipper.backlog == 0,
             "every row acknowledged")  # fmt: skip
    assert second.joiner is not None
    assert second.joiner.counts == {"learned": len(decisions), "duplicate": len(decisions)}
    assert second.policy is not None
    assert second.policy.updates == len(decisions)
    wait_for(lambda: a.learning.follower.check() >= 0
             and a.router.policy.updates == len(decisions), "A on the snapshot")  # fmt: skip
    assert a.router.policy.updates == len(decisions)  # none learned twice on A either


def test_a_duplicate_forwarded_feedback_rewrites_no_row_of_the_joins(
    settings: Settings, valkey_server: Any, tmp_path: Path, keys: Keys, monkeypatch: Any
) -> None:
    """Forwarded feedback for a decision the trainer already joined is a duplicate: the
    checkpoint after it commits the count, and writes no row of the joiner's state (before,
    any forwarded row had the whole state, every held and joined decision, rewritten)."""
    trainer = Trainer(
        settings, tmp_path / "central.duckdb", valkey_server.client(socket_timeout=5), keys,
        snapshot_period_s=0.2, errors=ERRORS, lock_ttl_ms=1000,
    )  # fmt: skip
    assert trainer.lead_now()
    try:
        models = tuple(m.id for m in settings.catalog)[:2]
        now = float(int(time.time()))  # whole seconds: exact through microseconds
        decision = DecisionRecord(
            decision_id=replica_tag("a") + "0" * 24, time=now, tenant="default",
            request_id="", objective="", prompt_hash="h", prompt=None,
            features=extract(PROMPTS[0]).as_dict(),
            eligible=models, probabilities=(0.5, 0.5), model=models[0], probability=0.5,
            policy_version="v",
        )  # fmt: skip

        def forwarded(seq: int) -> Batch:
            row = FeedbackRecord(
                decision.decision_id, now + seq, "", 1.0, None, None, None, None, "OK", 0.0,
                str(Disposition.FOR_TRAINER),
            )  # fmt: skip
            line = Line(seq, stamp(seq, trainer_feedback_line(row, "default")))
            return Batch("b", seq, seq, (line,))

        trainer.apply(Batch("a", 1, 1, (Line(1, stamp(1, decision_line(decision))),)))
        assert trainer.apply(forwarded(1)) == 1
        trainer.checkpoint()
        central = trainer.central
        assert central is not None
        commits: list[Any] = []
        commit_state = central.commit_state

        def spy(*args: Any, **kwargs: Any) -> None:
            commits.append(kwargs.get("joins"))
            commit_state(*args, **kwargs)

        monkeypatch.setattr(central, "commit_state", spy)
        assert trainer.apply(forwarded(2)) == 0
        trainer.checkpoint()
        assert trainer.joiner is not None
        assert trainer.joiner.counts == {"learned": 1, "duplicate": 1}
        (joins,) = commits
        assert (joins.rows, joins.deleted) == ([], [])
        assert central.load_joins() == (
            [(decision.decision_id, "joined", now + 1, b"")],
            {"learned": 1, "duplicate": 1},
        )
    finally:
        trainer.close()


def counting_trainer(
    settings: Settings, client: Any, tmp_path: Path, keys: Keys
) -> tuple[Trainer, list[int]]:
    """A trainer (not started) and the list its every take-over of the lead appends to."""
    trainer = Trainer(
        settings, tmp_path / "central.duckdb", client, keys,
        snapshot_period_s=0.2, errors=ERRORS, lock_ttl_ms=1000,
    )  # fmt: skip
    takeovers: list[int] = []
    take_over = trainer._take_over

    def counted() -> None:
        takeovers.append(1)
        take_over()

    trainer._take_over = counted  # type: ignore[method-assign]
    return trainer, takeovers


def test_a_malformed_line_is_set_aside_and_learning_goes_on(
    settings: Settings, valkey_server: Any, tmp_path: Path, keys: Keys
) -> None:
    """A damaged or forged line on the stream (a decision row whose features lack a key and
    feedback forwarded for it, an update with a field missing, one that is not JSON, one
    with a non-finite reward) is set aside: logged without its content and counted in
    ``lines_skipped``, while the good lines around it are learned, the running leader never
    steps down (before, the decision row made the learner raise KeyError, and the leader
    stepped down, took over and read it again forever) and every line is acknowledged."""
    client = valkey_server.client(socket_timeout=5)
    trainer, takeovers = counting_trainer(settings, client, tmp_path, keys)
    models = tuple(m.id for m in settings.catalog)[:2]
    now = float(int(time.time()))
    good = extract(PROMPTS[0]).as_dict()
    secret = "zebra-confidential"
    damaged = {k: v for k, v in good.items() if k != "markers"} | {"words": [secret]}

    def decision(number: int, features: dict[str, Any]) -> DecisionRecord:
        return DecisionRecord(
            decision_id=replica_tag("a") + f"{number:024d}", time=now, tenant="default",
            request_id="", objective="", prompt_hash="h", prompt=None, features=features,
            eligible=models, probabilities=(0.5, 0.5), model=models[0], probability=0.5,
            policy_version="v",
        )  # fmt: skip

    def forwarded(record: DecisionRecord) -> bytes:
        row = FeedbackRecord(
            record.decision_id, now + 1, "", 1.0, None, None, None, None, "OK", 0.0,
            str(Disposition.FOR_TRAINER),
        )  # fmt: skip
        return trainer_feedback_line(row, "default")

    def update(**changes: Any) -> bytes:
        data = {"k": "u", "features": good, "arms": list(models), "chosen": 0,
                "probability": 0.5, "reward": 1.0} | changes  # fmt: skip
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)

    bad, fine = decision(1, damaged), decision(2, good)
    lines = {
        "b": [forwarded(bad), forwarded(fine)],
        "a": [
            update(), decision_line(bad), update(features=damaged | {"markers": []} | {
                "words": None}), b'{"k":"u","features":{' + secret.encode() + b"\n",
            update(reward="nan"), update(reward=1e200),
            update(features=good | {"embedding": [1e200]}), decision_line(fine), update(),
        ],
    }  # fmt: skip
    for source, rows in lines.items():
        batch = [Line(seq, stamp(seq, row)) for seq, row in enumerate(rows, 1)]
        client.xadd(keys.events, encode_batch(source, batch))
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
    try:
        with capture_logs() as logged:
            thread.start()
            wait_for(lambda: len(takeovers) > 1 or all(
                client.get(keys.ack(source)) == str(len(rows)).encode()
                for source, rows in lines.items()), "every line acknowledged")  # fmt: skip
        assert len(takeovers) == 1  # never stepped down
        assert trainer.policy is not None
        assert trainer.policy.updates == 3  # the two good updates and the good join
        assert trainer.lines_skipped == 6
        assert trainer.joiner is not None
        assert trainer.joiner.counts == {"learned": 1, "unjoined": 1}
    finally:
        stop.set()
        thread.join(BOUND_S)
    skipped = [e for e in logged if e["event"] == "trainer_line_malformed"]
    assert [(e["source"], e["seq"]) for e in skipped] == [("a", n) for n in range(2, 8)]
    assert not any(secret in repr(e) for e in logged)


def test_forwarded_feedback_without_a_cost_carries_the_owners_cost(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
    tmp_path: Path,
) -> None:
    """Feedback forwarded without a cost (tokens only) carries the cost the owner records for
    the same report, from the served model's prices: a report naming the model in the
    accepting replica's own row already; one naming none (the chosen model is only in the
    decision row) in its central row once the trainer joins it, whether it waited for its
    decision or came after the owner's own feedback was learned (a duplicate). Before, these
    rows kept no cost (NaN for ``report``), though the trainer priced them for learning."""
    a, b = make_replica("a"), make_replica("b")
    trainer, stop = make_trainer()
    accept = FeedbackForTrainer(b.router, b.learning.shipping_log).accept
    named, waiting, late = (a.router.route(RouteQuery(prompt=p)) for p in PROMPTS)
    reports = [
        FeedbackReport(named.decision_id, model=named.model, quality=1.0, input_tokens=1200,
                       output_tokens=300),
        FeedbackReport(waiting.decision_id, quality=1.0, input_tokens=800, output_tokens=900),
        FeedbackReport(late.decision_id, quality=0.0, input_tokens=50),
    ]  # fmt: skip
    for report in reports:
        a.router.feedback(report)  # the owner's row: the cost it records
    for report in reports[:2]:
        assert accept(report).disposition == Disposition.FOR_TRAINER
    b.learning.start()
    wait_for(lambda: trainer.joiner is not None and len(trainer.joiner.held) == 2,
             "the trainer to hold B's rows")  # fmt: skip
    a.learning.start()  # the decisions, and the owner's updates (the late one's learned)
    wait_for(lambda: a.learning.shipper.acked == a.learning.outbox.last_seq, "A acknowledged")
    assert accept(reports[2]).disposition == Disposition.FOR_TRAINER
    wait_for(lambda: trainer.joiner is not None and sum(trainer.joiner.counts.values()) == 3
             and b.learning.shipper.acked == b.learning.outbox.last_seq,
             "the trainer to join B's rows")  # fmt: skip
    stop.set()
    wait_for(lambda: trainer.central is None, "the trainer to close the central log")
    shipped = [orjson.loads(line.data) for line in b.learning.outbox.read(
        0, max_lines=100, max_bytes=1 << 20)]  # fmt: skip
    local = {r["decision_id"]: r["cost_usd"] for r in shipped if r.get("k") == "f"}

    def costs(source: str) -> dict[str, float | None]:
        path = source_file(tmp_path / "central.duckdb", source)
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute("SELECT decision_id, cost_usd FROM feedback").fetchall()
        return {str(d): c for d, c in rows}

    owner, forwarded_rows = costs("a"), costs("b")
    assert all(owner[r.decision_id] is not None for r in reports)
    assert forwarded_rows == {r.decision_id: owner[r.decision_id] for r in reports}
    assert local[named.decision_id] == owner[named.decision_id]  # priced where accepted


@pytest.mark.parametrize("error", [RuntimeError, ValueError, MemoryError])
def test_a_failing_learner_acknowledges_nothing_and_learns_every_line_once_fixed(
    settings: Settings,
    valkey_server: Any,
    tmp_path: Path,
    keys: Keys,
    *,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    """When the learner itself raises on lines that read well (a bug, no memory, a shape
    that no longer fits after a config change; whatever the exception's type), the leader
    does not set the lines aside: it logs the failure, acknowledges nothing, steps down and
    leads again from its last commit, and once the learner is fixed it learns every line
    (before, any exception set the line aside and acknowledged it, so a learner failing on
    every update had the whole stream acknowledged and never learned)."""
    client = valkey_server.client(socket_timeout=5)
    trainer, takeovers = counting_trainer(settings, client, tmp_path, keys)

    def failing(*_args: Any) -> bool:
        raise error("the learner's own failure")

    monkeypatch.setattr(trainer_module, "learn_update", failing)
    models = tuple(m.id for m in settings.catalog)[:2]
    update = orjson.dumps(
        {"k": "u", "features": extract(PROMPTS[0]).as_dict(), "arms": list(models),
         "chosen": 0, "probability": 0.5, "reward": 1.0},
        option=orjson.OPT_APPEND_NEWLINE,
    )  # fmt: skip
    client.xadd(keys.events, encode_batch("a", [Line(seq, stamp(seq, update)) for seq in (1, 2)]))
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
    try:
        with capture_logs() as logged:
            thread.start()
            wait_for(lambda: len(takeovers) > 2 or client.get(keys.ack("a")) is not None,
                     "the leader to fail and lead again twice")  # fmt: skip
            assert client.get(keys.ack("a")) is None
            assert trainer.lines_skipped == 0
            monkeypatch.undo()  # the learner fixed
            wait_for(lambda: client.get(keys.ack("a")) == b"2", "both lines acknowledged")
        failed = [e for e in logged if e["event"] == "trainer_learner_failed"]
        assert failed
        assert {(e["source"], e["seq"], e["error"]) for e in failed} == {("a", 1, error.__name__)}
        assert trainer.lines_skipped == 0
    finally:
        stop.set()
        thread.join(BOUND_S)
    central = CentralLog(tmp_path / "central.duckdb")
    try:
        state = central.load_state()
        assert state is not None
        assert parse_snapshot(state[1])[1] == 2  # each line learned once
    finally:
        central.close()


def _narrow_snapshot(catalog: Catalog) -> bytes:
    """A published snapshot of a cost-aware policy that reads no embedding (a trainer
    configured without the semantic features)."""
    narrow = CostAwarePolicy(seed=0)
    narrow.learn(extract("Why is the sky blue?"), catalog.models[:2], 0, 0.5, 1.0)
    return snapshot_payload(snapshot_bytes(narrow))


@pytest.mark.parametrize("damage", ["cut short", "another embedding width"])
def test_a_damaged_snapshot_is_refused_and_the_replica_keeps_its_policy(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
    valkey_server: Any,
    keys: Keys,
    damage: str,
) -> None:
    """A published snapshot whose bytes no longer match its checksum (cut short, altered), or
    a cost-aware one of another embedding width than the replica's (read as it is, it would be
    carried and the replica's embedding weights reset at every broadcast), is refused, counted
    and said in the status's last_error, and not fetched again: the replica keeps the policy it
    runs, and takes the next good version."""
    a = make_replica("a")
    make_trainer()
    route_and_learn(a, 10)
    wait_for(lambda: a.learning.shipper.cycle() >= 0 and a.learning.follower.check(),
             "a first snapshot")  # fmt: skip
    running = a.router.policy
    assert isinstance(running, CostAwarePolicy)
    assert running.semantic_dims == SEMANTIC_DIMS
    client = valkey_server.client()
    data = client.hget(keys.snapshot, "data")
    version = int(client.hget(keys.snapshot, "version"))
    bad = data[:-10] + b"x" * 10 if damage == "cut short" else _narrow_snapshot(a.router.catalog)
    client.hset(keys.snapshot, mapping={"version": version + 100, "data": bad})
    assert not a.learning.follower.check()
    assert a.learning.follower.refused == 1
    assert a.router.policy is running
    assert f"snapshot {version + 100} refused" in a.learning.status().last_error
    assert not a.learning.follower.check()  # the refused version is not fetched again
    assert a.learning.follower.refused == 1
    client.hset(keys.snapshot, mapping={"version": version + 101, "data": data})
    assert a.learning.follower.check()
    assert a.router.policy is not running
    assert a.learning.status().last_error == ""


def test_with_the_trainer_down_a_replica_keeps_its_snapshot_and_learns_on(
    make_replica: Callable[[str], Replica],
    make_trainer: Callable[[], tuple[Trainer, threading.Event]],
) -> None:
    """The trainer stops: the replica keeps routing with the last snapshot (its version in
    status, its age growing), keeps learning its own feedback, and its unacknowledged lines
    wait in the outbox (the backlog) until a trainer is back."""
    a = make_replica("a")
    a.learning.start()
    trainer, stop = make_trainer()
    route_and_learn(a, 5)
    wait_for(lambda: a.learning.follower.version > 0 and a.learning.shipper.backlog == 0,
             "a snapshot and everything acknowledged")  # fmt: skip
    stop.set()
    wait_for(lambda: not trainer.leading.is_set() and trainer.central is None, "trainer down")
    status = a.learning.status()
    route_and_learn(a, 5)
    assert a.router.policy.updates == 10  # its own feedback, learned locally
    wait_for(lambda: a.learning.status().snapshot_age_s > (status.snapshot_age_s or 0) + 0.2,
             "the snapshot's age to grow")  # fmt: skip
    later = a.learning.status()
    assert later.snapshot_version == status.snapshot_version
    assert later.backlog > 0
    make_trainer()
    wait_for(lambda: a.learning.status().backlog == 0, "the new trainer to acknowledge all")
    wait_for(lambda: a.learning.follower.version > status.snapshot_version, "a new snapshot")
    assert a.router.policy.updates == 10  # the trainer's 10, its own not learned twice


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--log", "central.duckdb"], "--cluster"),
        (["--cluster", "http://x", "--log", "central.duckdb"], "--cluster"),
        (["--cluster", "redis://127.0.0.1:1/0", "--log", "central.txt"], "--log"),
        (["--cluster", "redis://127.0.0.1:1/0", "--log", "."], "--log"),
    ],
)
def test_trainer_refuses_bad_arguments_naming_them(
    args: list[str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``banditroute trainer`` without a cluster URL, with a bad one, or with a --log that is
    not a .duckdb file name exits 2 with one line naming the argument (no traceback)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BANDITROUTE_CONFIG", raising=False)
    assert main(["trainer", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"banditroute trainer: error: {named}")
