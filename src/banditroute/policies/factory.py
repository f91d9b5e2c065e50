"""Build the configured policy from its settings."""

from __future__ import annotations

from banditroute.config import PolicySettings
from banditroute.policies.base import Policy
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.policies.vw import VWPolicy


def build_costaware(settings: PolicySettings, *, seed: int = 0, semantic: bool) -> CostAwarePolicy:
    """The cost-aware policy with its configured options (``price_prior``,
    ``joint_thompson``); ``semantic`` as in :func:`build_policy`."""
    return CostAwarePolicy(
        seed=seed,
        semantic_dims=SEMANTIC_DIMS if semantic else 0,
        price_prior=settings.price_prior,
        joint=settings.joint_thompson,
    )


def build_policy(settings: PolicySettings, *, seed: int = 0, semantic: bool) -> Policy:
    """A fresh policy of the configured kind; ``semantic`` (``[features] semantic``, required:
    a cost-aware policy's layout must match the features it will see, or a snapshot restored
    into it is carried to another width) lets the cost-aware policy read the first
    :data:`SEMANTIC_DIMS` components of the prompt embedding."""
    if settings.kind == "vw":
        return VWPolicy(settings.vw_args, seed=seed)
    if settings.kind == "costaware":
        return build_costaware(settings, seed=seed, semantic=semantic)
    if settings.kind == "linucb":
        # river.bandit imports river's datasets and with them scikit-learn when installed:
        # seconds of start-up that only a linucb service should pay.
        from banditroute.policies.linucb import LinUCBPolicy

        return LinUCBPolicy(seed=seed)
    if settings.kind == "fixed":
        assert settings.fixed_model is not None  # validated by Settings
        return FixedPolicy(settings.fixed_model)
    return UniformPolicy()
