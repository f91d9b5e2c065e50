"""Policy snapshots: what is written loads back; a damaged one is set aside, never loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from banditroute.config import Settings
from banditroute.features import extract
from banditroute.policies.vw import VWPolicy
from banditroute.snapshots import (
    LEGACY_MAGIC,
    load_snapshot,
    save_snapshot,
    snapshot_bytes,
    write_snapshot,
)

PROMPTS = ("What is the capital of France?", "Write a Python function to sort a list.")


def _trained(settings: Settings) -> VWPolicy:
    """A VW policy after some learning (VW restores a model cut short without complaint)."""
    policy = VWPolicy(seed=3)
    arms = tuple(settings.catalog)[:4]
    for i in range(40):
        policy.learn(extract(PROMPTS[i % 2]), arms, i % 4, 0.25, 1.0 if i % 4 == 1 else 0.0)
    return policy


def test_snapshot_round_trips(default_settings: Settings, tmp_path: Path) -> None:
    """A saved snapshot restores the same update count and the same distribution."""
    policy = _trained(default_settings)
    path = tmp_path / "default.snapshot"
    save_snapshot(policy, path)
    restored = VWPolicy(seed=3)
    assert load_snapshot(restored, path)
    assert restored.updates == policy.updates == 40
    arms = tuple(default_settings.catalog)[:4]
    context = extract(PROMPTS[0])
    np.testing.assert_array_equal(
        restored.distribution(context, arms), policy.distribution(context, arms)
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:-1],
        lambda data: data[:-9] + bytes([data[-9] ^ 1]) + data[-8:],
    ],
    ids=["half", "last-byte-cut", "bit-flipped"],
)
def test_damaged_snapshot_is_set_aside_with_a_log_line(
    default_settings: Settings, tmp_path: Path, damage: object
) -> None:
    """A snapshot cut short or altered (which VW itself would restore silently) fails its
    checksum: it is not loaded, the policy stays fresh, the file is moved to ``.corrupt``
    and a structured ``snapshot_unreadable`` line says why."""
    path = tmp_path / "default.snapshot"
    save_snapshot(_trained(default_settings), path)
    damaged = damage(path.read_bytes())  # type: ignore[operator]
    path.write_bytes(damaged)
    fresh = VWPolicy(seed=3)
    with capture_logs() as logged:
        assert not load_snapshot(fresh, path)
    assert fresh.updates == 0
    assert not path.exists()
    assert path.with_name("default.snapshot.corrupt").read_bytes() == damaged
    (event,) = [e for e in logged if e["event"] == "snapshot_unreadable"]
    assert "checksum" in event["error"]
    assert event["bytes"] == len(damaged)
    assert event["moved_to"].endswith(".corrupt")


def test_snapshot_written_before_the_checksum_still_loads(
    default_settings: Settings, tmp_path: Path
) -> None:
    """A snapshot in the earlier format (header, name, updates, model; no checksum) loads."""
    policy = _trained(default_settings)
    path = tmp_path / "old.snapshot"
    path.write_bytes(LEGACY_MAGIC + snapshot_bytes(policy))
    restored = VWPolicy(seed=3)
    assert load_snapshot(restored, path)
    assert restored.updates == 40


@pytest.mark.parametrize("count", [b"-1000", b"9" * 400])
def test_a_header_update_count_out_of_range_is_refused(
    default_settings: Settings, tmp_path: Path, count: bytes
) -> None:
    """The header's update count, which the restored policy takes as its own, must be in
    0..2**53 (a negative one or one of 400 digits broke every later Route): such a snapshot is
    set aside and the policy starts fresh."""
    policy = _trained(default_settings)
    name, _, state = snapshot_bytes(policy).split(b"\n", 2)
    path = tmp_path / "policy.snapshot"
    write_snapshot(name + b"\n" + count + b"\n" + state, path)
    fresh = VWPolicy(seed=3)
    assert not load_snapshot(fresh, path)
    assert fresh.updates == 0
    assert path.with_name(path.name + ".corrupt").exists()
