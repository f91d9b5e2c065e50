"""A Route request as read before a model is chosen: its checks, its privacy (data) class,
its constraints, its A/B arm, and the whole reading (:class:`RouteRequest`) that the
choosing steps work from. Nothing here holds router state."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

from banditroute.budgets import TenantBudget
from banditroute.config import Settings
from banditroute.decisions import RouteQuery
from banditroute.eligibility import Constraints
from banditroute.errors import InvalidArgument
from banditroute.features import PromptFeatures
from banditroute.objectives import Objective
from banditroute.privacy import DATA_CLASSES, classify, most_sensitive, scan
from banditroute.rules import RoutingRule
from banditroute.sessions import SessionKey
from banditroute.tenancy import Tenant

EXPLORABLE_CLASSES = frozenset({"public", "internal"})
"""Data classes a policy may explore on; more sensitive requests get the greedy choice."""


@dataclass(frozen=True)
class RouteRequest:
    """Everything a Route decides from, read once: the query and the settings it is decided
    under, who asks and for which objective, its features, data class, constraints and
    matching rule, and the decision's id, A/B arm and session (with the session's model)."""

    query: RouteQuery
    settings: Settings
    tenant: Tenant
    objective: Objective
    budget: TenantBudget | None
    now: float
    request_hash: str
    text: str
    data_class: str
    features: PromptFeatures
    constraints: Constraints
    rule: RoutingRule | None
    decision_id: str
    arm: str
    session: SessionKey | None
    held: str | None

    @property
    def explore(self) -> bool:
        """Whether the policy may explore (not for personal data or secrets)."""
        return self.data_class in EXPLORABLE_CLASSES


def validate(query: RouteQuery, limit: int) -> None:
    """InvalidArgument naming the field unless the query has either a prompt or messages
    (each with a role, not all empty) of at most ``limit`` characters."""
    if query.messages:
        if query.prompt:
            raise InvalidArgument("prompt: set either prompt or messages, not both", field="prompt")
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


def prompt_text(query: RouteQuery) -> str:
    """The prompt, or the conversation's messages one per line."""
    return query.prompt or "\n".join(m.content for m in query.messages)


def data_class_of(query: RouteQuery, text: str) -> str:
    """The request's data class: the declared one, raised to the most sensitive class the
    scanner detects in the text and in the tags. InvalidArgument for an unknown declared
    class."""
    declared = query.data_classification or "public"
    if declared not in DATA_CLASSES:
        raise InvalidArgument(
            f"data_classification: {declared!r} is not one of {', '.join(DATA_CLASSES)}",
            field="data_classification",
        )
    # The whole prompt, not a head window: personal data at its end (where few-shot prompts
    # put the question) must not be missed. validate bounds it by max_prompt_chars.
    detected = classify(scan(text, max_chars=len(text)))
    if query.tags:
        # Tag keys and values are client text too (a user's e-mail as a tag value).
        tags = "\n".join(itertools.chain.from_iterable(query.tags.items()))
        detected = most_sensitive(detected, classify(scan(tags, max_chars=len(tags))))
    return most_sensitive(declared, detected)


def constraints_of(query: RouteQuery, data_class: str) -> Constraints:
    """The query's constraints on the eligible models, with its data class."""
    return Constraints(
        candidate_models=query.candidate_models, excluded_models=query.excluded_models,
        max_cost_usd=query.max_cost_usd, max_latency_ms=query.max_latency_ms,
        required_capabilities=query.required_capabilities,
        expected_output_tokens=query.expected_output_tokens, data_class=data_class,
    )  # fmt: skip


def experiment_arm(tenant: Tenant, query: RouteQuery, decision_id: str) -> str:
    """The A/B arm (policy name) for this request: a stable hash of the key tag, else of
    the session id (a session's sticky decisions stay in the arm whose policy chose its
    model), else of the request id."""
    experiment = tenant.experiment
    if experiment is None:
        return "default"
    key = (
        query.tags.get(experiment.key_tag)
        or (tenant.sessions and query.session_id and "session\0" + query.session_id)
        or query.request_id
        or decision_id
    )
    digest = hashlib.blake2b(f"{tenant.name}:{key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2.0**64 * sum(w for _, w in experiment.arms)
    for name, weight in experiment.arms:
        point -= weight
        if point < 0:
            return name
    return experiment.arms[-1][0]


__all__ = [
    "EXPLORABLE_CLASSES",
    "RouteRequest",
    "constraints_of",
    "data_class_of",
    "experiment_arm",
    "prompt_text",
    "validate",
]
