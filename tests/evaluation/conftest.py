"""Fixtures of the replay tests: the synthetic world of ``replay_world`` and a shared log."""

from __future__ import annotations

import pytest
from replay_world import World, WrittenLog, make_world, write_log


@pytest.fixture(scope="session")
def world() -> World:
    """The shared synthetic world."""
    return make_world()


@pytest.fixture(scope="session")
def shared_log(tmp_path_factory: pytest.TempPathFactory, world: World) -> WrittenLog:
    """A 600-decision log with a few decisions lacking usable feedback (written once)."""
    path = tmp_path_factory.mktemp("replay") / "log.duckdb"
    return write_log(path, world, 600, seed=1, no_feedback_every=50, other_model_every=60)
