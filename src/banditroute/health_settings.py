"""When a model's circuit breaker opens and closes (:class:`HealthSettings`), apart from the
tracker in :mod:`banditroute.health` so that reading the configuration does not import river.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HealthSettings", "is_plain_int"]


def is_plain_int(value: object) -> bool:
    """An int that is not a bool (TOML and JSON give both)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HealthSettings:
    """When a model's circuit breaker opens and closes, and what its statistics cover.

    ``window`` recent outcomes per model give the error rate; the breaker opens when the share
    of failures (ERROR, TIMEOUT, RATE_LIMITED) among them reaches ``error_rate_threshold`` once
    at least ``min_samples`` are in (so two early errors do not take a model out), or at once
    after ``consecutive_failures`` failures in a row (a dead endpoint is caught even while the
    window still holds older successes). After ``cooldown_s`` it lets ``half_open_probes``
    routes through and the first outcome decides. REFUSED is a served answer, not a failure.

    Latency quantiles use ``river.stats.RollingQuantile`` over the last ``latency_window``
    served answers (OK and REFUSED) rather than ``river.stats.Quantile`` (P², whole history):
    health is about how the model behaves now, and a model that slows down must show it
    within minutes, not after its history is outweighed. The rolling quantile is exact over
    its window (a sorted window in Rust, about 0.5 us per update). The latency window is
    longer than the error window by default because a p95 over 50 samples rests on the two
    or three slowest answers. Failures do not feed the latency statistics: a timeout reports
    the client's deadline and a fast error a few milliseconds, so including them would make
    p50/p95 describe the failure mode; their share is already ``error_rate``.

    ``min_tenants``: with several tenants able to call, how many of them must each be failing
    on their own outcomes before the breaker opens (capped at the number of tenants, so a
    single-tenant deployment trips on its own outcomes).
    """

    window: int = 50
    min_samples: int = 10
    error_rate_threshold: float = 0.5
    consecutive_failures: int = 5
    cooldown_s: float = 30.0
    half_open_probes: int = 1
    latency_window: int = 200
    min_tenants: int = 2

    def __post_init__(self) -> None:
        for name in ("window", "min_samples", "consecutive_failures", "half_open_probes",
                     "latency_window", "min_tenants"):  # fmt: skip
            value = getattr(self, name)
            if not is_plain_int(value) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.min_samples > self.window:
            raise ValueError(
                f"min_samples: must be <= window ({self.window}), got {self.min_samples}"
            )
        rate = self.error_rate_threshold
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 < rate <= 1.0:
            raise ValueError(f"error_rate_threshold: must be in (0, 1], got {rate!r}")
        cooldown = self.cooldown_s
        if (
            not isinstance(cooldown, int | float)
            or isinstance(cooldown, bool)
            or not math.isfinite(cooldown)
            or cooldown <= 0
        ):
            raise ValueError(f"cooldown_s: must be a finite number > 0, got {cooldown!r}")
