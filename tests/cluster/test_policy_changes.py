"""Promotions and rollbacks handed to the trainer through Valkey, in one process against a real
valkey-server: a change no trainer takes is withdrawn and never applied later, a change a
killed leader had claimed is applied once by the next one, and a rollback without a promotion
is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import valkey

from banditroute.cluster.changes import Change, ChangeDesk, Outcome, new_change
from banditroute.cluster.events import Keys
from banditroute.cluster.learning import ReplicaLearning
from banditroute.cluster.promoter import ClusterPolicy
from banditroute.cluster.trainer import Trainer, build_learner
from banditroute.config import Settings, load_settings
from banditroute.errors import Unavailable
from banditroute.policies.fixed import FixedPolicy
from banditroute.router import Router
from banditroute.snapshots import snapshot_bytes, snapshot_payload
from banditroute.store.memory import MemoryLog

ERRORS = (valkey.exceptions.ValkeyError, OSError)
KEYS = Keys("test")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def trainer(settings: Settings, valkey_server: Any, tmp_path: Path) -> Iterator[Trainer]:
    """A trainer leading at once, driven step by step (closed at teardown)."""
    made = Trainer(
        settings, tmp_path / "central.duckdb", valkey_server.client(socket_timeout=5), KEYS,
        snapshot_period_s=0.2, errors=ERRORS, lock_ttl_ms=1000,
    )  # fmt: skip
    yield made
    if made.leading.is_set():
        made.close()


def fixed_change(settings: Settings) -> tuple[str, bytes]:
    """A promotion's recipe and snapshot: the catalogue's first model, fixed."""
    model = settings.catalog.ids[0]
    return f"fixed:{model}", snapshot_payload(snapshot_bytes(FixedPolicy(model)))


def applied(desk: ChangeDesk, trainer: Trainer, change: Change) -> Outcome:
    """Place ``change``, let the trainer take it, and return its outcome."""
    assert desk.submit(change, expire_s=60)
    assert trainer.take_change()
    outcome = desk.outcome(change)
    assert outcome is not None
    return outcome


def test_a_change_no_trainer_takes_is_withdrawn_and_never_applied(
    settings: Settings, valkey_server: Any, tmp_path: Path, trainer: Trainer
) -> None:
    """With no trainer running, PromotePolicy's wait ends in UNAVAILABLE saying nothing
    changed, and the change is gone: a trainer starting afterwards publishes its own learner,
    not the candidate, and the replica keeps its policy."""
    learning = ReplicaLearning(
        tmp_path / "a.duckdb", "a", KEYS, client=valkey_server.client(),
        follower_client=valkey_server.client(), snapshot_period_s=0.2, errors=ERRORS,
    )  # fmt: skip
    router = Router(settings, build_learner(settings), learning.wrap(MemoryLog()))
    learning.attach(router, lambda: build_learner(settings))
    desk = ChangeDesk(valkey_server.client(), KEYS)
    changes = ClusterPolicy(desk, learning.follower, router, errors=ERRORS, wait_s=0.3)
    recipe, _ = fixed_change(settings)
    running = router.policy
    with pytest.raises(Unavailable, match="nothing changed"):
        changes.promote(recipe, FixedPolicy(settings.catalog.ids[0]), {"verdict": "promoted"})
    assert not valkey_server.client().exists(KEYS.policy_change)
    assert trainer.lead_now()
    assert not trainer.take_change()
    trainer.drain()
    assert learning.follower.check()
    assert router.policy.name == running.name
    assert trainer.policy is not None
    assert trainer.policy.name == build_learner(settings).name
    learning.outbox.close()


def test_a_change_claimed_by_a_killed_leader_is_applied_once_by_the_next(
    settings: Settings, valkey_server: Any, trainer: Trainer
) -> None:
    """A leader claimed a promotion and died before answering: the next leader applies it
    and answers. Claimed again (the answer lost), it is answered without being applied
    twice: a rollback then restores the learner the promotion replaced, not the candidate."""
    desk = ChangeDesk(valkey_server.client(), KEYS)
    recipe, data = fixed_change(settings)
    change = new_change("promote", recipe, data)
    assert desk.submit(change, expire_s=60)
    assert desk.claim() == change  # the leader that died
    assert trainer.lead_now()
    assert trainer.take_change()
    outcome = desk.outcome(change)
    assert outcome is not None
    assert not outcome.error
    assert outcome.policy_version == recipe
    assert valkey_server.client().hget(KEYS.snapshot, "recipe") == recipe.encode()
    assert not applied(desk, trainer, change).error  # the same change once more
    assert not applied(desk, trainer, new_change("rollback")).error
    assert trainer.policy is not None
    assert trainer.policy.name == build_learner(settings).name


def test_a_rollback_without_a_promotion_is_refused(
    settings: Settings, valkey_server: Any, trainer: Trainer
) -> None:
    """A rollback with no promotion in the trainer's committed state is answered with an
    error (the replica's call fails FAILED_PRECONDITION with it) and nothing is published."""
    desk = ChangeDesk(valkey_server.client(), KEYS)
    assert trainer.lead_now()
    assert "no promotion to roll back" in applied(desk, trainer, new_change("rollback")).error
    assert not valkey_server.client().exists(KEYS.policy_change)
    assert valkey_server.client().hget(KEYS.snapshot, "version") is None
