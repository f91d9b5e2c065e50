"""The trainer's join of feedback forwarded while a decision's owner was gone: learned once,
deduplicated against the owner's own feedback, held within bounds (no server needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from banditroute.cluster import central as central_module
from banditroute.cluster import replica_tag
from banditroute.cluster.central import CentralLog, source_file
from banditroute.cluster.joiner import (
    Cost,
    DecisionRow,
    Forwarded,
    JoinChanges,
    Joiner,
    decision_id_of,
)  # fmt: skip
from banditroute.cluster.outbox import Line, stamp
from banditroute.cluster.trainer import build_learner
from banditroute.config import Settings, load_settings
from banditroute.decisions import Disposition, FeedbackReport
from banditroute.features import PromptFeatures, extract, features_from_dict
from banditroute.outcomes import Fragments
from banditroute.policies import sharing as sharing_module
from banditroute.policies.sharing import learn_update
from banditroute.store.journal_rows import decision_line, trainer_feedback_line
from banditroute.store.records import DecisionRecord, FeedbackRecord

T0 = 1_800_000_000.0
TAG = "0123abcd"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


def decision(settings: Settings, index: int, *, tenant: str = "default") -> DecisionRow:
    models = tuple(m.id for m in settings.catalog)[:3]
    return DecisionRow(
        decision_id=f"{TAG}{index:024x}", time=T0, tenant=tenant, objective="",
        features=extract("Hi there"), eligible=models, model=models[1], probability=0.5,
        arm="default",
    )  # fmt: skip


def forwarded(
    row: DecisionRow,
    *,
    after_s: float = 1.0,
    model: str = "",
    tokens: int | None = None,
    source: str = "b",
) -> Forwarded:
    report = FeedbackReport(row.decision_id, model=model, quality=1.0, tenant="default",
                            input_tokens=tokens, output_tokens=tokens)  # fmt: skip
    return Forwarded(report, row.time + after_s, source)


class Central:
    """The decision rows the joiner may find, and the decisions the owner learned."""

    def __init__(self) -> None:
        self.rows: dict[str, DecisionRow] = {}
        self.owner: set[str] = set()
        self.lookups = 0

    def find(self, decision_id: str, since: float) -> DecisionRow | None:
        self.lookups += 1
        row = self.rows.get(decision_id)
        return row if row is not None and row.time >= since else None

    def learned(self, decision_id: str, since: float) -> bool:
        return decision_id in self.owner


def make(settings: Settings, central: Central, **bounds: float) -> Joiner:
    return Joiner(settings, central.find, central.learned, **bounds)  # type: ignore[arg-type]


def test_feedback_waiting_for_its_decision_is_learned_once_when_it_arrives(
    settings: Settings,
) -> None:
    """Forwarded feedback whose decision row has not arrived is held; when it arrives the
    pair becomes one update (the decision's features, eligible set, choice and propensity,
    the reward of the reported quality); a retry of the same feedback, and the owner's own
    update for the decision, are duplicates and not learned."""
    central = Central()
    joiner = make(settings, central)
    row = decision(settings, 1)
    assert joiner.offer(forwarded(row), T0) is None
    assert joiner.waiting_for(row.decision_id)
    central.rows[row.decision_id] = row
    update = joiner.arrived(row.decision_id)
    assert update is not None
    assert update.decision_id == row.decision_id
    assert update.arms == row.eligible
    assert update.chosen == 1
    assert update.probability == 0.5
    assert update.reward == pytest.approx(settings.objective("").reward(Fragments(1.0, None, None)))
    assert joiner.offer(forwarded(row, after_s=5.0), T0) is None  # a client's retry
    assert joiner.owner_update(row.decision_id) is False  # the owner, back, learned it too
    assert joiner.counts["learned"] == 1
    assert joiner.counts["duplicate"] == 1
    assert joiner.duplicate_updates == 1
    assert joiner.take_fresh() == [(row.decision_id, row.time + 1.0)]


def test_feedback_the_owner_learned_first_is_a_duplicate(settings: Settings) -> None:
    """The owner's update for a decision reached the trainer before forwarded feedback for
    it (or the central log shows the owner learned it): the forwarded one is a duplicate."""
    central = Central()
    joiner = make(settings, central)
    first, second = decision(settings, 1), decision(settings, 2)
    central.rows |= {first.decision_id: first, second.decision_id: second}
    assert joiner.owner_update(first.decision_id) is True
    assert joiner.offer(forwarded(first), T0) is None
    central.owner.add(second.decision_id)  # learned before this trainer took over
    assert joiner.offer(forwarded(second), T0) is None
    assert joiner.counts == {"duplicate": 2}
    assert joiner.owner_update("") is True  # an update of an older replica: no id to check


def test_held_feedback_is_bounded_in_count_and_time_and_then_counted_unjoined(
    settings: Settings,
) -> None:
    """Forged or stale ids cannot make the trainer hold more than ``max_held`` rows, nor for
    longer than ``hold_s``: the oldest are dropped and counted unjoined, never learned."""
    central = Central()
    joiner = make(settings, central, max_held=3, hold_s=100.0)
    rows = [decision(settings, i) for i in range(5)]
    for index, row in enumerate(rows):
        assert joiner.offer(forwarded(row), T0 + index) is None
    assert list(joiner.held) == [r.decision_id for r in rows[2:]]
    assert joiner.counts["unjoined"] == 2
    assert joiner.expire(T0 + 50.0) == 0
    assert joiner.expire(T0 + 103.0) == 2  # held at T0+2 and T0+3; T0+4 stays until +100 s
    assert joiner.expire(T0 + 104.0) == 1
    assert not joiner.held
    assert joiner.counts["unjoined"] == 5
    central.rows[rows[0].decision_id] = rows[0]
    assert joiner.arrived(rows[0].decision_id) is None  # no longer waited for
    assert "learned" not in joiner.counts


def test_feedback_that_does_not_match_its_decision_is_not_learned(settings: Settings) -> None:
    """Another tenant's decision is as good as unknown (unjoined); feedback after the
    decision's reward window is late; feedback naming a fallback model is off-policy; a
    decision of another A/B arm is not the trainer's to learn."""
    central = Central()
    joiner = make(settings, central)
    other = decision(settings, 1, tenant="acme")
    late = decision(settings, 2)
    fallback = decision(settings, 3)
    arm = decision(settings, 4)
    arm = DecisionRow(**{**arm.__dict__, "arm": "candidate"})
    for row in (other, late, fallback, arm):
        central.rows[row.decision_id] = row
    assert joiner.offer(forwarded(other), T0) is None
    assert joiner.offer(forwarded(late, after_s=settings.reward.window_s + 1), T0) is None
    assert joiner.offer(forwarded(fallback, model=fallback.eligible[0]), T0) is None
    assert joiner.offer(forwarded(arm), T0) is None
    assert joiner.counts == {"unjoined": 1, "late": 1, "off_policy": 1, "not_learned": 1}
    assert not joiner.joined


def test_state_survives_a_takeover(settings: Settings) -> None:
    """A trainer that takes over restores held feedback (joined when its decision arrives)
    and the decisions learned from forwarded feedback (the owner's update for one is still a
    duplicate), with the counts."""
    central = Central()
    joiner = make(settings, central)
    learned, waiting = decision(settings, 1), decision(settings, 2)
    central.rows[learned.decision_id] = learned
    assert joiner.offer(forwarded(learned), T0) is not None
    assert joiner.offer(forwarded(waiting), T0) is None
    changes = joiner.changes()  # a new joiner's first changes: its whole state
    again = make(settings, central)
    again.restore(changes.rows, changes.counts)
    assert again.owner_update(learned.decision_id) is False
    central.rows[waiting.decision_id] = waiting
    assert again.arrived(waiting.decision_id) is not None
    assert again.counts["learned"] == 2


def test_lines_are_recognised_without_parsing(settings: Settings) -> None:
    """The trainer reads a decision line's id and a forwarded feedback line as the replica's
    outbox writes them (stamped with their number)."""
    models = tuple(m.id for m in settings.catalog)[:2]
    record = DecisionRecord(
        decision_id=f"{TAG}{7:024x}", time=T0, tenant="acme", request_id="", objective="",
        prompt_hash="h", prompt=None, features={}, eligible=models,
        probabilities=(0.5, 0.5), model=models[0], probability=0.5, policy_version="v",
    )  # fmt: skip
    assert decision_id_of(stamp(3, decision_line(record))) == record.decision_id
    feedback = FeedbackRecord(
        record.decision_id, T0 + 2, "", 0.5, None, 10, 20, 30.0, "OK", 0.0,
        str(Disposition.FOR_TRAINER),
    )  # fmt: skip
    line = stamp(4, trainer_feedback_line(feedback, "acme"))
    assert decision_id_of(line) is None
    parsed = Forwarded.from_line(line)
    assert parsed.time == pytest.approx(T0 + 2)
    assert parsed.report == FeedbackReport(
        record.decision_id, quality=0.5, input_tokens=10, output_tokens=20, latency_ms=30.0,
        tenant="acme",
    )  # fmt: skip
    assert Forwarded.from_line(parsed.as_json()) == parsed


def test_a_replicas_lines_become_each_decisions_update_once(settings: Settings) -> None:
    """Lines as the trainer reads them: a forwarded row is held, the owner's decision line
    releases it as an update, the owner's own update line for that decision is then not
    learned (another decision's is), and an unreadable update line is refused."""
    central = Central()
    joiner = make(settings, central)
    row = decision(settings, 1)
    models = row.eligible
    record = DecisionRecord(
        decision_id=row.decision_id, time=T0, tenant="default", request_id="", objective="",
        prompt_hash="h", prompt=None, features=row.features.as_dict(), eligible=models,
        probabilities=(0.25, 0.5, 0.25), model=row.model, probability=0.5, policy_version="v",
    )  # fmt: skip
    feedback = FeedbackRecord(
        row.decision_id, T0 + 1, "", 1.0, None, None, None, None, "OK", 0.0,
        str(Disposition.FOR_TRAINER),
    )  # fmt: skip
    assert joiner.update_of(stamp(1, trainer_feedback_line(feedback, "default")), T0) is None
    central.rows[row.decision_id] = row
    released = joiner.update_of(stamp(2, decision_line(record)), T0)
    assert released is not None
    assert released.decision_id == row.decision_id

    def update_line(seq: int, decision_id: str) -> bytes:
        update = replace(released, decision_id=decision_id)
        return stamp(seq, orjson.dumps({"k": "u", **update.as_dict()}) + b"\n")

    assert joiner.update_of(update_line(3, row.decision_id), T0) is None
    assert joiner.update_of(update_line(4, f"{TAG}{2:024x}"), T0) is not None
    with pytest.raises(ValueError, match="malformed"):
        joiner.update_of(stamp(5, b'{"k":"u","arms":[]}\n'), T0)


def _committed(central_log: CentralLog, joiner: Joiner) -> JoinChanges:
    changes = joiner.changes()
    central_log.commit_state({}, 0, 0, b"", joins=changes)
    joiner.committed(changes)
    return changes


def _held_state(joiner: Joiner) -> dict[str, tuple[str, float]]:
    state = {d: ("held", at) for d, (_, at) in joiner.held.items()}
    return state | {d: ("joined", at) for d, at in joiner.joined.items()}


def test_commits_write_only_what_changed_and_a_duplicate_no_row(
    settings: Settings, tmp_path: Path
) -> None:
    """Each commit writes only the rows that changed since the last one (held, joined, and
    deleted: released, expired, or dropped past the bounds), so the committed state is the
    joiner's; a duplicate changes a count and no row."""
    central, log = Central(), CentralLog(tmp_path / "central.duckdb")
    try:
        joiner = make(settings, central, max_held=2, max_remembered=2, hold_s=100.0)
        rows = [decision(settings, i) for i in range(6)]
        central.rows[rows[0].decision_id] = rows[0]
        assert joiner.offer(forwarded(rows[0]), T0) is not None  # joined at once
        for row in rows[1:4]:  # held; the oldest is dropped past max_held
            assert joiner.offer(forwarded(row), T0) is None
        first = _committed(log, joiner)
        assert len(first.rows) == 3  # joined 0, held 2 and 3 (1 dropped: deleted)
        central.rows[rows[2].decision_id] = rows[2]
        assert joiner.arrived(rows[2].decision_id) is not None  # held -> joined
        assert joiner.expire(T0 + 100.0) == 1  # rows[3] held too long
        central.rows[rows[4].decision_id] = rows[4]
        assert joiner.offer(forwarded(rows[4]), T0) is not None  # rows[0] leaves joined
        second = _committed(log, joiner)
        assert sorted(r[0] for r in second.rows) == sorted(
            [rows[2].decision_id, rows[4].decision_id]
        )
        assert sorted(second.deleted) == sorted([rows[0].decision_id, rows[3].decision_id])
        assert not joiner.dirty
        assert joiner.offer(forwarded(rows[4]), T0 + 1.0) is None  # a duplicate
        assert joiner.dirty  # its count is to commit
        duplicate = _committed(log, joiner)
        assert (duplicate.rows, duplicate.deleted) == ([], [])
        committed, counts = log.load_joins()
        assert {d: (kind, at) for d, kind, at, _ in committed} == _held_state(joiner)
        assert counts == dict(joiner.counts) == {"learned": 3, "unjoined": 2, "duplicate": 1}
    finally:
        log.close()


def _feedback_line(seq: int, decision_id: str, tokens: int) -> Line:
    record = FeedbackRecord(
        decision_id, T0 + 1, "", 1.0, None, tokens, tokens, None, "OK", 0.0,
        str(Disposition.FOR_TRAINER),
    )  # fmt: skip
    return Line(seq, stamp(seq, trainer_feedback_line(record, "default")))


def _costs(path: Path, source: str) -> dict[str, float | None]:
    with duckdb.connect(str(source_file(path, source)), read_only=True) as con:
        rows = con.execute("SELECT decision_id, cost_usd FROM feedback").fetchall()
    return {str(d): c for d, c in rows}


def test_a_cost_is_written_only_into_the_accepting_sources_file(tmp_path: Path) -> None:
    """A batch's costs go into the file of the replica that accepted the feedback, every
    row they are for in one go; another replica's file, even with a row that looks the
    same (decision, model and tokens, no cost), is left alone (before, every file of the
    family was updated, one statement per cost and file)."""
    path = tmp_path / "central.duckdb"
    first, second = f"{TAG}{1:024x}", f"{TAG}{2:024x}"
    log = CentralLog(path)
    try:
        log.ingest("b", [_feedback_line(1, first, 10), _feedback_line(2, second, 20)])
        log.ingest("c", [_feedback_line(1, first, 10)])
        log.fill_costs([
            Cost("b", first, "", 10, 10, 0.25), Cost("b", second, "", 20, 20, 0.5),
            Cost("b", second, "", 20, 20, 0.5),  # the same row priced twice: one cost
            Cost("b", second, "", 30, 30, 0.75),  # other tokens: not this row's cost
        ])  # fmt: skip
    finally:
        log.close()
    assert _costs(path, "b") == {first: 0.25, second: 0.5}
    assert _costs(path, "c") == {first: None}


def test_files_of_sources_not_heard_from_are_closed(tmp_path: Path) -> None:
    """release_all_but closes every open central file but the named sources' (a join reading
    a dead owner's decisions opens its file; before, it stayed open until the leader stepped
    down), and a closed file opens again, with its mark, when it is needed."""
    first = f"{TAG}{1:024x}"
    log = CentralLog(tmp_path / "central.duckdb")
    try:
        log.ingest("b", [_feedback_line(1, first, 10)])
        log.ingest("c", [_feedback_line(1, first, 10), _feedback_line(2, first, 20)])
        log.release_all_but({"b"})
        assert set(log._files) == {"b"}
        assert log.ingested("c") == 2  # opened again on demand
    finally:
        log.close()


def test_a_cost_names_the_replica_that_accepted_the_feedback(settings: Settings) -> None:
    """The cost of forwarded feedback that reported none is for the central file of the
    replica whose line brought it, also when the feedback was held for its decision (which
    another replica's line releases) through a takeover."""
    central = Central()
    joiner = make(settings, central)
    row = decision(settings, 1)
    line = _feedback_line(7, row.decision_id, 100).data
    assert joiner.update_of(line, T0, "c") is None  # held, from replica c's batch
    changes = joiner.changes()
    again = make(settings, central)
    again.restore(changes.rows, changes.counts)
    central.rows[row.decision_id] = row
    assert again.arrived(row.decision_id) is not None
    [cost] = again.take_costs()
    assert (cost.source, cost.decision_id, cost.model) == ("c", row.decision_id, "")
    assert (cost.input_tokens, cost.output_tokens) == (100, 100)
    assert cost.cost_usd > 0


def test_a_duplicate_is_looked_up_only_to_price_a_learned_decision(settings: Settings) -> None:
    """A duplicate changes a count and does no work unless it is priced: one reporting a
    cost, or one whose decision has not arrived (its first feedback is held), is counted
    without looking its decision up; one without a cost whose decision was learned is
    priced from the decision row, with one lookup (before, every duplicate without a cost
    looked its decision up, the held ones in vain)."""
    central = Central()
    joiner = make(settings, central)
    waiting, learned = decision(settings, 1), decision(settings, 2)
    assert joiner.offer(forwarded(waiting), T0) is None  # held: one lookup
    central.rows[learned.decision_id] = learned
    assert joiner.offer(forwarded(learned, tokens=10), T0) is not None  # joined: one lookup
    joiner.take_costs()
    assert central.lookups == 2
    for _ in range(3):
        assert joiner.offer(forwarded(waiting, tokens=10), T0) is None
    priced = Forwarded(replace(forwarded(learned).report, cost_usd=0.1), T0 + 2.0, "b")
    assert joiner.offer(priced, T0) is None
    assert central.lookups == 2
    assert joiner.take_costs() == []
    assert joiner.offer(forwarded(learned, tokens=20, source="d"), T0) is None
    assert central.lookups == 3
    [cost] = joiner.take_costs()
    assert (cost.source, cost.decision_id, cost.input_tokens) == ("d", learned.decision_id, 20)
    assert joiner.counts == {"learned": 1, "duplicate": 5}


def test_a_duplicate_whose_decision_row_cannot_be_read_is_still_a_duplicate(
    settings: Settings,
) -> None:
    """A duplicate of a decision the owner learned, whose central row cannot be read (a
    newer replica's features), is counted as a duplicate and left without a cost: nothing
    raises, so its line is not set aside as malformed, and nothing counts it unjoined
    (before, the lookup's refusal counted it unjoined and skipped the good line)."""
    central = Central()
    row = decision(settings, 1)
    central.rows[row.decision_id] = row
    central.owner.add(row.decision_id)
    readable = [True]

    def find(decision_id: str, since: float) -> DecisionRow | None:
        if not readable[0]:
            raise ValueError("features: an unknown key")
        return central.find(decision_id, since)

    joiner = Joiner(settings, find, central.learned)
    assert joiner.offer(forwarded(row, tokens=10), T0) is None  # the owner learned it
    joiner.take_costs()
    counts = dict(joiner.counts)
    readable[0] = False  # its row now reads as damaged
    assert joiner.offer(forwarded(row, tokens=20), T0) is None
    assert joiner.take_costs() == []
    assert joiner.counts == counts | {"duplicate": counts.get("duplicate", 0) + 1}


def test_the_features_of_a_joined_decision_are_read_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forwarded feedback joined with a decision row of the central log is learned with
    the features read (and checked) once, where the row is found: not again by the
    learner (before, the row's features were read twice)."""
    reads: list[int] = []

    def counted(data: Any) -> PromptFeatures:
        reads.append(1)
        return features_from_dict(data)

    monkeypatch.setattr(central_module, "features_from_dict", counted)
    monkeypatch.setattr(sharing_module, "features_from_dict", counted)
    row = replace(decision(settings, 1), decision_id=f"{replica_tag('a')}{1:024x}")
    record = DecisionRecord(
        decision_id=row.decision_id, time=T0, tenant="default", request_id="", objective="",
        prompt_hash="h", prompt=None, features=row.features.as_dict(), eligible=row.eligible,
        probabilities=(0.25, 0.5, 0.25), model=row.model, probability=0.5, policy_version="v",
    )  # fmt: skip
    log = CentralLog(tmp_path / "central.duckdb")
    try:
        log.ingest("a", [Line(1, stamp(1, decision_line(record)))])
        joiner = Joiner(settings, log.find_decision, log.owner_learned)
        update = joiner.offer(forwarded(row), T0)
    finally:
        log.close()
    assert update is not None
    assert update.context == row.features
    policy = build_learner(settings)
    assert learn_update(policy, update, settings.catalog)
    assert policy.updates == 1
    assert len(reads) == 1
