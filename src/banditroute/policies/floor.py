"""The exploration floor: every eligible model keeps at least a minimum probability.

A policy that has settled on one model stops trying the others, and a log of its decisions
then cannot estimate how another policy would do (a model it never picks has no data). The
router mixes each explorable decision's distribution with the uniform one over the eligible
models, by the smallest share that lifts the least likely model to the floor ``f``::

    lam = (f - p_min) / (1/K - p_min)   when p_min < f (else 0: the distribution is unchanged)
    p'  = (1 - lam) * p + lam / K

so ``min p' = f`` exactly, ``p'`` sums to 1 and keeps the policy's order of the models. It
needs ``f <= 1/K`` (``[policy] min_probability`` is checked against the catalogue's size, and
``K`` eligible models are never more than the catalogue). The floored vector is what is sampled
and logged: the true propensity.
"""

from __future__ import annotations

from banditroute.policies.base import Probabilities


def apply_floor(probabilities: Probabilities, floor: float) -> Probabilities:
    """``probabilities`` mixed with uniform just enough that each is at least ``floor``."""
    k = len(probabilities)
    if floor <= 0.0 or k < 2:
        return probabilities
    if floor * k > 1.0 + 1e-12:
        raise ValueError(f"min_probability {floor:g} exceeds 1/{k} for {k} eligible models")
    least = float(probabilities.min())
    if least >= floor:
        return probabilities
    uniform = 1.0 / k
    share = min(1.0, (floor - least) / (uniform - least))
    mixed: Probabilities = (1.0 - share) * probabilities + share * uniform
    return mixed


__all__ = ["apply_floor"]
