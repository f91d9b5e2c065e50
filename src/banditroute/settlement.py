"""The decisions a Router keeps pending for feedback, and what ends them: a feedback joined to
its decision and learned (or deferred to the window's close), and each reward window settled
as it closes (or at a restart, for windows that closed while the server was down).

It lives apart from the Router so that the Router reads as routing: the Router owns a
:class:`Settlement`, hands it each decision it keeps, and delegates its feedback-side public
methods (``feedback``, ``expire``, ``restore_pending``, ``settle_joined`` ...) here. What it
reads of the router is :class:`SettlementHost`: parts a reload, a promotion or joining a
cluster replaces (settings, policies, sessions, shared admission, observer, audit chain,
``on_learn``), so it reads them through the router at each call. It owns the set of models
feedback may name (every catalogue's, across reloads: :meth:`Settlement.know`). The pending
table is guarded by the router's lock, which also guards the policies a feedback teaches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import structlog

from banditroute import audited_rows, rewards
from banditroute.catalog import ModelSpec
from banditroute.config import Settings
from banditroute.decisions import Decision, Disposition, FeedbackReport, FeedbackResult, RouteQuery
from banditroute.errors import AlreadyExists, InvalidArgument, NotFound
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.pending import Pending, rebuilt, restorable
from banditroute.policies.sharing import SharedUpdate
from banditroute.route_choice import loggable_features
from banditroute.store.base import acknowledge
from banditroute.store.records import FeedbackRecord, SettlementRecord
from banditroute.tenancy import Tenant

if TYPE_CHECKING:
    from banditroute.admission import SharedAdmission
    from banditroute.audit import AuditChain
    from banditroute.budget_book import BudgetBook
    from banditroute.health import HealthTracker
    from banditroute.observe import RouterObserver
    from banditroute.policies.base import Policy
    from banditroute.sessions import Sessions
    from banditroute.store.base import EventLog

log = structlog.get_logger(__name__)


class SettlementHost(Protocol):
    """What a :class:`Settlement` reads of its router (the Router satisfies it), each at the
    call: a reload, a promotion or joining a cluster may have replaced it since. It writes
    none of them."""

    settings: Settings
    log: EventLog
    audit: AuditChain | None
    budgets: BudgetBook
    health: HealthTracker
    sessions: Sessions
    shared: SharedAdmission | None
    observer: RouterObserver
    policy: Policy
    policies: dict[str, Policy]
    on_learn: Callable[[SharedUpdate], None] | None


class Settlement:
    """A router's pending decisions (by id, and by tenant and request_id for retries), the
    feedback joined to them and the settlement of their reward windows."""

    def __init__(
        self,
        router: SettlementHost,
        lock: threading.Lock,
        clock: Callable[[], float],
        known_models: Iterable[str],
    ) -> None:
        self._router = router
        self._lock = lock
        self._clock = clock
        self._known_models = set(known_models)  # every catalogue's, across reloads (know)
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._by_request: dict[tuple[str, str], str] = {}

    def know(self, model_ids: Iterable[str]) -> None:
        """Add a reloaded catalogue's models to those a feedback may name (a removed model
        stays: its pending decisions still take feedback); call with the lock held."""
        self._known_models.update(model_ids)

    # -- keeping decisions -------------------------------------------------------------------------
    def replay(self, query: RouteQuery, request_hash: str) -> Decision | None:
        """The decision already made for a retried request_id (see :meth:`_replayed`), or None
        for a new request."""
        if not query.request_id:
            return None
        with self._lock:
            return self._replayed(query, request_hash)

    def keep(self, pending: Pending, query: RouteQuery, request_hash: str) -> Decision | None:
        """Keep the decision pending for feedback. A concurrent call with the same request_id
        may have decided meanwhile: it wins, and this decision is dropped unlogged (one
        decision per request_id, its admission released); returns that call's decision."""
        decision_id = pending.decision.decision_id
        with self._lock:
            if query.request_id:
                try:
                    replayed = self._replayed(query, request_hash)
                except AlreadyExists:
                    self._release(pending)
                    raise
                if replayed is not None:
                    self._release(pending)
                    return replayed
                self._by_request[(query.tenant, query.request_id)] = decision_id
            self._pending[decision_id] = pending
        return None

    def _replayed(self, query: RouteQuery, request_hash: str) -> Decision | None:
        """The pending decision already made for the query's request_id (the tenant's own),
        marked replayed (call with the lock held). A request_id of a different request (its
        fingerprint differs: another prompt, other constraints) is ALREADY_EXISTS: replaying
        that decision could hand a sensitive prompt a public model it is not eligible for.
        A decision logged without a fingerprint (before they were recorded) replays for no one."""
        existing = self._by_request.get((query.tenant, query.request_id))
        pending = None if existing is None else self._pending.get(existing)
        if pending is None:
            return None
        if pending.record.request_hash != request_hash:
            raise AlreadyExists(
                "request_id: already used for a different request within the reward window "
                "(a retry must repeat the request exactly); use a new request_id",
                field="request_id",
            )
        return replace(pending.decision, replayed=True)

    # -- Feedback ----------------------------------------------------------------------------------
    def feedback(self, report: FeedbackReport) -> FeedbackResult:
        """Join a feedback to its pending decision, learn per the combine rule, log it."""
        router = self._router
        if not report.decision_id:
            raise InvalidArgument("decision_id: must not be empty", field="decision_id")
        if report.model and report.model not in self._known_models:
            router.settings.catalog.get(report.model, field="model")  # InvalidArgument naming it
        router.log.admit()
        self.expire()
        settings = router.settings
        with self._lock:
            pending, tenant, served = self._joined(report, settings)
            fragments = rewards.fragments(report, served, settings.reward)
            first_charge = served.id not in pending.charged
            charged = (fragments.cost_usd or 0.0) if first_charge else 0.0
            # The log keeps this feedback's own reward (restore re-combines them); the caller
            # gets the reward learned so far (combined, for the deferred rules).
            own_reward = router.budgets.reward(
                pending.objective, fragments, tenant,
                first=pending.feedback_count == 0, charge=first_charge,
            )  # fmt: skip
            pending.charged.add(served.id)
            self._outcome(pending, served.id, fragments, tenant)
            reward, disposition = self._dispose(pending, served.id, own_reward, settings)
            pending.feedback_count += 1
            feedback_count = pending.feedback_count
        if charged:
            router.observer.charged(tenant.name, charged)
        if router.shared is not None:  # the other replicas' caps see the charge (or its absence)
            router.shared.spent(tenant.name)
        record = FeedbackRecord(
            decision_id=report.decision_id, time=self._clock(), model=served.id,
            quality=fragments.quality, cost_usd=fragments.cost_usd,
            input_tokens=report.input_tokens, output_tokens=report.output_tokens,
            latency_ms=fragments.latency_ms, status=str(fragments.status), reward=own_reward,
            disposition=str(disposition),
        )  # fmt: skip
        self._commit(pending, record, settings)
        return FeedbackResult(reward, disposition, feedback_count)

    def _joined(
        self, report: FeedbackReport, settings: Settings
    ) -> tuple[Pending, Tenant, ModelSpec]:
        """The caller's pending decision the report is about (NotFound if none: unknown,
        another tenant's, or its window closed), its tenant, and the model that served it
        (call with the lock held)."""
        pending = self._pending.get(report.decision_id)
        if pending is not None and pending.record.tenant != report.tenant:
            pending = None  # another tenant's decision: as good as unknown to this caller
        if pending is None:
            raise NotFound(
                f"decision_id: no pending decision {report.decision_id!r} "
                f"(unknown, or its {settings.reward.window_s:g}s reward window closed)",
                field="decision_id",
            )
        served_id = report.model or pending.decision.model
        tenant = settings.access.tenant(pending.record.tenant)
        # The model as it was when the decision was made (a reload since may have removed
        # or re-priced it); a fallback outside the decision's eligible set from the catalogue.
        served = next((arm for arm in pending.arms if arm.id == served_id), None)
        if served is None:
            served = settings.catalog.get(served_id, field="model")
            # A model outside the tenant's allow-list never served its decisions; its
            # invented outcomes would move that model's health (its breaker) for everyone.
            tenant.check_model(served_id, field="model")
        return pending, tenant, served

    def _outcome(
        self, pending: Pending, served_id: str, fragments: Fragments, tenant: Tenant
    ) -> None:
        """Count the served call's outcome in the model's health and its session's, and end
        the decision's admission."""
        router = self._router
        router.health.record_outcome(served_id, fragments.status, fragments.latency_ms, tenant.name)
        if pending.record.session:
            router.sessions.outcome(
                (pending.record.tenant, pending.record.session),
                served_id,
                ok=fragments.status == OutcomeStatus.OK,
            )
        self._release(pending)

    def _dispose(
        self, pending: Pending, served_id: str, reward: float, settings: Settings
    ) -> tuple[float, Disposition]:
        """What becomes of the feedback's reward: recorded only (a fallback served), learned
        at once (the ``first`` rule; a duplicate ignored) or deferred to the window's close;
        returns the reward learned so far (combined, for the deferred rules) and that."""
        combine = settings.reward.combine
        if served_id != pending.decision.model:
            return reward, Disposition.RECORDED_OFF_POLICY
        if combine == "first":
            if pending.learned:
                return reward, Disposition.IGNORED_DUPLICATE
            self._learn(pending, reward)
            return reward, Disposition.LEARNED
        pending.rewards.append(reward)
        return rewards.combine(combine, pending.rewards), Disposition.DEFERRED

    def _commit(self, pending: Pending, record: FeedbackRecord, settings: Settings) -> None:
        """Log the feedback row; with ``log.sync_feedback`` wait until it is durable
        (Unavailable if it is not within :data:`~banditroute.store.base.COMMIT_TIMEOUT_S`)."""
        commit = audited_rows.log_feedback(
            self._router.log, self._router.audit, pending.record, record
        )
        if settings.log.sync_feedback:
            acknowledge(commit)

    def _learn(self, pending: Pending, reward: float) -> None:
        """Update the arm's policy, and every shadow policy off-policy from the same outcome.

        The learner sees the reward as :func:`rewards.learnable` bounds it (the log keeps the
        reward as computed); a NaN reward is not learned at all."""
        learned = rewards.learnable(reward)
        if learned != reward:
            log.warning("reward_clipped", reward=reward, decision_id=pending.decision.decision_id)
            if learned is None:
                pending.learned = True
                return
            reward = learned
        router = self._router
        args = (pending.features, pending.arms, pending.chosen, pending.decision.probability)
        policy = router.policies.get(pending.record.arm)
        if policy is not None:
            policy.learn(*args, reward)
            if router.on_learn is not None and policy is router.policy:
                router.on_learn(
                    SharedUpdate(
                        loggable_features(pending.features, pending.record.data_class),
                        tuple(arm.id for arm in pending.arms), pending.chosen,
                        pending.decision.probability, reward, pending.decision.decision_id,
                    )
                )  # fmt: skip
        else:  # restored after a restart whose configuration no longer has the arm's policy
            log.warning("arm_policy_gone", arm=pending.record.arm,
                        decision_id=pending.decision.decision_id)  # fmt: skip
        for name in pending.record.shadow:
            # A promoted shadow is also the arm's policy now: it learns the outcome once.
            if name in router.policies and router.policies[name] is not policy:
                router.policies[name].learn(*args, reward)
        pending.learned = True

    # -- reward windows ----------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Settle every decision whose reward window has closed; returns how many."""
        now = self._clock() if now is None else now
        cutoff = now - self._router.settings.reward.window_s
        settled: list[tuple[Pending, SettlementRecord]] = []
        with self._lock:
            while self._pending:
                decision_id, pending = next(iter(self._pending.items()))
                if pending.record.time > cutoff:
                    break
                del self._pending[decision_id]
                if pending.record.request_id:
                    self._by_request.pop((pending.record.tenant, pending.record.request_id), None)
                settled.append((pending, self._settle(pending, now)))
        self._log_settlements(settled)
        return len(settled)

    def _settle(self, pending: Pending, now: float) -> SettlementRecord:
        """End a decision whose window closed: release its admission, learn (unless already
        learned) its deferred feedback's combined reward, or with none the default reward if
        ``reward.on_missing`` says so, and return its settlement row (call with the lock held)."""
        decision_id = pending.decision.decision_id
        settings = self._router.settings
        self._release(pending)
        if pending.learned:
            return SettlementRecord(decision_id, now, "learned", None)
        if pending.rewards:
            reward = rewards.combine(settings.reward.combine, pending.rewards)
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_combined", reward)
        if settings.reward.on_missing == "default":
            reward = settings.reward.default_reward
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_default", reward)
        return SettlementRecord(decision_id, now, "skipped", None)

    def _release(self, pending: Pending) -> None:
        """The decision's admission is over: its in-flight slot here and its shared ticket."""
        if pending.admitted:
            self._router.health.release(pending.decision.model)
            pending.admitted = False
        ticket, pending.ticket = pending.ticket, None
        shared = self._router.shared
        if ticket is not None and shared is not None:
            shared.release(ticket)

    def _log_settlements(self, settled: list[tuple[Pending, SettlementRecord]]) -> None:
        """Log settlement rows (with their audit records when auditing)."""
        audited_rows.log_settlements(
            self._router.log, self._router.audit, ((p.record, r) for p, r in settled)
        )

    # -- pending decisions -------------------------------------------------------------------------
    def is_pending(self, decision_id: str) -> bool:
        """Whether ``decision_id`` waits here for feedback (a cluster replica answers such
        Feedback itself whatever the id's replica tag: one restarted under a new name)."""
        return decision_id in self._pending

    def settle_joined(self, decision_ids: Iterable[str]) -> int:
        """Mark pending decisions whose feedback the cluster's trainer joined and learned (it
        reached another replica while this one was down) as learned here too: a retry of that
        feedback is a duplicate, and the reward window closes without learning again. Returns
        how many were marked."""
        # Up to thousands of ids every heartbeat, almost none pending here: only those are
        # looked at under the lock Route takes (a dict membership test needs no lock).
        held = [decision_id for decision_id in decision_ids if decision_id in self._pending]
        marked = 0
        with self._lock:
            for decision_id in held:
                pending = self._pending.get(decision_id)
                if pending is not None and not pending.learned:
                    pending.learned = True
                    marked += 1
        return marked

    @property
    def count(self) -> int:
        """Decisions currently waiting for feedback."""
        return len(self._pending)

    def restore(self) -> int:
        """Reload decisions still inside their reward window from the log (after a restart);
        returns how many. Unsettled decisions whose window closed while the server was down
        are settled now, as :meth:`expire` would have (their deferred feedback or the default
        reward learned, a settlement row logged)."""
        now = self._clock()
        settings = self._router.settings
        cutoff = now - settings.reward.window_s
        restored = unreadable = 0
        settled: list[tuple[Pending, SettlementRecord]] = []
        for record, feedback in self._router.log.unsettled(0.0):
            if record.decision_id in self._pending or not restorable(record, settings.catalog):
                continue
            try:
                pending = rebuilt(record, feedback, settings)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # A row this version cannot read (damaged, or written by a build that logged
                # other features) must not keep the server from starting: it stays unsettled
                # in the log, and the others come back.
                unreadable += 1
                log.warning(
                    "pending_decision_unreadable",
                    decision_id=record.decision_id,
                    error=str(exc) if isinstance(exc, ValueError) else type(exc).__name__,
                )
                continue
            with self._lock:
                if record.time <= cutoff:
                    settled.append((pending, self._settle(pending, now)))
                    continue
                self._pending[record.decision_id] = pending
                if record.request_id:
                    self._by_request[(record.tenant, record.request_id)] = record.decision_id
            restored += 1
        self._log_settlements(settled)
        if unreadable:
            log.warning("pending_decisions_not_restored", unreadable=unreadable)
        return restored
