"""Merging Vowpal Wabbit learners that train apart on the same base (several processes).

Each serving process learns online from its own feedback. Periodically every process sends
the delta between the last common base model and its current model; the coordinator merges
the deltas (VW's model merging, ``merge_deltas``) and applies the result to the base, giving
the next common base, which every process adopts, re-applying what it learned while the round
was in flight. Transport-free: callers move the bytes (pipes, files, sockets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import vowpal_wabbit_next as vw

from banditroute.policies.vw import VWPolicy


@dataclass
class SyncState:
    """One process's view of the last common base and what it sent for the current round."""

    base: vw.Workspace  # type: ignore[type-arg]
    sent: vw.Workspace | None = None  # type: ignore[type-arg]


def start_sync(policy: VWPolicy) -> SyncState:
    """The current model becomes this process's base (all processes start from one snapshot)."""
    return SyncState(base=policy.workspace_from_bytes(policy.save()))


def outgoing_delta(policy: VWPolicy, state: SyncState) -> bytes:
    """Serialised delta from the base to the model as it is now (remembered as ``sent``)."""
    state.sent = policy.workspace_from_bytes(policy.save())
    return bytes(vw.calculate_delta(state.base, state.sent).serialize())


def merge(policy: VWPolicy, base: bytes, deltas: Sequence[bytes]) -> bytes:
    """The next common base: ``base`` with the merged deltas of every process applied."""
    if not deltas:
        return base
    parsed = [vw.ModelDelta(d) for d in deltas]
    combined = parsed[0] if len(parsed) == 1 else vw.merge_deltas(parsed)
    merged = vw.apply_delta(policy.workspace_from_bytes(base), combined)
    return bytes(merged.serialize())


def adopt(policy: VWPolicy, state: SyncState, new_base: bytes) -> None:
    """Switch to the merged base plus whatever this process learned since it sent its delta."""
    base = policy.workspace_from_bytes(new_base)
    current = policy.workspace_from_bytes(policy.save())
    since_sent = vw.calculate_delta(state.sent if state.sent is not None else state.base, current)
    policy.adopt_workspace(vw.apply_delta(policy.workspace_from_bytes(new_base), since_sent))
    state.base = base
    state.sent = None
