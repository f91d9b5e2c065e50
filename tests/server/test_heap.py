"""The heap freezer (``server.freeze_gc``): serving leaves no reference cycles behind, so
frozen objects are still freed by reference counting; cycles frozen by mistake are collected
once the frozen heap doubles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from banditroute.server import heap
from banditroute.server.app import Service


def test_successful_calls_create_no_cyclic_garbage(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """Route, Feedback (first, duplicate, off-policy), ListModels and GetStats served (and
    called) in this process leave nothing that only the cyclic collector could free."""
    service = start_service({})
    client = api(service)
    client.route()  # warm-up: channels, lazily built state
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(40):
            decision = client.route(prompt=f"What is {i} squared?")
            client.feedback(decision_id=decision.decision_id, quality=0.5, cost_usd=0.001)
            client.feedback(decision_id=decision.decision_id, quality=0.4)
            client.feedback(
                decision_id=decision.decision_id, model=decision.fallback_models[0], quality=1.0
            )
            client.models()
            client.stats()
        gc.collect()
        garbage = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert garbage == []


class _Cycle:
    """An object in a reference cycle with itself, carrying some weight."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [object() for _ in range(10)]


def test_the_freezer_collects_frozen_cycles_once_the_frozen_heap_doubles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cycles alive at a freeze and dropped later are not collected while the frozen heap is
    below twice its size at the first tick, and are collected at the tick that crosses it."""
    monkeypatch.setattr(heap, "MIN_GROWTH", 0)
    monkeypatch.setattr(heap, "COUNT_EVERY", 1)
    gc.collect()
    freezer = heap.HeapFreezer()
    try:
        freezer.tick()
        base = gc.get_freeze_count()
        alive = [_Cycle() for _ in range(base // 30)]  # under the limit once frozen
        freezer.tick()
        probe = weakref.ref(alive[0])
        del alive
        gc.collect()
        assert probe() is not None  # frozen: invisible to the collector
        grown = [_Cycle() for _ in range(base)]  # 2+ tracked objects each: past twice base
        freezer.tick()
        assert probe() is None
        assert gc.get_freeze_count() < base + 4 * len(grown)
    finally:
        gc.unfreeze()


def test_the_freezer_counts_the_frozen_heap_only_every_count_every_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting walks the whole frozen heap, so after the first tick it happens once per
    ``COUNT_EVERY`` ticks, not every tick."""
    counts: list[int] = []
    real_count = gc.get_freeze_count

    def counting() -> int:
        counts.append(1)
        return real_count()

    monkeypatch.setattr(heap, "COUNT_EVERY", 3)
    monkeypatch.setattr(heap.gc, "get_freeze_count", counting)
    freezer = heap.HeapFreezer()
    try:
        for _ in range(7):
            freezer.tick()
    finally:
        gc.unfreeze()
    assert len(counts) == 3  # ticks 1, 3 and 6
