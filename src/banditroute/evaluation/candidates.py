"""Candidate policies for replay, from their command-line specs to target distributions.

A spec names a policy whose value replay estimates; its *target distribution* is an ``(n, K)``
matrix, the probability the policy would give each model on each logged decision:

===================  ==========================================================================
spec                 policy
===================  ==========================================================================
``logged``           the logged distribution itself (its estimate is the on-policy mean)
``uniform``          uniform over each decision's eligible models
``fixed:MODEL``      all mass on MODEL when eligible, else on the first eligible model
                     (:class:`~banditroute.policies.fixed.FixedPolicy`)
``vw[:ARGS]``        a VW ``cb_explore_adf`` learner with these arguments (default: the
                     configured ``policy.vw_args``), trained on the first half of the log
``linucb[:K=V,...]``  LinUCB (``alpha``, ``epsilon``), trained on the first half of the log
``costaware``        the default serving policy
                     (:class:`~banditroute.policies.costaware.CostAwarePolicy`), trained on
                     the first half of the log
``snapshot:PATH``    a policy saved by :func:`banditroute.snapshots.save_snapshot`
===================  ==========================================================================

The first three are computed with array operations. Trained and saved policies are asked for
their distribution decision by decision, on the logged features and the logged eligible list
(arms from the catalogue of ``--config``). Training replays the training decisions in time
order through the policy's ``learn`` with the logged action, its logged probability and the
reward under the replay objective: a ``cb_explore_adf`` learner learns off-policy from
(action, -reward, propensity); LinUCB's regressions use the logged action's reward.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc
import structlog

from banditroute.catalog import ModelSpec
from banditroute.choices import SPEC_HELP
from banditroute.config import POLICY_KINDS, PolicyKind, Settings
from banditroute.errors import InvalidArgument
from banditroute.evaluation.logdata import ReplayLog
from banditroute.features import PromptFeatures
from banditroute.number_settings import parse_number_settings
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.factory import build_costaware
from banditroute.policies.vw import VWPolicy
from banditroute.snapshots import load_snapshot, parse_snapshot

log = structlog.get_logger(__name__)

FloatArray = npt.NDArray[np.float64]
Kind = Literal["logged", "uniform", "fixed", "costaware", "vw", "linucb", "snapshot", "shadow"]
KINDS: tuple[str, ...] = (
    "logged", "uniform", "fixed", "costaware", "vw", "linucb", "snapshot", "shadow",
)  # fmt: skip
TRAINED_KINDS: frozenset[str] = frozenset({"costaware", "vw", "linucb"})
LINUCB_KEYS: tuple[str, ...] = ("alpha", "epsilon")


@dataclass(frozen=True)
class CandidateSpec:
    """A parsed ``--candidate`` spec (see the module docstring)."""

    text: str
    kind: Kind
    model: str | None = None
    vw_args: tuple[str, ...] = ()
    linucb: tuple[tuple[str, float], ...] = ()
    path: Path | None = None

    @property
    def trained(self) -> bool:
        """Whether the policy is trained on the log (and so needs a held-out half)."""
        return self.kind in TRAINED_KINDS

    @property
    def needs_features(self) -> bool:
        """Whether the policy reads the full logged features (a per-decision loop)."""
        return self.kind in TRAINED_KINDS or self.kind == "snapshot"


def parse_candidate(text: str, *, arg: str = "--candidate") -> CandidateSpec:
    """Parse one spec; :class:`InvalidArgument` naming ``arg`` when it is malformed."""
    raw = text.strip()
    kind, sep, rest = raw.partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()
    if kind in ("logged", "uniform", "costaware"):
        if sep:
            raise InvalidArgument(f"{arg}: {text!r}: {kind} takes no settings", field=arg)
        return CandidateSpec(raw, cast(Kind, kind))
    if kind == "fixed":
        if not rest:
            raise InvalidArgument(f"{arg}: {text!r}: expected fixed:MODEL", field=arg)
        return CandidateSpec(raw, "fixed", model=rest)
    if kind == "vw":
        try:
            args = tuple(shlex.split(rest))
        except ValueError as exc:
            raise InvalidArgument(f"{arg}: {text!r}: {exc}", field=arg) from None
        return CandidateSpec(raw, "vw", vw_args=args)
    if kind == "linucb":
        settings = parse_number_settings(
            text, rest, LINUCB_KEYS, kind="linucb", arg=arg, error=InvalidArgument
        )
        alpha, epsilon = settings.get("alpha", 0.5), settings.get("epsilon", 0.02)
        if alpha < 0 or not 0 <= epsilon <= 1:
            raise InvalidArgument(
                f"{arg}: {text!r}: alpha must be >= 0 and epsilon in [0, 1]", field=arg
            )
        return CandidateSpec(raw, "linucb", linucb=tuple(sorted(settings.items())))
    if kind == "shadow":
        if not rest:
            raise InvalidArgument(f"{arg}: {text!r}: expected shadow:NAME", field=arg)
        return CandidateSpec(raw, "shadow", model=rest)
    if kind == "snapshot":
        if not rest:
            raise InvalidArgument(f"{arg}: {text!r}: expected snapshot:PATH", field=arg)
        path = Path(rest)
        if not path.is_file():
            raise InvalidArgument(f"{arg}: {text!r}: no such file {rest!r}", field=arg)
        return CandidateSpec(raw, "snapshot", path=path)
    raise InvalidArgument(f"{arg}: {text!r} is not a candidate spec ({SPEC_HELP})", field=arg)


def check_candidates(
    specs: Sequence[CandidateSpec], settings: Settings, models: Sequence[str], *, arg: str
) -> None:
    """Check specs against the catalogue and the log: unknown fixed models, bad VW args."""
    known = set(models) | set(settings.catalog.ids)
    seen: set[str] = set()
    for spec in specs:
        if spec.text in seen:
            raise InvalidArgument(f"{arg}: {spec.text!r} is given twice", field=arg)
        seen.add(spec.text)
        if spec.kind == "fixed" and spec.model not in known:
            names = ", ".join(sorted(known)) or "none"
            raise InvalidArgument(
                f"{arg}: {spec.text!r}: unknown model {spec.model!r} (known: {names})", field=arg
            )
        if spec.kind == "vw":
            build_policy(spec, settings, seed=0, arg=arg)


def _vw_args(spec: CandidateSpec, settings: Settings) -> tuple[str, ...]:
    args = spec.vw_args or settings.policy.vw_args
    if "--cb_explore_adf" not in args:
        args = ("--cb_explore_adf", *args)
    return tuple(args)


def build_policy(
    spec: CandidateSpec, settings: Settings, *, seed: int, arg: str = "--candidate"
) -> Policy:
    """A fresh policy for a trained spec (``costaware``, ``vw``, ``linucb``)."""
    if spec.kind == "costaware":
        return build_costaware(settings.policy, seed=seed, semantic=settings.features.semantic)
    if spec.kind == "vw":
        try:
            return VWPolicy(_vw_args(spec, settings), seed=seed)
        except Exception as exc:  # VW raises its own error types for bad arguments.
            raise InvalidArgument(
                f"{arg}: {spec.text!r}: Vowpal Wabbit rejected the arguments: {exc}", field=arg
            ) from exc
    if spec.kind == "linucb":
        # Imported here: river (and scipy behind it) take a second to import, which every
        # command importing this module (all of the CLI) would otherwise pay.
        from banditroute.policies.linucb import LinUCBPolicy

        values = dict(spec.linucb)
        return LinUCBPolicy(
            alpha=values.get("alpha", 0.5), epsilon=values.get("epsilon", 0.02), seed=seed
        )
    raise ValueError(f"{spec.text!r} is not a trained policy")


def load_policy(spec: CandidateSpec, settings: Settings, *, arg: str = "--candidate") -> Policy:
    """The policy saved at ``snapshot:PATH`` (the file itself is never modified)."""
    assert spec.path is not None
    data = spec.path.read_bytes()
    try:
        name = parse_snapshot(data)[0]
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"{arg}: {spec.text!r}: not a readable banditroute policy snapshot ({exc})", field=arg
        ) from exc
    if name not in POLICY_KINDS:
        raise InvalidArgument(
            f"{arg}: {spec.text!r}: snapshot of unknown policy {name!r}", field=arg
        )
    # Imported here: the factory imports every policy, river's slow import among them.
    from banditroute.policies.factory import build_policy as build_configured

    # A fresh policy of the snapshot's kind as --config sets it up; the snapshot restores its state.
    policy = build_configured(
        replace(
            settings.policy,
            kind=cast(PolicyKind, name),
            fixed_model=settings.policy.fixed_model or "",
        ),
        semantic=settings.features.semantic,
    )
    if isinstance(policy, CostAwarePolicy):
        policy.carry_semantic = False  # scored as saved: another embedding width is refused
    # load_snapshot moves an unreadable file aside: give it a copy, never the user's file.
    with tempfile.TemporaryDirectory(prefix="banditroute-replay-") as folder:
        copy = Path(folder) / "policy.snapshot"
        shutil.copyfile(spec.path, copy)
        if not load_snapshot(policy, copy):
            raise InvalidArgument(
                f"{arg}: {spec.text!r}: the {name} snapshot could not be restored "
                "(does --config match the settings it was saved with?)",
                field=arg,
            )
    return policy


@dataclass
class PolicyInputs:
    """What a policy sees for a log's decisions: features and arms, parsed once and cached."""

    log: ReplayLog
    settings: Settings
    _arms: dict[str, ModelSpec] = field(default_factory=dict)
    _rows: list[tuple[PromptFeatures, tuple[ModelSpec, ...], npt.NDArray[np.int64]]] | None = None
    missing_models: set[str] = field(default_factory=set)

    def _arm(self, model: str) -> ModelSpec:
        arm = self._arms.get(model)
        if arm is None:
            if model in self.settings.catalog:
                arm = self.settings.catalog.get(model)
            else:
                # Not in this catalogue: a plain placeholder, so old logs still replay.
                self.missing_models.add(model)
                arm = ModelSpec(model, "unknown", 0.0, 0.0)
            self._arms[model] = arm
        return arm

    def rows(self) -> list[tuple[PromptFeatures, tuple[ModelSpec, ...], npt.NDArray[np.int64]]]:
        """Per decision: features, arms in the logged order, and their columns in ``K``."""
        if self._rows is None:
            models = self.log.models
            built = []
            for row in range(self.log.n):
                cols = self.log.eligible_columns(row)
                arms = tuple(self._arm(models[c]) for c in cols)
                built.append((self.log.features(row), arms, cols))
            self._rows = built
            if self.missing_models:
                log.warning("replay_models_not_in_catalogue", models=sorted(self.missing_models))
        return self._rows


def train(
    policy: Policy,
    inputs: PolicyInputs,
    rewards: npt.ArrayLike,
    *,
    usable: npt.ArrayLike | None = None,
    progress: Iterable[int] | None = None,
) -> int:
    """Replay decisions in order through ``policy.learn``; returns how many it learned.

    ``usable`` (bool ``(n,)``) skips decisions without a reward.
    """
    r = np.asarray(rewards, dtype=np.float64)
    keep = np.ones(inputs.log.n, dtype=np.bool_) if usable is None else np.asarray(usable)
    actions, props = inputs.log.actions, inputs.log.propensities
    learned = 0
    rows = inputs.rows()
    for row in progress if progress is not None else range(inputs.log.n):
        if not keep[row]:
            continue
        context, arms, cols = rows[row]
        chosen = int(np.flatnonzero(cols == actions[row])[0])
        policy.learn(context, arms, chosen, float(props[row]), float(r[row]))
        learned += 1
    return learned


def policy_distribution(
    policy: Policy, inputs: PolicyInputs, *, progress: Iterable[int] | None = None
) -> FloatArray:
    """``(n, K)`` distribution of ``policy`` on each logged decision (no learning)."""
    target = np.zeros((inputs.log.n, inputs.log.n_actions))
    rows = inputs.rows()
    for row in progress if progress is not None else range(inputs.log.n):
        context, arms, cols = rows[row]
        target[row, cols] = policy.distribution(context, arms)
    return target


def static_distribution(spec: CandidateSpec, log: ReplayLog) -> FloatArray:
    """``(n, K)`` target of ``logged``, ``uniform`` or ``fixed:MODEL``, with array operations."""
    if spec.kind == "logged":
        return np.array(log.logging_probs, dtype=np.float64)
    if spec.kind == "uniform":
        mask = log.mask.astype(np.float64)
        uniform: FloatArray = mask / mask.sum(axis=1, keepdims=True)
        return uniform
    if spec.kind == "fixed":
        target = np.zeros((log.n, log.n_actions))
        choice = log.first_eligible
        if spec.model in log.models:
            column = log.models.index(spec.model)
            choice = np.where(log.mask[:, column], column, choice)
        target[np.arange(log.n), choice] = 1.0
        return target
    raise ValueError(f"{spec.text!r} needs a policy, not a static distribution")


def shadow_distribution(
    con: duckdb.DuckDBPyConnection, name: str, log: ReplayLog, *, arg: str = "--candidate"
) -> FloatArray:
    """``(n, K)`` distribution a shadow policy logged beside each decision of ``log``.

    A shadow policy computes its full distribution on live traffic without serving it; the
    decision row keeps it under ``shadow.NAME.probabilities`` (aligned with ``eligible``).
    InvalidArgument naming ``arg`` unless every decision in ``log`` carries that shadow.
    """
    model_list = "[" + ", ".join("'" + m.replace("'", "''") + "'" for m in log.models) + "]"
    positions = f"list_transform({model_list}, lambda m: coalesce(list_position(eligible, m), 0))"
    path = '$."' + name.replace('"', "") + '".probabilities'
    relation = con.sql(
        f"""SELECT decision_id, list_transform({positions}, lambda q: CASE WHEN q = 0 THEN 0.0
                ELSE coalesce(CAST(sp[q] AS DOUBLE), 0.0) END) AS prob
            FROM (SELECT decision_id, eligible,
                         CAST(json_extract(shadow, ?) AS DOUBLE[]) AS sp FROM decisions)
            WHERE sp IS NOT NULL AND len(sp) = len(eligible)""",
        params=[path],
    )
    table = relation.to_arrow_table()
    row_of = {d: i for i, d in enumerate(table.column("decision_id").to_pylist())}
    flat = np.asarray(pc.list_flatten(table.column("prob")).to_numpy(), dtype=np.float64).reshape(
        table.num_rows, log.n_actions
    )
    wanted = [row_of.get(d) for d in log.decision_ids.to_pylist()]
    missing = sum(1 for w in wanted if w is None)
    if missing:
        raise InvalidArgument(
            f"{arg}: shadow:{name}: {missing} of {log.n} decisions carry no shadow {name!r} "
            "(was it configured for this tenant and period? narrow --since/--until)",
            field=arg,
        )
    target: FloatArray = flat[np.asarray(wanted, dtype=np.int64)]
    return target


def iterate(n: int, description: str, enabled: bool) -> Iterator[int]:
    """``range(n)`` with a tqdm progress bar on stderr when ``enabled``."""
    if not enabled:
        return iter(range(n))
    from tqdm import tqdm

    return iter(tqdm(range(n), desc=description, unit="dec", leave=False, disable=None))


__all__ = [
    "KINDS",
    "SPEC_HELP",
    "CandidateSpec",
    "PolicyInputs",
    "build_policy",
    "check_candidates",
    "iterate",
    "load_policy",
    "parse_candidate",
    "policy_distribution",
    "static_distribution",
    "train",
]
