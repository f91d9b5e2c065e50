"""Decision ids: drawing them unguessably, the serving process an id names, and the draw an id
seeds, so that a decision replays exactly from its id."""

from __future__ import annotations

import hashlib
import secrets

import numpy as np


def sample_index(probabilities: np.ndarray, decision_id: str, seed: int = 0) -> int:
    """Draw an index from ``probabilities`` with a uniform number derived from the id.

    The same decision id (and seed) always gives the same choice, so decisions replay exactly.
    """
    digest = hashlib.blake2b(f"{seed}:{decision_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    total = 0.0
    values = probabilities.tolist()
    for index, probability in enumerate(values):
        total += probability
        if u < total:
            return index
    return len(values) - 1


class DecisionIds:
    """Unguessable decision ids: 32 hex digits, all drawn from ``secrets`` per id, except that
    with several serving processes the first two name the worker that made the decision
    (:func:`decision_owner`, to forward its Feedback there), and a cluster replica's ids start
    with its ``prefix`` (hex digits naming the replica, :func:`banditroute.cluster.replica_tag`).

    A counter would tell a tenant how many decisions the others were given between two of
    its own, and let it guess their ids; 120 or 128 random bits per id reveal nothing and
    collide with negligible probability, across restarts and processes too.
    """

    def __init__(self, worker: int | None = None, *, prefix: str = "") -> None:
        if len(prefix) % 2 or len(prefix) > 16 or any(c not in "0123456789abcdef" for c in prefix):
            raise ValueError("prefix: an even number of at most 16 lowercase hex digits")
        self._prefix = prefix if worker is None else f"{worker:02x}"
        self._random_bytes = 16 - len(self._prefix) // 2

    def __call__(self) -> str:
        return self._prefix + secrets.token_hex(self._random_bytes)


def decision_owner(decision_id: str) -> int | None:
    """The serving process that made a decision (multi-process mode ids start with it)."""
    try:
        return int(decision_id[:2], 16)
    except ValueError:
        return None


__all__ = ["DecisionIds", "decision_owner", "sample_index"]
