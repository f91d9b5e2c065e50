"""Logged bandit feedback: what the production (logging) policy chose, and with what probability.

A log of ``n`` routing decisions over ``K`` candidate models (``K`` = the number of distinct
models across the whole log; a model that was not eligible for a decision is masked out) is
held as plain numpy arrays::

    actions        int   (n,)    index in 0..K-1 of the model the logging policy chose
    rewards        float (n,)    observed reward of that choice
    propensities   float (n,)    probability the logging policy gave to that choice, in (0, 1]
    mask           bool  (n, K)  which models were eligible for each decision
    logging_probs  float (n, K)  optional: the logging policy's full distribution

Policies under evaluation are given the same way, as an ``(n, K)`` matrix ``target`` of action
probabilities (rows sum to 1 and put no mass on ineligible models), and reward models as an
``(n, K)`` matrix of predicted rewards; :meth:`LoggedData.validate_target` and
:meth:`LoggedData.validate_reward_model` check them against the log.

Every validation error is a ``ValueError`` whose message starts with the offending field name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ROW_SUM_ATOL = 1e-6
"""How far a probability row may sum from 1 (policies computed in float32 stay well inside)."""

PROPENSITY_ATOL = 1e-6
"""How far ``logging_probs[i, actions[i]]`` may be from ``propensities[i]``."""


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A read-only view, so the caller's own array keeps its flags."""
    view = array.view()
    view.flags.writeable = False
    return view


def _real(name: str, value: object) -> FloatArray:
    """``value`` as a float64 array; rejects non-numeric, boolean and complex input."""
    array = np.asarray(value)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"{name}: must be a real-valued numeric array, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.float64)


def _check_shape(name: str, array: npt.NDArray[Any], shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")


def _first(bad: npt.NDArray[np.bool_]) -> int:
    """Index of the first offending row (``bad`` is 1-D, or 2-D and reduced over columns)."""
    rows = bad if bad.ndim == 1 else bad.any(axis=1)
    return int(np.argmax(rows))


def _check_finite(name: str, array: FloatArray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        i = _first(~finite)
        raise ValueError(f"{name}: must be finite (no NaN or inf), first bad row {i}")


def _check_distribution(name: str, probs: FloatArray, mask: BoolArray) -> None:
    """Rows are probability distributions over the eligible actions."""
    _check_finite(name, probs)
    negative = probs < 0
    if negative.any():
        raise ValueError(f"{name}: probabilities must be >= 0, first bad row {_first(negative)}")
    outside = (probs > 0) & ~mask
    if outside.any():
        raise ValueError(
            f"{name}: puts probability on an ineligible action (mask is False), "
            f"first bad row {_first(outside)}"
        )
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_ATOL
    if off.any():
        i = _first(off)
        raise ValueError(f"{name}: rows must sum to 1, row {i} sums to {sums[i]!r}")


@dataclass(frozen=True)
class LoggedData:
    """Logged decisions of the production policy; see the module docstring for the layout.

    The arrays are converted to canonical dtypes (int64, float64, bool) and stored as
    read-only views. ``__post_init__`` raises ``ValueError`` naming the field when a shape,
    dtype or value is wrong: actions outside ``0..K-1`` or on a masked-out model, rewards that
    are NaN or infinite, propensities outside ``(0, 1]``, a ``logging_probs`` row that is not a
    distribution over the eligible models or disagrees with ``propensities``.
    """

    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    mask: BoolArray
    logging_probs: FloatArray | None = None

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask: must be a boolean array, got dtype {mask.dtype}")
        if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
            raise ValueError(f"mask: expected a non-empty 2-D array (n, K), got {mask.shape}")
        n, k = mask.shape

        actions = np.asarray(self.actions)
        if actions.dtype == np.bool_ or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions: must be an integer array, got dtype {actions.dtype}")
        _check_shape("actions", actions, (n,))
        actions = np.asarray(actions, dtype=np.int64)
        out = (actions < 0) | (actions >= k)
        if out.any():
            i = _first(out)
            raise ValueError(f"actions: must lie in 0..{k - 1}, row {i} has {actions[i]}")
        rows = np.arange(n)
        if not mask[rows, actions].all():
            i = _first(~mask[rows, actions])
            raise ValueError(
                f"actions: row {i} logs action {actions[i]}, which mask marks ineligible"
            )

        rewards = _real("rewards", self.rewards)
        _check_shape("rewards", rewards, (n,))
        _check_finite("rewards", rewards)

        propensities = _real("propensities", self.propensities)
        _check_shape("propensities", propensities, (n,))
        _check_finite("propensities", propensities)
        bad = (propensities <= 0) | (propensities > 1)
        if bad.any():
            i = _first(bad)
            raise ValueError(f"propensities: must lie in (0, 1], row {i} has {propensities[i]!r}")

        logging_probs = None
        if self.logging_probs is not None:
            logging_probs = _real("logging_probs", self.logging_probs)
            _check_shape("logging_probs", logging_probs, (n, k))
            _check_distribution("logging_probs", logging_probs, mask)
            gap = np.abs(logging_probs[rows, actions] - propensities) > PROPENSITY_ATOL
            if gap.any():
                i = _first(gap)
                raise ValueError(
                    f"logging_probs: row {i} gives the logged action "
                    f"{logging_probs[i, actions[i]]!r} but propensities has {propensities[i]!r}"
                )
            logging_probs = _frozen(logging_probs)

        object.__setattr__(self, "actions", _frozen(actions))
        object.__setattr__(self, "rewards", _frozen(rewards))
        object.__setattr__(self, "propensities", _frozen(propensities))
        object.__setattr__(self, "mask", _frozen(mask))
        object.__setattr__(self, "logging_probs", logging_probs)

    @property
    def n(self) -> int:
        """Number of logged decisions."""
        return int(self.mask.shape[0])

    @property
    def n_actions(self) -> int:
        """Number of candidate actions (models) ``K``."""
        return int(self.mask.shape[1])

    def validate_target(self, target: object) -> FloatArray:
        """``target`` as float64 ``(n, K)`` after checking it is a policy over eligible actions.

        Raises ``ValueError`` naming ``target`` when the shape is wrong, a value is NaN,
        infinite or negative, a row puts mass on an action the mask marks ineligible, or a row
        does not sum to 1 (within ``ROW_SUM_ATOL``).
        """
        probs = _real("target", target)
        _check_shape("target", probs, (self.n, self.n_actions))
        _check_distribution("target", probs, self.mask)
        return probs

    def validate_reward_model(self, reward_model: object) -> FloatArray:
        """``reward_model`` (predicted rewards q̂(x, a)) as float64 ``(n, K)``, all finite.

        Entries for ineligible actions are never used but must still be finite (fill them with
        0 when the model has no prediction there).
        """
        q = _real("reward_model", reward_model)
        _check_shape("reward_model", q, (self.n, self.n_actions))
        _check_finite("reward_model", q)
        return q
