"""Routing skill on held-out prompts: every policy against the best single model, the random mix
of two models and the per-prompt oracle, per table and budget.

    python simulations/routing_skill.py --data ../shared/data/outcomes --seeds 5 \
        --json benchmarks/results/routing_skill.json --plots benchmarks/results/routing_skill \
        --markdown benchmarks/results/routing_skill.md

runs every policy (:data:`COLD_POLICIES`, :data:`WARM_POLICIES`) on every table. The grid may
also be run in parts (``--only TABLE``, ``--cold``/``--warm`` some policies, each part with its
own ``--json``) and merged: ``--replot A.json B.json ... --json --markdown --plots`` puts the
runs of the same table and budget side by side (:func:`merge_results`).

Every table is split once by :meth:`OutcomeTable.holdout_split` (the 30% of prompts whose
``blake2b(prompt_id) mod 10 < 3``, task labels blanked). Nothing is tuned on the held-out part:
``--part tune`` runs the same grid inside the tuning part instead (warm start from a seeded half
of it, streaming the other half), which is where settings are chosen.

For each table the budget is a fraction of the strongest model's mean cost per prompt on the
streamed part (``--fractions``, default 10, 15, 20, 25 and 35%). Runs, each over the same seeds:

* **cold**: the policy starts from nothing and streams the held-out prompts; judged on the
  second half of the stream (quality, mean cost) and the whole stream's cost;
* **warm**: the policy first learns from the tuning part as full information (what
  ``serve --warm-start`` does with an outcome table), then streams the held-out prompts; judged
  on the whole stream.

Comparators, computed exactly from the table: every single model; the **best single model
affordable** at the budget; the **random mix** (the upper concave hull of the single models in
(cost, quality): the best quality any random mix of two models reaches at a given mean cost),
read at the router's own mean cost; the **per-prompt oracle** within the budget (greedy: the
cheapest correct model first, upgrades by quality gained per dollar while the budget lasts).
For every run, ``paired`` records the same comparators per seed on exactly the prompts that
seed is judged on (cold: its own second half of the stream; warm: all of it) and the per-seed
differences router - best single and router - mix, with their mean, standard error over seeds
and the number of seeds above zero: the cold router's figure is a 300-prompt mean whose
sampling error is as large as the gaps, which an unpaired comparison with whole-table figures
does not cancel.

The learning curve counts the prompts until the cold router's trailing 100-prompt quality stays
at or above 90% of the strongest model's: per seed (noisy: a 100-prompt window of 0/1 outcomes
has a standard deviation of about 4 points) and on the mean over seeds of each step's quality
(``prompts_to_hold_90pct_seed_mean``, the figure to quote with many seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from held_tables import found_tables, write_results

from banditroute.config import Settings, load_settings
from banditroute.outcome_tables import OutcomeTable
from banditroute.simulation import SimulationConfig, simulate
from banditroute.simulation.catalog import build_run_catalog

FRACTIONS = (0.10, 0.15, 0.20, 0.25, 0.35)
COLD_POLICIES = (
    "costaware", "linucb", "vw", "vw-epsilon", "vw-bag", "vw-rnd", "vw-softmax", "vw-synthcover",
    "uniform",
)  # fmt: skip
"""Every policy :mod:`banditroute.simulation.policies` knows by name but ``vw-squarecb`` (the
configured ``vw``), the cost-aware policy's other exploration rules (variants of the default,
run on demand), ``fixed:MODEL`` and ``oracle`` (the comparators, computed exactly instead)."""
WARM_POLICIES = tuple(p for p in COLD_POLICIES if p != "uniform")
"""The learners: ``uniform`` learns nothing from a warm start (and ignores the budget)."""
CURVE_WINDOW = 100


@dataclass(frozen=True)
class Parts:
    """What one table's runs stream and warm-start from."""

    name: str
    stream: OutcomeTable
    warm: OutcomeTable


def parts(table: OutcomeTable, name: str, part: str) -> Parts:
    """The held-out stream with the tuning part as warm start, a split inside the tuning part,
    or (``all``, cold runs only: there is nothing left to warm-start from) the whole table, the
    longest stream for learning curves."""
    if part == "all":
        return Parts(name, table, table)
    tune, holdout = table.holdout_split()
    if part == "holdout":
        return Parts(name, holdout, tune)
    first, second = tune.split(0.5, seed=0)
    return Parts(name, second, first)


def concave_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper-left hull of (cost, quality) points: the best random mix at each cost."""
    pts = sorted(set(points))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:
            continue  # dearer and no better: never on the frontier
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def mix_quality(hull: list[tuple[float, float]], cost: float) -> float:
    """Quality of the best random mix of single models whose mean cost is ``cost``."""
    xs = [p[0] for p in hull]
    ys = [p[1] for p in hull]
    if cost <= xs[0]:
        return ys[0]
    return float(np.interp(cost, xs, ys))


def mix_weights(mean_c: Sequence[float], mean_q: Sequence[float], cost: float) -> np.ndarray:
    """Each model's share in the best random mix whose mean cost is ``cost`` (the two ends of
    the hull segment ``cost`` falls on; the cheapest hull model alone below it, the dearest
    alone above), so that ``weights @ mean_q == mix_quality(hull, cost)``."""
    points = [(float(c), float(q)) for c, q in zip(mean_c, mean_q, strict=True)]
    column = {p: k for k, p in reversed(list(enumerate(points)))}
    hull = concave_hull(points)
    weights = np.zeros(len(points))
    if cost <= hull[0][0] or len(hull) == 1:
        weights[column[hull[0]]] = 1.0
        return weights
    if cost >= hull[-1][0]:
        weights[column[hull[-1]]] = 1.0
        return weights
    j = int(np.searchsorted([p[0] for p in hull], cost, side="right")) - 1
    (x0, _), (x1, _) = hull[j], hull[j + 1]
    t = (cost - x0) / (x1 - x0)
    weights[column[hull[j]]] += 1.0 - t
    weights[column[hull[j + 1]]] += t
    return weights


def paired_comparators(
    quality: np.ndarray,
    cost: np.ndarray,
    rows: np.ndarray,
    router_quality: np.ndarray,
    router_cost: np.ndarray,
    *,
    affordable: Sequence[int],
    budget: float,
    ref: int,
    fixed: int,
) -> dict[str, Any]:
    """The comparators of one seed on exactly the prompts it is judged on (``rows``, in stream
    order, aligned with the router's per-step ``router_quality`` and ``router_cost``).

    The best single model is the best, on these prompts, of the models ``affordable`` at the
    budget (decided once on the whole stream's mean cost: a price is known before any prompt
    arrives, and a 300-prompt mean cost would move a model near the budget in and out from seed
    to seed): the best fixed model in hindsight, so slightly favoured when two are close; the
    ``fixed`` single model (the affordable one best on the whole stream) is also scored on these
    prompts; the random mix is the hull of the single models' means on these prompts, read at
    the router's own mean cost on them; the oracle spends the budget on these prompts. Each
    comparison is also a per-prompt difference, whose standard error is what sampling these
    prompts puts on it (``*_prompt_se``)."""
    q, c = quality[rows], cost[rows]
    mean_q, mean_c = q.mean(axis=0), c.mean(axis=0)
    pool = list(affordable) or [int(np.argmin(cost.mean(axis=0)))]
    best = max(pool, key=lambda k: mean_q[k])
    router_c = float(router_cost.mean())
    weights = mix_weights(mean_c.tolist(), mean_q.tolist(), router_c)
    oracle_q, oracle_c = budget_oracle(q, c, budget)
    m = len(rows)

    def se(diff: np.ndarray) -> float:
        return float(diff.std(ddof=1) / np.sqrt(m)) if m > 1 else 0.0

    return {
        "prompts": m,
        "router_quality": float(router_quality.mean()),
        "router_cost_usd": router_c,
        "router_prompt_se": se(router_quality),
        "reference_quality": float(mean_q[ref]),
        "best_single": {
            "model": best,
            "quality": float(mean_q[best]),
            "cost_usd": float(mean_c[best]),
        },
        "fixed_single": {"model": fixed, "quality": float(mean_q[fixed])},
        "random_mix_at_cost": float(weights @ mean_q),
        "oracle": {"quality": oracle_q, "cost_usd": oracle_c},
        "minus_best_single_prompt_se": se(router_quality - q[:, best]),
        "minus_mix_prompt_se": se(router_quality - q @ weights),
    }


def paired_summary(per_seed: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Per-seed paired comparisons, as fractions of the reference model's quality on the same
    prompts: means, standard errors over seeds, and how many seeds are above zero."""

    def stats(values: Sequence[float]) -> dict[str, Any]:
        arr = np.array(values, dtype=np.float64)
        se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0
        return {
            "mean": float(arr.mean()),
            "se": se,
            "above": int((arr > 0).sum()),
            "seeds": len(arr),
            "per_seed": [round(float(v), 5) for v in arr],
        }

    def relative(value: Any) -> dict[str, Any]:
        return stats([value(s) / s["reference_quality"] for s in per_seed])

    picked = [models[s["best_single"]["model"]] for s in per_seed]
    return {
        "judged_prompts": per_seed[0]["prompts"],
        "router": relative(lambda s: s["router_quality"]),
        "best_single": relative(lambda s: s["best_single"]["quality"]),
        "best_single_models": {m: picked.count(m) for m in sorted(set(picked))},
        "random_mix_at_cost": relative(lambda s: s["random_mix_at_cost"]),
        "oracle": relative(lambda s: s["oracle"]["quality"]),
        "router_minus_best_single": relative(
            lambda s: s["router_quality"] - s["best_single"]["quality"]
        ),
        "router_minus_fixed_single": relative(
            lambda s: s["router_quality"] - s["fixed_single"]["quality"]
        ),
        "router_minus_mix": relative(lambda s: s["router_quality"] - s["random_mix_at_cost"]),
        "prompt_se": {
            key: relative(lambda s, key=key: s[f"{key}_prompt_se"])["mean"]
            for key in ("router", "minus_best_single", "minus_mix")
        },
        "per_seed": [
            {
                **s,
                "best_single": {**s["best_single"], "model": models[s["best_single"]["model"]]},
                "fixed_single": {**s["fixed_single"], "model": models[s["fixed_single"]["model"]]},
            }
            for s in per_seed
        ],
    }


def budget_oracle(quality: np.ndarray, cost: np.ndarray, budget: float) -> tuple[float, float]:
    """Per-prompt oracle within a mean-cost budget: cheapest best first, then upgrades."""
    n = quality.shape[0]
    # Begin at each prompt's cheapest model, then upgrade prompts to their best model in order
    # of quality gained per dollar while the budget lasts.
    choice = np.argmin(cost, axis=1)
    spent = float(cost[np.arange(n), choice].sum())
    limit = budget * n
    gains: list[tuple[float, int, int]] = []
    for i in range(n):
        base_q, base_c = quality[i, choice[i]], cost[i, choice[i]]
        best = int(np.argmax(quality[i] - 1e-9 * cost[i]))
        dq, dc = quality[i, best] - base_q, cost[i, best] - base_c
        if dq > 0:
            gains.append((dq / max(dc, 1e-12), i, best))
    for _, i, k in sorted(gains, reverse=True):
        extra = cost[i, k] - cost[i, choice[i]]
        if spent + extra <= limit:
            choice[i] = k
            spent += extra
    rows = np.arange(n)
    return float(quality[rows, choice].mean()), float(cost[rows, choice].mean())


def prompts_to_hold(quality: np.ndarray, target: float) -> int | None:
    """First step after which the trailing-window quality never drops below ``target``."""
    if len(quality) < CURVE_WINDOW:
        return None
    window = np.convolve(quality, np.ones(CURVE_WINDOW) / CURVE_WINDOW, mode="valid")
    below = np.flatnonzero(window < target)
    if len(below) == 0:
        return CURVE_WINDOW
    if below[-1] == len(window) - 1:
        return None
    return int(below[-1] + 1 + CURVE_WINDOW)


def run_table(
    data: Parts,
    settings: Settings,
    *,
    seeds: int,
    fractions: Sequence[float],
    cold_policies: Sequence[str],
    warm_policies: Sequence[str],
    plots: Path | None,
    label: str = "",
) -> dict[str, Any]:
    """Every policy, budget and comparator on one table (run names prefixed by ``label``)."""
    run = build_run_catalog(data.stream, settings.catalog)
    quality, cost = data.stream.quality, run.cost_usd
    mean_q, mean_c = quality.mean(axis=0), cost.mean(axis=0)
    ref = int(np.argmax(mean_q))
    hull = concave_hull(list(zip(mean_c.tolist(), mean_q.tolist(), strict=True)))
    models = {
        m: {"quality": float(q), "cost_usd": float(c)}
        for m, q, c in zip(data.stream.models, mean_q, mean_c, strict=True)
    }
    out: dict[str, Any] = {
        "table": data.name,
        "stream": data.stream.name,
        "stream_prompts": data.stream.n_prompts,
        "warm": data.warm.name,
        "warm_prompts": data.warm.n_prompts,
        "reference": data.stream.models[ref],
        "reference_quality": float(mean_q[ref]),
        "reference_cost_usd": float(mean_c[ref]),
        "models": models,
        "budgets": {},
    }
    for fraction in fractions:
        budget = fraction * float(mean_c[ref])
        affordable = [k for k in range(len(mean_c)) if mean_c[k] <= budget * (1 + 1e-9)]
        best_k = max(affordable, key=lambda k: mean_q[k]) if affordable else int(np.argmin(mean_c))
        oracle_q, oracle_c = budget_oracle(quality, cost, budget)
        entry: dict[str, Any] = {
            "fraction": fraction,
            "budget_usd": budget,
            "best_single": {
                "model": data.stream.models[best_k],
                "quality": float(mean_q[best_k]),
                "cost_usd": float(mean_c[best_k]),
            },
            "random_mix_at_budget": mix_quality(hull, budget),
            "oracle": {"quality": oracle_q, "cost_usd": oracle_c},
            "runs": {},
        }
        for mode, policies in (("cold", cold_policies), ("warm", warm_policies)):
            for policy in policies:
                started = time.perf_counter()
                config = SimulationConfig(
                    outcomes=data.stream,
                    policy=policy,
                    budget_usd=budget,
                    seeds=seeds,
                    warm_start=data.warm if mode == "warm" else None,
                    warm_start_mode="full",
                )
                result = simulate(config, settings)
                s = result.summary
                judged_q = s["quality_last_half"] if mode == "cold" else s["quality"]
                judged_c = s["cost_usd_last_half"] if mode == "cold" else s["cost_usd"]
                per_seed_q = [
                    p["quality_last_half"] if mode == "cold" else p["quality"]
                    for p in s["per_seed"]
                ]
                # A budget is a mean cost per request over everything served: each seed's
                # whole stream is what the budget figure is judged on (cold runs' judged half
                # pays back the first half's exploration, so it may sit under the budget).
                per_seed_cost = [p["cost_usd"] for p in s["per_seed"]]
                per_seed_half = [p["cost_usd_last_half"] for p in s["per_seed"]]
                target = 0.9 * float(mean_q[ref])
                holds = [prompts_to_hold(t.quality, target) for t in result.traces]
                mean_hold = prompts_to_hold(np.mean([t.quality for t in result.traces], 0), target)
                judged_from = data.stream.n_prompts // 2 if mode == "cold" else 0
                paired = paired_summary(
                    [
                        paired_comparators(
                            quality,
                            cost,
                            t.order[judged_from:],
                            t.quality[judged_from:],
                            t.cost_usd[judged_from:],
                            affordable=affordable,
                            budget=budget,
                            ref=ref,
                            fixed=best_k,
                        )
                        for t in result.traces
                    ],
                    data.stream.models,
                )
                entry["runs"][f"{mode}/{label}{policy}"] = {
                    "quality": judged_q,
                    "quality_std": float(np.std(per_seed_q)),
                    "cost_usd": judged_c,
                    "cost_usd_whole": s["cost_usd"],
                    "cost_over_budget_per_seed": [c / budget for c in per_seed_cost],
                    "cost_over_budget_per_seed_last_half": [c / budget for c in per_seed_half],
                    "random_mix_at_cost": mix_quality(hull, judged_c),
                    "prompts_to_hold_90pct": holds,
                    "prompts_to_hold_90pct_seed_mean": mean_hold,
                    "wall_s": time.perf_counter() - started,
                    "curve": _curve(result.traces),
                    "paired": paired,
                }
                print(
                    f"{data.name} {fraction:.2f} {mode:4s} {label}{policy:12s} "
                    f"q {judged_q / mean_q[ref]:.3f} of ref at cost {judged_c / mean_c[ref]:.3f}"
                    f" (budget {fraction:.2f}); best single {mean_q[best_k] / mean_q[ref]:.3f}, "
                    f"mix at cost {mix_quality(hull, judged_c) / mean_q[ref]:.3f}; paired: "
                    f"- best single {_pm(paired['router_minus_best_single'])}, "
                    f"- mix {_pm(paired['router_minus_mix'])}",
                    flush=True,
                )
        out["budgets"][f"{fraction:.2f}"] = entry
    if plots is not None:
        _plot(out, plots / f"{data.name}.png")
    return out


def _pm(stats: dict[str, Any]) -> str:
    """A paired difference as 'mean ± se (above/seeds)'."""
    return f"{stats['mean']:+.3f} ± {stats['se']:.3f} ({stats['above']}/{stats['seeds']})"


def _curve(traces: Sequence[Any]) -> list[float]:
    """Mean trailing-window quality across seeds, every 10 prompts."""
    qualities = np.array([t.quality for t in traces])
    window = min(CURVE_WINDOW, qualities.shape[1])
    kernel = np.ones(window) / window
    smoothed = np.array([np.convolve(q, kernel, mode="valid") for q in qualities]).mean(axis=0)
    return [round(float(v), 4) for v in smoothed[::10]]


def _plot(result: dict[str, Any], path: Path) -> None:
    """Save :func:`skill_figure` of one table's results as a PNG."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = skill_figure(result)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _runs_by_policy(result: dict[str, Any], mode: str) -> dict[str, list[tuple[str, Any]]]:
    """The ``mode`` runs of each policy (the run name after ``mode/``), with their budget key,
    in budget order."""
    runs: dict[str, list[tuple[str, Any]]] = {}
    for key in sorted(result["budgets"], key=float):
        for name, run in result["budgets"][key]["runs"].items():
            started, _, policy = name.partition("/")
            if started == mode:
                runs.setdefault(policy, []).append((key, run))
    return runs


def _plane_view(
    points: Sequence[tuple[float, float]], oracle: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Limits (x, y) of the cost-quality plane around ``points`` (the runs and the best single
    models affordable) and the oracle's costs: a view that also held every single model, the
    reference and the oracle squeezed the runs into a band a fifth of its height (the caller
    lists what falls outside)."""
    ys = [y for _, y in points]
    low, high = min(ys) - 0.03, max(ys) + 0.03
    xs = [x for x, _ in (*points, *oracle)]
    return (min(xs) / 1.5, max(xs) * 1.5), (low, high)


def _smoothing(points: int) -> int:
    """How many of a learning curve's points (one every 10 prompts) to average: 1 up to 1,000
    prompts; on a longer stream (RouteLLM MMLU's 4,242) a 100-prompt window's noise hides
    the differences between policies, so the window widens to about a 25th of the stream."""
    return 1 if points <= 100 else points // 25


def _curve_points(entry: dict[str, Any]) -> int:
    """The number of points of a budget's learning curves."""
    return max((len(run.get("curve") or ()) for run in entry["runs"].values()), default=0)


def _smoothed(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A learning curve averaged over :func:`_smoothing` points, with the prompt count each
    point ends at."""
    k = _smoothing(len(curve))
    steps = CURVE_WINDOW + 10 * np.arange(len(curve))
    if k == 1:
        return steps, curve
    return steps[k - 1 :], np.convolve(curve, np.ones(k) / k, mode="valid")


def skill_figure(result: dict[str, Any]) -> Any:
    """One table's figure: per mode (cold, warm; a column each, as present) the cost-quality
    plane (single models labelled, the random-mix line, each policy's runs joined in budget
    order, the oracle at each budget, the budgets as dotted lines) above the learning curves
    at a 25% budget (else the first), in one legend beside them whose colours name the policy
    in both modes; the default policy is drawn thicker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from banditroute.config import PolicySettings
    from banditroute.plotting import annotate_points, log_ticks, series_styles

    ref_q, ref_c = result["reference_quality"], result["reference_cost_usd"]
    ref = result["reference"].rsplit("/", 1)[-1]
    budgets = {key: result["budgets"][key] for key in sorted(result["budgets"], key=float)}
    modes = [m for m in ("cold", "warm") if _runs_by_policy(result, m)] or ["cold"]
    default = PolicySettings().kind
    policies = sorted(
        {name.partition("/")[2] for b in budgets.values() for name in b["runs"]},
        key=lambda p: (p != default, p),
    )
    styles = dict(zip(policies, series_styles(len(policies)), strict=True))
    width = {p: 2.4 if p == default else 1.3 for p in policies}
    fig, axes = plt.subplots(
        2,
        len(modes),
        figsize=(5.6 * len(modes) + 2.8, 9.4),
        squeeze=False,
        sharex="row",
        sharey="row",
        gridspec_kw={"height_ratios": [1.25, 1.0]},
    )
    models = result["models"]
    xs = [v["cost_usd"] / ref_c for v in models.values()]
    ys = [v["quality"] / ref_q for v in models.values()]
    hull = concave_hull(list(zip(xs, ys, strict=True)))
    # The mix is linear in cost: drawn point by point, or a log axis would bend it upwards.
    mix_x = np.geomspace(hull[0][0], hull[-1][0], 200) if len(hull) > 1 else np.array([xs[0]])
    mix_y = [mix_quality(hull, float(x)) for x in mix_x]
    oracle = [
        (b["oracle"]["cost_usd"] / ref_c, b["oracle"]["quality"] / ref_q) for b in budgets.values()
    ]
    drawn: dict[str, list[tuple[float, float]]] = {}
    for col, mode in enumerate(modes):
        plane = axes[0][col]
        plane.scatter(xs, ys, color="0.35", marker="s", s=20, zorder=3)
        plane.plot(mix_x, mix_y, "--", color="0.5", lw=1.0)
        for b in budgets.values():
            plane.axvline(b["fraction"], color="0.75", ls=":", lw=0.9, zorder=0)
        plane.axhline(1.0, color="0.8", lw=0.8, zorder=0)
        plane.plot(*zip(*oracle, strict=True), "*", color="goldenrod", ms=11, zorder=4)
        points: list[tuple[float, float]] = []
        for policy, runs in _runs_by_policy(result, mode).items():
            pts = [(r["cost_usd"] / ref_c, r["quality"] / ref_q) for _, r in runs]
            points += pts
            plane.plot(
                *zip(*pts, strict=True),
                **styles[policy].kwargs(),
                lw=width[policy],
                ms=5,
                zorder=5 if policy == default else 4,
            )
        drawn[mode] = points
        what = "second half of each stream" if mode == "cold" else "whole stream"
        plane.set_title(f"{mode}: quality and cost on the held-out prompts ({what})", fontsize=9)
        plane.set_xscale("log")
        plane.set_xlabel(f"mean cost / {ref}'s (log; dotted: the budgets)")
        curves = axes[1][col]
        key = "0.25" if "0.25" in budgets else next(iter(budgets))
        for policy, runs in _runs_by_policy(result, mode).items():
            for budget_key, run in runs:
                if budget_key == key and run.get("curve"):
                    steps, curve = _smoothed(np.array(run["curve"]) / ref_q)
                    curves.plot(
                        steps,
                        curve,
                        color=styles[policy].color,
                        linestyle=styles[policy].linestyle,
                        lw=width[policy],
                    )
        best = budgets[key]["best_single"]
        curves.axhline(best["quality"] / ref_q, color="0.35", ls="-.", lw=1.0)
        curves.axhline(0.9, color="0.6", ls=":", lw=1.0)
        window = CURVE_WINDOW + 10 * (_smoothing(_curve_points(budgets[key])) - 1)
        curves.set_title(f"{mode}: learning curves at a {float(key):.0%} budget", fontsize=9)
        curves.set_xlabel("prompts streamed")
    anchors = [
        (b["best_single"]["cost_usd"] / ref_c, b["best_single"]["quality"] / ref_q)
        for b in budgets.values()
    ]
    (x_lo, x_hi), (y_lo, y_hi) = _plane_view(
        [p for pts in drawn.values() for p in pts] + anchors, oracle
    )
    axes[0][0].set_xlim(x_lo, x_hi)
    axes[0][0].set_ylim(y_lo, y_hi)
    log_ticks(axes[0][0].xaxis, *axes[0][0].get_xlim())
    axes[0][0].set_ylabel(f"quality / {ref}'s")
    axes[1][0].set_ylabel(f"quality / {ref}'s\n(trailing {window} prompts, mean over seeds)")
    fig.suptitle(
        f"{result['table']}: {result['stream_prompts']} held-out prompts of {result['stream']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / fig.get_figwidth(), 0.97))
    named = [(x, y, m.rsplit("/", 1)[-1]) for x, y, m in zip(xs, ys, models, strict=True)]
    in_view = [p for p in named if x_lo <= p[0] <= x_hi and y_lo <= p[1] <= y_hi]
    unlabelled: list[str] = []
    for col, mode in enumerate(modes):
        missed = annotate_points(
            axes[0][col],
            in_view,
            markers=[*drawn[mode], *oracle],
            fontsize=6.5,
            color="0.25",
        )
        unlabelled += [m for m in missed if m not in unlabelled]
    above = ", ".join(sorted({f"{y:.3f}" for _, y in oracle if y > y_hi}))
    handles: list[Any] = [Line2D([], [], **styles[p].kwargs(), lw=width[p], ms=5) for p in policies]
    labels = [f"{p} (default)" if p == default else p for p in policies]
    handles += [
        Line2D([], [], color="0.35", marker="s", ms=5, linestyle="none"),
        Line2D([], [], color="0.5", ls="--"),
        Line2D([], [], color="goldenrod", marker="*", ms=10, linestyle="none"),
        Line2D([], [], color="0.35", ls="-.", lw=1.0),
        Line2D([], [], color="0.6", ls=":"),
    ]
    labels += [
        "single models",
        "random mix of two models",
        "per-prompt oracle, each budget" + (f"\n(above the view: {above})" if above else ""),
        "best single model affordable\n(learning curves' budget)",
        f"90% of {ref}'s quality",
    ]
    if unlabelled:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append("not labelled (no room):\n" + "\n".join(unlabelled))
    if outside := [name for name in (p[2] for p in named) if name not in {p[2] for p in in_view}]:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append("single models out of view:\n" + "\n".join(outside))
    fig.legend(
        handles,
        labels,
        loc="center left",
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(1 - 2.55 / fig.get_figwidth(), 0.5),
    )
    return fig


def _quality(run: dict[str, Any], reference_quality: float) -> str:
    """A run's quality for the tables: with paired comparators, the mean over seeds of its
    quality relative to the reference model's on the same judged prompts (cold: each seed's
    second half) ± the standard error, as the paired columns use; older results without them,
    relative to the reference's whole-stream quality ± the standard deviation (marked "sd")."""
    paired = run.get("paired")
    if paired:
        return f"{paired['router']['mean']:.3f} ± {paired['router']['se']:.3f}"
    rq = reference_quality
    return f"{run['quality'] / rq:.3f} ± {run['quality_std'] / rq:.3f} sd"


def markdown(results: dict[str, Any]) -> str:
    """One table per data set and budget: every run's quality and cost, then the best single
    model affordable, the random mix at the budget and the oracle, relative to the reference
    model; then the data set's paired comparisons."""
    lines: list[str] = []
    for result in results.values():
        ref = result["reference"].rsplit("/", 1)[-1]
        rq, rc = result["reference_quality"], result["reference_cost_usd"]
        lines.append(
            f"### {result['table']} ({result['stream_prompts']} prompts of {result['stream']}; "
            f"relative to {ref}: quality {rq:.3f}, ${rc:.6f})\n"
        )
        for key, b in result["budgets"].items():
            lines.append(
                f"#### {result['table']}, budget {float(key):.0%} of {ref}'s mean cost "
                f"(${b['budget_usd']:.6f})\n"
            )
            lines.append(
                "| run | quality (judged prompts, paired; ± s.e.) | cost | cost / budget per seed "
                "(whole stream) | random mix at that cost (whole stream) | router - best single "
                "(paired) | router - mix (paired) | prompts to hold 90% |"
            )
            lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for name, run in b["runs"].items():
                paired = run.get("paired")
                lines.append(
                    f"| {name} | {_quality(run, rq)} | "
                    f"{run['cost_usd'] / rc:.3f} | {_ratios(run['cost_over_budget_per_seed'])} | "
                    f"{run['random_mix_at_cost'] / rq:.3f} | "
                    f"{_bold_pm(paired['router_minus_best_single']) if paired else '-'} | "
                    f"{_bold_pm(paired['router_minus_mix']) if paired else '-'} | {_held(run)} |"
                )
            best, oracle = b["best_single"], b["oracle"]
            rows = (
                (f"best single affordable (whole stream): {best['model'].rsplit('/', 1)[-1]}",
                 best["quality"], best["cost_usd"]),
                ("random mix at the budget (whole stream)", b["random_mix_at_budget"],
                 b["budget_usd"]),
                ("per-prompt oracle within the budget (whole stream)", oracle["quality"],
                 oracle["cost_usd"]),
            )  # fmt: skip
            for label, quality, cost in rows:
                lines.append(f"| {label} | {quality / rq:.3f} | {cost / rc:.3f} | | | | | |")
            lines.append("")
        lines.extend(paired_markdown(result))
    return "\n".join(lines)


def _held(run: dict[str, Any]) -> str:
    """Prompts to hold 90% of the reference: median over the seeds that do (of all), and on
    the seeds' mean curve."""
    holds = [h for h in run["prompts_to_hold_90pct"] if h is not None]
    held = (
        f"{int(np.median(holds))} ({len(holds)}/{len(run['prompts_to_hold_90pct'])})"
        if holds
        else "never"
    )
    mean_hold = run.get("prompts_to_hold_90pct_seed_mean")
    return held + f"; seed mean {mean_hold if mean_hold is not None else 'never'}"


def _bold_pm(stats: dict[str, Any]) -> str:
    """:func:`_pm`, bold when the mean is more than two standard errors from 0."""
    text = _pm(stats)
    return f"**{text}**" if stats["seeds"] > 1 and abs(stats["mean"]) > 2 * stats["se"] else text


def paired_markdown(result: dict[str, Any]) -> list[str]:
    """The runs' paired comparisons (comparators on each seed's judged prompts), if recorded."""
    rows = [
        (key, name, run["paired"])
        for key, b in result["budgets"].items()
        for name, run in b["runs"].items()
        if "paired" in run
    ]
    if not rows:
        return []
    lines = [
        f"Paired, {result['table']}: every comparator on each seed's judged prompts, as a "
        "fraction of the reference model's quality on those prompts; mean ± standard error "
        "over seeds (seeds above zero / seeds); prompt s.e. is what sampling the judged prompts "
        "puts on one seed's difference.\n",
        "| budget | run | judged prompts | router | best single affordable (picked in hindsight) "
        "| router - best single | router - whole-stream best single | random mix at the router's "
        "cost | router - mix | oracle | prompt s.e. of a difference (best single / mix) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, name, p in rows:
        picked = ", ".join(
            f"{m.rsplit('/', 1)[-1]} x{n}" for m, n in p["best_single_models"].items()
        )
        se = p["prompt_se"]
        lines.append(
            f"| {float(key):.0%} | {name} | {p['judged_prompts']} | "
            f"{p['router']['mean']:.3f} ± {p['router']['se']:.3f} | "
            f"{p['best_single']['mean']:.3f} ({picked}) | {_pm(p['router_minus_best_single'])} | "
            f"{_pm(p['router_minus_fixed_single'])} | "
            f"{p['random_mix_at_cost']['mean']:.3f} | {_pm(p['router_minus_mix'])} | "
            f"{p['oracle']['mean']:.3f} | {se['minus_best_single']:.3f} / {se['minus_mix']:.3f} |"
        )
    lines.append("")
    return lines


def _ratios(ratios: Sequence[float]) -> str:
    """Per-seed cost over budget as ``min-max``."""
    return f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else "-"


BUDGET_WINDOW = (0.95, 1.02)
"""Where each seed's whole-stream mean cost over the budget should end (issue 11, item 3)."""


def budget_markdown(after: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """Per table, budget and run: each seed's whole-stream cost over budget (bold outside
    :data:`BUDGET_WINDOW`), the judged half's range and the quality, beside the same runs of
    ``before`` (an earlier version's results) when given."""
    low, high = BUDGET_WINDOW

    def seeds(ratios: Sequence[float]) -> str:
        return ", ".join(f"**{r:.3f}**" if not low <= r <= high else f"{r:.3f}" for r in ratios)

    lines = [
        "| table | budget | run | quality before -> after | cost / budget per seed before | "
        "cost / budget per seed after (whole stream) | after, judged half |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    outside = total = 0
    for name, result in after.items():
        rq = result["reference_quality"]
        for key, entry in result["budgets"].items():
            for run_name, run in entry["runs"].items():
                ratios = run["cost_over_budget_per_seed"]
                outside += sum(not low <= r <= high for r in ratios)
                total += len(ratios)
                earlier = (before or {}).get(name, {})
                old_run = earlier.get("budgets", {}).get(key, {}).get("runs", {}).get(run_name)
                was = (
                    f"{old_run['quality'] / earlier['reference_quality']:.3f} -> "
                    if old_run
                    else ""
                )
                half = run.get("cost_over_budget_per_seed_last_half") or ratios
                lines.append(
                    f"| {result['table']} | {float(key):.0%} | {run_name} | {was}"
                    f"{run['quality'] / rq:.3f} ± {run['quality_std'] / rq:.3f} | "
                    f"{seeds(old_run['cost_over_budget_per_seed']) if old_run else '-'} | "
                    f"{seeds(ratios)} | {_ratios(half)} |"
                )
    lines.append(f"\nSeeds outside [{low}, {high}] of the budget: {outside} of {total}.")
    return "\n".join(lines)


def merge_results(loaded: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Results of several runs of this script (``(file name, results)`` pairs) as one: runs
    of the same table and budget side by side, budgets in increasing order, each budget's cold
    runs before its warm ones (in the files' order). ValueError naming both files when a table
    was streamed differently in two of them (another part, a table that changed) or a run
    appears twice, since one of the two would be silently dropped."""
    merged: dict[str, Any] = {}
    source: dict[tuple[str, str, str], str] = {}
    seen: dict[str, str] = {}
    for origin, results in loaded:
        for name, result in results.items():
            if name not in merged:
                merged[name] = {**result, "budgets": {}}
                seen[name] = origin
            first = merged[name]
            for field in ("stream", "stream_prompts", "reference", "reference_cost_usd"):
                if first[field] != result[field]:
                    raise ValueError(
                        f"{name}: {field} is {first[field]!r} in {seen[name]} but "
                        f"{result[field]!r} in {origin} (not runs of the same prompts)"
                    )
            for key, entry in result["budgets"].items():
                budget = first["budgets"].setdefault(key, {**entry, "runs": {}})
                for run_name, run in entry["runs"].items():
                    where = (name, key, run_name)
                    if where in source:
                        raise ValueError(
                            f"{name}: run {run_name!r} at budget {key} is in both "
                            f"{source[where]} and {origin}"
                        )
                    source[where] = origin
                    budget["runs"][run_name] = run
    for result in merged.values():
        result["budgets"] = {
            key: {**entry, "runs": _cold_first(entry["runs"])}
            for key, entry in sorted(result["budgets"].items(), key=lambda kv: float(kv[0]))
        }
    return merged


def _cold_first(runs: dict[str, Any]) -> dict[str, Any]:
    """The runs with every cold one first, otherwise in their order."""
    return dict(sorted(runs.items(), key=lambda kv: not kv[0].startswith("cold/")))


def _replot(
    paths: Sequence[Path], plots: Path | None, markdown_path: Path | None, json_path: Path | None
) -> int:
    """Merge earlier results (:func:`merge_results`), redraw the plots and the Markdown, and
    write the merged results as JSON when asked."""
    merged = merge_results([(str(p), json.loads(p.read_text("utf-8"))) for p in paths])
    if plots is not None:
        for name, result in merged.items():
            _plot(result, plots / f"{name}.png")
    return write_results(merged, markdown(merged), json_path, markdown_path)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every table, write JSON, Markdown and plots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder of outcome tables")
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="RESULTS.json",
        help="draw the plots and the Markdown from earlier --json results instead of running; "
        "several files are merged (runs of the same table and budget side by side; a run in "
        "two files is an error), and --json writes the merged results",
    )
    parser.add_argument(
        "--budget-table",
        type=Path,
        nargs="+",
        metavar="RESULTS.json",
        help="print each seed's cost over budget from earlier --json results (a second file: "
        "the same runs before a change, side by side) instead of running",
    )
    parser.add_argument(
        "--part",
        choices=("holdout", "tune", "all"),
        default="holdout",
        help="stream the held-out part (default), a split of the tuning part, or the whole "
        "table (cold runs only; it includes the prompts settings were tuned on)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", help="only tables whose name contains this")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--cold", nargs="*", default=list(COLD_POLICIES), help="cold policies")
    parser.add_argument("--warm", nargs="*", default=list(WARM_POLICIES), help="warm policies")
    parser.add_argument("--config", type=Path, help="TOML settings merged over the defaults")
    parser.add_argument(
        "--label", default="", help="prefix of every run's name (e.g. 'semantic ' with --config)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plots", type=Path, help="folder for one PNG per table")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds: must be >= 1")
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions: each must be in (0, 1]")
    if args.part == "all" and args.warm:
        parser.error("--part all: cold runs only (pass --warm with no policies)")
    if args.replot:
        try:
            return _replot(args.replot, args.plots, args.markdown, args.json)
        except KeyError as exc:
            parser.error(f"--replot: a results file lacks the field {exc}")
        except (OSError, ValueError) as exc:
            parser.error(f"--replot: {exc}")
    if args.budget_table:
        if len(args.budget_table) > 2:
            parser.error("--budget-table: one results file, or two (after, before)")
        loaded = [json.loads(path.read_text("utf-8")) for path in args.budget_table]
        print(budget_markdown(loaded[0], loaded[1] if len(loaded) > 1 else None))
        return 0
    if args.data is None:
        parser.error("--data: required unless --replot or --budget-table is given")
    settings = load_settings(args.config)
    results: dict[str, Any] = {}
    for name, table in found_tables(args.data, settings.catalog.ids, args.only):
        results[name] = run_table(
            parts(table, name, args.part),
            settings,
            seeds=args.seeds,
            fractions=args.fractions,
            cold_policies=args.cold,
            warm_policies=args.warm,
            plots=args.plots,
            label=args.label,
        )
    return write_results(results, markdown(results), args.json, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
