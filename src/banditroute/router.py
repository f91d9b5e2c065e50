"""The Router: route() and feedback(), holding pending decisions. No transport, no disk I/O.

One core, three fronts: the gRPC server, the simulator and the replay tool all drive this
class. It extracts features, asks the policy for a distribution over the eligible models,
samples one reproducibly (seeded by the decision id), logs the decision with the whole
distribution, and later joins feedback to the pending decision within the reward window,
turns it into a reward with the objective's weights and updates the learner.

Thread safety: a single lock guards the pending table and the policy (a VW workspace is not
thread-safe). Waiting for a feedback's log commit happens outside the lock.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import structlog

from banditroute.catalog import ModelSpec
from banditroute.config import Settings
from banditroute.decisions import Decision, Disposition, FeedbackReport, FeedbackResult, RouteQuery
from banditroute.eligibility import eligible_models
from banditroute.errors import InvalidArgument, NotFound, Unavailable
from banditroute.features import PromptFeatures, extract, features_from_dict, prompt_hash
from banditroute.objectives import BudgetPacer, Objective
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.policies.base import Policy
from banditroute.store.base import EventLog
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 10.0
"""How long Feedback waits for its log commit before answering UNAVAILABLE."""


def sample_index(probabilities: np.ndarray, decision_id: str, seed: int = 0) -> int:
    """Draw an index from ``probabilities`` with a uniform number derived from the id.

    The same decision id (and seed) always gives the same choice, so decisions replay exactly.
    """
    digest = hashlib.blake2b(f"{seed}:{decision_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    total = 0.0
    values = probabilities.tolist()
    for index, probability in enumerate(values):
        total += probability
        if u < total:
            return index
    return len(values) - 1


class DecisionIds:
    """Unique decision ids: a random 64-bit prefix per router plus a counter.

    Cheaper than ``uuid4`` (no system call per id) and still unique across restarts and
    processes, since each router instance draws a fresh prefix.
    """

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


@dataclass
class Pending:
    """A decision waiting for feedback within its reward window."""

    record: DecisionRecord
    decision: Decision
    features: PromptFeatures
    arms: tuple[ModelSpec, ...]
    chosen: int
    objective: Objective
    rewards: list[float] = field(default_factory=list)
    learned: bool = False
    feedback_count: int = 0


class Router:
    """Routes prompts and learns from feedback; the shared core of server, simulator and replay."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        event_log: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.catalog = settings.catalog
        self.policy = policy
        self.log = event_log
        self._clock = clock
        self._new_id = new_id or DecisionIds()
        self._seed = seed
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._by_request: dict[tuple[str, str], str] = {}
        self._pacers: dict[str, BudgetPacer] = {}

    # -- Route -----------------------------------------------------------------------------------
    def _validate(self, query: RouteQuery) -> None:
        limit = self.settings.server.max_prompt_chars
        if query.messages:
            if query.prompt:
                raise InvalidArgument(
                    "prompt: set either prompt or messages, not both", field="prompt"
                )
            total = 0
            for index, turn in enumerate(query.messages):
                if not turn.role:
                    raise InvalidArgument(
                        f"messages[{index}].role: must not be empty", field="messages.role"
                    )
                total += len(turn.content)
            if total == 0:
                raise InvalidArgument("messages: every message is empty", field="messages")
            if total > limit:
                raise InvalidArgument(
                    f"messages: conversation has {total} characters, limit is {limit}",
                    field="messages",
                )
        elif not query.prompt.strip():
            raise InvalidArgument("prompt: must not be empty (or give messages)", field="prompt")
        elif len(query.prompt) > limit:
            raise InvalidArgument(
                f"prompt: {len(query.prompt)} characters, limit is {limit}", field="prompt"
            )

    def route(self, query: RouteQuery) -> Decision:
        """Choose a model for the query, log the decision and keep it pending for feedback."""
        self._validate(query)
        objective = self.settings.objective(query.objective)
        if query.request_id:
            with self._lock:
                existing = self._by_request.get((query.tenant, query.request_id))
                if existing is not None and existing in self._pending:
                    decision = self._pending[existing].decision
                    return Decision(**{**decision.__dict__, "replayed": True})
        features = extract(
            query.prompt, query.messages, feature_chars=self.settings.server.feature_chars
        )
        eligibility = eligible_models(
            self.catalog,
            features,
            candidate_models=query.candidate_models,
            excluded_models=query.excluded_models,
        )
        arms = eligibility.eligible
        decision_id = self._new_id()
        now = self._clock()
        with self._lock:
            probabilities = self.policy.distribution(features, arms)
            version = self.policy.version
        chosen = sample_index(probabilities, decision_id, self._seed)
        order = sorted(range(len(arms)), key=lambda i: (-probabilities[i], i))
        ranking = tuple((arms[i].id, float(probabilities[i])) for i in order)
        decision = Decision(
            decision_id=decision_id,
            time=now,
            model=arms[chosen].id,
            probability=float(probabilities[chosen]),
            ranking=ranking,
            fallback_models=tuple(arms[i].id for i in order if i != chosen),
            policy_version=version,
            objective=objective.name,
        )
        text = query.prompt or "\n".join(m.content for m in query.messages)
        record = DecisionRecord(
            decision_id=decision_id,
            time=now,
            tenant=query.tenant,
            request_id=query.request_id,
            objective=objective.name,
            prompt_hash=prompt_hash(text),
            prompt=text if self.settings.log.store_prompts else None,
            features=features.as_dict(),
            eligible=tuple(a.id for a in arms),
            probabilities=tuple(float(p) for p in probabilities),
            model=decision.model,
            probability=decision.probability,
            policy_version=version,
            tags=dict(query.tags),
        )
        pending = Pending(record, decision, features, arms, chosen, objective)
        with self._lock:
            if query.request_id:
                # A concurrent call with the same request_id may have decided meanwhile: it
                # wins, and this decision is dropped unlogged (one decision per request_id).
                existing = self._by_request.get((query.tenant, query.request_id))
                if existing is not None and existing in self._pending:
                    decision = self._pending[existing].decision
                    return Decision(**{**decision.__dict__, "replayed": True})
                self._by_request[(query.tenant, query.request_id)] = decision_id
            self._pending[decision_id] = pending
        self.log.append_decision(record)
        return decision

    # -- Feedback --------------------------------------------------------------------------------
    def _fragments(self, report: FeedbackReport, served: ModelSpec) -> Fragments:
        for name in ("input_tokens", "output_tokens"):
            value = getattr(report, name)
            if value is not None and value < 0:
                raise InvalidArgument(f"{name}: must be >= 0, got {value}", field=name)
        cost = report.cost_usd
        if cost is None and (report.input_tokens is not None or report.output_tokens is not None):
            cost = served.price(report.input_tokens or 0, report.output_tokens or 0)
        return Fragments(report.quality, cost, report.latency_ms, report.status)

    def pacer(self, objective: Objective) -> BudgetPacer | None:
        """The budget pacer of an objective with a budget (created on first use)."""
        if objective.budget_usd is None:
            return None
        pacer = self._pacers.get(objective.name)
        if pacer is None:
            pacer = BudgetPacer(objective.budget_usd, objective.pacing_rate, objective.quality)
            self._pacers[objective.name] = pacer
        return pacer

    def _reward(self, objective: Objective, fragments: Fragments, *, first: bool) -> float:
        """Reward under the objective; the first feedback of a decision counts as spend."""
        pacer = self.pacer(objective)
        if pacer is None:
            return objective.reward(fragments)
        reward = objective.reward(fragments, extra_cost_weight=pacer.lam)
        if first:
            pacer.observe(fragments.cost_usd or 0.0)
        return reward

    def feedback(self, report: FeedbackReport) -> FeedbackResult:
        """Join a feedback to its pending decision, learn per the combine rule, log it."""
        if not report.decision_id:
            raise InvalidArgument("decision_id: must not be empty", field="decision_id")
        if report.model:
            self.catalog.get(report.model, field="model")
        self.expire()
        combine = self.settings.reward.combine
        with self._lock:
            pending = self._pending.get(report.decision_id)
            if pending is None:
                raise NotFound(
                    f"decision_id: no pending decision {report.decision_id!r} "
                    f"(unknown, or its {self.settings.reward.window_s:g}s reward window closed)",
                    field="decision_id",
                )
            served_id = report.model or pending.decision.model
            served = self.catalog.get(served_id, field="model")
            fragments = self._fragments(report, served)
            # The log keeps this feedback's own reward (restore re-combines them); the caller
            # gets the reward learned so far (combined, for the deferred rules).
            own_reward = reward = self._reward(
                pending.objective, fragments, first=pending.feedback_count == 0
            )
            if served_id != pending.decision.model:
                disposition = Disposition.RECORDED_OFF_POLICY
            elif combine == "first":
                if pending.learned:
                    disposition = Disposition.IGNORED_DUPLICATE
                else:
                    self._learn(pending, reward)
                    disposition = Disposition.LEARNED
            else:
                pending.rewards.append(reward)
                reward = _combine(combine, pending.rewards)
                disposition = Disposition.DEFERRED
            pending.feedback_count += 1
            feedback_count = pending.feedback_count
        record = FeedbackRecord(
            decision_id=report.decision_id,
            time=self._clock(),
            model=served_id,
            quality=fragments.quality,
            cost_usd=fragments.cost_usd,
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            latency_ms=fragments.latency_ms,
            status=str(fragments.status),
            reward=own_reward,
            disposition=str(disposition),
        )
        commit = self.log.append_feedback(record)
        if self.settings.log.sync_feedback:
            try:
                commit.wait(COMMIT_TIMEOUT_S)
            except Exception as exc:
                raise Unavailable(
                    f"feedback was not committed to the log: {exc}; retry the call"
                ) from exc
        return FeedbackResult(reward, disposition, feedback_count)

    def _learn(self, pending: Pending, reward: float) -> None:
        self.policy.learn(
            pending.features, pending.arms, pending.chosen, pending.decision.probability, reward
        )
        pending.learned = True

    # -- reward windows ----------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Settle every decision whose reward window has closed; returns how many."""
        now = self._clock() if now is None else now
        cutoff = now - self.settings.reward.window_s
        settled: list[SettlementRecord] = []
        with self._lock:
            while self._pending:
                decision_id, pending = next(iter(self._pending.items()))
                if pending.record.time > cutoff:
                    break
                del self._pending[decision_id]
                if pending.record.request_id:
                    self._by_request.pop((pending.record.tenant, pending.record.request_id), None)
                settled.append(self._settle(pending, now))
        for record in settled:
            self.log.append_settlement(record)
        return len(settled)

    def _settle(self, pending: Pending, now: float) -> SettlementRecord:
        decision_id = pending.decision.decision_id
        if pending.learned:
            return SettlementRecord(decision_id, now, "learned", None)
        if pending.rewards:
            reward = _combine(self.settings.reward.combine, pending.rewards)
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_combined", reward)
        if self.settings.reward.on_missing == "default":
            reward = self.settings.reward.default_reward
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_default", reward)
        return SettlementRecord(decision_id, now, "skipped", None)

    def locked(self) -> threading.Lock:
        """The lock guarding the policy, for callers that read it (snapshots)."""
        return self._lock

    @property
    def pending_count(self) -> int:
        """Decisions currently waiting for feedback."""
        return len(self._pending)

    def restore_pending(self) -> int:
        """Reload decisions still inside their reward window from the log (after a restart)."""
        now = self._clock()
        restored = 0
        for record, feedback in self.log.unsettled(now - self.settings.reward.window_s):
            if record.decision_id in self._pending or any(
                model not in self.catalog for model in record.eligible
            ):
                continue
            arms = tuple(self.catalog.get(m) for m in record.eligible)
            ranking = tuple(
                sorted(
                    zip(record.eligible, record.probabilities, strict=True),
                    key=lambda kv: -kv[1],
                )
            )
            decision = Decision(
                decision_id=record.decision_id,
                time=record.time,
                model=record.model,
                probability=record.probability,
                ranking=ranking,
                # As route() orders them: the other eligible models by probability.
                fallback_models=tuple(m for m, _ in ranking if m != record.model),
                policy_version=record.policy_version,
                objective=record.objective,
            )
            try:
                objective = self.settings.objective(record.objective)
            except InvalidArgument:
                objective = self.settings.objective("")
            pending = Pending(
                record, decision, features_from_dict(record.features), arms,
                record.eligible.index(record.model), objective,
            )  # fmt: skip
            pending.feedback_count = len(feedback)
            for fb in feedback:
                if fb.disposition == Disposition.LEARNED:
                    pending.learned = True
                elif fb.disposition == Disposition.DEFERRED:
                    pending.rewards.append(fb.reward)
            with self._lock:
                self._pending[record.decision_id] = pending
                if record.request_id:
                    self._by_request[(record.tenant, record.request_id)] = record.decision_id
            restored += 1
        return restored


def _combine(rule: str, rewards: list[float]) -> float:
    """Combine several feedback rewards for one decision by the configured rule."""
    if rule == "first":
        return rewards[0]
    if rule == "last":
        return rewards[-1]
    if rule == "min":
        return min(rewards)
    if rule == "max":
        return max(rewards)
    if rule == "sum":
        return float(sum(rewards))
    return float(sum(rewards) / len(rewards))


__all__ = ["OutcomeStatus", "Pending", "Router", "sample_index"]
