"""Counterfactual replay: how candidate policies would have done on the logged traffic.

:func:`replay` takes a loaded :class:`~banditroute.evaluation.logdata.ReplayLog`, re-scores
its outcomes under an objective, fits a cross-fitted reward model, builds each candidate's
target distribution and estimates its value (mean reward per decision) with every estimator,
each with a confidence interval, plus the overlap diagnostics.

Which decisions are used:

* a decision's outcome is its first feedback for the chosen model; decisions without one are
  excluded (``missing="exclude"``, the default; counted in the result) or scored with the
  configured default reward (``missing="default"``);
* when any candidate is trained on the log (``vw``, ``linucb``), the used decisions are split
  in time order: trained candidates learn from the first half and *every* candidate is
  evaluated on the second half, so all estimates describe the same traffic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from banditroute.choices import (
    DEFAULT_N_BOOT,
    DEFAULT_SWITCH_TAU,
    ESTIMATOR_NAMES,
    MISSING_RULES,
    Missing,
)
from banditroute.config import Settings
from banditroute.evaluation.candidates import (
    CandidateSpec,
    PolicyInputs,
    build_policy,
    iterate,
    load_policy,
    policy_distribution,
    static_distribution,
    train,
)
from banditroute.evaluation.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    Diagnostics,
    Estimate,
    Estimator,
    SwitchDR,
    diagnostics,
    evaluate,
)
from banditroute.evaluation.logdata import LogCounts, ReplayLog, counts
from banditroute.evaluation.logged import LoggedData
from banditroute.evaluation.objective_rewards import (
    describe_objective,
    log_rewards,
    reward_range,
)
from banditroute.evaluation.reliability import (
    DEFAULT_TOLERANCE,
    MAX_THIN_SHARE,
    MIN_ESS,
    PRECISION_ESTIMATOR,
    THIN_PROPENSITY,
    Verdict,
    check_tolerance,
    verdict,
)
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.objectives import Objective
from banditroute.policies.base import Policy

FloatArray = npt.NDArray[np.float64]


def make_estimators(
    names: Sequence[str] = ESTIMATOR_NAMES,
    *,
    switch_tau: float | None = DEFAULT_SWITCH_TAU,
    clip: float = math.inf,
) -> list[Estimator]:
    """Estimator objects by name (``clip`` caps the weights of IPS and DR; ``switch_tau``
    None lets switch-DR choose its threshold from the data)."""
    built: list[Estimator] = []
    for name in names:
        if name == "ips":
            built.append(IPS(clip=clip))
        elif name == "snips":
            built.append(SNIPS())
        elif name == "dm":
            built.append(DM())
        elif name == "dr":
            built.append(DR(clip=clip))
        elif name == "sndr":
            built.append(SNDR())
        elif name == "switch-dr":
            built.append(SwitchDR(tau=switch_tau))
        else:
            raise ValueError(f"estimators: unknown estimator {name!r}")
    return built


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's estimates (by estimator name) and overlap diagnostics."""

    name: str
    estimates: dict[str, Estimate]
    diagnostics: Diagnostics
    notes: tuple[str, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    """The precision asked of the DR interval, a share of the estimate (the verdict's)."""

    @property
    def verdict(self) -> Verdict:
        """Whether the log can answer for this candidate to within ``tolerance``, and why
        (``reliability.verdict`` on its diagnostics and its DR interval)."""
        return verdict(
            self.diagnostics, self.estimates.get(PRECISION_ESTIMATOR), tolerance=self.tolerance
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON form: ``{"name", "estimates": {est: {"value", "lower", "upper"}}, ...}``."""
        judged = self.verdict
        return {
            "name": self.name,
            "reliable": judged.reliable,
            "reliability_reason": judged.reason,
            "relative_half_width": judged.as_dict()["relative_half_width"],
            "tolerance": judged.tolerance,
            "estimates": {key: iv.as_dict() for key, iv in self.estimates.items()},
            "ess": self.diagnostics.ess,
            "max_weight": self.diagnostics.max_weight,
            "unsupported_share": self.diagnostics.unsupported_share,
            "uncovered_mass": self.diagnostics.uncovered_mass,
            "thin_mass": self.diagnostics.thin_mass,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class HeldOut:
    """The time split used when a candidate is trained on the log."""

    n_train: int
    n_eval: int
    split_time: float


@dataclass(frozen=True)
class ReplayResult:
    """Everything :func:`replay` found; :meth:`as_dict` is the ``--json`` document."""

    source: str
    objective: Objective
    counts: LogCounts
    missing: Missing
    n_decisions: int
    models: tuple[str, ...]
    candidates: tuple[CandidateResult, ...]
    method: str
    level: float
    n_boot: int
    seed: int
    held_out: HeldOut | None = None
    reward_model: dict[str, object] = field(default_factory=dict)
    reward_range: tuple[float, float] = (-math.inf, math.inf)
    unseen_range: tuple[float, float] | None = None
    notes: tuple[str, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    policies: dict[str, Policy] = field(default_factory=dict, repr=False, compare=False)
    """The trained and loaded policies by candidate name (to save or inspect; not in JSON)."""

    def as_dict(self) -> dict[str, object]:
        """The JSON report (see ``banditroute replay --json``)."""
        held: dict[str, object] | None = None
        if self.held_out is not None:
            held = {
                "n_train": self.held_out.n_train,
                "n_eval": self.held_out.n_eval,
                "split_time": _iso(self.held_out.split_time),
                "note": "trained candidates learn from the first n_train decisions in time "
                "order; every candidate is evaluated on the last n_eval",
            }
        return {
            "n_decisions": self.n_decisions,
            "log": self.source,
            "objective": describe_objective(self.objective),
            "n_logged": self.counts.logged,
            "n_invalid": self.counts.invalid,
            "n_sticky": self.counts.sticky,
            "n_with_outcome": self.counts.with_outcome,
            "n_without_outcome": self.counts.without_outcome,
            "n_other_model_feedback_only": self.counts.other_model_feedback_only,
            "missing": self.missing,
            "held_out": held,
            "models": list(self.models),
            "interval": {
                "method": self.method,
                "level": self.level,
                "n_boot": self.n_boot if self.method == "bootstrap" else None,
                "seed": self.seed,
            },
            "reward_model": self.reward_model,
            "reward_range": {
                "low": self.reward_range[0],
                "high": self.reward_range[1],
                "note": "estimates and intervals are clipped to the rewards the objective can "
                "give (quality in [0, 1], cost and latency up to [reward] max_cost_usd and "
                "max_latency_ms); raw_value and outside_range keep what the estimator said",
            },
            "unseen_range": None
            if self.unseen_range is None
            else {
                "low": self.unseen_range[0],
                "high": self.unseen_range[1],
                "note": "a candidate's traffic to models the logger never tried (probability "
                "0) may be worth anything in this range (the rewards seen in the log): its "
                "intervals cover it",
            },
            "reliability": {
                "tolerance": self.tolerance,
                "note": reliability_rule(self.tolerance),
            },
            "notes": list(self.notes),
            "candidates": [c.as_dict() for c in self.candidates],
        }

    def write_json(self, path: Path) -> None:
        """Write :meth:`as_dict` to ``path``."""
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def reliability_rule(tolerance: float) -> str:
    """What "reliable" means, in one sentence (the table's and the JSON's legend)."""
    return (
        f"reliable: effective sample size >= {MIN_ESS:g}, at most {MAX_THIN_SHARE:.0%} of the "
        f"candidate's traffic where the logger's probability was < {THIN_PROPENSITY:g}, and "
        f"the DR interval within {tolerance:.1%} of its estimate on either side (--tolerance)"
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def observed_range(rewards: FloatArray, bounds: tuple[float, float]) -> tuple[float, float]:
    """The range of the logged rewards, within ``bounds``: what a model the logger never
    tried is assumed able to earn."""
    low = min(max(float(rewards.min()), bounds[0]), bounds[1])
    high = max(min(float(rewards.max()), bounds[1]), low)
    return low, high


def used_rows(log: ReplayLog, missing: Missing) -> npt.NDArray[np.bool_]:
    """The decisions estimation uses: those with an outcome, or all with ``default``."""
    if missing == "default":
        return np.ones(log.n, dtype=np.bool_)
    return log.has_outcome.copy()


def split_in_time(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices of the first half (training) and the second half (evaluation)."""
    cut = n // 2
    return np.arange(cut), np.arange(cut, n)


def _estimates(
    estimators: Sequence[Estimator],
    data: LoggedData,
    target: FloatArray,
    q_hat: object,
    notes: list[str],
    **options: Any,
) -> dict[str, Estimate]:
    """Every estimator's interval; one that is undefined here is left out with a note."""
    try:
        intervals = evaluate(estimators, data, target, q_hat, **options)
    except ValueError:
        found: dict[str, Estimate] = {}
        for estimator in estimators:
            try:
                found[estimator.name] = evaluate([estimator], data, target, q_hat, **options)[0]
            except ValueError as exc:
                notes.append(f"{estimator.name}: not estimated ({exc})")
        return found
    return {e.name: iv for e, iv in zip(estimators, intervals, strict=True)}


def replay(
    log: ReplayLog,
    specs: Sequence[CandidateSpec],
    objective: Objective,
    settings: Settings,
    *,
    estimators: Sequence[Estimator] | None = None,
    missing: Missing = "exclude",
    method: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    reward_model: RidgeRewardModel | None = None,
    progress: bool = False,
    shadow: Callable[[str, ReplayLog], FloatArray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ReplayResult:
    """Estimate each candidate's mean reward per decision under ``objective`` (module doc).

    ``shadow(name, log)`` gives a shadow policy's logged distribution on ``log``'s decisions
    (needed for ``shadow:NAME`` candidates; see ``candidates.shadow_distribution``).
    ``tolerance`` is the precision the verdicts ask of each DR interval (a share of the
    estimate; ``reliability.verdict``).
    """
    tolerance = check_tolerance(tolerance)
    if not specs:
        raise ValueError("specs: give at least one candidate")
    chosen = list(estimators) if estimators is not None else make_estimators()
    model = reward_model or RidgeRewardModel(seed=seed)
    log_counts = counts(log)
    default = settings.reward.default_reward if missing == "default" else None
    rewards_all = log_rewards(log, objective, default_reward=default)
    used = np.flatnonzero(used_rows(log, missing))
    if used.size < 2:
        raise ValueError(
            f"log: only {used.size} usable decision(s) in the window "
            f"({log_counts.without_outcome} without an outcome); need at least 2"
        )
    data_log = log.subset(used)
    rewards = rewards_all[used]
    held: HeldOut | None = None
    train_log: ReplayLog | None = None
    train_rewards: FloatArray | None = None
    notes: list[str] = []
    if any(spec.trained for spec in specs):
        train_rows, eval_rows = split_in_time(data_log.n)
        train_log, train_rewards = data_log.subset(train_rows), rewards[train_rows]
        data_log, rewards = data_log.subset(eval_rows), rewards[eval_rows]
        held = HeldOut(train_log.n, data_log.n, float(data_log.times[0]))
    if objective.budget_usd is not None:
        notes.append("the objective's budget pacing is not replayed (fragments are re-scored)")
    data = data_log.logged_data(rewards)
    q_hat = model.fit_log(data_log, rewards)
    bounds = reward_range(objective, settings.reward, default_reward=default)
    unseen = observed_range(rewards, bounds)

    inputs: PolicyInputs | None = None
    train_inputs: PolicyInputs | None = None
    results: list[CandidateResult] = []
    policies: dict[str, Policy] = {}
    for index, spec in enumerate(specs):
        spec_notes: list[str] = []
        if spec.kind == "shadow":
            if shadow is None:
                raise ValueError(f"{spec.text}: no shadow source was given")
            assert spec.model is not None
            target = shadow(spec.model, data_log)
        elif spec.kind in ("logged", "uniform", "fixed"):
            target = static_distribution(spec, data_log)
            if spec.kind == "fixed" and spec.model not in data_log.models:
                spec_notes.append(
                    f"{spec.model} was never eligible here: the first eligible model is used"
                )
        else:
            if inputs is None:
                inputs = PolicyInputs(data_log, settings)
            if spec.trained:
                assert train_log is not None
                assert train_rewards is not None
                if train_inputs is None:
                    train_inputs = PolicyInputs(train_log, settings)
                policy = build_policy(spec, settings, seed=seed)
                learned = train(
                    policy,
                    train_inputs,
                    train_rewards,
                    progress=iterate(train_log.n, f"train {spec.text}", progress),
                )
                spec_notes.append(f"trained on {learned} decisions")
            else:
                policy = load_policy(spec, settings)
            policies[spec.text] = policy
            target = policy_distribution(
                policy, inputs, progress=iterate(data_log.n, f"score {spec.text}", progress)
            )
        estimates = _estimates(
            chosen,
            data,
            target,
            q_hat,
            spec_notes,
            method=method,
            level=level,
            n_boot=n_boot,
            seed=seed + index,
            reward_range=bounds,
            unseen_range=unseen,
        )
        results.append(
            CandidateResult(
                name=spec.text,
                estimates=estimates,
                diagnostics=diagnostics(data, target),
                notes=tuple(spec_notes),
                tolerance=tolerance,
            )
        )
    if inputs is not None and inputs.missing_models:
        notes.append(
            "models not in the catalogue (placeholders used): "
            + ", ".join(sorted(inputs.missing_models))
        )
    return ReplayResult(
        source=log.source,
        objective=objective,
        counts=log_counts,
        missing=missing,
        n_decisions=data.n,
        models=data_log.models,
        candidates=tuple(results),
        method=method,
        level=level,
        n_boot=n_boot,
        seed=seed,
        held_out=held,
        reward_model=model.describe(),
        reward_range=bounds,
        unseen_range=unseen,
        notes=tuple(notes),
        tolerance=tolerance,
        policies=policies,
    )


def format_table(result: ReplayResult) -> str:
    """A plain-text report: the data used, then one block of estimates per candidate."""
    c = result.counts
    level = f"{result.level:.0%}"
    lines = [
        f"log: {result.source}",
        f"objective: {result.objective.name}  (quality {result.objective.quality:g}, "
        f"cost {result.objective.cost:g}/USD, latency {result.objective.latency:g}/ms, "
        f"failure {result.objective.failure:g})",
        f"decisions: {c.logged} logged, {c.with_outcome} with an outcome, "
        f"{c.without_outcome} without"
        + (
            f" ({c.other_model_feedback_only} only with feedback for another model)"
            if c.other_model_feedback_only
            else ""
        )
        + (", excluded" if result.missing == "exclude" else ", scored with the default reward")
        + (f", {c.invalid} invalid rows dropped" if c.invalid else "")
        + (f", {c.sticky} sticky session decisions left out (forced)" if c.sticky else ""),
    ]
    if result.held_out is not None:
        h = result.held_out
        lines.append(
            f"held out: trained candidates learn from the first {h.n_train} decisions; "
            f"ALL candidates are evaluated on the last {h.n_eval} (from {_iso(h.split_time)})"
        )
    lines.append(
        f"estimated: mean reward per decision on {result.n_decisions} decisions, "
        f"{level} intervals ({result.method})"
    )
    low, high = result.reward_range
    lines.append(
        f"reward range: [{low:.6g}, {high:.6g}] (what the objective can give); estimates and "
        "intervals are clipped to it, * marks an estimator whose raw value fell outside"
    )
    if result.unseen_range is not None:
        lines.append(
            f"never-tried models: a candidate's traffic to models the logger gave probability 0 "
            f"may earn anything in [{result.unseen_range[0]:.6g}, {result.unseen_range[1]:.6g}] "
            "(the logged rewards' range); its intervals include that"
        )
    lines.append(reliability_rule(result.tolerance))
    lines.extend(f"note: {note}" for note in result.notes)
    width = max(len("candidate"), *(len(r.name) for r in result.candidates))
    header = f"{'candidate':<{width}}  {'estimator':<9}  {'value':>9}  {level + ' interval':>22}"
    lines += ["", header, "-" * len(header)]
    for r in result.candidates:
        for index, (key, iv) in enumerate(r.estimates.items()):
            name = r.name if index == 0 else ""
            extra = f"  * raw {iv.raw_estimate:.4f} outside the range" if iv.outside_range else ""
            if iv.tau is not None:
                extra += f"  tau {iv.tau:g}"
            lines.append(
                f"{name:<{width}}  {key:<9}  {iv.estimate:>9.4f}  "
                f"[{iv.lower:>9.4f}, {iv.upper:>9.4f}]{extra}"
            )
        d = r.diagnostics
        lines.append(
            f"{'':<{width}}  ess {d.ess:,.0f} of {result.n_decisions:,}, max weight "
            f"{d.max_weight:.3g}, never picks the logged model on {d.unsupported_share:.1%}"
            + (
                f", uncovered: {d.uncovered_mass:.1%} of its traffic to models never tried"
                if d.uncovered_mass
                else ""
            )
        )
        judged = r.verdict
        lines.append(
            f"{'':<{width}}  "
            + ("reliable: " if judged.reliable else "UNRELIABLE (the log cannot answer): ")
            + judged.reason
        )
        lines.extend(f"{'':<{width}}  note: {note}" for note in r.notes)
    return "\n".join(lines)


def plot(result: ReplayResult, path: Path) -> None:
    """Estimates with their intervals, one row per candidate, one marker per estimator (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in result.candidates]
    # a candidate may lack an estimator that is undefined for it (left out with a note)
    keys = list(dict.fromkeys(key for r in result.candidates for key in r.estimates))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.6 * len(names) * max(1, len(keys)) / 3))
    spacing = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        rows = [
            (i, r.estimates[key]) for i, r in enumerate(result.candidates) if key in r.estimates
        ]
        ys = [i + (j - (len(keys) - 1) / 2) * spacing for i, _ in rows]
        values = [iv.estimate for _, iv in rows]
        low = [iv.estimate - iv.lower for _, iv in rows]
        high = [iv.upper - iv.estimate for _, iv in rows]
        ax.errorbar(values, ys, xerr=[low, high], fmt="o", capsize=3, label=key, markersize=4)
    verdicts = [r.verdict for r in result.candidates]
    unreliable = [not v.reliable for v in verdicts]
    for i, flag in enumerate(unreliable):
        if flag:  # shaded: the log cannot answer for this candidate
            ax.axhspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
    labels = [
        f"{n}\n({'' if v.reliable else 'unreliable: '}{v.short})"
        for n, v in zip(names, verdicts, strict=True)
    ]
    ax.set_yticks(range(len(names)), labels)
    for tick, flag in zip(ax.get_yticklabels(), unreliable, strict=True):
        if flag:
            tick.set_color("tab:red")
    ax.invert_yaxis()
    ax.set_xlabel(
        f"mean reward per decision ({result.objective.name}); {result.level:.0%} intervals"
    )
    title = f"Counterfactual replay on {result.n_decisions:,} decisions"
    if result.held_out is not None:
        title += " (held-out half)"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "DEFAULT_SWITCH_TAU",
    "ESTIMATOR_NAMES",
    "MISSING_RULES",
    "CandidateResult",
    "HeldOut",
    "ReplayResult",
    "format_table",
    "make_estimators",
    "observed_range",
    "plot",
    "reliability_rule",
    "replay",
    "split_in_time",
    "used_rows",
]
