"""Shared fixtures of the core tests: settings, a fake clock, records and a router factory."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from fake_clock import T0, FakeClock

from banditroute.config import Settings, load_settings, settings_from_mapping
from banditroute.policies.base import Policy
from banditroute.policies.uniform import UniformPolicy
from banditroute.router import Router
from banditroute.store.base import EventLog
from banditroute.store.memory import MemoryLog
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord

TEST_HASH_KEY = b"the tests' prompt-hash key"
"""The routers of ``make_router`` share one key, as a restarted server reads its key file, so
hashes and request fingerprints agree across a simulated restart."""


@pytest.fixture(scope="session")
def default_settings() -> Settings:
    """The embedded default settings (loaded once)."""
    return load_settings()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings from a TOML-like mapping merged over the defaults."""

    def make(data: Mapping[str, Any] | None = None) -> Settings:
        return settings_from_mapping(dict(data or {}))

    return make


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at T0."""
    return FakeClock()


@pytest.fixture
def make_router(
    default_settings: Settings, clock: FakeClock
) -> Callable[..., tuple[Router, EventLog]]:
    """Build a Router over a MemoryLog (or a given log) with the fake clock and counter ids."""

    def make(
        settings: Settings | None = None,
        policy: Policy | None = None,
        event_log: EventLog | None = None,
        *,
        id_prefix: str = "d",
    ) -> tuple[Router, EventLog]:
        ids = itertools.count()
        event_log = MemoryLog() if event_log is None else event_log
        router = Router(
            settings or default_settings,
            policy or UniformPolicy(),
            event_log,
            clock=clock,
            new_id=lambda: f"{id_prefix}{next(ids):06d}",
            prompt_hash_key=TEST_HASH_KEY,
        )
        return router, event_log

    return make


def decision_record(index: int, *, time: float = T0, tenant: str = "acme") -> DecisionRecord:
    """A decision row with every column set to something recognisable."""
    return DecisionRecord(
        decision_id=f"dec-{index:05d}",
        time=time,
        tenant=tenant,
        request_id=f"req-{index}",
        objective="balanced",
        prompt_hash=f"hash{index}",
        prompt=None if index % 2 else f"prompt {index}",
        features={"chars": index, "markers": ["code", "math"], "language": "en"},
        eligible=("model-a", "model-b", "model-c"),
        probabilities=(0.5, 0.3, 0.2),
        model="model-b",
        probability=0.3,
        policy_version="uniform:abc:0",
        explored=bool(index % 3),
        tags={"team": "search", "n": str(index)},
    )


def feedback_record(
    decision_id: str, *, time: float = T0 + 1.0, reward: float = 0.75
) -> FeedbackRecord:
    """A feedback row with optional fields both set and unset."""
    return FeedbackRecord(
        decision_id=decision_id,
        time=time,
        model="model-b",
        quality=0.8,
        cost_usd=None,
        input_tokens=120,
        output_tokens=None,
        latency_ms=350.5,
        status="OK",
        reward=reward,
        disposition="LEARNED",
    )


def settlement_record(decision_id: str, *, time: float = T0 + 700.0) -> SettlementRecord:
    """A settlement row (a skipped window, so no reward)."""
    return SettlementRecord(decision_id, time, "skipped", None)


@pytest.fixture
def records() -> SimpleNamespace:
    """The record builders for the store tests: ``decision``, ``feedback``, ``settlement``."""
    return SimpleNamespace(
        t0=T0, decision=decision_record, feedback=feedback_record, settlement=settlement_record
    )


@pytest.fixture
def figures() -> Iterator[list[Any]]:
    """A list for the matplotlib figures a test draws; they are closed afterwards."""
    import matplotlib.pyplot as plt

    made: list[Any] = []
    yield made
    for fig in made:
        plt.close(fig)
