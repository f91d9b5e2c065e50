"""A Route's choice and what is made of it: the policy's distribution with its exploration
floor, a shadow policy's pick, the session's model or a draw seeded by the decision id, and
the Decision returned and the DecisionRecord logged (without a sensitive request's words or
tags). Nothing here holds router state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditroute.admission import Ticket
from banditroute.catalog import ModelSpec
from banditroute.config import Settings
from banditroute.decision_ids import sample_index
from banditroute.decisions import Decision
from banditroute.eligibility import Eligibility
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy
from banditroute.policies.floor import apply_floor
from banditroute.route_request import EXPLORABLE_CLASSES, RouteRequest
from banditroute.sessions import sticky_distribution
from banditroute.store.records import DecisionRecord


@dataclass(frozen=True)
class Choice:
    """The model a Route chose, and how: the eligibility decided over, the arm policy's
    floored distribution (and its version), the shadow policies' picks, the chosen index,
    whether the session forced it, and its shared admission ticket (None without a cluster)."""

    eligibility: Eligibility
    probabilities: np.ndarray
    version: str
    shadow: dict[str, dict[str, Any]]
    chosen: int
    sticky: bool
    ticket: Ticket | None

    @property
    def arms(self) -> tuple[ModelSpec, ...]:
        """The eligible models the choice was made among."""
        return self.eligibility.eligible


def floored(
    probabilities: np.ndarray, settings: Settings, policy: str, explore: bool
) -> np.ndarray:
    """The policy's distribution with its exploration floor (``min_probability`` of the named
    policy's settings, ``[policy]``'s for the default) applied: the one place it is applied,
    so the sampled and logged probabilities are the floored ones (the true propensities).
    Requests that must not be explored (personal data, secrets) keep the greedy choice."""
    if not explore:
        return probabilities
    # The default arm reads settings.policy: a copy made with replace(settings, policy=...)
    # (command-line overrides, simulations) leaves policies["default"] as it was.
    named = settings.policy if policy == "default" else settings.policies.get(policy)
    return apply_floor(probabilities, (named or settings.policy).min_probability)


def shadow_pick(
    policy: Policy, name: str, request: RouteRequest, arms: tuple[ModelSpec, ...], seed: int
) -> dict[str, Any]:
    """What shadow policy ``name`` would have chosen (its own draw from its floored
    distribution), as the decision logs it."""
    probabilities = floored(
        policy.distribution(request.features, arms, explore=request.explore),
        request.settings, name, request.explore,
    )  # fmt: skip
    pick = sample_index(probabilities, request.decision_id, seed)
    return {
        "model": arms[pick].id,
        "probability": float(probabilities[pick]),
        "probabilities": [float(p) for p in probabilities],
        "version": policy.version,
    }


def pick(
    arms: tuple[ModelSpec, ...], probabilities: np.ndarray, held: str | None, decision_id: str,
    seed: int,
) -> tuple[int, bool]:  # fmt: skip
    """The index chosen and whether the session forced it: the session's model while it is
    eligible (and not refused); else a draw seeded by the decision id."""
    ids = [a.id for a in arms]
    if held is not None and held in ids:
        return ids.index(held), True
    return sample_index(probabilities, decision_id, seed), False


def decided(
    request: RouteRequest, choice: Choice, hash_text: Callable[[str], str]
) -> tuple[Decision, DecisionRecord]:
    """The Decision returned for the choice and the DecisionRecord logged for it; the
    record's prompt and tag text are the keyed hashes ``hash_text`` makes of them."""
    arms, chosen, sticky = choice.arms, choice.chosen, choice.sticky
    query, data_class, session = request.query, request.data_class, request.session
    # Python floats once: indexing the numpy array element by element costs more.
    values: list[float] = choice.probabilities.tolist()
    order = sorted(range(len(arms)), key=lambda i: (-values[i], i))
    if sticky:  # forced: probability 1, the fallbacks in the policy's order
        values, order = sticky_distribution(values, order, chosen)
    exclusions = tuple(
        (model, why.constraint, why.reason) for model, why in choice.eligibility.excluded.items()
    )
    decision = Decision(
        decision_id=request.decision_id,
        time=request.now,
        model=arms[chosen].id,
        probability=values[chosen],
        ranking=tuple((arms[i].id, values[i]) for i in order),
        fallback_models=tuple(arms[i].id for i in order if i != chosen),
        policy_version=choice.version,
        objective=request.objective.name,
        explored=request.explore and not sticky,
        exclusions=exclusions,
        rule="" if request.rule is None else request.rule.name,
        arm=request.arm,
        data_class=data_class,
        language=request.features.language,
        sticky=sticky,
    )
    record = DecisionRecord(
        decision_id=request.decision_id,
        time=request.now,
        tenant=request.tenant.name,
        request_id=query.request_id,
        objective=request.objective.name,
        prompt_hash=hash_text(request.text),
        prompt=request.text if request.tenant.store_prompts and request.explore else None,
        features=loggable_features(request.features, data_class),
        eligible=tuple(a.id for a in arms),
        probabilities=tuple(values),
        model=decision.model,
        probability=decision.probability,
        policy_version=choice.version,
        explored=decision.explored,
        tags=loggable_tags(query.tags, data_class, hash_text),
        arm=request.arm,
        rule=decision.rule,
        data_class=data_class,
        excluded={m: f"{c}: {r}" for m, c, r in exclusions},
        constraints=request.constraints.as_dict()
        | ({} if session is None else {"session": session[1], "session_sticky": sticky}),
        shadow=choice.shadow,
        request_hash=request.request_hash,
    )
    return decision, record


def loggable_features(features: PromptFeatures, data_class: str) -> dict[str, Any]:
    """Features for the log: a sensitive prompt's words are left out, since they may be the
    personal data or the secret itself (an e-mail's name and domain, a token's first
    characters). The learner still sees them in memory; a decision restored from the log
    after a restart learns without them."""
    logged = features.as_dict()
    if data_class not in EXPLORABLE_CLASSES:
        logged["words"] = []
    return logged


def loggable_tags(
    tags: Mapping[str, str], data_class: str, hash_text: Callable[[str], str]
) -> dict[str, str]:
    """The tags as logged: as sent for public and internal requests; for pii and secret
    ones each key and value replaced by its keyed hash (``hash_text``), so the log holds no
    tag text but equal tags still group together."""
    if data_class in EXPLORABLE_CLASSES:
        return dict(tags)
    return {hash_text(key): hash_text(value) for key, value in tags.items()}


__all__ = ["Choice", "decided", "floored", "loggable_features", "loggable_tags", "pick",
           "shadow_pick"]  # fmt: skip
