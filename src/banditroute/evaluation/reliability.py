"""Whether a log can answer for a candidate policy: a verdict from the overlap diagnostics.

An off-policy estimate is only as good as the logged decisions that resemble the candidate's.
Two things make it unreliable, whatever its interval says:

* a small **effective sample size** (``(Σ w)² / Σ w²``): a handful of decisions carry the whole
  estimate (at an ESS of 2, two decisions decide it);
* poor **overlap**: a share of the candidate's traffic goes to models the logging policy never
  tried for those requests (probability 0) or tried with a tiny probability, so the estimate
  there is the reward model's guess or rests on one or two heavily weighted decisions.

:func:`verdict` rates a candidate reliable when its ESS is at least :data:`MIN_ESS` and at most
:data:`MAX_THIN_SHARE` of its traffic goes where the logger's probability was below
:data:`THIN_PROPENSITY`; the reason says which test failed, with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from banditroute.evaluation.estimators import THIN_ESS, THIN_PROPENSITY, Diagnostics

MIN_ESS = THIN_ESS
"""Below this effective sample size an estimate rests on too few decisions (a handful of
heavily weighted ones decide it; the intervals are then widened, see ``THIN_ESS``)."""

MAX_THIN_SHARE = 0.05
"""At most this share of the candidate's traffic may go where the logger (almost) never went."""


@dataclass(frozen=True)
class Verdict:
    """``reliable`` and why (``reason``, one sentence with the numbers)."""

    reliable: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        """The JSON form: ``{"reliable", "reason"}``."""
        return {"reliable": self.reliable, "reason": self.reason}


def verdict(diagnostics: Diagnostics) -> Verdict:
    """The verdict on a candidate from its :class:`Diagnostics` (module docstring)."""
    problems = []
    if diagnostics.ess < MIN_ESS:
        problems.append(f"effective sample size {diagnostics.ess:,.1f} < {MIN_ESS:g}")
    thin = diagnostics.thin_mass
    if thin is not None and thin > MAX_THIN_SHARE:
        never = diagnostics.uncovered_mass or 0.0
        problems.append(
            f"{thin:.1%} of its traffic goes to models the logger gave probability < "
            f"{THIN_PROPENSITY:g} ({never:.1%} never tried)"
        )
    if problems:
        return Verdict(False, "; ".join(problems))
    thin_text = "" if thin is None else f", {thin:.1%} of its traffic where the logger rarely went"
    return Verdict(True, f"effective sample size {diagnostics.ess:,.0f}{thin_text}")


__all__ = ["MAX_THIN_SHARE", "MIN_ESS", "THIN_PROPENSITY", "Verdict", "verdict"]
