"""Transport-free request and response types of the router's two operations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field, fields
from enum import StrEnum

from banditroute.features import ChatTurn
from banditroute.outcomes import OutcomeStatus


@dataclass(frozen=True)
class RouteQuery:
    """A request for a routing decision (what RouteRequest carries, plus the caller's tenant)."""

    prompt: str = ""
    messages: tuple[ChatTurn, ...] = ()
    candidate_models: tuple[str, ...] = ()
    excluded_models: tuple[str, ...] = ()
    request_id: str = ""
    objective: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    tenant: str = "default"
    data_classification: str = ""
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    required_capabilities: tuple[str, ...] = ()
    expected_output_tokens: int | None = None
    session_id: str = ""

    def fingerprint(self, key: bytes) -> str:
        """A hash of every field but ``request_id`` (the tenant, the prompt or chat, the
        constraints, objective and tags: everything that can change the decision). A
        request_id replays its decision only for a request with the same fingerprint. Keyed
        with the router's prompt-hash key (BLAKE2b), since the fingerprint is logged and an
        unkeyed hash of a prompt can be confirmed by anyone who guesses the prompt."""
        content = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "request_id"}
        content["messages"] = [astuple(turn) for turn in self.messages]
        content["tags"] = dict(self.tags)
        if not self.session_id:  # as before sessions existed: logged fingerprints still match
            del content["session_id"]
        text = json.dumps(content, sort_keys=True)  # ASCII: lone surrogates are escaped too
        return hashlib.blake2b(text.encode(), key=key, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Decision:
    """A routing decision: the model, its probability, the ranking and the fallbacks."""

    decision_id: str
    time: float
    model: str
    probability: float
    ranking: tuple[tuple[str, float], ...]
    fallback_models: tuple[str, ...]
    policy_version: str
    objective: str
    explored: bool = True
    replayed: bool = False
    exclusions: tuple[tuple[str, str, str], ...] = ()
    rule: str = ""
    arm: str = "default"
    data_class: str = "public"
    language: str = "unknown"
    sticky: bool = False
    """The session kept its model: the choice was forced (probability 1), not drawn."""


@dataclass(frozen=True)
class FeedbackReport:
    """What a client reports about a decision (what FeedbackRequest carries)."""

    decision_id: str
    model: str = ""
    quality: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    status: OutcomeStatus = OutcomeStatus.OK
    tenant: str = "default"


class Disposition(StrEnum):
    """What the router did with one feedback."""

    LEARNED = "LEARNED"
    DEFERRED = "DEFERRED"
    IGNORED_DUPLICATE = "IGNORED_DUPLICATE"
    RECORDED_OFF_POLICY = "RECORDED_OFF_POLICY"
    FOR_TRAINER = "FOR_TRAINER"
    """A cluster replica accepted feedback for another replica's decision while that replica
    was gone: the trainer joins it with the decision and learns it once
    (:mod:`banditroute.cluster.orphans`)."""


@dataclass(frozen=True)
class FeedbackResult:
    """The acknowledgement of a feedback."""

    reward: float
    disposition: Disposition
    feedback_count: int
