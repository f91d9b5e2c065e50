"""Tune the cost/quality trade-off counterfactually: sweep objective weights, find the frontier.

For each setting of the sweep (cost weight, optionally latency weight) :func:`tune`

1. re-scores the *first* half of the logged decisions (in time order) under the objective with
   that weight and trains a fresh policy on them (``vw`` or ``linucb``, as a replay candidate);
2. estimates, on the *second* half, the trained policy's mean quality, mean cost and mean
   latency per decision with doubly robust estimation (each fragment is just another reward,
   with its own cross-fitted reward model), each with a confidence interval, and rates it
   reliable or not (``reliability.verdict``; the precision test reads the quality interval,
   the axis the recommendation's quality share is measured on).

The settings whose (cost, quality) point no other setting beats on both are the Pareto
frontier. The recommendation answers a stated target: the cheapest setting reaching at least
``quality_share`` of the best estimated quality, or the best quality within ``max_cost`` USD
per decision. Fixed-model policies and the logged policy are estimated the same way and shown
as reference points (not recommended: they are not settings of the objective).
"""

from __future__ import annotations

import itertools
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from banditroute.choices import DEFAULT_N_BOOT
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
from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import LogCounts, ReplayLog, counts
from banditroute.evaluation.objective_rewards import (
    FRAGMENT_NAMES,
    describe_objective,
    fragment_ranges,
    fragments,
    score,
)
from banditroute.evaluation.reliability import DEFAULT_TOLERANCE, check_tolerance, verdict
from banditroute.evaluation.replay import observed_range, split_in_time
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.objectives import Objective

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    reliable: bool = True
    reason: str = ""
    """Whether the log can answer for this policy and why (``reliability.verdict``): the
    frontier and the recommendation use reliable points only."""
    short: str = ""
    """The reason in a few words (the plot's)."""

    def as_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "reliable": self.reliable,
            "reliability_reason": self.reason,
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
    tolerance: float = DEFAULT_TOLERANCE

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
            "tolerance": self.tolerance,
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
    """Index of the recommended sweep point, the target in words, and the reason.

    Only reliable points are candidates: a setting the log cannot answer for (tiny effective
    sample size, traffic to models the logger never tried) is never recommended.
    """
    all_sweep = [i for i, p in enumerate(points) if p.kind == "sweep"]
    if not all_sweep:
        return None, "", "no sweep points"
    sweep = [i for i in all_sweep if points[i].reliable]
    left_out = len(all_sweep) - len(sweep)
    if not sweep:
        return (
            None,
            "",
            f"none: the log cannot answer for any of the {left_out} settings (each is "
            "unreliable; see the reasons); log with more exploration ([policy] "
            "min_probability) or for longer",
        )
    caveat = f" ({left_out} unreliable settings left out)" if left_out else ""
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
                f"${points[best].cost_usd.estimate:.6f} per decision{caveat}"
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
            f"${points[best].cost_usd.estimate:.6f} per decision{caveat}"
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
    tolerance: float = DEFAULT_TOLERANCE,
) -> TuneResult:
    """Sweep the weights, estimate each trained policy, find the frontier (module docstring);
    a point is reliable when its quality interval is within ``tolerance`` of its estimate
    (and its ESS and overlap pass)."""
    tolerance = check_tolerance(tolerance)
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
    fitted = RidgeRewardModel(seed=seed).fit_log(eval_log, targets)
    ranges = fragment_ranges(settings.reward)
    seen = [observed_range(targets[:, j], ranges[j]) for j in range(len(FRAGMENT_NAMES))]
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
                fitted.for_target(j),
                method=method,
                level=level,
                n_boot=n_boot,
                seed=seed + index,
                reward_range=ranges[j],
                unseen_range=seen[j],
            )[0]
            for j in range(len(FRAGMENT_NAMES))
        ]
        diag = diagnostics(data[0], target)
        quality, cost, latency = intervals
        judged = verdict(diag, quality, tolerance=tolerance)
        return TunePoint(
            label,
            kind,
            weights,
            quality,
            cost,
            latency,
            ess=diag.ess,
            max_weight=diag.max_weight,
            reliable=judged.reliable,
            reason=judged.reason,
            short=judged.short,
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
    # The frontier is drawn through settings the log can answer for only.
    sweep = [i for i, p in enumerate(points) if p.kind == "sweep" and p.reliable]
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
        tolerance=tolerance,
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
        f"reliable: quality interval within {result.tolerance:.1%} of its estimate "
        "(--tolerance), enough effective sample size and overlap",
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
        if not p.reliable:
            mark.append("UNRELIABLE")
        lines.append(
            f"{p.label:<{width}}  {p.quality.estimate:>8.4f} "
            f"[{p.quality.lower:>7.4f}, {p.quality.upper:>7.4f}]  "
            f"{p.cost_usd.estimate:>10.6f} [{p.cost_usd.lower:>9.6f}, {p.cost_usd.upper:>9.6f}]  "
            f"{p.latency_ms.estimate:>10.0f}  {p.ess:>7.0f}  {' '.join(mark)}"
        )
    unreliable = [p for p in result.points if not p.reliable]
    if unreliable:
        lines += ["", "unreliable (left out of the frontier and the recommendation):"]
        lines += [f"  {p.label}: {p.reason}" for p in unreliable]
    lines += ["", f"target: {result.target}", f"recommended: {result.recommendation}"]
    return "\n".join(lines)


QUALITY_RANGE = (0.0, 1.0)
"""The range of a reported quality (:class:`~banditroute.outcomes.Outcome`): the plot's
quality axis never runs past it, whatever an interval reaches."""


def frontier_figure(result: TuneResult) -> Figure:
    """The figure :func:`plot` writes: quality against cost with intervals (drawn clipped to
    the quality range and to costs >= 0; the table keeps the raw values), the frontier joined,
    references in grey. Only the frontier, the recommended setting and the references are
    labelled, each where it overlaps nothing; a label with no free spot is listed below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from banditroute.plotting import annotate_points, log_ticks, outside_legend

    low_q, high_q = QUALITY_RANGE
    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    sweep = [p for p in result.points if p.kind == "sweep"]
    refs = [p for p in result.points if p.kind == "reference"]

    def quality(p: TunePoint) -> tuple[float, float, float]:
        q = p.quality
        return tuple(float(np.clip(v, low_q, high_q)) for v in (q.lower, q.estimate, q.upper))  # type: ignore[return-value]

    def cost(p: TunePoint) -> tuple[float, float, float]:
        c = p.cost_usd
        return tuple(max(0.0, v) for v in (c.lower, c.estimate, c.upper))  # type: ignore[return-value]

    def bars(points: list[TunePoint], **style: Any) -> None:
        if not points:
            return
        xs = np.array([cost(p) for p in points])
        ys = np.array([quality(p) for p in points])
        ax.errorbar(
            xs[:, 1], ys[:, 1],
            xerr=[xs[:, 1] - xs[:, 0], xs[:, 2] - xs[:, 1]],
            yerr=[ys[:, 1] - ys[:, 0], ys[:, 2] - ys[:, 1]],
            capsize=2, linestyle="none", **style,
        )  # fmt: skip

    bars(
        [p for p in sweep if p.reliable], fmt="o", color="tab:blue",
        label=f"{result.policy} per setting",
    )  # fmt: skip
    unsure = [p for p in sweep if not p.reliable]
    why = "; ".join(f"{p.label}: {p.short}" for p in unsure[:4]) + ("; ..." if unsure[4:] else "")
    bars(
        unsure, fmt="o", color="tab:red", alpha=0.5, mfc="none",
        label="unreliable setting (not recommended)\n" + textwrap.fill(why, 40),
    )  # fmt: skip
    bars(refs, fmt="s", color="grey", alpha=0.7, label="reference policies")
    front = sorted((p for p in sweep if p.frontier), key=lambda p: p.cost_usd.estimate)
    if front:
        ax.plot([cost(p)[1] for p in front], [quality(p)[1] for p in front], color="tab:blue",
                alpha=0.6, label="Pareto frontier")  # fmt: skip
    best = None if result.recommended is None else result.points[result.recommended]
    if best is not None:
        ax.scatter([cost(best)[1]], [quality(best)[1]], marker="*", s=250, color="tab:red",
                   zorder=5, label=f"recommended: {best.label}")  # fmt: skip
    costs = [cost(p)[1] for p in result.points]
    positive = [c for c in costs if c > 0]
    if positive and min(costs) > 0:
        ax.set_xscale("log")
        ends = [v for p in result.points for v in cost(p) if v > 0]
        log_ticks(ax.xaxis, min(ends), max(ends))
    elif positive:  # some policy is estimated free: linear near zero
        ax.set_xscale("symlog", linthresh=min(positive) / 2)
    ys = [v for p in result.points for v in quality(p)]
    if ys:
        margin = max(0.02, 0.05 * (max(ys) - min(ys)))
        ax.set_ylim(max(low_q - 0.02, min(ys) - margin), min(high_q + 0.02, max(ys) + margin))
    ax.set_xlabel("estimated mean cost per decision (USD)")
    ax.set_ylabel("estimated mean quality")
    ax.set_title(f"Counterfactual cost/quality frontier ({result.n_eval:,} held-out decisions)")
    ax.grid(alpha=0.3)
    outside_legend(ax, fontsize="small")
    fig.tight_layout()
    labelled = [p for p in front if p is not best] + ([best] if best is not None else [])
    everywhere = [(cost(p)[1], quality(p)[1]) for p in result.points]
    unplaced = annotate_points(
        ax, [(cost(p)[1], quality(p)[1], p.label) for p in labelled], markers=everywhere,
        fontsize=7, color="tab:blue",
    ) + annotate_points(
        ax, [(cost(p)[1], quality(p)[1], p.label.removeprefix("fixed:")) for p in refs],
        markers=everywhere, fontsize=6, color="dimgrey",
    )  # fmt: skip
    if unplaced:
        outside_legend(ax, unplaced, fontsize="small")
    return fig


def plot(result: TuneResult, path: Path) -> None:
    """Write :func:`frontier_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = frontier_figure(result)
    try:
        fig.savefig(path, dpi="figure")
    finally:
        plt.close(fig)


__all__ = [
    "DEFAULT_COST_WEIGHTS",
    "DEFAULT_QUALITY_SHARE",
    "TunePoint",
    "TuneResult",
    "QUALITY_RANGE",
    "format_table",
    "frontier_figure",
    "pareto_frontier",
    "plot",
    "recommend",
    "tune",
]
