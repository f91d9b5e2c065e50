"""The rows banditroute logs: one per decision, per feedback and per settled reward window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DecisionRecord:
    """One Route call: the context, the eligible set, the full distribution and the choice."""

    decision_id: str
    time: float
    tenant: str
    request_id: str
    objective: str
    prompt_hash: str
    prompt: str | None
    features: dict[str, Any]
    eligible: tuple[str, ...]
    probabilities: tuple[float, ...]
    model: str
    probability: float
    policy_version: str
    explored: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    arm: str = "default"
    rule: str = ""
    data_class: str = "public"
    excluded: dict[str, str] = field(default_factory=dict)
    constraints: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_hash: str = ""
    """The request's fingerprint (:meth:`RouteQuery.fingerprint`) when it has a request_id:
    a retry replays this decision only if its fingerprint is the same."""

    @property
    def session(self) -> str:
        """The keyed hash of the decision's session id ("" without a session); logged in
        ``constraints`` as ``session``."""
        return str(self.constraints.get("session", ""))

    @property
    def sticky(self) -> bool:
        """The session forced the choice (``constraints.session_sticky``; probability 1)."""
        return bool(self.constraints.get("session_sticky", False))


@dataclass(frozen=True)
class FeedbackRecord:
    """One Feedback call: the reward fragments, the scalar reward and what was done with it."""

    decision_id: str
    time: float
    model: str
    quality: float | None
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    status: str
    reward: float
    disposition: str


@dataclass(frozen=True)
class SettlementRecord:
    """A decision whose reward window closed: what the learner did (``learned_default``,
    ``learned_combined`` or ``skipped``) and with which reward."""

    decision_id: str
    time: float
    action: str
    reward: float | None
