"""Tune the cost/quality trade-off counterfactually: sweep objective weights, find the frontier.

For each setting of the sweep (cost weight, optionally latency weight) :func:`tune`

1. re-scores the *first* half of the logged decisions (in time order) under the objective with
   that weight and trains a fresh policy on them (``vw`` or ``linucb``, as a replay candidate);
2. estimates, on the *second* half, the trained policy's mean quality, mean cost and mean
   latency per decision with doubly robust estimation (each fragment is just another reward,
   with its own cross-fitted reward model), each with a confidence interval.

The settings whose (cost, quality) point no other setting beats on both are the Pareto
frontier. The recommendation answers a stated target: the cheapest setting reaching at least
``quality_share`` of the best estimated quality, or the best quality within ``max_cost`` USD
per decision. Fixed-model policies and the logged policy are estimated the same way and shown
as reference points (not recommended: they are not settings of the objective).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from banditroute.config import Settings
from banditroute.evaluation.candidates import (
    CandidateSpec,
    PolicyInputs,
    build_policy,
    iterate,
    policy_distribution,
    static_distribution,
    train,
)
from banditroute.evaluation.estimators import DR, diagnostics, evaluate
from banditroute.evaluation.intervals import DEFAULT_N_BOOT, Interval
from banditroute.evaluation.logdata import LogCounts, ReplayLog, counts
from banditroute.evaluation.objective_rewards import (
    FRAGMENT_NAMES,
    describe_objective,
    fragments,
    score,
)
from banditroute.evaluation.replay import split_in_time
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.objectives import Objective

FloatArray = npt.NDArray[np.float64]
PointKind = Literal["sweep", "reference"]
DEFAULT_COST_WEIGHTS: tuple[float, ...] = (0.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 1000.0)
DEFAULT_QUALITY_SHARE = 0.95


@dataclass(frozen=True)
class TunePoint:
    """One evaluated policy: a setting of the sweep or a reference policy."""

    label: str
    kind: PointKind
    weights: dict[str, float]
    quality: Interval
    cost_usd: Interval
    latency_ms: Interval
    ess: float
    max_weight: float
    frontier: bool = False

    def as_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "label": self.label,
            "kind": self.kind,
            "weights": self.weights,
            "quality": self.quality.as_dict(),
            "cost_usd": self.cost_usd.as_dict(),
            "latency_ms": self.latency_ms.as_dict(),
            "ess": self.ess,
            "max_weight": self.max_weight,
            "frontier": self.frontier,
        }


@dataclass(frozen=True)
class TuneResult:
    """The sweep's points, its frontier and the recommended setting (if any meets the target)."""

    source: str
    base_objective: Objective
    policy: str
    counts: LogCounts
    n_train: int
    n_eval: int
    points: tuple[TunePoint, ...]
    target: str
    recommended: int | None
    recommendation: str
    level: float
    method: str

    def as_dict(self) -> dict[str, object]:
        """The ``--json`` document."""
        return {
            "log": self.source,
            "policy": self.policy,
            "base_objective": describe_objective(self.base_objective),
            "n_logged": self.counts.logged,
            "n_without_outcome": self.counts.without_outcome,
            "n_train": self.n_train,
            "n_eval": self.n_eval,
            "estimator": "dr",
            "interval": {"method": self.method, "level": self.level},
            "target": self.target,
            "recommended": None
            if self.recommended is None
            else self.points[self.recommended].label,
            "recommendation": self.recommendation,
            "points": [p.as_dict() for p in self.points],
        }

    def write_json(self, path: Path) -> None:
        """Write :meth:`as_dict` to ``path``."""
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def pareto_frontier(cost: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """Which points no other point beats (at most the cost and at least the quality, one of
    the two strictly)."""
    flags = []
    for i, (c_i, q_i) in enumerate(zip(cost, quality, strict=True)):
        dominated = any(
            c_j <= c_i and q_j >= q_i and (c_j < c_i or q_j > q_i)
            for j, (c_j, q_j) in enumerate(zip(cost, quality, strict=True))
            if j != i
        )
        flags.append(not dominated)
    return flags


def recommend(
    points: Sequence[TunePoint], *, quality_share: float | None, max_cost: float | None
) -> tuple[int | None, str, str]:
    """Index of the recommended sweep point, the target in words, and the reason."""
    sweep = [i for i, p in enumerate(points) if p.kind == "sweep"]
    if not sweep:
        return None, "", "no sweep points"
    if max_cost is not None:
        target = f"the best quality at a mean cost of at most ${max_cost:g} per decision"
        within = [i for i in sweep if points[i].cost_usd.estimate <= max_cost]
        if not within:
            cheapest = min(sweep, key=lambda i: points[i].cost_usd.estimate)
            return (
                None,
                target,
                (
                    f"no setting is estimated within ${max_cost:g}; the cheapest, "
                    f"{points[cheapest].label}, costs ${points[cheapest].cost_usd.estimate:.6f}"
                ),
            )
        best = max(within, key=lambda i: (points[i].quality.estimate, -points[i].cost_usd.estimate))
        return (
            best,
            target,
            (
                f"{points[best].label}: quality {points[best].quality.estimate:.4f} at "
                f"${points[best].cost_usd.estimate:.6f} per decision"
            ),
        )
    share = DEFAULT_QUALITY_SHARE if quality_share is None else quality_share
    top = max(points[i].quality.estimate for i in sweep)
    target = f"at least {share:.0%} of the best quality ({top:.4f}) at the lowest cost"
    enough = [i for i in sweep if points[i].quality.estimate >= share * top]
    best = min(enough, key=lambda i: (points[i].cost_usd.estimate, -points[i].quality.estimate))
    return (
        best,
        target,
        (
            f"{points[best].label}: quality {points[best].quality.estimate:.4f} "
            f"({points[best].quality.estimate / top:.1%} of the best) at "
            f"${points[best].cost_usd.estimate:.6f} per decision"
        ),
    )


def _label(weights: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in weights.items())


def tune(
    log: ReplayLog,
    settings: Settings,
    base: Objective,
    policy: CandidateSpec,
    *,
    cost_weights: Sequence[float] = DEFAULT_COST_WEIGHTS,
    latency_weights: Sequence[float] | None = None,
    quality_share: float | None = None,
    max_cost: float | None = None,
    references: bool = True,
    method: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = False,
) -> TuneResult:
    """Sweep the weights, estimate each trained policy, find the frontier (module docstring)."""
    if not policy.trained:
        raise ValueError(
            f"policy: {policy.text!r} is not a trained policy (costaware, vw or linucb)"
        )
    log_counts = counts(log)
    used = log.subset(log.has_outcome)
    if used.n < 4:
        raise ValueError(f"log: only {used.n} decision(s) with an outcome; need at least 4")
    train_rows, eval_rows = split_in_time(used.n)
    train_log, eval_log = used.subset(train_rows), used.subset(eval_rows)
    train_parts, eval_parts = fragments(train_log), fragments(eval_log)
    targets = eval_parts.matrix()
    q_hat = RidgeRewardModel(seed=seed).fit_log(eval_log, targets)
    data = [eval_log.logged_data(targets[:, j]) for j in range(len(FRAGMENT_NAMES))]
    estimator = DR()

    def estimate(
        label: str, kind: PointKind, weights: dict[str, float], target: FloatArray, index: int
    ) -> TunePoint:
        intervals = [
            evaluate(
                [estimator],
                data[j],
                target,
                q_hat[:, :, j],
                method=method,
                level=level,
                n_boot=n_boot,
                seed=seed + index,
            )[0]
            for j in range(len(FRAGMENT_NAMES))
        ]
        diag = diagnostics(data[0], target)
        quality, cost, latency = intervals
        return TunePoint(
            label, kind, weights, quality, cost, latency, ess=diag.ess, max_weight=diag.max_weight
        )

    latency_grid = list(latency_weights) if latency_weights else [base.latency]
    grid = list(itertools.product(cost_weights, latency_grid))
    train_inputs = PolicyInputs(train_log, settings)
    eval_inputs = PolicyInputs(eval_log, settings)
    points: list[TunePoint] = []
    steps = iterate(len(grid), "tune", progress)
    for index in steps:
        cost_w, latency_w = grid[index]
        weights = {"cost": float(cost_w)}
        if latency_weights:
            weights["latency"] = float(latency_w)
        label = _label(weights)
        objective = replace(base, name=label, cost=float(cost_w), latency=latency_w)
        learner = build_policy(policy, settings, seed=seed, arg="--policy")
        train(learner, train_inputs, score(objective, train_parts))
        target = policy_distribution(learner, eval_inputs)
        points.append(estimate(label, "sweep", weights, target, index))
    if references:
        specs = [CandidateSpec("logged", "logged")] + [
            CandidateSpec(f"fixed:{m}", "fixed", model=m) for m in eval_log.models
        ]
        for offset, spec in enumerate(specs):
            target = static_distribution(spec, eval_log)
            points.append(estimate(spec.text, "reference", {}, target, len(grid) + offset))
    sweep = [i for i, p in enumerate(points) if p.kind == "sweep"]
    flags = pareto_frontier(
        [points[i].cost_usd.estimate for i in sweep], [points[i].quality.estimate for i in sweep]
    )
    for i, flag in zip(sweep, flags, strict=True):
        points[i] = replace(points[i], frontier=flag)
    chosen, target_text, reason = recommend(points, quality_share=quality_share, max_cost=max_cost)
    return TuneResult(
        source=log.source,
        base_objective=base,
        policy=policy.text,
        counts=log_counts,
        n_train=train_log.n,
        n_eval=eval_log.n,
        points=tuple(points),
        target=target_text,
        recommended=chosen,
        recommendation=reason,
        level=level,
        method=method,
    )


def format_table(result: TuneResult) -> str:
    """The sweep as a table: estimates with intervals, frontier and recommendation marks."""
    c = result.counts
    level = f"{result.level:.0%}"
    lines = [
        f"log: {result.source}",
        f"decisions: {c.logged} logged, {c.with_outcome} with an outcome (used), "
        f"{c.without_outcome} without (excluded)",
        f"policy {result.policy} trained on the first {result.n_train} decisions per setting; "
        f"estimates (doubly robust, {level} intervals) on the last {result.n_eval}",
        f"base objective: {result.base_objective.name}",
        "",
    ]
    width = max(len("setting"), *(len(p.label) for p in result.points))
    header = (
        f"{'setting':<{width}}  {'quality':>8} {level + ' interval':>19}  "
        f"{'cost USD':>10} {level + ' interval':>23}  {'latency ms':>10}  {'ess':>7}  mark"
    )
    lines += [header, "-" * len(header)]
    for index, p in enumerate(result.points):
        if index > 0 and p.kind == "reference" and result.points[index - 1].kind == "sweep":
            lines.append(f"{'reference policies':<{width}}")
        mark = []
        if p.frontier:
            mark.append("frontier")
        if index == result.recommended:
            mark.append("RECOMMENDED")
        lines.append(
            f"{p.label:<{width}}  {p.quality.estimate:>8.4f} "
            f"[{p.quality.lower:>7.4f}, {p.quality.upper:>7.4f}]  "
            f"{p.cost_usd.estimate:>10.6f} [{p.cost_usd.lower:>9.6f}, {p.cost_usd.upper:>9.6f}]  "
            f"{p.latency_ms.estimate:>10.0f}  {p.ess:>7.0f}  {' '.join(mark)}"
        )
    lines += ["", f"target: {result.target}", f"recommended: {result.recommendation}"]
    return "\n".join(lines)


def plot(result: TuneResult, path: Path) -> None:
    """Quality against cost with intervals; the frontier joined, references in grey (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    sweep = [p for p in result.points if p.kind == "sweep"]
    refs = [p for p in result.points if p.kind == "reference"]

    def bars(points: list[TunePoint], **style: Any) -> None:
        if not points:
            return
        x = np.array([p.cost_usd.estimate for p in points])
        y = np.array([p.quality.estimate for p in points])
        xerr = [x - [p.cost_usd.lower for p in points], [p.cost_usd.upper for p in points] - x]
        yerr = [y - [p.quality.lower for p in points], [p.quality.upper for p in points] - y]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, capsize=2, linestyle="none", **style)

    bars(sweep, fmt="o", color="tab:blue", label=f"{result.policy} per setting")
    bars(refs, fmt="s", color="grey", alpha=0.7, label="reference policies")
    for p in sweep:
        ax.annotate(
            p.label,
            (p.cost_usd.estimate, p.quality.estimate),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    for p in refs:
        ax.annotate(
            p.label.removeprefix("fixed:"),
            (p.cost_usd.estimate, p.quality.estimate),
            fontsize=6,
            color="grey",
            xytext=(4, -8),
            textcoords="offset points",
        )
    front = sorted((p for p in sweep if p.frontier), key=lambda p: p.cost_usd.estimate)
    if front:
        ax.plot(
            [p.cost_usd.estimate for p in front],
            [p.quality.estimate for p in front],
            color="tab:blue",
            alpha=0.6,
            label="Pareto frontier",
        )
    if result.recommended is not None:
        best = result.points[result.recommended]
        ax.scatter(
            [best.cost_usd.estimate],
            [best.quality.estimate],
            marker="*",
            s=250,
            color="tab:red",
            zorder=5,
            label=f"recommended: {best.label}",
        )
    costs = [p.cost_usd.estimate for p in result.points]
    positive = [c for c in costs if c > 0]
    if positive and min(costs) > 0:
        ax.set_xscale("log")
    elif positive:  # some policy is estimated free: linear near zero
        ax.set_xscale("symlog", linthresh=min(positive) / 2)
    ax.set_xlabel("estimated mean cost per decision (USD)")
    ax.set_ylabel("estimated mean quality")
    ax.set_title(f"Counterfactual cost/quality frontier ({result.n_eval:,} held-out decisions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "DEFAULT_COST_WEIGHTS",
    "DEFAULT_QUALITY_SHARE",
    "TunePoint",
    "TuneResult",
    "format_table",
    "pareto_frontier",
    "plot",
    "recommend",
    "tune",
]
