"""Gated promotion: a candidate policy goes live only when the log shows it is better.

:func:`gate` replays the log (:func:`banditroute.evaluation.replay.replay`) with the live
policy (``logged``: the distribution the serving policy actually logged) and the candidate,
under one objective, on the same decisions (a candidate trained on the log learns from its
first half and both are judged on the second). The candidate clears the gate when the log can
answer for it (replay rates it reliable: :func:`banditroute.evaluation.reliability.verdict`,
enough effective sample size and overlap, otherwise DR is little more than the reward model's
guess, and a DR interval within ``tolerance`` of its estimate) and the lower bound of its DR
interval is above the live policy's DR estimate plus ``margin``. The :class:`Evidence` (both
estimates with their intervals, ESS, the reliability verdict and tolerance, decisions, margin,
verdict and a digest of the evaluated data) is what the caller writes to the audit chain,
promoted or not.

A candidate that clears is then built for serving by :func:`warm_policy`: a fresh policy that
learns every logged decision with an outcome (its features, eligible models, logged choice,
logged propensity and reward) in time order, so it goes live knowing what the log knows.

Candidates are replay specs (:mod:`banditroute.evaluation.candidates`): ``costaware``,
``vw[:ARGS]``, ``linucb[:K=V,...]``, ``uniform``, ``fixed:MODEL``, ``shadow:NAME`` (a shadow
policy of the running server, promoted as it is) and, from the command line,
``snapshot:PATH``. The candidate is judged on its own distribution; live, the router applies
the exploration floor to it as to any policy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np

from banditroute.config import Settings
from banditroute.errors import FailedPrecondition, InvalidArgument
from banditroute.evaluation.candidates import (
    CandidateSpec,
    PolicyInputs,
    build_policy,
    check_candidates,
    load_policy,
    parse_candidate,
    shadow_distribution,
    train,
)
from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import ReplayLog, load_log
from banditroute.evaluation.objective_rewards import log_rewards
from banditroute.evaluation.reliability import DEFAULT_TOLERANCE, check_tolerance
from banditroute.evaluation.replay import CandidateResult, make_estimators, replay
from banditroute.objectives import Objective
from banditroute.policies.base import Policy
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.uniform import UniformPolicy

Verdict = Literal["promoted", "refused"]
LIVE = "logged"
"""The replay spec of the live policy: the distribution it logged."""
MAX_MARGIN = 1000.0
"""The largest margin accepted (rewards are in reward points; a $1 call at cost weight 200 is
-200)."""


@dataclass(frozen=True)
class Estimate:
    """One policy's DR estimate on the log, with its interval and overlap diagnostics."""

    policy: str
    value: float
    lower: float
    upper: float
    ess: float
    uncovered_mass: float | None

    @classmethod
    def from_result(cls, result: CandidateResult) -> Estimate:
        """The DR row of a replay candidate."""
        interval: Interval = result.estimates["dr"]
        return cls(
            result.name, interval.estimate, interval.lower, interval.upper,
            result.diagnostics.ess, result.diagnostics.uncovered_mass,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (what the audit record holds)."""
        return {
            "policy": self.policy, "value": self.value, "lower": self.lower,
            "upper": self.upper, "ess": self.ess, "uncovered_mass": self.uncovered_mass,
        }  # fmt: skip


@dataclass(frozen=True)
class Evidence:
    """What a promotion was decided on; :meth:`as_dict` goes into the audit record."""

    candidate: Estimate
    live: Estimate
    objective: str
    decisions: int
    margin: float
    level: float
    reliability: str
    log_digest: str
    verdict: Verdict
    reason: str
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def promoted(self) -> bool:
        """True when the candidate cleared the gate."""
        return self.verdict == "promoted"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "candidate": self.candidate.as_dict(), "live": self.live.as_dict(),
            "objective": self.objective, "decisions": self.decisions, "margin": self.margin,
            "level": self.level, "reliability": self.reliability, "log_digest": self.log_digest,
            "verdict": self.verdict, "reason": self.reason, "tolerance": self.tolerance,
        }  # fmt: skip


def parse_spec(
    text: str, settings: Settings, models: tuple[str, ...], *, arg: str, shadows: bool
) -> CandidateSpec:
    """The candidate spec, checked: InvalidArgument naming ``arg`` when it is malformed, names
    an unknown model, is the live policy itself, or (``shadows`` False) names a shadow."""
    spec = parse_candidate(text, arg=arg)
    if spec.kind == LIVE:
        raise InvalidArgument(f"{arg}: 'logged' is the live policy itself", field=arg)
    if spec.kind == "shadow" and not shadows:
        raise InvalidArgument(f"{arg}: shadow candidates need the running server", field=arg)
    check_candidates([spec], settings, models, arg=arg)
    if spec.kind == "fixed" and spec.model not in settings.catalog:
        raise InvalidArgument(f"{arg}: {spec.model!r} is not in the catalogue", field=arg)
    return spec


def log_digest(log: ReplayLog, rewards: np.ndarray) -> str:
    """SHA-256 of the evaluated data (decision ids, choices, propensities, rewards), so the
    audit record names exactly what the verdict was computed from."""
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, log.decision_ids.to_pylist())).encode())
    for array in (log.actions, log.propensities, np.nan_to_num(rewards, nan=-math.inf)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def gate(
    log: ReplayLog,
    spec: CandidateSpec,
    settings: Settings,
    objective: Objective,
    *,
    margin: float,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
    shadow: Callable[[str, ReplayLog], np.ndarray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Evidence:
    """Replay the live policy and the candidate on the log and decide (module doc).

    FailedPrecondition when the log has too few decisions with an outcome to estimate."""
    if not (math.isfinite(margin) and 0 <= margin <= MAX_MARGIN):
        raise InvalidArgument(f"margin: must be in [0, {MAX_MARGIN:g}]", field="margin")
    try:
        tolerance = check_tolerance(tolerance)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="tolerance") from None
    try:
        result = replay(
            log, [parse_candidate(LIVE), spec], objective, settings,
            estimators=make_estimators(["dr"]), level=level, n_boot=n_boot, seed=seed,
            shadow=shadow, tolerance=tolerance,
        )  # fmt: skip
    except ValueError as exc:
        raise FailedPrecondition(f"log: {exc}", field="log") from exc
    live_row, candidate_row = result.candidates
    if "dr" not in candidate_row.estimates or "dr" not in live_row.estimates:
        notes = "; ".join((*live_row.notes, *candidate_row.notes))
        raise FailedPrecondition(f"log: DR could not be estimated ({notes})", field="log")
    live, candidate = Estimate.from_result(live_row), Estimate.from_result(candidate_row)
    bar = live.value + margin
    judged = candidate_row.verdict
    if not judged.reliable:
        verdict: Verdict = "refused"
        reason = f"the log cannot answer for the candidate: {judged.reason}"
    elif candidate.lower > bar:
        verdict = "promoted"
        reason = (
            f"the candidate's DR lower bound {candidate.lower:.4f} is above the live policy's "
            f"estimate {live.value:.4f} plus the margin {margin:g}"
        )
    else:
        verdict = "refused"
        reason = (
            f"the candidate's DR lower bound {candidate.lower:.4f} does not clear the live "
            f"policy's estimate {live.value:.4f} plus the margin {margin:g} ({bar:.4f})"
        )
    rewards = log_rewards(log, objective)
    return Evidence(
        candidate, live, objective.name, result.n_decisions, margin, level, judged.reason,
        log_digest(log, rewards), verdict, reason, tolerance,
    )  # fmt: skip


def warm_policy(
    spec: CandidateSpec,
    log: ReplayLog,
    settings: Settings,
    objective: Objective,
    *,
    seed: int = 0,
    shadows: Mapping[str, Policy] | None = None,
) -> Policy:
    """The candidate as a serving policy: trained kinds learn every logged decision with an
    outcome first; a shadow is the running one; a snapshot is restored."""
    if spec.trained:
        policy = build_policy(spec, settings, seed=seed)
        train(policy, PolicyInputs(log, settings), log_rewards(log, objective),
              usable=log.has_outcome)  # fmt: skip
        return policy
    if spec.kind == "uniform":
        return UniformPolicy()
    if spec.kind == "fixed":
        assert spec.model is not None
        return FixedPolicy(spec.model)
    if spec.kind == "snapshot":
        return load_policy(spec, settings)
    found = None if shadows is None or spec.model is None else shadows.get(spec.model)
    if spec.kind == "shadow" and found is not None:
        return found
    raise InvalidArgument(f"candidate: {spec.text!r} cannot be made live here", field="candidate")


def gate_connection(
    con: duckdb.DuckDBPyConnection,
    text: str,
    settings: Settings,
    objective: Objective,
    *,
    margin: float,
    arg: str = "candidate",
    shadows: Mapping[str, Policy] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Evidence, Policy | None]:
    """Load the log from ``con`` (``decisions`` and ``feedback`` tables), gate the candidate
    ``text`` and, when it clears, warm it for serving. ``shadows`` are the running server's
    named policies (None: shadow candidates are refused)."""
    log = load_log(con, with_features=True)
    spec = parse_spec(text, settings, log.models, arg=arg, shadows=shadows is not None)
    if spec.kind == "shadow" and (shadows is None or spec.model not in shadows):
        raise InvalidArgument(f"{arg}: no shadow policy named {spec.model!r}", field=arg)

    def shadow(name: str, data: ReplayLog) -> np.ndarray:
        return shadow_distribution(con, name, data, arg=arg)

    evidence = gate(log, spec, settings, objective, margin=margin, n_boot=n_boot, seed=seed,
                    shadow=shadow, tolerance=tolerance)  # fmt: skip
    if not evidence.promoted:
        return evidence, None
    return evidence, warm_policy(spec, log, settings, objective, seed=seed, shadows=shadows)


__all__ = [
    "Estimate",
    "Evidence",
    "gate",
    "gate_connection",
    "log_digest",
    "parse_spec",
    "warm_policy",
]
