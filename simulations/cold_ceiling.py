"""What a cold router could reach at best from the held-out stream alone: full-information
predictors trained on the first prompts of each seed's stream, judged on its second half.

    python simulations/cold_ceiling.py --data ../shared/data/outcomes --seeds 20 \
        --json benchmarks/results/cold_ceiling.json

Each seed orders the held-out part exactly as the simulator's seed does
(``numpy.random.default_rng(seed).permutation``), so the test prompts are the second half a cold
run of routing_skill.py is judged on. A predictor is fitted on the first ``n`` prompts of the
stream (``--sizes``, capped at the first half, and the whole first half) with **every model's
outcome on every one of them**: strictly more than a bandit, which sees one model's outcome per
prompt, ever learns from them. It is feature_ceiling.py's predictor (one regularised logistic
regression per model on the router's dense features, standardised on the training prompts; each
test prompt goes to argmax(predicted quality - lambda * cost), lambda bisected so the test
prompts' mean cost meets the budget, which no router can do either). Also, per ``n``: each
model's mean on the training prompts with no features (a context-free full-information
learner), and the best single model picked on the training prompts (best quality among the
models affordable at the budget by their mean cost over the whole held-out stream, the set
routing_skill.py's paired comparator uses). For scale, the same predictor trained on the
tuning part (what a warm start knows) and on the tuning part plus the first half. Reference:
the best hindsight single model and the oracle on the test prompts.

Quality is relative to the strongest model's on the same test prompts; cost to its mean cost on
the whole held-out stream (the budgets' unit). Needs scikit-learn (the dev extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from feature_ceiling import dense_features, fit_predict
from held_tables import found_tables, write_results
from routing_skill import budget_oracle

from banditroute.config import load_settings
from banditroute.outcome_tables import OutcomeTable
from banditroute.simulation.catalog import build_run_catalog

FRACTIONS = (0.10, 0.20, 0.25)
SIZES = (50, 100, 200, 308)
STRENGTHS = (0.03, 0.1, 1.0)
Array = np.ndarray


def budget_choice(predicted: Array, cost: Array, budget: float) -> Array:
    """Each prompt's argmax(predicted - lambda * cost), lambda the smallest (bisected) that
    keeps the mean cost within ``budget``."""
    rows = np.arange(len(cost))
    lo, hi = 0.0, 1e6
    for _ in range(80):
        lam = (lo + hi) / 2
        if cost[rows, np.argmax(predicted - lam * cost, axis=1)].mean() > budget:
            lo = lam
        else:
            hi = lam
    result: Array = np.argmax(predicted - hi * cost, axis=1)
    return result


def standardised(train: Array, test: Array) -> tuple[Array, Array]:
    """Both feature matrices scaled by the training prompts' mean and spread."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-9
    return (train - mean) / std, (test - mean) / std


@dataclass(frozen=True)
class Learned:
    """What one training set gives: each scoring learner's scores on the test prompts, and
    each model's mean quality on the training prompts (to pick a single model by)."""

    scores: dict[str, Array]
    means: Array


def learn(train_x: Array, train_q: Array, test_x: Array, label: str) -> Learned:
    """The full-information learners fitted on one training set."""
    tr, te = standardised(train_x, test_x)
    scores = {
        f"full-information logistic, C={c}, {label}": fit_predict(tr, train_q, te, c)
        for c in STRENGTHS
    }
    means = train_q.mean(axis=0)
    scores[f"per-model mean, no features, {label}"] = np.tile(means, (len(test_x), 1))
    return Learned(scores, means)


def seed_learners(
    order: Array,
    *,
    quality: Array,
    held_x: Array,
    tune: tuple[Array, Array],
    tuned: Learned,
    sizes: Sequence[int],
) -> dict[str, Learned]:
    """Every training set's learners for one seed's stream, scored on its second half
    (``tuned``: the tuning part's learners, scored on every held-out prompt, fitted once)."""
    half = len(order) // 2
    first, test = order[:half], order[half:]
    out: dict[str, Learned] = {}
    for n in sorted({min(s, half) for s in sizes} | {half}):
        label = f"n={n}" + (" (first half)" if n == half else "")
        train = first[:n]
        out[label] = learn(held_x[train], quality[train], held_x[test], label)
    tune_x, tune_q = tune
    out[f"tuning part ({len(tune_x)})"] = Learned(
        {name: score[test] for name, score in tuned.scores.items()}, tuned.means
    )
    both_x = np.vstack([tune_x, held_x[first]])
    both_q = np.vstack([tune_q, quality[first]])
    out["tuning part + first half"] = learn(
        both_x, both_q, held_x[test], "tuning part + first half"
    )
    return out


def cold_ceiling(
    table: OutcomeTable,
    *,
    catalog: Any,
    seeds: int,
    sizes: Sequence[int],
    fractions: Sequence[float],
) -> dict[str, Any]:
    """Each learner's quality and cost on every seed's second half, per budget."""
    tune, held = table.holdout_split()
    cost = build_run_catalog(held, catalog).cost_usd
    quality = held.quality.astype(np.float64)
    held_x, _ = dense_features(held, None)
    tune_x, _ = dense_features(tune, None)
    ref = int(np.argmax(quality.mean(axis=0)))
    ref_c = float(cost[:, ref].mean())
    mean_c = cost.mean(axis=0)
    tune_q = tune.quality.astype(np.float64)
    tuned = learn(tune_x, tune_q, held_x, f"tuning part ({tune.n_prompts})")
    per: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(held.n_prompts)
        test = order[len(order) // 2 :]
        q, c = quality[test], cost[test]
        ref_q = float(q[:, ref].mean())
        rows = np.arange(len(test))
        learned = seed_learners(
            order,
            quality=quality,
            held_x=held_x,
            tune=(tune_x, tune_q),
            tuned=tuned,
            sizes=sizes,
        )
        for fraction in fractions:
            budget = fraction * ref_c
            affordable = [k for k in range(len(mean_c)) if mean_c[k] <= budget * (1 + 1e-9)]
            affordable = affordable or [int(np.argmin(mean_c))]
            cell = per.setdefault(f"{fraction:.2f}", {})

            results = {
                name: budget_choice(score, c, budget)
                for learner in learned.values()
                for name, score in learner.scores.items()
            }
            for label, learner in learned.items():
                picked = max(affordable, key=lambda k, m=learner.means: m[k])
                results[f"best single picked on {label}"] = np.full(len(test), picked)
            hindsight = max(affordable, key=lambda k: q[:, k].mean())
            results["best single in hindsight (test half)"] = np.full(len(test), hindsight)
            for name, chosen in results.items():
                cell.setdefault(name, []).append(
                    (float(q[rows, chosen].mean()) / ref_q, float(c[rows, chosen].mean()) / ref_c)
                )
            oq, oc = budget_oracle(q, c, budget)
            cell.setdefault("oracle (true outcomes)", []).append((oq / ref_q, oc / ref_c))
    for key, cell in per.items():
        for name, values in cell.items():
            arr = np.array(values)
            print(
                f"{table.name} {key} {name:60s} q {arr[:, 0].mean():.3f} ± "
                f"{arr[:, 0].std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0:.3f}"
                f" at cost {arr[:, 1].mean():.3f}",
                flush=True,
            )
    return {
        "held_out_prompts": held.n_prompts,
        "judged_prompts": held.n_prompts - held.n_prompts // 2,
        "tune_prompts": tune.n_prompts,
        "reference": held.models[ref],
        "seeds": seeds,
        "budgets": {
            key: {name: summary(values) for name, values in cell.items()}
            for key, cell in per.items()
        },
    }


def summary(values: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Mean quality and cost over seeds, the quality's standard error, and each seed's."""
    arr = np.array(values)
    n = len(arr)
    return {
        "quality": float(arr[:, 0].mean()),
        "quality_se": float(arr[:, 0].std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "cost": float(arr[:, 1].mean()),
        "quality_per_seed": [round(float(v), 5) for v in arr[:, 0]],
    }


def markdown(results: dict[str, Any]) -> str:
    """One table per data set: every learner's quality (± s.e. over seeds) at each budget."""
    lines: list[str] = []
    for name, result in results.items():
        budgets = list(result["budgets"])
        lines.append(
            f"### {name}: {result['judged_prompts']} test prompts of {result['held_out_prompts']}"
            f" held out, {result['seeds']} seeds; quality / "
            f"{result['reference'].rsplit('/', 1)[-1]}'s on the same prompts\n"
        )
        lines.append("| learner | " + " | ".join(f"{float(b):.0%}" for b in budgets) + " |")
        lines.append("| --- |" + " --- |" * len(budgets))
        for learner in result["budgets"][budgets[0]]:
            cells = [result["budgets"][b][learner] for b in budgets]
            lines.append(
                f"| {learner} | "
                + " | ".join(
                    f"{c['quality']:.3f} ± {c['quality_se']:.3f} @ {c['cost']:.3f}" for c in cells
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every table, print Markdown, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of outcome tables")
    parser.add_argument("--only", help="only tables whose name contains this")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds: must be >= 2 (a standard error needs two)")
    if any(s < 2 for s in args.sizes):
        parser.error("--sizes: each must be >= 2")
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions: each must be in (0, 1]")
    settings = load_settings(None)
    results = {
        name: cold_ceiling(
            table,
            catalog=settings.catalog,
            seeds=args.seeds,
            sizes=args.sizes,
            fractions=args.fractions,
        )
        for name, table in found_tables(args.data, settings.catalog.ids, args.only)
    }
    return write_results(results, markdown(results), args.json, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
