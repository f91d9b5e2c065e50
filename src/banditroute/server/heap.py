"""Keeps the server's long-lived objects out of the cyclic garbage collector's full passes.

A server holds every pending decision until its reward window closes (7 tracked objects each:
600,000 decisions at 1,000 routes/s over a 10-minute window). CPython's full collections walk
all of them, stalling every thread for seconds, and recur whenever the long-lived heap has
grown by a quarter. Reference counting frees an expired decision anyway: successful calls
create no reference cycles (``tests/server/test_heap.py``). So every second the survivors are
frozen (``gc.freeze``), out of the collector's sight. What a freeze can catch by mistake is a
cycle alive at that instant and dropped later (a call failing mid-flight: grpc's abort leaves
exception frames in a cycle); to bound that, a full collection runs whenever the frozen heap
has doubled since the last one, which in a steady state (as many decisions expire as arrive)
is never.
"""

from __future__ import annotations

import gc
import time

import structlog

log = structlog.get_logger(__name__)

MIN_GROWTH = 200_000
"""Frozen objects allowed on top of twice the last collection's survivors (a small server's
heap doubles quickly without that meaning anything)."""

COUNT_EVERY = 30
"""Ticks between counts of the frozen heap: counting walks every frozen object (about 12 ms per
million), too dear to do every second on a large heap; a doubling is still caught within this
many ticks."""


class HeapFreezer:
    """Call :meth:`tick` periodically (the server does, every second)."""

    def __init__(self) -> None:
        self._limit = 0
        self._ticks = 0

    def tick(self) -> None:
        """Freeze what is alive now; every ``COUNT_EVERY`` ticks, collect in full if the
        frozen heap has doubled."""
        gc.freeze()
        self._ticks += 1
        if self._limit and self._ticks % COUNT_EVERY:
            return
        frozen = gc.get_freeze_count()
        if self._limit and frozen > self._limit:
            start = time.perf_counter()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            frozen = gc.get_freeze_count()
            log.info("heap_collected", freed=freed, frozen=frozen,
                     pause_ms=round((time.perf_counter() - start) * 1000, 1))  # fmt: skip
            self._limit = 0
        if not self._limit:
            self._limit = 2 * frozen + MIN_GROWTH
