"""The trainer's join of feedback that reached a replica while the decision's owner was gone.

A replica that accepts Feedback for a gone replica's decision ships it as a feedback row with
disposition ``FOR_TRAINER`` (:mod:`banditroute.cluster.orphans`). The trainer hands each such
row to :class:`Joiner`, which finds the owner's decision row in the central log (the owner
shipped it before it died, or ships it when it comes back with the same ``replica_id``) and
turns the pair into one learning update, computed as the owner would have: the reward of the
reported fragments under the decision's objective (without the pacing surcharge of budgets
the trainer does not track), learned as the ``first`` combine rule does.

Each decision is learned at most once, whichever feedback reaches the trainer first: the
owner's own updates carry their decision id and :meth:`Joiner.owner_update` refuses one the
trainer already learned from a forwarded row; a forwarded row for a decision already learned
(by the owner, or from an earlier forwarded row) is counted a duplicate. Feedback whose
decision has not arrived is held, at most :data:`MAX_HELD` rows for at most
:data:`HOLD_S` seconds (a forged or stale id cannot make the trainer hold more), and then
counted ``unjoined``, never learned. Nothing of a row reaches a log line: only counts.

The joiner's state (the rows held, the decisions joined, the counts) is committed with the
learner: :meth:`Joiner.changes` gives only what changed since the last commit (a duplicate
changes a count, never a row), so a commit writes those rows, not the whole state.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from banditroute.cluster import REPLICA_TAG_HEX, feedback_horizon_s
from banditroute.config import Settings
from banditroute.decisions import FeedbackReport
from banditroute.errors import BanditrouteError, InvalidArgument
from banditroute.features import PromptFeatures
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.policies.sharing import SharedUpdate
from banditroute.rewards import fragments as report_fragments
from banditroute.rewards import learnable

HOLD_S = 3600.0
"""How long forwarded feedback waits for its decision row (the owner restarting ships it)."""
MAX_HELD = 10_000
"""The most forwarded feedback rows held at once; past it the oldest is counted unjoined."""
MAX_REMEMBERED = 100_000
"""Decision ids remembered as learned (the newest), for deduplication in memory; a forwarded
row is also checked against the owner's feedback and settlement rows in the central log."""

OUTCOMES = ("learned", "duplicate", "unjoined", "late", "off_policy", "not_learned")
"""What became of forwarded feedback: learned; a duplicate (its decision was learned already);
unjoined (no decision of the caller's tenant arrived in time); late (after the decision's
reward window, as the owner would have refused it); off_policy (a fallback model served);
not_learned (the decision's A/B arm is not the trainer's policy, or a report the trainer's
configuration refuses)."""


@dataclass(frozen=True)
class Forwarded:
    """Feedback accepted by a replica for a gone replica's decision."""

    report: FeedbackReport
    time: float
    """When the replica accepted it (epoch seconds)."""
    source: str = ""
    """The replica source whose batch brought it: its central file holds the row (the one
    file a cost noted for it is written into)."""

    @property
    def decision_id(self) -> str:
        return self.report.decision_id

    def as_json(self) -> bytes:
        """This row as held in the trainer's state (for a trainer that takes over)."""
        r = self.report
        return orjson.dumps({
            "decision_id": r.decision_id, "model": r.model, "quality": r.quality,
            "cost_usd": r.cost_usd, "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens, "latency_ms": r.latency_ms,
            "status": str(r.status), "tenant": r.tenant, "time": self.time,
            "source": self.source,
        })  # fmt: skip

    @classmethod
    def from_line(cls, data: bytes, source: str = "") -> Forwarded:
        """From a ``FOR_TRAINER`` feedback line of ``source``'s batch (times in microseconds)
        or :meth:`as_json` (the source it names: a replica's line cannot name another's);
        ValueError if it is not one."""
        try:
            row: dict[str, Any] = orjson.loads(data)
            line = "k" in row
            time = float(row["time"]) / (1e6 if line else 1.0)
            source = source if line else str(row.get("source") or "")
            report = FeedbackReport(
                decision_id=str(row["decision_id"]), model=str(row.get("model") or ""),
                quality=_number(row.get("quality")), cost_usd=_number(row.get("cost_usd")),
                input_tokens=_whole(row.get("input_tokens")),
                output_tokens=_whole(row.get("output_tokens")),
                latency_ms=_number(row.get("latency_ms")),
                status=OutcomeStatus(str(row.get("status") or "OK")),
                tenant=str(row["tenant"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed forwarded feedback: {type(exc).__name__}") from None
        if not math.isfinite(time):
            raise ValueError("malformed forwarded feedback: time")
        return cls(report, time, source)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Cost:
    """The cost to write into the forwarded feedback rows of ``decision_id`` in ``source``'s
    central file (the replica that accepted the feedback) that reported none with these
    model (empty: the chosen one) and tokens: the cost depends on nothing else, so every
    such row gets it."""

    source: str
    decision_id: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float


Row = tuple[str, str, float, bytes]
"""A row of the joiner's state: decision id, ``held`` or ``joined``, when, the held row."""


@dataclass(frozen=True)
class JoinChanges:
    """What changed in the joiner's state since the last commit: the rows to write (new or
    changed), the decision ids whose rows to delete, and the counts (all of them)."""

    rows: list[Row]
    deleted: list[str]
    counts: dict[str, int]


@dataclass(frozen=True)
class DecisionRow:
    """What the join needs of the owner's decision row."""

    decision_id: str
    time: float
    tenant: str
    objective: str
    features: PromptFeatures
    """Read once, where the row is found (a row whose features cannot be read is refused)."""
    eligible: tuple[str, ...]
    model: str
    probability: float
    arm: str


FindDecision = Callable[[str, float], DecisionRow | None]
"""``find(decision_id, since)``: the decision row made at or after ``since``, if the central
log has it; ValueError if it has one that cannot be learned from."""
OwnerLearned = Callable[[str, float], bool]
"""``learned(decision_id, since)``: whether the central log shows the owner learned the
decision (a LEARNED feedback row or a learning settlement since ``since``)."""


class Joiner:
    """Forwarded feedback held, joined and deduplicated (see the module doc); not
    thread-safe (the trainer's loop is its only caller)."""

    def __init__(
        self,
        settings: Settings,
        find: FindDecision,
        owner_learned: OwnerLearned,
        *,
        hold_s: float = HOLD_S,
        max_held: int = MAX_HELD,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self.settings = settings
        self._find = find
        self._owner_learned = owner_learned
        self.hold_s = hold_s
        self.max_held = max_held
        self.max_remembered = max_remembered
        self.held: OrderedDict[str, tuple[Forwarded, float]] = OrderedDict()
        """Decision id -> (forwarded feedback, when it arrived at the trainer)."""
        self.joined: OrderedDict[str, float] = OrderedDict()
        """Decision ids learned from forwarded feedback -> when (kept in the trainer state)."""
        self._learned: OrderedDict[str, None] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.fresh: list[tuple[str, float]] = []
        """Joins since :meth:`take_fresh`: (decision id, when), for the owner to hear of."""
        self.duplicate_updates = 0
        self.costs: list[Cost] = []
        """Costs of joined forwarded rows that reported none, for the central log's rows
        (:meth:`take_costs`)."""
        self._changed: dict[str, Row | None] = {}
        """Rows changed since the last commit (None: deleted)."""
        self._committed_counts: dict[str, int] = {}

    # -- the owner's own updates ---------------------------------------------------------------
    def owner_update(self, decision_id: str) -> bool:
        """Whether to learn the owner's update for ``decision_id`` ("" : always); False when
        the decision was learned already (from forwarded feedback that came first)."""
        if not decision_id:
            return True
        if decision_id in self.joined or decision_id in self._learned:
            self.duplicate_updates += 1
            return False
        self._remember(decision_id)
        return True

    # -- a replica's line ------------------------------------------------------------------------
    def update_of(self, line: bytes, now: float, source: str = "") -> SharedUpdate | None:
        """The update one of ``source``'s lines makes the learner learn, if any: the replica's
        own update (unless its decision was learned already), or forwarded feedback joined
        with its decision (the feedback's line, or the decision row it waited for).
        ValueError for an update, forwarded row or joined decision row that cannot be read
        (the feedback held for such a decision is counted unjoined)."""
        if is_update(line):
            update = SharedUpdate.from_dict(orjson.loads(line))
            return update if self.owner_update(update.decision_id) else None
        if self.held:
            decision_id = decision_id_of(line)
            if decision_id is not None and decision_id in self.held:
                return self.arrived(decision_id)
        if is_forwarded(line):
            return self.offer(Forwarded.from_line(line, source), now)
        return None

    # -- forwarded feedback ----------------------------------------------------------------------
    def offer(self, forwarded: Forwarded, now: float) -> SharedUpdate | None:
        """A forwarded row arrives: the update to learn if it joins now, else None (held, or
        counted as not learned)."""
        decision_id = forwarded.decision_id
        if decision_id in self.held:  # its decision has not arrived: nothing to look up
            self.counts["duplicate"] += 1
            return None
        if decision_id in self.joined or decision_id in self._learned:
            self._price_duplicate(forwarded)
            self.counts["duplicate"] += 1
            return None
        row = self._find_row(forwarded)
        if row is not None:
            return self._join(forwarded, row)
        self.held[decision_id] = (forwarded, now)
        self._changed[decision_id] = (decision_id, "held", now, forwarded.as_json())
        while len(self.held) > self.max_held:
            dropped, _ = self.held.popitem(last=False)
            self._changed[dropped] = None
            self.counts["unjoined"] += 1
        return None

    def waiting_for(self, decision_id: str) -> bool:
        """Whether forwarded feedback is held for ``decision_id``."""
        return decision_id in self.held

    def arrived(self, decision_id: str) -> SharedUpdate | None:
        """The owner's decision row ``decision_id`` is now in the central log: the update of
        the feedback held for it, if it joins."""
        entry = self.held.pop(decision_id, None)
        if entry is None:
            return None
        self._changed[decision_id] = None
        forwarded = entry[0]
        row = self._find_row(forwarded)
        if row is None:  # another tenant's or too old: as good as unknown
            self.counts["unjoined"] += 1
            return None
        return self._join(forwarded, row)

    def expire(self, now: float) -> int:
        """Count feedback held longer than :attr:`hold_s` as unjoined; returns how many."""
        expired = 0
        while self.held:
            decision_id, (_, arrived) = next(iter(self.held.items()))
            if now - arrived < self.hold_s:
                break
            del self.held[decision_id]
            self._changed[decision_id] = None
            expired += 1
        if expired:
            self.counts["unjoined"] += expired
        return expired

    def take_fresh(self) -> list[tuple[str, float]]:
        """The joins made since the last call (and forget them)."""
        fresh, self.fresh = self.fresh, []
        return fresh

    def _find_row(self, forwarded: Forwarded) -> DecisionRow | None:
        """The decision row ``forwarded`` joins, if any; a row that cannot be learned from
        counts the feedback unjoined and raises ValueError (its line is skipped)."""
        try:
            return self._find(forwarded.decision_id, self._since(forwarded))
        except ValueError:
            self.counts["unjoined"] += 1
            raise

    def _since(self, forwarded: Forwarded) -> float:
        return forwarded.time - feedback_horizon_s(self.settings.reward.window_s)

    def _remember(self, decision_id: str) -> None:
        self._learned[decision_id] = None
        while len(self._learned) > self.max_remembered:
            self._learned.popitem(last=False)

    def take_costs(self) -> list[Cost]:
        """The costs noted since the last call (and forget them)."""
        costs, self.costs = self.costs, []
        return costs

    def _fragments(self, forwarded: Forwarded, row: DecisionRow) -> Fragments | None:
        """The report's fragments as the owner would fill them in
        (:func:`banditroute.rewards.fragments`: the served model's prices and the reported
        tokens); None if the configuration refuses the model or the report."""
        try:
            served = self.settings.catalog.get(forwarded.report.model or row.model, field="model")
            return report_fragments(forwarded.report, served, self.settings.reward)
        except BanditrouteError:
            return None

    def _note_cost(
        self, forwarded: Forwarded, row: DecisionRow, fragments: Fragments | None
    ) -> None:
        """The cost the owner would have recorded for forwarded feedback that reported none
        (``fragments``' cost), noted for its row in the central log."""
        report = forwarded.report
        if report.cost_usd is not None or row.tenant != report.tenant or fragments is None:
            return
        cost = fragments.cost_usd
        if cost is not None:
            self.costs.append(Cost(forwarded.source, row.decision_id, report.model,
                                   report.input_tokens, report.output_tokens, cost))  # fmt: skip

    def _price_duplicate(self, forwarded: Forwarded) -> None:
        """Note the cost of a duplicate of a learned decision that reported none, as of a
        joined row: its row is kept (and read by ``report``) as any other. A duplicate
        with a cost is left as it is, with no lookup. Pricing is all a duplicate asks for: a
        decision row that cannot be read leaves it without a cost (the decision was learned
        and counted already; the duplicate is still counted as one, not as a bad line)."""
        if forwarded.report.cost_usd is not None:
            return
        try:
            row = self._find(forwarded.decision_id, self._since(forwarded))
        except ValueError:
            return
        if row is not None:
            self._note_cost(forwarded, row, self._fragments(forwarded, row))

    def _join(self, forwarded: Forwarded, row: DecisionRow) -> SharedUpdate | None:
        fragments = self._fragments(forwarded, row)  # once, for the cost and the reward
        self._note_cost(forwarded, row, fragments)
        outcome, update = self._judge(forwarded, row, fragments)
        self.counts[outcome] += 1
        if update is not None:
            self.joined[row.decision_id] = forwarded.time
            self._changed[row.decision_id] = (row.decision_id, "joined", forwarded.time, b"")
            while len(self.joined) > self.max_remembered:
                dropped, _ = self.joined.popitem(last=False)
                self._changed[dropped] = None
            self.fresh.append((row.decision_id, forwarded.time))
        return update

    def _judge(
        self, forwarded: Forwarded, row: DecisionRow, fragments: Fragments | None
    ) -> tuple[str, SharedUpdate | None]:
        """The outcome of joining ``forwarded`` (its report's ``fragments``) with its
        decision, and the update to learn."""
        report = forwarded.report
        settings = self.settings
        if row.tenant != report.tenant or row.model not in row.eligible:
            return "unjoined", None
        if forwarded.time - row.time > settings.reward.window_s:
            return "late", None
        served = report.model or row.model
        if served != row.model:
            return "off_policy", None
        if row.arm != "default":
            return "not_learned", None
        if row.decision_id in self._learned or self._owner_learned(row.decision_id, row.time):
            self._remember(row.decision_id)
            return "duplicate", None
        if fragments is None:
            return "not_learned", None
        try:
            try:
                objective = settings.objective(row.objective)
            except InvalidArgument:
                objective = settings.objective("")
            reward = objective.reward(fragments)
        except BanditrouteError:
            return "not_learned", None
        self._remember(row.decision_id)
        learned = learnable(reward)
        if learned is None:  # NaN: as the router, not learned
            return "not_learned", None
        update = SharedUpdate(
            row.features.as_dict(), row.eligible, row.eligible.index(row.model),
            row.probability, learned, row.decision_id, context=row.features,
        )  # fmt: skip
        return "learned", update

    # -- the trainer's state ---------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """Whether the state changed since the last commit (a row, or a count)."""
        return bool(self._changed) or self._committed_counts != self._counts()

    def changes(self) -> JoinChanges:
        """What to commit: the rows changed since the last :meth:`committed` (and the
        counts)."""
        rows = [row for row in self._changed.values() if row is not None]
        deleted = [d for d, row in self._changed.items() if row is None]
        return JoinChanges(rows, deleted, self._counts())

    def committed(self, changes: JoinChanges) -> None:
        """``changes`` are in the committed state; what changed since is still to commit."""
        for row in changes.rows:
            if self._changed.get(row[0]) == row:
                del self._changed[row[0]]
        for decision_id in changes.deleted:
            if decision_id in self._changed and self._changed[decision_id] is None:
                del self._changed[decision_id]
        self._committed_counts = changes.counts

    def restore(self, rows: Iterable[Row], counts: dict[str, int]) -> None:
        """Take up the committed state (a trainer taking over); a held row that cannot be
        read is counted unjoined (and deleted at the next commit)."""
        for decision_id, kind, at, data in rows:
            if kind == "joined":
                self.joined[decision_id] = at
                continue
            try:
                self.held[decision_id] = (Forwarded.from_line(data), at)
            except ValueError:
                self._changed[decision_id] = None
                self.counts["unjoined"] += 1
        self.counts.update(counts)
        self._committed_counts = dict(counts)

    def _counts(self) -> dict[str, int]:
        return {outcome: n for outcome, n in self.counts.items() if n}


_DECISION_KEY = b',"k":"d","decision_id":"'


def decision_id_of(line: bytes) -> str | None:
    """The decision id of a stamped decision line (``{"n":N,"k":"d","decision_id":"..."``),
    read without parsing the line; None for another kind of line."""
    start = line.find(_DECISION_KEY, 0, 40)
    if start < 0:
        return None
    start += len(_DECISION_KEY)
    end = line.find(b'"', start, start + 80)
    return None if end < 0 else line[start:end].decode("ascii", "replace")


def is_update(line: bytes) -> bool:
    """Whether a stamped line is a learning update (``k`` = ``u``)."""
    return b',"k":"u",' in line[:40]


def is_forwarded(line: bytes) -> bool:
    """Whether a stamped line is a feedback row a replica accepted for the trainer."""
    return b',"k":"f",' in line[:40] and b'"disposition":"FOR_TRAINER"' in line


def owner_tag(decision_id: str) -> str:
    """The replica tag a decision id starts with."""
    return decision_id[:REPLICA_TAG_HEX]


__all__ = [
    "HOLD_S", "MAX_HELD", "OUTCOMES", "Cost", "DecisionRow", "Forwarded", "JoinChanges",
    "Joiner", "Row", "decision_id_of", "is_forwarded", "is_update", "owner_tag",
]  # fmt: skip
