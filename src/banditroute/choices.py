"""The named choices and defaults the commands offer (estimators, interval methods, candidate
specs, simulated policies, time buckets, ...), in a module that imports nothing heavy.

``banditroute CMD --help`` builds every parser, so the parsers take these names from here
rather than from the modules that implement them, which import numpy, scipy, duckdb, river or
Vowpal Wabbit at load: a command pays for those only when it runs. The implementing modules
import the same names from here (one definition each).
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BUCKETS",
    "DEFAULT_N_BOOT",
    "DEFAULT_SWITCH_TAU",
    "DEFAULT_TOLERANCE",
    "DEFAULT_WORD_BUCKETS",
    "ESTIMATOR_NAMES",
    "EXPLORATIONS",
    "MAX_TOLERANCE",
    "METHODS",
    "MISSING_RULES",
    "NAMED_POLICIES",
    "SPEC_HELP",
    "VW_EXPLORATION",
    "WARM_MODES",
    "check_tolerance",
    "Method",
    "Missing",
]

# -- replay, tune, export -------------------------------------------------------------------------
Missing = Literal["exclude", "default"]
MISSING_RULES: tuple[str, ...] = ("exclude", "default")
ESTIMATOR_NAMES: tuple[str, ...] = ("ips", "snips", "dm", "dr", "sndr", "switch-dr")
DEFAULT_SWITCH_TAU: float | None = None
"""Switch-DR's threshold: None chooses it from the data (see ``SwitchDR``)."""

Method = Literal["bootstrap", "normal", "bernstein"]
METHODS: tuple[Method, ...] = ("bootstrap", "normal", "bernstein")

DEFAULT_N_BOOT = 200
"""Default number of bootstrap resamples: enough for a 95 % percentile interval at 1M rows."""

DEFAULT_WORD_BUCKETS = 0
"""Hashed-word buckets in the reward model's context (0: no words)."""

DEFAULT_TOLERANCE = 0.02
"""The precision a reliable verdict asks by default: the DR interval within 2% of the
estimate on either side (``--tolerance``; ``evaluation.reliability``)."""

MAX_TOLERANCE = 1.0
"""The loosest tolerance accepted: an interval reaching as far as the estimate itself."""


def check_tolerance(tolerance: object, arg: str = "tolerance") -> float:
    """``tolerance`` as a float in (0, :data:`MAX_TOLERANCE`], else ``ValueError`` naming
    ``arg``."""
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 < tolerance <= MAX_TOLERANCE
    ):
        raise ValueError(
            f"{arg}: must be a share of the estimate in (0, {MAX_TOLERANCE:g}] "
            f"(0.02 = within 2%), got {tolerance!r}"
        )
    return float(tolerance)


SPEC_HELP = (
    "logged | uniform | fixed:MODEL | costaware | vw[:VW ARGS] | linucb[:alpha=A,epsilon=E] | "
    "snapshot:PATH | shadow:NAME"
)

# -- simulate -------------------------------------------------------------------------------------
EXPLORATIONS: tuple[str, ...] = ("thompson", "squarecb", "epsilon")
"""The cost-aware policy's exploration rules (``policy.exploration``)."""

VW_EXPLORATION: dict[str, tuple[str, ...]] = {
    "squarecb": ("--squarecb", "--gamma_scale", "10"),
    "epsilon": ("--epsilon", "0.05"),
    "bag": ("--bag", "5", "--epsilon", "0.02"),
    "rnd": ("--rnd", "3", "--epsilon", "0.02"),
    "softmax": ("--softmax", "--lambda", "10"),
    "synthcover": ("--synthcover", "--epsilon", "0.02"),
}
"""Exploration flags of the ``vw-<x>`` policies (all with ``--cb_explore_adf`` and the
configured interactions ``-q sa -q wa --power_t 0``). ``regcb`` is gone because its
distribution stays uniform in this VW build (VWPolicy refuses it); ``cover`` because it still
gave each wrong model a quarter of the traffic after 600 updates of a two-context problem and
routed RouterBench no better than ``uniform`` (0.688 against 0.673, second half); it stays
reachable as ``vw:--cb_explore_adf --cover 4``."""

NAMED_POLICIES: tuple[str, ...] = (
    "costaware",
    *(f"costaware-{x}" for x in EXPLORATIONS if x != "thompson"),
    "vw",
    *(f"vw-{x}" for x in VW_EXPLORATION),
    "linucb",
    "uniform",
    "oracle",
)
"""The policies ``simulate --policy`` knows by name (besides ``fixed:MODEL``)."""

WARM_MODES: tuple[str, ...] = ("bandit", "full")
"""``simulate --warm-start-mode``: one logged outcome per prompt, or every model's."""

# -- report ---------------------------------------------------------------------------------------
BUCKETS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
"""Bucket names and their width in seconds."""
