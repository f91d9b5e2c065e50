"""Confidence intervals for off-policy estimates: bootstrap, normal and empirical Bernstein.

* :func:`normal_interval` — ``estimate ± z · sd(values) / sqrt(n)`` (sample sd, ``ddof=1``).
* :func:`bernstein_interval` — the empirical Bernstein bound of Maurer & Pontil (2009, Thm. 4),
  two-sided: ``sqrt(2 V ln(4/δ) / n) + 7 R ln(4/δ) / (3 (n - 1))`` with ``δ = 1 - level``,
  ``V`` the sample variance and ``R`` the range of the values (observed unless given).
* :func:`resample_sums` — column sums of ``n_boot`` multinomial (with-replacement) resamples of
  the rows, vectorised block by block so memory stays bounded for millions of rows; estimators
  turn these sums into one replicate per resample (recomputing any self-normalisation), and
  :func:`percentile_interval` turns the replicates into an interval.

Every interval contains its point estimate (a percentile interval is widened to it when the
replicates are skewed enough to miss it). Invalid arguments raise ``ValueError`` naming the
argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from banditroute.choices import DEFAULT_N_BOOT, METHODS, Method
from banditroute.evaluation.logged import FloatArray

Seed = int | np.random.Generator | None
"""A non-negative integer (reproducible), a generator (caller-managed stream) or None (fresh)."""

BLOCK_ROWS = 1 << 16
"""Rows per counting block in :func:`resample_sums`: full-range uint16 draws."""

RESAMPLE_CHUNK = 25
"""Resamples whose counts :func:`resample_sums` multiplies into a block's columns at once."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval at ``level`` (e.g. 0.95)."""

    estimate: float
    lower: float
    upper: float
    level: float

    def __post_init__(self) -> None:
        check_level(self.level)
        if not (self.lower <= self.estimate <= self.upper):
            raise ValueError(
                f"estimate: need lower <= estimate <= upper, got "
                f"{self.lower!r} <= {self.estimate!r} <= {self.upper!r}"
            )

    @property
    def width(self) -> float:
        """``upper - lower``."""
        return self.upper - self.lower

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.lower <= value <= self.upper

    def as_dict(self) -> dict[str, object]:
        """The JSON form of reports: ``{"value", "lower", "upper"}``."""
        return {"value": self.estimate, "lower": self.lower, "upper": self.upper}


def check_level(level: float) -> float:
    """``level`` as a float strictly between 0 and 1, else ``ValueError`` naming it."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level: must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def check_n_boot(n_boot: int) -> int:
    """``n_boot`` as an int >= 2, else ``ValueError`` naming it."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ValueError(f"n_boot: must be an integer >= 2, got {n_boot!r}")
    return int(n_boot)


def make_rng(seed: Seed) -> np.random.Generator:
    """A generator from ``seed``, else ``ValueError`` naming it."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed: must be a non-negative integer, a Generator or None, got {seed!r}")
    return np.random.default_rng(seed)


def check_method(method: str) -> Method:
    """``method`` if it is one of :data:`METHODS`, else ``ValueError`` naming it."""
    for known in METHODS:
        if method == known:
            return known
    raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")


def _as_values(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(f"values: need a 1-D array of at least 2 values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("values: must be finite")
    return array


def _around(estimate: float | None, values: FloatArray) -> float:
    centre = float(values.mean()) if estimate is None else float(estimate)
    if not math.isfinite(centre):
        raise ValueError(f"estimate: must be finite, got {centre!r}")
    return centre


def normal_interval(
    values: npt.ArrayLike, *, level: float = 0.95, estimate: float | None = None
) -> Interval:
    """Normal (CLT) interval for the mean of ``values``: ``estimate ± z · sd / sqrt(n)``.

    ``estimate`` defaults to the mean of ``values``; estimators pass their own point estimate
    with (linearised) per-sample values whose mean is that estimate.
    """
    level = check_level(level)
    array = _as_values(values)
    centre = _around(estimate, array)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * float(array.std(ddof=1)) / math.sqrt(array.shape[0])
    return Interval(centre, centre - half, centre + half, level)


def bernstein_interval(
    values: npt.ArrayLike,
    *,
    level: float = 0.95,
    estimate: float | None = None,
    value_range: float | None = None,
) -> Interval:
    """Empirical Bernstein interval (Maurer & Pontil 2009) for the mean of ``values``.

    Half-width ``sqrt(2 V ln(4/δ) / n) + 7 R ln(4/δ) / (3 (n - 1))``, ``δ = 1 - level``, ``V``
    the sample variance. The bound holds for values known to lie in a range of width ``R``;
    when ``value_range`` is None the observed range ``max - min`` is plugged in, which makes it
    a (conservative in practice, not guaranteed) heuristic.
    """
    level = check_level(level)
    array = _as_values(values)
    centre = _around(estimate, array)
    n = array.shape[0]
    if value_range is None:
        width = float(array.max() - array.min())
    elif not (math.isfinite(value_range) and value_range >= 0):
        raise ValueError(f"value_range: must be a finite number >= 0, got {value_range!r}")
    else:
        width = float(value_range)
    log_term = math.log(4.0 / (1.0 - level))
    variance = float(array.var(ddof=1))
    half = math.sqrt(2.0 * variance * log_term / n) + 7.0 * width * log_term / (3.0 * (n - 1))
    return Interval(centre, centre - half, centre + half, level)


def resample_sums(
    columns: npt.ArrayLike, *, n_boot: int = DEFAULT_N_BOOT, seed: Seed = None
) -> FloatArray:
    """Column sums over ``n_boot`` bootstrap resamples of the rows of ``columns`` ``(n, m)``.

    Resample ``b`` draws ``n`` rows uniformly with replacement; row ``b`` of the ``(n_boot, m)``
    result is its row counts (multinomial) times ``columns``. The rows are cut into blocks of
    ``BLOCK_ROWS``; how many of each resample's draws land in each block is drawn first
    (multinomial over blocks), then, block by block, that many uniform draws within the block
    are counted, and the counts of ``RESAMPLE_CHUNK`` resamples are multiplied into the
    block's columns in one matrix product. This is the same distribution as drawing ``n``
    indices at once, but memory stays bounded at any ``n`` (one chunk of counts per block),
    the block's full 16-bit range makes the draws cheap, and the products read each block once
    per chunk, not once per resample. The same ``seed`` and ``n`` always give the same
    resamples, whatever ``m`` is. ``columns`` may be a transposed view of an ``(m, n)`` array
    (cheaper to build from separate columns); it is not copied.
    """
    matrix = np.asarray(columns, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"columns: expected a non-empty 2-D array (n, m), got {matrix.shape}")
    n_boot = check_n_boot(n_boot)
    rng = make_rng(seed)
    n = matrix.shape[0]
    starts = np.arange(0, n, BLOCK_ROWS)
    sizes = np.minimum(BLOCK_ROWS, n - starts)
    draws = rng.multinomial(n, sizes / n, size=n_boot)
    sums = np.zeros((n_boot, matrix.shape[1]), dtype=np.float64)
    counts = np.empty((min(RESAMPLE_CHUNK, n_boot), BLOCK_ROWS), dtype=np.float64)
    # One BLAS thread: the products are many and small, and spinning worker threads cost
    # several times the CPU on a busy machine. (Imported here: the CLI's start-up skips it.)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        for block, (start, rows) in enumerate(zip(starts.tolist(), sizes.tolist(), strict=True)):
            block_columns = matrix[start : start + rows]  # (rows, m)
            for first in range(0, n_boot, RESAMPLE_CHUNK):
                chunk = range(first, min(first + RESAMPLE_CHUNK, n_boot))
                block_counts = counts[: len(chunk), :rows]
                for row, resample in enumerate(chunk):
                    picks = rng.integers(0, rows, size=draws[resample, block], dtype=np.uint16)
                    np.copyto(block_counts[row], np.bincount(picks, minlength=rows))
                # counts (chunk, rows) times columns (rows, m): one matrix product per chunk
                sums[first : chunk.stop] += block_counts @ block_columns
    return sums


def percentile_interval(
    estimate: float, replicates: npt.ArrayLike, *, level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval from ``replicates``, widened to contain ``estimate``.

    NaN replicates (a resample where a self-normalised estimate is undefined because it drew
    no decision with positive weight) are left out; with none left the interval is the point.
    """
    level = check_level(level)
    if not math.isfinite(estimate):
        raise ValueError(f"estimate: must be finite, got {estimate!r}")
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return Interval(float(estimate), float(estimate), float(estimate), level)
    alpha = 1.0 - level
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(
        float(estimate), min(float(low), float(estimate)), max(float(high), float(estimate)), level
    )


def bootstrap_interval(
    values: npt.ArrayLike,
    *,
    level: float = 0.95,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = None,
) -> Interval:
    """Percentile bootstrap interval for the plain mean of ``values``."""
    level = check_level(level)
    array = _as_values(values)
    sums = resample_sums(array[:, None], n_boot=n_boot, seed=seed)
    return percentile_interval(float(array.mean()), sums[:, 0] / array.shape[0], level=level)
