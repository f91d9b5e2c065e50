"""Off-policy (counterfactual) evaluation of routing policies from logged decisions.

Pure numpy: :class:`LoggedData` holds the log, the estimators (IPS, SNIPS, DM, DR,
SNDR, SwitchDR) estimate a candidate policy's value with confidence intervals, and
:func:`diagnostics` says how much the log supports the candidate.
"""

from banditroute.choices import DEFAULT_N_BOOT, METHODS, Method
from banditroute.evaluation.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    Diagnostics,
    Estimator,
    SwitchDR,
    diagnostics,
    evaluate,
)
from banditroute.evaluation.intervals import (
    Interval,
    bernstein_interval,
    bootstrap_interval,
    normal_interval,
    percentile_interval,
    resample_sums,
)
from banditroute.evaluation.logged import LoggedData

__all__ = [
    "DEFAULT_N_BOOT",
    "DM",
    "DR",
    "Diagnostics",
    "Estimator",
    "IPS",
    "Interval",
    "LoggedData",
    "METHODS",
    "Method",
    "SNDR",
    "SNIPS",
    "SwitchDR",
    "bernstein_interval",
    "bootstrap_interval",
    "diagnostics",
    "evaluate",
    "normal_interval",
    "percentile_interval",
    "resample_sums",
]
