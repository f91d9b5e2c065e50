"""PromotePolicy and RollbackPolicy on a cluster replica: asked of the trainer, answered once live.

The servicer gates a candidate on this replica's log as a lone server does. When it clears,
:meth:`ClusterPolicy.promote` hands it to the leader trainer (:mod:`banditroute.cluster.changes`)
and waits, bounded, for the trainer's outcome and then for this replica to serve the snapshot
that carries it; only then does it chain the evidence in the audit log (the trainer's central
log receives the record with the replica's other rows) and answer. Every other replica swaps
the same snapshot in. A change no trainer takes in time is withdrawn: the call fails with
UNAVAILABLE and nothing changes, then or later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from banditroute.cluster.changes import Change, ChangeDesk, Outcome, new_change
from banditroute.cluster.recipes import build_recipe
from banditroute.errors import FailedPrecondition, Unavailable
from banditroute.policies.base import Policy
from banditroute.router import Router
from banditroute.snapshots import snapshot_bytes, snapshot_payload

WAIT_S = 60.0
"""How long a replica waits for the trainer to take a change, then for the snapshot carrying
it (each; a trainer that took the change is given as long again to publish it)."""
POLL_S = 0.05


class Following(Protocol):
    """The snapshot version a replica uses (its
    :class:`~banditroute.cluster.follower.SnapshotFollower`)."""

    @property
    def version(self) -> int: ...


class ClusterPolicy:
    """Promotions and rollbacks of the cluster's live policy, from one replica."""

    def __init__(
        self,
        desk: ChangeDesk,
        follower: Following,
        router: Router,
        *,
        errors: tuple[type[BaseException], ...] = (OSError,),
        wait_s: float = WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._desk = desk
        self._follower = follower
        self._router = router
        self._errors = errors
        self._wait_s = wait_s
        self._clock = clock

    def promote(self, recipe: str, policy: Policy, evidence: Mapping[str, Any]) -> tuple[str, int]:
        """Make ``policy`` (built from candidate spec ``recipe``) the cluster's live policy;
        returns the version this replica now serves and the audit record's seq."""
        build_recipe(recipe, self._router.settings)  # InvalidArgument if it cannot travel
        previous = self._router.policy.version
        with self._router.locked():  # a promoted shadow learns under the router's lock
            data = snapshot_payload(snapshot_bytes(policy))
        outcome = self._ask(new_change("promote", recipe, data))
        version = self._live(outcome)
        payload = {**evidence, "previous_version": previous, "snapshot_version": outcome.version}
        return version, self._router.audit_event("promotion", version, payload)

    def rollback(self) -> tuple[str, str, int]:
        """Put back the policy the cluster's last promotion replaced; FailedPrecondition if
        none. Returns the restored version, the version rolled back, and the audit seq."""
        current = self._router.policy.version
        outcome = self._ask(new_change("rollback"))
        restored = self._live(outcome)
        payload = {"rolled_back_version": current, "restored_version": restored,
                   "snapshot_version": outcome.version}  # fmt: skip
        return restored, current, self._router.audit_event("rollback", restored, payload)

    def _ask(self, change: Change) -> Outcome:
        """Place ``change`` and wait for the trainer's outcome (module doc)."""
        try:
            # Unclaimed, it expires after twice the wait: this replica withdraws it first.
            if not self._desk.submit(change, expire_s=2 * self._wait_s):
                raise FailedPrecondition(
                    "policy: another promotion or rollback is in progress in the cluster; "
                    "try again when it is done",
                    field="policy",
                )
            outcome = self._await(change)
        except self._errors as exc:
            raise Unavailable(
                f"policy: the cluster server failed while the change was being made "
                f"({type(exc).__name__}); it may yet take effect: GetStats shows the "
                "snapshot version in use",
                field="policy",
            ) from None
        if outcome.error:
            raise FailedPrecondition(outcome.error, field="policy")
        return outcome

    def _await(self, change: Change) -> Outcome:
        deadline = self._clock() + self._wait_s
        claimed = False
        while (outcome := self._desk.outcome(change)) is None:
            if self._clock() >= deadline:
                if claimed:
                    raise Unavailable(
                        f"policy: the trainer took the change but did not publish it within "
                        f"{2 * self._wait_s:g} s; it takes effect when it does (GetStats "
                        "shows the snapshot version in use)",
                        field="policy",
                    )
                if self._desk.withdraw(change):
                    raise Unavailable(
                        f"policy: no trainer took the change within {self._wait_s:g} s (is "
                        "`banditroute trainer` running?); nothing changed",
                        field="policy",
                    )
                claimed = True
                deadline = self._clock() + self._wait_s
            time.sleep(POLL_S)
        return outcome

    def _live(self, outcome: Outcome) -> str:
        """Wait until this replica serves the snapshot carrying ``outcome``; its version."""
        deadline = self._clock() + self._wait_s
        while self._follower.version < outcome.version:
            if self._clock() >= deadline:
                raise Unavailable(
                    f"policy: the cluster serves the change from snapshot {outcome.version}, "
                    "but this replica has not loaded it yet (see its log)",
                    field="policy",
                )
            time.sleep(POLL_S)
        return self._router.policy.version


__all__ = ["WAIT_S", "ClusterPolicy"]
