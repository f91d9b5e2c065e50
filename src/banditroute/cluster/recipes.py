"""Policies rebuilt from a recipe, so a promoted policy travels as (recipe, snapshot).

A snapshot holds a policy's learned state but not how it was constructed (a VW learner's
arguments, a fixed policy's model, LinUCB's alpha). The recipe says that: an empty recipe is
the configured default policy, any other is the candidate spec it was promoted from
(:mod:`banditroute.evaluation.candidates`). The trainer and every replica build the same
empty policy from the recipe and restore the snapshot into it, so they serve one version.
"""

from __future__ import annotations

from banditroute.config import Settings
from banditroute.errors import InvalidArgument
from banditroute.policies.base import Policy
from banditroute.policies.factory import build_policy
from banditroute.snapshots import parse_snapshot

MAX_RECIPE_CHARS = 4096
"""The longest recipe accepted (the longest candidate spec PromotePolicy takes, and more)."""


def build_recipe(recipe: str, settings: Settings) -> Policy:
    """A fresh policy of ``recipe``; InvalidArgument naming ``candidate`` if it cannot be built
    here (a ``snapshot:PATH`` file exists on one machine only; an unknown shadow)."""
    if not recipe:
        return build_policy(settings.policies["default"], semantic=settings.features.semantic)
    if len(recipe) > MAX_RECIPE_CHARS:
        raise InvalidArgument("candidate: the spec is too long", field="candidate")
    # Imported here: the evaluation package is needed only once a promotion happened.
    from banditroute.evaluation.candidates import build_policy as build_candidate
    from banditroute.evaluation.candidates import parse_candidate
    from banditroute.policies.fixed import FixedPolicy
    from banditroute.policies.uniform import UniformPolicy

    spec = parse_candidate(recipe, arg="candidate")
    if spec.trained:
        return build_candidate(spec, settings, seed=0, arg="candidate")
    if spec.kind == "uniform":
        return UniformPolicy()
    if spec.kind == "fixed" and spec.model is not None:
        return FixedPolicy(spec.model)
    if spec.kind == "shadow" and spec.model is not None and spec.model in settings.policies:
        return build_policy(settings.policies[spec.model], semantic=settings.features.semantic)
    raise InvalidArgument(
        f"candidate: {spec.kind} candidates cannot be promoted across a cluster (every "
        "replica and the trainer must be able to build the policy)",
        field="candidate",
    )


def restore_recipe(recipe: str, payload: bytes, settings: Settings) -> Policy:
    """The policy of ``recipe`` holding the state of snapshot ``payload``; ValueError if the
    snapshot is damaged or of another kind, InvalidArgument if the recipe is refused."""
    name, updates, body = parse_snapshot(payload)
    policy = build_recipe(recipe, settings)
    if name != policy.name:
        raise ValueError(f"snapshot of policy {name!r}, the recipe builds {policy.name!r}")
    policy.restore(body)
    policy.updates = updates
    return policy


__all__ = ["MAX_RECIPE_CHARS", "build_recipe", "restore_recipe"]
