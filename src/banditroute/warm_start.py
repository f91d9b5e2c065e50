"""Warm start: a new deployment learns from an outcome table before its first request.

An outcome table (the format ``banditroute simulate --outcomes`` reads: every model's quality,
and usually cost, on every prompt) is full information, so the policy learns every matched
model's outcome on every prompt with probability 1, under the default objective. Table models
are matched to the catalogue by id, by an explicit mapping (``[policy.warm_start_models]``,
table id to catalogue id) or by the catalogue's normalised-name match; catalogue models the
table lacks start from nothing and are explored as usual, table models the catalogue lacks
are ignored, and a table that shares no model with the catalogue is an error naming both
lists. Latency is the catalogue's prior for each model (no table records it); a missing cost
is the catalogue price of the prompt's tokens and the model's typical output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from banditroute.catalog import Catalog, match_model
from banditroute.config import Settings
from banditroute.eligibility import eligible_models
from banditroute.errors import ConfigError
from banditroute.features import extract
from banditroute.objectives import Objective
from banditroute.outcome_tables import OutcomeTable, load_outcomes
from banditroute.outcomes import Fragments
from banditroute.policies.base import Policy
from banditroute.semantic import semantic_embedder

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WarmStartPlan:
    """Which table column feeds which catalogue model, and what is left out on either side."""

    table: OutcomeTable
    columns: Mapping[str, int]
    """Catalogue id -> the table column holding that model's outcomes."""
    ignored: tuple[str, ...]
    """Table models with no catalogue entry (not learned)."""
    unseen: tuple[str, ...]
    """Catalogue models the table does not have (they start from nothing)."""


def plan(
    table: OutcomeTable,
    catalog: Catalog,
    mapping: Mapping[str, str] | None = None,
    *,
    arg: str = "--warm-start",
) -> WarmStartPlan:
    """Match the table's models to the catalogue; ConfigError naming ``arg`` when nothing fits."""
    mapping = dict(mapping or {})
    for table_id, catalog_id in mapping.items():
        if table_id not in table.models:
            raise ConfigError(
                f"policy.warm_start_models: {table_id!r} is not a model of {table.name} "
                f"(its models: {', '.join(table.models)})",
                field="policy.warm_start_models",
            )
        if catalog_id not in catalog:
            raise ConfigError(
                f"policy.warm_start_models: {table_id!r} maps to {catalog_id!r}, which is not "
                f"in the catalogue (catalogue: {', '.join(catalog.ids)})",
                field="policy.warm_start_models",
            )
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for column, model in enumerate(table.models):
        if model in mapping:
            target: str | None = mapping[model]
        elif model in catalog:
            target = model
        else:
            matched = match_model(model, catalog)
            target = None if matched is None else matched.id
        if target is None:
            ignored.append(model)
            continue
        if target in columns:
            raise ConfigError(
                f"{arg}: {table.models[columns[target]]!r} and {model!r} of {table.name} both "
                f"match catalogue model {target!r}; map one of them elsewhere with "
                "policy.warm_start_models",
                field=arg,
            )
        columns[target] = column
    if not columns:
        raise ConfigError(
            f"{arg}: none of the models of {table.name} ({', '.join(table.models)}) is in the "
            f"catalogue ({', '.join(catalog.ids)}); map table ids to catalogue ids with "
            "policy.warm_start_models",
            field=arg,
        )
    unseen = tuple(m for m in catalog.ids if m not in columns)
    return WarmStartPlan(table, columns, tuple(ignored), unseen)


def load_plan(
    path: Path, catalog: Catalog, mapping: Mapping[str, str] | None = None
) -> WarmStartPlan:
    """:func:`plan` of the outcome table at ``path`` (errors name ``--warm-start``)."""
    table = load_outcomes(path, arg="--warm-start")
    return plan(table, catalog, mapping)


def learn(
    policy: Policy,
    settings: Settings,
    warm: WarmStartPlan,
    *,
    objective: Objective | None = None,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Teach ``policy`` every matched outcome of the table; returns the number of updates.

    Prompts go in a seeded random order (a table sorted by task would otherwise teach the
    last task last); each prompt's arms are the matched catalogue models eligible for it.
    """
    table = warm.table
    catalog = settings.catalog
    objective = objective or settings.objective("")
    feature_chars = settings.server.feature_chars
    embedder = semantic_embedder(settings)
    updates = 0
    started = time.perf_counter()
    order = np.random.default_rng(seed).permutation(table.n_prompts)
    for done, i in enumerate(order, start=1):
        features = extract(table.prompts[i], feature_chars=feature_chars, embedder=embedder)
        # Only the table's models are arms here: the others are not seen until serving, where
        # they start fresh (optimistic prior, full exploration) instead of aged by the table.
        arms = tuple(a for a in eligible_models(catalog, features).eligible if a.id in warm.columns)
        for index, arm in enumerate(arms):
            column = warm.columns[arm.id]
            cost = float(table.cost_usd[i, column])
            if not np.isfinite(cost):
                cost = arm.price(features.tokens, arm.typical_output_tokens)
            latency = arm.expected_latency_ms(arm.typical_output_tokens)
            reward = objective.reward(Fragments(float(table.quality[i, column]), cost, latency))
            policy.learn_logged(features, arms, index, 1.0, reward)
            updates += 1
        if progress is not None and done % 100 == 0:
            progress(done)
    log.info(
        "warm_start_learned",
        table=table.name,
        prompts=table.n_prompts,
        updates=updates,
        models=sorted(warm.columns),
        ignored=list(warm.ignored),
        unseen=list(warm.unseen),
        objective=objective.name,
        seconds=round(time.perf_counter() - started, 2),
    )
    return updates
