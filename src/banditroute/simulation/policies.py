"""Policies a simulation can run, by name: learners, baselines and the per-prompt oracle.

==================  ===========================================================================
name                policy
==================  ===========================================================================
``costaware``       :class:`~banditroute.policies.costaware.CostAwarePolicy`, Thompson sampling
``costaware-<x>``   the same with ``x`` in ``squarecb``, ``epsilon``
``costaware:K=V,..`` the same with these constructor settings (numbers), e.g.
                    ``costaware:drift_delta=0,posterior_scale=0.5``
``vw``              Vowpal Wabbit with the configured ``policy.vw_args``
``vw-<x>``          VW ``--cb_explore_adf`` with exploration ``x`` in :data:`VW_EXPLORATION`
``vw:<args>``       VW with these arguments (space-separated)
``linucb``          river's disjoint LinUCB (the river baseline)
``uniform``         every eligible model equally likely
``fixed:<model>``   always that model (``fixed`` alone: the configured ``policy.fixed_model``)
``oracle``          the per-prompt best model, read from the outcome table (simulator only)
==================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.catalog import Catalog, ModelSpec
from banditroute.choices import NAMED_POLICIES, VW_EXPLORATION
from banditroute.config import Settings
from banditroute.errors import ConfigError
from banditroute.features import PromptFeatures
from banditroute.number_settings import parse_number_settings
from banditroute.policies.base import Policy, Probabilities
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy
from banditroute.policies.factory import build_costaware
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.policies.vw import VWPolicy

VW_INTERACTIONS: tuple[str, ...] = ("-q", "sa", "-q", "wa", "--power_t", "0")
COSTAWARE_NUMBERS: tuple[str, ...] = (
    "posterior_scale", "scale_halflife", "gamma_scale", "epsilon", "prior_mean",
    "prior_precision", "bias_precision", "shared_precision", "noise", "drift_delta",
    "semantic_dims", "price_prior", "joint",
)  # fmt: skip
"""CostAwarePolicy's numeric settings a ``costaware:K=V`` policy name may set."""


class OraclePolicy(Policy):
    """All probability on the model the simulator names as this prompt's best (``target``).

    Simulator only: the runner sets ``target`` from the outcome table before each route, which
    no real policy can know.
    """

    name = "oracle"

    def __init__(self) -> None:
        super().__init__()
        self.target = ""

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        probs = np.zeros(len(arms))
        ids = [arm.id for arm in arms]
        probs[ids.index(self.target) if self.target in ids else 0] = 1.0
        return probs


def costaware_settings(name: str, *, arg: str = "--policy") -> dict[str, float]:
    """The ``K=V`` settings of a ``costaware:K=V,...`` name; ConfigError naming ``arg``."""
    settings = parse_number_settings(
        name, name.removeprefix("costaware:"), COSTAWARE_NUMBERS,
        kind="costaware", arg=arg, error=ConfigError,
    )  # fmt: skip
    try:
        CostAwarePolicy(**settings)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"{arg}: {name!r}: {exc}", field=arg) from None
    return settings


def semantic_dims(settings: Settings) -> int:
    """Embedding components the cost-aware policy reads under these settings."""
    return SEMANTIC_DIMS if settings.features.semantic else 0


def embedding_components(name: str) -> int:
    """Embedding components the features must hold for policy ``name``: the service's
    :data:`SEMANTIC_DIMS`, or more for a ``costaware:semantic_dims=N`` asking for more."""
    if name.startswith("costaware:"):
        return max(SEMANTIC_DIMS, int(costaware_settings(name).get("semantic_dims", 0)))
    return SEMANTIC_DIMS


def validate_policy_name(name: str, catalog: Catalog, *, arg: str = "--policy") -> str:
    """The name if it is a known policy for this catalogue; ConfigError naming ``arg``."""
    if name in NAMED_POLICIES or name == "fixed":
        return name
    if name.startswith("costaware:"):
        costaware_settings(name, arg=arg)
        return name
    if name.startswith("vw-") and name.removeprefix("vw-") in VW_EXPLORATION:
        return name
    if name.startswith("vw:"):
        try:
            VWPolicy(name.removeprefix("vw:").split())
        except Exception as exc:  # VW reports bad arguments with its own error types.
            raise ConfigError(f"{arg}: VW rejects {name!r}: {exc}", field=arg) from exc
        return name
    if name.startswith("fixed:"):
        model = name.removeprefix("fixed:")
        if model not in catalog:
            raise ConfigError(
                f"{arg}: model {model!r} is not in the outcome table "
                f"(models: {', '.join(catalog.ids)})",
                field=arg,
            )
        return name
    raise ConfigError(
        f"{arg}: unknown policy {name!r} (known: {', '.join(NAMED_POLICIES)}, fixed:<model>, "
        "vw:<args>, costaware:KEY=NUMBER,...)",
        field=arg,
    )


def build_policy(name: str, settings: Settings, *, seed: int) -> Policy:
    """A fresh policy for one simulation seed."""
    if name == "costaware":
        return build_costaware(settings.policy, seed=seed, semantic=settings.features.semantic)
    if name.startswith("costaware:"):
        chosen = {
            "semantic_dims": semantic_dims(settings),
            "price_prior": settings.policy.price_prior,
            "joint": settings.policy.joint_thompson,
            **costaware_settings(name),
        }
        return CostAwarePolicy(seed=seed, **chosen)  # type: ignore[arg-type]
    if name.startswith("costaware-"):
        exploration = name.removeprefix("costaware-")
        if exploration == "squarecb":
            return CostAwarePolicy(exploration="squarecb", seed=seed)
        if exploration == "epsilon":
            return CostAwarePolicy(exploration="epsilon", seed=seed)
    if name == "vw":
        return VWPolicy(settings.policy.vw_args, seed=seed)
    if name.startswith("vw-") and name.removeprefix("vw-") in VW_EXPLORATION:
        flags = VW_EXPLORATION[name.removeprefix("vw-")]
        return VWPolicy(("--cb_explore_adf", *flags, *VW_INTERACTIONS), seed=seed)
    if name.startswith("vw:"):
        return VWPolicy(name.removeprefix("vw:").split(), seed=seed)
    if name == "linucb":
        from banditroute.policies.linucb import LinUCBPolicy  # river: slow to import

        return LinUCBPolicy(seed=seed)
    if name == "uniform":
        return UniformPolicy()
    if name == "oracle":
        return OraclePolicy()
    if name == "fixed":
        model = settings.policy.fixed_model
        if model is None or model not in settings.catalog:
            raise ConfigError(
                "--policy: 'fixed' needs policy.fixed_model from the outcome table; "
                "use fixed:<model>",
                field="--policy",
            )
        return FixedPolicy(model)
    if name.startswith("fixed:"):
        return FixedPolicy(name.removeprefix("fixed:"))
    raise ConfigError(f"--policy: unknown policy {name!r}", field="--policy")
