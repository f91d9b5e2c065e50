"""A crafted or damaged cost-aware snapshot is refused whole: a ValueError naming the snapshot,
whatever is wrong with it, and the policy restoring it keeps its own state, so a server moves the
file aside and starts with the policy it had (never a half-restored one, nor one that a later
Route cannot use)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import extract
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.snapshots import load_snapshot, save_snapshot

ARMS = tuple(ModelSpec(f"m{i}", "p", 0.2 * (i + 1), 0.4 * (i + 1)) for i in range(3))
PROMPT = extract("Write a python function that reverses a linked list.")


def _trained(seed: int) -> CostAwarePolicy:
    rng = np.random.default_rng(seed)
    policy = CostAwarePolicy(seed=seed)
    for _ in range(30):
        probabilities = policy.distribution(PROMPT, ARMS)
        arm = int(rng.choice(len(ARMS), p=probabilities))
        policy.learn(PROMPT, ARMS, arm, float(probabilities[arm]), float(rng.random()))
    return policy


def _crafted(state: bytes, **change: Any) -> bytes:
    with np.load(io.BytesIO(state), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    out = io.BytesIO()
    np.savez(out, **{**arrays, **change})
    return out.getvalue()


def _text(value: object) -> np.ndarray:
    return np.array(json.dumps(value))


def _asymmetric(cov: np.ndarray) -> np.ndarray:
    bent = cov.copy()
    bent[0, 1] += 1.0
    return bent


CRAFTED = {
    "drifts a list": lambda a: {"drifts": _text([1])},
    "drift count null": lambda a: {"drifts": _text({"m0": None})},
    "drift count huge": lambda a: {"drifts": np.array('{"m0": 1e400}')},
    "drift count a word": lambda a: {"drifts": _text({"m0": "x"})},
    "born as words": lambda a: {"born": np.array(["a", "b", "c"])},
    "prices as words": lambda a: {"arm_price": np.array(["a", "b", "c"])},
    "sse as words": lambda a: {"sse": np.array(["a", "b", "c"])},
    "a slot past the models": lambda a: {"slots": _text({"m0": 0, "m1": 1, "m2": 99})},
    "a negative slot": lambda a: {"slots": _text({"m0": 0, "m1": 1, "m2": -5})},
    "two models in one slot": lambda a: {"slots": _text({"m0": 0, "m1": 1, "m2": 1})},
    "a NaN covariance": lambda a: {"cov": a["cov"] * np.nan},
    "a NaN mean": lambda a: {"mean": a["mean"] * np.nan},
    "a NaN credit": lambda a: {"logged_credit": np.array(np.nan)},
    "an asymmetric covariance": lambda a: {"cov": _asymmetric(a["cov"])},
    "a complex covariance": lambda a: {"cov": a["cov"] + 1j},
    "negative updates": lambda a: {"updates": np.array(-3)},
    "a scalar mean": lambda a: {"mean": np.array(1.0)},
    "counts of another length": lambda a: {"count": np.zeros(7)},
    "negative counts": lambda a: {"count": -a["count"] - 1.0},
    "negative sse": lambda a: {"sse": -a["sse"] - 1.0},
    "negative born times": lambda a: {"born": -a["born"] - 1.0},
    "an update count past 2**53": lambda a: {"updates": np.array(2**60)},
    "a drift count past 2**53": lambda a: {"drifts": _text({"m0": 10**400})},
    "a mean near float's limit": lambda a: {"mean": a["mean"] + 1e308},
}


@pytest.mark.parametrize("damage", sorted(CRAFTED))
def test_a_crafted_snapshot_is_refused_and_changes_nothing(damage: str) -> None:
    """Each crafted payload is a ValueError naming the snapshot, and the restoring policy's
    saved state is byte for byte what it was; it still routes."""
    source = _trained(0)
    with np.load(io.BytesIO(source.save()), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    payload = _crafted(source.save(), **CRAFTED[damage](arrays))
    target = _trained(1)
    before = target.save()
    with pytest.raises(ValueError, match="snapshot"):
        target.restore(payload)
    assert target.save() == before
    assert np.isfinite(target.distribution(PROMPT, ARMS)).all()


def test_a_compressed_member_is_refused_before_it_is_unpacked() -> None:
    """np.savez stores arrays as they are: an archive with a compressed member (a few
    kilobytes that could unpack to gigabytes before any shape is checked) is refused."""
    source = _trained(0)
    with np.load(io.BytesIO(source.save()), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    packed = io.BytesIO()
    np.savez_compressed(packed, **arrays)
    target = _trained(1)
    before = target.save()
    with pytest.raises(ValueError, match="compressed"):
        target.restore(packed.getvalue())
    assert target.save() == before


def test_a_server_start_moves_a_crafted_snapshot_aside(tmp_path: Path) -> None:
    """load_snapshot, what a server's start calls, meets a crafted snapshot (drifts written as
    a list: an AttributeError inside) with False and the file moved aside, not a traceback."""
    path = tmp_path / "policy.snapshot"
    source = _trained(0)
    source_state = source.save()
    source.save = lambda: _crafted(source_state, drifts=_text([1]))  # type: ignore[method-assign]
    save_snapshot(source, path)
    fresh = CostAwarePolicy(seed=0)
    before = fresh.save()
    assert not load_snapshot(fresh, path)
    assert path.with_name(path.name + ".corrupt").exists()
    assert fresh.save() == before
