"""Scoring a simulation: the router against the per-prompt oracle, the best fixed model and
every single model, each a mean over seeds with the spread over seeds beside it.

Definitions (per seed, over the streamed prompts, then mean and standard deviation over seeds):

* ``quality``, ``cost_usd``, ``latency_ms``: the router's mean per request; ``*_last_half``
  the same over the second half of the stream (after it had half the prompts to learn from).
* ``oracle``: per prompt, the model with the highest objective reward (pacing excluded), ties
  to the cheapest; with a quality-only objective this is "the cheapest best-quality model".
* ``best_fixed``: with a budget, the single model of highest mean quality whose mean cost is
  within the budget (the cheapest model if none is); without one, the single model of highest
  mean objective reward.
* ``regret_vs_oracle`` / ``regret_vs_best_fixed``: mean objective reward per request of the
  comparator minus the router's (pacing excluded); with a quality-only objective, a quality gap.
  ``regret_vs_best_fixed_last_half`` is the same on the second half of the stream (the prompts
  a cold start is judged on), against the same model on the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditroute.objectives import Objective
from banditroute.outcome_tables import FloatMatrix
from banditroute.simulation.runner import (
    Outcomes,
    SeedTrace,
    objective_rewards,
    oracle_choice,
)


def _spread(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), std


def _stat(out: dict[str, Any], key: str, values: Sequence[float]) -> None:
    mean, std = _spread(values)
    out[key] = mean
    out[f"{key}_std"] = std


@dataclass(frozen=True)
class SeedScores:
    """The per-seed numbers the summary averages."""

    router: dict[str, float]
    oracle: dict[str, float]
    models: dict[str, dict[str, float]]


def _seed_scores(outcomes: Outcomes, objective: Objective, trace: SeedTrace) -> SeedScores:
    table = outcomes.table
    n = len(trace.order)
    half = n // 2
    reward = objective_rewards(objective, trace.quality, trace.cost_usd, trace.latency_ms)
    router = {
        "quality": float(trace.quality.mean()),
        "cost_usd": float(trace.cost_usd.mean()),
        "latency_ms": float(trace.latency_ms.mean()),
        "quality_last_half": float(trace.quality[half:].mean()),
        "cost_usd_last_half": float(trace.cost_usd[half:].mean()),
        "reward": float(reward.mean()),
        "reward_last_half": float(reward[half:].mean()),
        "multiplier_final": float(trace.multiplier[-1]) if n else 0.0,
    }
    rows = trace.order
    quality: FloatMatrix = table.quality[rows]
    cost: FloatMatrix = outcomes.cost_usd[rows]
    latency: FloatMatrix = trace.latency_all[rows]
    best = oracle_choice(objective, quality, cost, latency)
    picked = np.arange(n)
    oracle_reward = objective_rewards(
        objective, quality[picked, best], cost[picked, best], latency[picked, best]
    )
    oracle = {
        "quality": float(quality[picked, best].mean()),
        "cost_usd": float(cost[picked, best].mean()),
        "latency_ms": float(latency[picked, best].mean()),
        "reward": float(oracle_reward.mean()),
    }
    rewards = objective_rewards(objective, quality, cost, latency)
    models = {
        model: {
            "quality": float(quality[:, k].mean()),
            "cost_usd": float(cost[:, k].mean()),
            "latency_ms": float(latency[:, k].mean()),
            "reward": float(rewards[:, k].mean()),
            "reward_last_half": float(rewards[half:, k].mean()),
        }
        for k, model in enumerate(table.models)
    }
    return SeedScores(router, oracle, models)


def best_fixed_model(
    models: dict[str, dict[str, float]], objective: Objective, budget_usd: float | None
) -> str:
    """The comparator single model (see the module docstring)."""
    if budget_usd is not None:
        within = [m for m, v in models.items() if v["cost_usd"] <= budget_usd * (1 + 1e-9)]
        if not within:
            return min(models, key=lambda m: models[m]["cost_usd"])
        return max(within, key=lambda m: (models[m]["quality"], -models[m]["cost_usd"]))
    return max(models, key=lambda m: (models[m]["reward"], -models[m]["cost_usd"]))


def summarise(
    outcomes: Outcomes,
    objective: Objective,
    traces: Sequence[SeedTrace],
    *,
    policy: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON summary of a run (see the module docstring for every definition)."""
    if not traces:
        raise ValueError("no seeds to summarise")
    scores = [_seed_scores(outcomes, objective, t) for t in traces]
    table = outcomes.table
    budget = objective.budget_usd
    out: dict[str, Any] = {
        "outcomes": table.name,
        "prompts": len(traces[0].order),
        "seeds": len(traces),
        "seed_list": [t.seed for t in traces],
        "policy": policy,
        "budget_usd": budget,
        "objective": {
            "name": objective.name,
            "quality": objective.quality,
            "cost": objective.cost,
            "latency": objective.latency,
            "pacing_rate": objective.pacing_rate if budget is not None else None,
        },
    }
    for key in (
        "quality",
        "cost_usd",
        "latency_ms",
        "quality_last_half",
        "cost_usd_last_half",
        "multiplier_final",
    ):
        _stat(out, key, [s.router[key] for s in scores])
    oracle: dict[str, Any] = {}
    for key in ("quality", "cost_usd", "latency_ms"):
        _stat(oracle, key, [s.oracle[key] for s in scores])
    out["oracle"] = oracle
    mean_models = {
        model: {
            key: float(np.mean([s.models[model][key] for s in scores]))
            for key in ("quality", "cost_usd", "reward")
        }
        for model in table.models
    }
    fixed = best_fixed_model(mean_models, objective, budget)
    best: dict[str, Any] = {"model": fixed}
    for key in ("quality", "cost_usd", "latency_ms"):
        _stat(best, key, [s.models[fixed][key] for s in scores])
    out["best_fixed"] = best
    models: dict[str, Any] = {}
    for model in table.models:
        entry: dict[str, Any] = {}
        for key in ("quality", "cost_usd", "latency_ms"):
            _stat(entry, key, [s.models[model][key] for s in scores])
        models[model] = entry
    out["models"] = models
    _stat(out, "regret_vs_oracle", [s.oracle["reward"] - s.router["reward"] for s in scores])
    _stat(
        out,
        "regret_vs_best_fixed",
        [s.models[fixed]["reward"] - s.router["reward"] for s in scores],
    )
    _stat(
        out,
        "regret_vs_best_fixed_last_half",
        [s.models[fixed]["reward_last_half"] - s.router["reward_last_half"] for s in scores],
    )
    out["revealed_per_prompt"] = float(np.mean([t.revealed / max(len(t.order), 1) for t in traces]))
    out["per_seed"] = [
        {
            "seed": t.seed,
            "wall_s": round(t.wall_s, 3),
            "warm_updates": t.warm_updates,
            "warm_multiplier": t.warm_multiplier,
        }
        | {k: v for k, v in s.router.items() if k != "reward"}
        for t, s in zip(traces, scores, strict=True)
    ]
    if meta:
        out.update(meta)
    return out


def _fmt(value: float, std: float, digits: int) -> str:
    return f"{value:.{digits}f} ± {std:.{digits}f}"


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a summary, for the terminal."""
    lines: list[str] = []
    budget = summary["budget_usd"]
    head = (
        f"{summary['outcomes']}: {summary['prompts']} prompts x {summary['seeds']} seeds, "
        f"policy {summary['policy']}, objective {summary['objective']['name']}"
    )
    if budget is not None:
        head += f", budget ${budget:.6g}/request"
    lines.append(head)
    for note in summary.get("derivation", []):
        lines.append(f"  - {note}")
    warm = summary.get("warm_start")
    if warm:
        lines.append(f"  - warm start: {warm['description']}")
    lines.append("")
    best = summary["best_fixed"]["model"].rsplit("/", 1)[-1]
    # Names are never cut: "Mixtral-8x7B-Instruct-v0.1" lost its ".1" at 36 characters.
    width = max(36, len(f"best fixed: {best}"), *(len(m) for m in summary["models"]))
    header = f"{'':{width}} {'quality':>17} {'cost_usd':>21} {'latency_ms':>17}"
    lines.append(header)

    def row(name: str, entry: dict[str, Any]) -> str:
        latency = entry.get("latency_ms")
        lat = (
            _fmt(latency, entry.get("latency_ms_std", 0.0), 0)
            if latency is not None and math.isfinite(latency)
            else ""
        )
        return (
            f"{name:{width}} {_fmt(entry['quality'], entry['quality_std'], 4):>17} "
            f"{_fmt(entry['cost_usd'], entry['cost_usd_std'], 6):>21} {lat:>17}"
        )

    lines.append(row("router (whole stream)", summary))
    lines.append(
        row(
            "router (last half)",
            {
                "quality": summary["quality_last_half"],
                "quality_std": summary["quality_last_half_std"],
                "cost_usd": summary["cost_usd_last_half"],
                "cost_usd_std": summary["cost_usd_last_half_std"],
            },
        )
    )
    lines.append(row("per-prompt oracle", summary["oracle"]))
    lines.append(row(f"best fixed: {best}", summary["best_fixed"]))
    lines.append("")
    for model, entry in summary["models"].items():
        lines.append(row(model, entry))
    lines.append("")
    last = "regret_vs_best_fixed_last_half"
    lines.append(
        f"regret vs oracle {_fmt(summary['regret_vs_oracle'], summary['regret_vs_oracle_std'], 4)}"
        f", vs best fixed "
        f"{_fmt(summary['regret_vs_best_fixed'], summary['regret_vs_best_fixed_std'], 4)}"
        ", last half "
        f"{_fmt(summary[last], summary[last + '_std'], 4)}"
        " (mean objective reward per request; positive: the comparator did better)"
    )
    if budget is not None:
        lines.append(
            f"mean cost / budget {summary['cost_usd'] / budget:.3f}; final pacing multiplier "
            f"{summary['multiplier_final']:.1f} ± {summary['multiplier_final_std']:.1f}"
        )
    if "wall_s" in summary:
        lines.append(f"wall time {summary['wall_s']:.1f} s")
    return "\n".join(lines)
