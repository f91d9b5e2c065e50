"""A decision waiting for feedback within its reward window, and rebuilding one from its
logged decision and feedback rows after a restart."""

from __future__ import annotations

from dataclasses import dataclass, field

from banditroute.admission import Ticket
from banditroute.catalog import Catalog, ModelSpec
from banditroute.config import Settings
from banditroute.decisions import Decision, Disposition
from banditroute.errors import InvalidArgument
from banditroute.features import PromptFeatures, features_from_dict
from banditroute.objectives import Objective
from banditroute.store.records import DecisionRecord, FeedbackRecord


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
    admitted: bool = False
    charged: set[str] = field(default_factory=set)
    ticket: Ticket | None = None


def restorable(record: DecisionRecord, catalog: Catalog) -> bool:
    """Whether a logged decision can wait here again: every model it chose among is still in
    the catalogue."""
    return all(model in catalog for model in record.eligible)


def rebuilt(record: DecisionRecord, feedback: list[FeedbackRecord], settings: Settings) -> Pending:
    """The pending decision as its logged rows describe it (call only if :func:`restorable`):
    the Decision route() returned, the objective it was made under (the default objective
    if a reload removed it), and what its feedback so far counted, learned and deferred."""
    ranking = tuple(
        sorted(zip(record.eligible, record.probabilities, strict=True), key=lambda kv: -kv[1])
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
        explored=record.explored,
        exclusions=tuple(
            (model, *_split_reason(reason)) for model, reason in record.excluded.items()
        ),
        rule=record.rule,
        arm=record.arm,
        data_class=record.data_class,
        language=str(record.features.get("language", "unknown")),
        sticky=record.sticky,
    )
    try:
        objective = settings.objective(record.objective)
    except InvalidArgument:
        objective = settings.objective("")
    arms = tuple(settings.catalog.get(m) for m in record.eligible)
    pending = Pending(
        record, decision, features_from_dict(record.features), arms,
        record.eligible.index(record.model), objective,
    )  # fmt: skip
    pending.feedback_count = len(feedback)
    pending.charged = {fb.model for fb in feedback}
    for fb in feedback:
        if fb.disposition == Disposition.LEARNED:
            pending.learned = True
        elif fb.disposition == Disposition.DEFERRED:
            pending.rewards.append(fb.reward)
    return pending


def _split_reason(logged: str) -> tuple[str, str]:
    """A logged exclusion "constraint: reason" back into its two parts."""
    constraint, _, reason = logged.partition(": ")
    return constraint, reason


__all__ = ["Pending", "rebuilt", "restorable"]
