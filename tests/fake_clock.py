"""A clock tests move by hand, shared by the fixtures in conftest.py and by tests that need
its type or start time (imported as ``fake_clock``: a module name no other folder uses)."""

from __future__ import annotations

T0 = 1_700_000_000.0
"""A realistic epoch time (DuckDB stores timestamps) with an exact binary fraction."""


class FakeClock:
    """A clock the test moves by hand; call it to read the time."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
