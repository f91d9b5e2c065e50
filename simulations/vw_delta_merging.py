"""Experiment: merging Vowpal Wabbit learners that train apart from a common base.

Not used by the server, which shares learning updates instead (``policies/sharing.py``):
measured with ``merged_learners.py``, delta merging routes worse than not merging at all.

Each serving process learns online from its own feedback. In a merge round every process
sends the delta between the common base and its current model (``calculate_delta``); the
coordinator hands every process all the deltas; each process applies the others' deltas,
combined with ``merge_deltas``, to its *current* model (``apply_delta``), and advances the
common base by all of them. A process thus ends the round with everything every process
learned, plus what it learned while the round was in flight.

The deltas are applied to the current model rather than the current model being rebuilt from
the base because VW's deltas carry the weights but not every learner's counters: squarecb's
exploration schedule counts examples outside the weights, and a model rebuilt from the base
would restart it (measured: uniform distributions after the rebuild). Applying to the current
model keeps the process's own counters. Transport-free: callers move the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import vowpal_wabbit_next as vw

from banditroute.policies.vw import VWPolicy


@dataclass
class SyncState:
    """One process's copy of the common base model."""

    base: vw.Workspace  # type: ignore[type-arg]


def start_sync(policy: VWPolicy) -> SyncState:
    """The current model becomes the base (all processes start from one snapshot)."""
    return SyncState(base=policy.workspace_from_bytes(policy.save()))


def outgoing_delta(policy: VWPolicy, state: SyncState) -> bytes:
    """Serialised delta from the common base to this process's model as it is now."""
    current = policy.workspace_from_bytes(policy.save())
    return bytes(vw.calculate_delta(state.base, current).serialize())


def _combined(deltas: Sequence[bytes]) -> vw.ModelDelta | None:
    parsed = [vw.ModelDelta(d) for d in deltas]
    if not parsed:
        return None
    return parsed[0] if len(parsed) == 1 else vw.merge_deltas(parsed)


def adopt(policy: VWPolicy, state: SyncState, deltas: Sequence[bytes], me: int) -> None:
    """Apply every other process's delta to this one's current model; advance the base."""
    others = _combined([d for index, d in enumerate(deltas) if index != me])
    if others is not None:
        current = policy.workspace_from_bytes(policy.save())
        policy.adopt_workspace(vw.apply_delta(current, others))
    everything = _combined(deltas)
    if everything is not None:
        state.base = vw.apply_delta(state.base, everything)
