"""Which policy a Router serves: promoting one (keeping the one it replaces), adopting another
serving process's promotion, rolling back or reverting it, and swapping in a cluster snapshot.

It lives apart from the Router so that the Router reads as routing: the Router owns a
:class:`PolicyLifecycle` and delegates its public methods (``promote``, ``adopt``,
``rollback``, ``revert``, ``swap_policy``, ``previous_policy``) here. What it uses of the
router is :class:`LifecycleHost`. Every change sets the router's ``policy`` and
``policies["default"]`` together under the router's lock, so a Route decides wholly with the
old policy or the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from banditroute.errors import FailedPrecondition

if TYPE_CHECKING:
    from banditroute.audit_record import AuditKind
    from banditroute.policies.base import Policy


class LifecycleHost(Protocol):
    """What a :class:`PolicyLifecycle` uses of its router (the Router satisfies it): it reads
    and writes ``policy``, writes ``policies["default"]`` and chains promotion and rollback
    records."""

    policy: Policy

    @property
    def policies(self) -> MutableMapping[str, Policy]: ...

    def audit_event(self, kind: AuditKind, version: str, payload: Mapping[str, Any]) -> int: ...


class PolicyLifecycle:
    """The router's live (default) policy changes, and the one a promotion replaced. It
    writes the router's ``policy`` and ``policies["default"]`` (both at once, under the
    router's lock) and keeps the replaced policy in :attr:`previous`."""

    def __init__(
        self, router: LifecycleHost, lock: threading.Lock, multiplier: Callable[[], float]
    ) -> None:
        self._router = router
        self._lock = lock
        self._multiplier = multiplier
        self.previous: Policy | None = None
        """The policy a promotion replaced, kept as it was for :meth:`rollback` (None if none)."""

    def promote(self, policy: Policy, evidence: Mapping[str, Any]) -> tuple[str, int]:
        """Make ``policy`` the live (default) policy at once, keeping the one it replaces, as
        it is, for :meth:`rollback`. Every Route after this uses the new policy; decisions
        still pending learn into it. The evidence is chained in the audit log (a
        ``promotion`` record) under the same lock, so the chain orders it exactly between
        the old policy's decisions and the new one's. Returns the new version and the audit
        record's seq (0 without auditing)."""
        with self._lock:
            previous = self._install(policy)
            payload = {**evidence, "previous_version": previous.version}
            return policy.version, self._router.audit_event("promotion", policy.version, payload)

    def adopt(self, policy: Policy) -> str:
        """:meth:`promote` without an audit record: another serving process of this server
        promoted ``policy`` and chained the evidence. Returns the new version."""
        with self._lock:
            self._install(policy)
        return policy.version

    def _install(self, policy: Policy) -> Policy:
        """Swap ``policy`` in as the default, keeping the one it replaces (returned); call
        with the lock held."""
        self._follow(policy)
        router = self._router
        previous = router.policy
        self.previous = previous
        router.policy = router.policies["default"] = policy
        return previous

    def _follow(self, policy: Policy) -> None:
        """Let a policy that prices cost itself (or the one a wrapper shares) follow the
        decision's pacing multiplier."""
        for target in (policy, getattr(policy, "inner", None)):
            follow = getattr(target, "follow", None)
            if callable(follow):
                follow(self._multiplier)

    def rollback(self) -> tuple[str, str, int]:
        """Put back the policy the last promotion replaced; FailedPrecondition if none.
        Returns the restored version, the version rolled back, and the audit record's seq."""
        router = self._router
        with self._lock:
            previous = self.previous
            if previous is None:
                raise FailedPrecondition(
                    "policy: no promotion to roll back (none since the server started, or "
                    "already rolled back)",
                    field="policy",
                )
            current = router.policy
            router.policy = router.policies["default"] = previous
            self.previous = None
            payload = {"rolled_back_version": current.version, "restored_version": previous.version}
            seq = router.audit_event("rollback", previous.version, payload)
        return previous.version, current.version, seq

    def revert(self) -> str:
        """:meth:`rollback` without an audit record (another serving process of this server
        chains it), and without complaint when there is nothing to put back: the version
        served afterwards."""
        router = self._router
        with self._lock:
            previous = self.previous
            if previous is not None:
                router.policy = router.policies["default"] = previous
                self.previous = None
            return router.policy.version

    def swap(self, policy: Policy) -> None:
        """Make ``policy`` the default one (a cluster replica's newer snapshot); call with the
        router's lock held, so a Route decides wholly with the old policy or the new."""
        assert self._lock.locked(), "swap needs the router's lock held"
        self._follow(policy)
        self._router.policy = policy
        self._router.policies["default"] = policy
