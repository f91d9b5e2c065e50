"""What happened when a routed request was served: status and reward fragments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from banditroute.errors import InvalidArgument


class OutcomeStatus(StrEnum):
    """How the call to the model ended."""

    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    REFUSED = "REFUSED"


@dataclass(frozen=True)
class Fragments:
    """The parts a reward is made of, kept separately so replay can re-weight them offline.

    ``quality`` is in [0, 1] (None if the client did not score the answer); ``cost_usd`` and
    ``latency_ms`` are non-negative and finite (None if unknown).
    """

    quality: float | None
    cost_usd: float | None
    latency_ms: float | None
    status: OutcomeStatus = OutcomeStatus.OK

    def __post_init__(self) -> None:
        if self.quality is not None and not (
            math.isfinite(self.quality) and 0.0 <= self.quality <= 1.0
        ):
            raise InvalidArgument(
                f"quality: must be a number in [0, 1], got {self.quality!r}", field="quality"
            )
        for name in ("cost_usd", "latency_ms"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0.0):
                raise InvalidArgument(
                    f"{name}: must be a finite number >= 0, got {value!r}", field=name
                )

    @property
    def ok(self) -> bool:
        """True when the model answered."""
        return self.status is OutcomeStatus.OK
