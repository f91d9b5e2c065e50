"""Which models may serve a request, and why each of the others may not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import FailedPrecondition, InvalidArgument
from banditroute.features import PromptFeatures

MAX_LISTED_MODELS = 1000
"""A request naming more models than this in one field is rejected."""


@dataclass(frozen=True)
class Eligibility:
    """The eligible models (catalogue order) and the reason each excluded model was dropped."""

    eligible: tuple[ModelSpec, ...]
    excluded: dict[str, str]


def _validate_listed(catalog: Catalog, models: Sequence[str], field: str) -> None:
    if len(models) > MAX_LISTED_MODELS:
        raise InvalidArgument(
            f"{field}: at most {MAX_LISTED_MODELS} models may be listed, got {len(models)}",
            field=field,
        )
    for model in models:
        catalog.get(model, field=field)


def eligible_models(
    catalog: Catalog,
    features: PromptFeatures,
    *,
    candidate_models: Sequence[str] = (),
    excluded_models: Sequence[str] = (),
) -> Eligibility:
    """Filter the catalogue by the request's restrictions and the prompt's context size.

    Raises InvalidArgument for unknown model ids and FailedPrecondition, naming the
    constraints, when no model is left.
    """
    _validate_listed(catalog, candidate_models, "candidate_models")
    _validate_listed(catalog, excluded_models, "excluded_models")
    candidates = set(candidate_models)
    excluded_set = set(excluded_models)
    eligible: list[ModelSpec] = []
    excluded: dict[str, str] = {}
    for model in catalog:
        if candidates and model.id not in candidates:
            excluded[model.id] = "not in candidate_models"
        elif model.id in excluded_set:
            excluded[model.id] = "in excluded_models"
        elif features.conversation_tokens + model.typical_output_tokens > model.context_window:
            excluded[model.id] = (
                f"context window {model.context_window} < {features.conversation_tokens} "
                "prompt tokens + expected output"
            )
        else:
            eligible.append(model)
    if not eligible:
        reasons = sorted(set(excluded.values()))
        raise FailedPrecondition(
            "no model satisfies the request: " + "; ".join(reasons), field="candidate_models"
        )
    return Eligibility(tuple(eligible), excluded)
