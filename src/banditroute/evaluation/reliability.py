"""Whether a log can answer for a candidate policy to the precision asked for: a verdict.

An off-policy estimate is only as good as the logged decisions that resemble the candidate's.
Three things make it unreliable, whatever its point value says:

* a small **effective sample size** (``(Σ w)² / Σ w²``): a handful of decisions carry the whole
  estimate (at an ESS of 2, two decisions decide it);
* poor **overlap**: a share of the candidate's traffic goes to models the logging policy never
  tried for those requests (probability 0) or tried with a tiny probability, so the estimate
  there is the reward model's guess or rests on one or two heavily weighted decisions;
* too little **precision**: the DR interval reaches further from the estimate than the
  ``tolerance`` the user needs (``--tolerance``, a share of the estimate: 0.02 = 2%).

The precision test is relative to the estimate, like the question it answers ("is this value
right to within 2%?") and like ``benchmarks/ope_accuracy.py``'s "within 2% of the truth"
(``|estimate - truth| <= 0.02 |truth|``): when the interval covers the truth and reaches at
most ``tolerance · |estimate|`` from the estimate on either side, the error is within that.
A share of the objective's reward range would not do: under a cost weight the range reaches
thousands of points below 0 (``balanced``: [-5360.5, 1]), so 2% of it is wider than any
policy's whole value.

:func:`verdict` rates a candidate reliable when its ESS is at least :data:`MIN_ESS`, at most
:data:`MAX_THIN_SHARE` of its traffic goes where the logger's probability was below
:data:`THIN_PROPENSITY`, and its DR interval's relative half-width is at most the tolerance;
the reason says which test failed, with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from banditroute.choices import DEFAULT_TOLERANCE, MAX_TOLERANCE, check_tolerance
from banditroute.evaluation.estimators import THIN_ESS, THIN_PROPENSITY, Diagnostics
from banditroute.evaluation.intervals import Interval

MIN_ESS = THIN_ESS
"""Below this effective sample size an estimate rests on too few decisions (a handful of
heavily weighted ones decide it; the intervals are then widened, see ``THIN_ESS``)."""

MAX_THIN_SHARE = 0.05
"""At most this share of the candidate's traffic may go where the logger (almost) never went."""

PRECISION_ESTIMATOR = "dr"
"""The estimator whose interval the precision test reads (the one promotion gates on)."""


@dataclass(frozen=True)
class Verdict:
    """``reliable`` and why (``reason``, one sentence with the numbers); ``half_width`` is the
    DR interval's largest reach from its estimate as a share of the estimate (None without an
    interval), judged against ``tolerance``; ``short`` is the reason in a few words (for a
    plot's labels)."""

    reliable: bool
    reason: str
    half_width: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    short: str = ""

    def as_dict(self) -> dict[str, object]:
        """The JSON form: ``{"reliable", "reason", "relative_half_width", "tolerance"}``."""
        return {
            "reliable": self.reliable,
            "reason": self.reason,
            "relative_half_width": _finite_or_none(self.half_width),
            "tolerance": self.tolerance,
        }


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded relative width is written as null."""
    return value if value is not None and math.isfinite(value) else None


def relative_half_width(interval: Interval) -> float:
    """How far the interval reaches from its estimate (the larger side), as a share of the
    estimate's size; infinite for an estimate of 0 with any width."""
    reach = max(interval.upper - interval.estimate, interval.estimate - interval.lower)
    if reach == 0:
        return 0.0
    size = abs(interval.estimate)
    return reach / size if size > 0 else math.inf


def verdict(
    diagnostics: Diagnostics,
    interval: Interval | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Verdict:
    """The verdict on a candidate from its :class:`Diagnostics` and its DR ``interval`` (None:
    DR could not be estimated, so the precision is unknown) at ``tolerance`` (module doc)."""
    tolerance = check_tolerance(tolerance)
    problems, short = [], []
    if diagnostics.ess < MIN_ESS:
        problems.append(f"effective sample size {diagnostics.ess:,.1f} < {MIN_ESS:g}")
        short.append(f"ESS {diagnostics.ess:,.1f}")
    thin = diagnostics.thin_mass
    if thin is not None and thin > MAX_THIN_SHARE:
        never = diagnostics.uncovered_mass or 0.0
        problems.append(
            f"{thin:.1%} of its traffic goes to models the logger gave probability < "
            f"{THIN_PROPENSITY:g} ({never:.1%} never tried)"
        )
        short.append(f"{thin:.0%} barely tried")
    half = None if interval is None else relative_half_width(interval)
    if interval is None or half is None:
        problems.append("no DR interval to judge its precision by")
        short.append("no DR interval")
    elif half > tolerance:
        reach = max(interval.upper - interval.estimate, interval.estimate - interval.lower)
        share = "unbounded" if math.isinf(half) else f"{half:.1%}"
        problems.append(
            f"DR interval half-width {reach:.4g} is {share} of the estimate "
            f"{interval.estimate:.4g} > tolerance {tolerance:.1%}"
        )
        short.append(f"DR \u00b1{share} > {tolerance:.1%}")
    if problems:
        return Verdict(False, "; ".join(problems), half, tolerance, "; ".join(short))
    thin_text = "" if thin is None else f", {thin:.1%} of its traffic where the logger rarely went"
    return Verdict(
        True,
        f"effective sample size {diagnostics.ess:,.0f}{thin_text}, DR interval within "
        f"{half:.1%} of the estimate (tolerance {tolerance:.1%})",
        half,
        tolerance,
        f"DR \u00b1{half:.1%}",
    )


__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_THIN_SHARE",
    "MAX_TOLERANCE",
    "MIN_ESS",
    "PRECISION_ESTIMATOR",
    "THIN_PROPENSITY",
    "Verdict",
    "check_tolerance",
    "relative_half_width",
    "verdict",
]
