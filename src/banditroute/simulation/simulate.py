"""One call from a simulation's settings to its scored result: load, derive, run, summarise."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from banditroute.choices import WARM_MODES
from banditroute.config import Settings
from banditroute.errors import ConfigError
from banditroute.objectives import Objective, parse_objective
from banditroute.outcome_tables import OutcomeTable, load_outcomes
from banditroute.simulation.catalog import build_run_catalog
from banditroute.simulation.environment import LatencyModel
from banditroute.simulation.policies import validate_policy_name
from banditroute.simulation.results import summarise
from banditroute.simulation.runner import (
    Outcomes,
    RunSpec,
    SeedTrace,
    WarmMode,
    WarmStart,
    run_seeds,
    run_settings,
)

BASELINES = frozenset({"oracle", "fixed", "uniform"})
"""Simulated policies that are comparators, run without the exploration floor."""

QUALITY_ONLY = Objective("max-quality", quality=1.0, cost=0.0, latency=0.0)
"""The objective of a budgeted run without ``--objective``: maximise quality; the budget
pacer alone prices cost."""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate (the ``banditroute simulate`` arguments).

    ``policy`` None runs the configured ``policy.kind``; ``objective`` None means the quality-
    only objective when a budget is given and the configured default profile otherwise.
    """

    outcomes: Path | OutcomeTable
    policy: str | None = None
    objective: str | None = None
    budget_usd: float | None = None
    seeds: int = 5
    first_seed: int = 0
    warm_start: Path | OutcomeTable | None = None
    warm_start_mode: WarmMode = "bandit"
    workers: int | None = None
    pacing_rate: float | None = None


@dataclass(frozen=True)
class SimulationResult:
    """The JSON-ready summary and the per-seed traces (for plots)."""

    summary: dict[str, Any]
    traces: list[SeedTrace]


def _objective(config: SimulationConfig, settings: Settings) -> Objective:
    if config.objective is not None:
        objective = parse_objective(config.objective, settings.objectives, arg="--objective")
    elif config.budget_usd is not None:
        objective = QUALITY_ONLY
    else:
        objective = settings.objective("")
    if config.budget_usd is not None:
        if not (math.isfinite(config.budget_usd) and config.budget_usd > 0):
            raise ConfigError(
                f"--budget-usd: must be a positive number of USD per request, "
                f"got {config.budget_usd!r}",
                field="--budget-usd",
            )
        objective = objective.with_budget(config.budget_usd)
    if config.pacing_rate is not None:
        if not (math.isfinite(config.pacing_rate) and config.pacing_rate >= 0):
            raise ConfigError("--pacing-rate: must be a number >= 0", field="--pacing-rate")
        objective = replace(objective, pacing_rate=config.pacing_rate)
    return objective


def _load(source: Path | OutcomeTable, order: tuple[str, ...], arg: str) -> OutcomeTable:
    if isinstance(source, OutcomeTable):
        return source
    return load_outcomes(source, model_order=order, arg=arg)


def prepare(config: SimulationConfig, settings: Settings) -> tuple[RunSpec, dict[str, Any]]:
    """Validate the configuration and build what every seed needs, plus the output's notes."""
    if config.seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {config.seeds}", field="--seeds")
    if config.first_seed < 0:
        raise ConfigError(
            f"--first-seed: must be >= 0, got {config.first_seed}", field="--first-seed"
        )
    if config.warm_start_mode not in WARM_MODES:
        raise ConfigError(
            f"--warm-start-mode: {config.warm_start_mode!r} is not one of {', '.join(WARM_MODES)}",
            field="--warm-start-mode",
        )
    table = _load(config.outcomes, settings.catalog.ids, "--outcomes")
    run = build_run_catalog(table, settings.catalog)
    objective = _objective(config, settings)
    sim_settings = run_settings(settings, run, objective)
    policy = config.policy or settings.policy.kind
    validate_policy_name(policy, run.catalog)
    if policy in BASELINES or policy.startswith("fixed:"):
        # The comparators are the exact policies; the learners explore with the configured
        # floor (policy.min_probability), as they would serving.
        floorless = replace(sim_settings.policy, min_probability=0.0)
        sim_settings = replace(sim_settings, policy=floorless)
    latency = LatencyModel.from_catalog(run.catalog)
    notes = [
        *run.notes,
        "latency: simulated per call as ttft * LogNormal(sigma "
        f"{latency.ttft_sigma:g}) + 1000 * output_tokens / tokens_per_s * LogNormal(sigma "
        f"{latency.decode_sigma:g}), both with mean 1, from each model's ttft_ms and "
        "tokens_per_s",
    ]
    meta: dict[str, Any] = {"derivation": notes}
    warm: WarmStart | None = None
    if config.warm_start is not None:
        warm_table = _load(config.warm_start, table.models, "--warm-start")
        if set(warm_table.models) != set(table.models):
            raise ConfigError(
                f"--warm-start: its models ({', '.join(warm_table.models)}) differ from the "
                f"streamed table's ({', '.join(table.models)})",
                field="--warm-start",
            )
        warm_run = build_run_catalog(warm_table, run.catalog, arg="--warm-start")
        warm = WarmStart(
            Outcomes.from_run(warm_table, warm_run), config.warm_start_mode, warm_table.name
        )
        if warm.mode == "bandit":
            description = (
                f"{warm_table.name}, {warm_table.n_prompts} prompts as logged bandit feedback "
                "from a uniform-random policy (one random eligible model's outcome per prompt, "
                "probability 1/K)"
            )
        else:
            description = (
                f"{warm_table.name}, {warm_table.n_prompts} prompts as full information "
                "(every model's outcome for every prompt)"
            )
        meta["warm_start"] = {
            "file": warm_table.name,
            "mode": warm.mode,
            "prompts": warm_table.n_prompts,
            "description": description,
        }
    spec = RunSpec(
        outcomes=Outcomes.from_run(table, run),
        settings=sim_settings,
        objective=objective,
        policy=policy,
        latency=latency,
        warm=warm,
    )
    return spec, meta


def simulate(
    config: SimulationConfig,
    settings: Settings,
    *,
    progress: Callable[[int], object] | None = None,
    prepared: tuple[RunSpec, dict[str, Any]] | None = None,
) -> SimulationResult:
    """Run every seed of a simulation and score it."""
    started = time.perf_counter()
    spec, meta = prepared or prepare(config, settings)
    seeds = list(range(config.first_seed, config.first_seed + config.seeds))
    traces = run_seeds(spec, seeds, workers=config.workers, progress=progress)
    meta = dict(meta)
    meta["wall_s"] = time.perf_counter() - started
    if "warm_start" in meta:
        meta["warm_start"] = dict(meta["warm_start"]) | {
            "updates": int(sum(t.warm_updates for t in traces) / len(traces)),
            "multiplier": float(sum(t.warm_multiplier for t in traces) / len(traces)),
        }
    summary = summarise(spec.outcomes, spec.objective, traces, policy=spec.policy, meta=meta)
    return SimulationResult(summary, traces)
