"""A model's load limits (:class:`ModelLimits`, typically its provider's quota) and the
sliding window of admitted routes they are checked against.

Admitted routes and their tokens are counted over a sliding 60-second window kept in
one-second buckets (constant memory and time whatever the traffic), plus routes in flight. A
bucket expires only once all of it is older than 60 s, so an admission counts for between 60
and 61 seconds: the window errs towards holding a model back, never towards overrunning a
provider's quota.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from banditroute.health_settings import is_plain_int

RATE_WINDOW_S = 60
"""Length of the sliding window that requests/min and tokens/min limits count over."""

RATE_BUCKET_S = 1.0
"""Granularity of that window: admissions are summed per bucket of this many seconds."""


@dataclass(frozen=True)
class ModelLimits:
    """Load limits of one model (None = unlimited), typically its provider quota.

    Requests and tokens are counted over a sliding 60-second window of admitted routes;
    ``max_in_flight`` bounds routes admitted and not yet released.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (not is_plain_int(value) or value < 1):
                raise ValueError(f"{name}: must be an integer >= 1 or None, got {value!r}")

    @property
    def unlimited(self) -> bool:
        """True when no limit is set."""
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.max_in_flight is None
        )


class RateWindow:
    """Admitted requests and tokens over the last 60 s, in one-second buckets."""

    __slots__ = ("_buckets", "requests", "tokens")

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, tokens]
        self.requests = 0
        self.tokens = 0

    def prune(self, now: float) -> None:
        """Drop buckets that lie entirely more than 60 s in the past."""
        buckets = self._buckets
        # Bucket k covers [k, k + 1) buckets of time; it expires once k + 1 + 60 <= now.
        horizon = now / RATE_BUCKET_S - RATE_WINDOW_S / RATE_BUCKET_S - 1.0
        while buckets and buckets[0][0] <= horizon:
            _, requests, tokens = buckets.popleft()
            self.requests -= requests
            self.tokens -= tokens

    def add(self, now: float, tokens: int) -> None:
        """Count one admitted request with its tokens."""
        index = math.floor(now / RATE_BUCKET_S)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            # Same bucket (or a clock that stepped back: keep it in the newest bucket).
            last = buckets[-1]
            last[1] += 1
            last[2] += tokens
        else:
            buckets.append([index, 1, tokens])
        self.requests += 1
        self.tokens += tokens


def limit_reason(
    limits: ModelLimits, in_flight: int, rate: RateWindow, now: float, tokens: int
) -> str | None:
    """Why a route of ``tokens`` may not be admitted now (checked in order: the in-flight
    limit, requests/min, then tokens/min, which refuses when the minute's tokens plus
    ``tokens`` would exceed it), or None. Prunes the window."""
    if limits.max_in_flight is not None and in_flight >= limits.max_in_flight:
        return f"in-flight limit {limits.max_in_flight} reached"
    rate.prune(now)
    rpm = limits.requests_per_minute
    if rpm is not None and rate.requests >= rpm:
        return f"rate limit {rpm} requests/min reached"
    tpm = limits.tokens_per_minute
    if tpm is not None and (rate.tokens >= tpm or rate.tokens + tokens > tpm):
        return (
            f"token limit {tpm} tokens/min reached "
            f"({rate.tokens} used in the last minute, {tokens} requested)"
        )
    return None


__all__ = ["RATE_BUCKET_S", "RATE_WINDOW_S", "ModelLimits", "RateWindow", "limit_reason"]
