"""Which models may serve a request, and which constraint excluded each of the others.

Checks run in a fixed order and the first one a model fails is recorded as its exclusion:
tenant allow-list, candidate_models, excluded_models, routing rule, data classification,
language, required capabilities, context window, max_cost_usd, max_latency_ms, health
(circuit breaker, rate and in-flight limits). When nothing is left the request fails with
FAILED_PRECONDITION naming every constraint that excluded something; the message starts with
the last constraint in that order that excluded a model (the one that removed the models which
passed every earlier check).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import FailedPrecondition, InvalidArgument
from banditroute.features import PromptFeatures
from banditroute.rules import RoutingRule
from banditroute.tenancy import Tenant

MAX_LISTED_MODELS = 1000
"""A request naming more models than this in one field is rejected."""


CHECK_ORDER: tuple[str, ...] = (
    "tenant_allow_list", "candidate_models", "excluded_models", "rule", "data_classification",
    "language", "required_capabilities", "context_window", "max_cost_usd", "max_latency_ms",
    "health",
)  # fmt: skip
"""The constraints in the order they are checked (a model's exclusion is its first failure)."""


class HealthView(Protocol):
    """What eligibility needs from model health: why a model may not be chosen now."""

    def unavailable_reason(self, model: str, tokens: int = 0) -> str | None:
        """None when the model may be chosen, else the reason."""


@dataclass(frozen=True)
class Constraints:
    """Per-request restrictions from the RouteRequest."""

    candidate_models: tuple[str, ...] = ()
    excluded_models: tuple[str, ...] = ()
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    required_capabilities: tuple[str, ...] = ()
    expected_output_tokens: int | None = None
    data_class: str = "public"

    def __post_init__(self) -> None:
        for name in ("max_cost_usd", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name}: must be a positive number, got {value}", field=name)
        if self.expected_output_tokens is not None and self.expected_output_tokens < 0:
            raise InvalidArgument(
                "expected_output_tokens: must be >= 0", field="expected_output_tokens"
            )

    def as_dict(self) -> dict[str, object]:
        """The constraints that are set, for the log and the audit trail."""
        out: dict[str, object] = {"data_class": self.data_class}
        for name in ("candidate_models", "excluded_models", "required_capabilities"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        for name in ("max_cost_usd", "max_latency_ms", "expected_output_tokens"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class Exclusion:
    """Why one model was not eligible."""

    constraint: str
    reason: str


@dataclass(frozen=True)
class Eligibility:
    """The eligible models (catalogue order) and the exclusion of every other model."""

    eligible: tuple[ModelSpec, ...]
    excluded: dict[str, Exclusion] = field(default_factory=dict)


def _validate_listed(catalog: Catalog, models: Sequence[str], field_name: str) -> None:
    if len(models) > MAX_LISTED_MODELS:
        raise InvalidArgument(
            f"{field_name}: at most {MAX_LISTED_MODELS} models may be listed, got {len(models)}",
            field=field_name,
        )
    for model in models:
        catalog.get(model, field=field_name)


def data_class_hint(data_class: str) -> str:
    """What to configure when models were refused for the request's data class: the class is
    the more sensitive of the detected and declared ones, and a [[models]] entry receives only
    the classes its data_classes list (["public"] unless set)."""
    return (
        f". The request is {data_class!r} (found in its text or declared in "
        f"data_classification); a model receives it only if the config's [[models]] entry "
        f"lists {data_class!r} in data_classes, e.g. data_classes = "
        f'["public", "internal", "{data_class}"] (a [[models]] entry without data_classes '
        f'takes only "public")'
    )


def eligible_models(
    catalog: Catalog,
    features: PromptFeatures,
    constraints: Constraints = Constraints(),
    *,
    tenant: Tenant | None = None,
    rule: RoutingRule | None = None,
    language_tagged: frozenset[str] = frozenset(),
    health: HealthView | None = None,
    expected_latency_ms: Callable[[ModelSpec, int], float] | None = None,
) -> Eligibility:
    """Filter the catalogue; InvalidArgument / PermissionDenied for bad model names and
    FailedPrecondition, naming the constraints, when no model is left."""
    _validate_listed(catalog, constraints.candidate_models, "candidate_models")
    _validate_listed(catalog, constraints.excluded_models, "excluded_models")
    if tenant is not None:
        for name in constraints.candidate_models:
            tenant.check_model(name, field="candidate_models")
    candidates = set(constraints.candidate_models)
    excluded_set = set(constraints.excluded_models)
    capabilities = set(constraints.required_capabilities)
    output_tokens = constraints.expected_output_tokens
    needs_language = features.language in language_tagged
    latency_of = expected_latency_ms or ModelSpec.expected_latency_ms
    eligible: list[ModelSpec] = []
    excluded: dict[str, Exclusion] = {}
    for model in catalog:
        out_tokens = model.typical_output_tokens if output_tokens is None else output_tokens
        verdict: Exclusion | None = None
        if tenant is not None and tenant.models and model.id not in tenant.models:
            verdict = Exclusion("tenant_allow_list", f"not allowed for tenant {tenant.name!r}")
        elif candidates and model.id not in candidates:
            verdict = Exclusion("candidate_models", "not in candidate_models")
        elif model.id in excluded_set:
            verdict = Exclusion("excluded_models", "in excluded_models")
        elif rule is not None and (why := rule.allows(model.id)) is not None:
            verdict = Exclusion("rule", why)
        elif constraints.data_class not in model.data_classes:
            verdict = Exclusion(
                "data_classification", f"not tagged for {constraints.data_class!r} data"
            )
        elif needs_language and features.language not in model.languages:
            verdict = Exclusion("language", f"not tagged for language {features.language!r}")
        elif capabilities - model.capabilities:
            missing = ", ".join(sorted(capabilities - model.capabilities))
            verdict = Exclusion("required_capabilities", f"lacks {missing}")
        elif features.conversation_tokens + out_tokens > model.context_window:
            verdict = Exclusion(
                "context_window",
                f"context window {model.context_window} < {features.conversation_tokens} "
                f"prompt + {out_tokens} output tokens",
            )
        elif (
            constraints.max_cost_usd is not None
            and (cost := model.price(features.conversation_tokens, out_tokens))
            > constraints.max_cost_usd
        ):
            verdict = Exclusion("max_cost_usd", f"expected cost ${cost:.6f}")
        elif (
            constraints.max_latency_ms is not None
            and (latency := latency_of(model, out_tokens)) > constraints.max_latency_ms
        ):
            verdict = Exclusion("max_latency_ms", f"expected latency {latency:.0f} ms")
        elif health is not None and (
            why := health.unavailable_reason(model.id, features.conversation_tokens + out_tokens)
        ):
            verdict = Exclusion("health", why)
        if verdict is None:
            eligible.append(model)
        else:
            excluded[model.id] = verdict
    if not eligible:
        counts = Counter(e.constraint for e in excluded.values())
        example = {e.constraint: e.reason for e in reversed(list(excluded.values()))}
        summary = "; ".join(
            f"{name} excluded {n}, e.g. {example[name]}" for name, n in counts.most_common()
        )
        # Name the last check that excluded something: the models it took out had passed
        # every earlier one (the allow-list, candidate_models, a rule only narrow the choice).
        name = max(counts, key=CHECK_ORDER.index)
        hint = data_class_hint(constraints.data_class) if "data_classification" in counts else ""
        raise FailedPrecondition(
            f"{name}: no model satisfies the request ({summary}){hint}", field=name
        )
    return Eligibility(tuple(eligible), excluded)
