"""The Router: route() and feedback(), holding pending decisions. No transport, no disk I/O.

One core, three fronts: the gRPC server, the simulator and the replay tool all drive this
class. It extracts features, asks the policy for a distribution over the eligible models,
samples one reproducibly (seeded by the decision id), logs the decision with the whole
distribution, and later joins feedback to the pending decision within the reward window,
turns it into a reward with the objective's weights and updates the learner.

Thread safety: a single lock guards the pending table and the policy (a VW workspace is not
thread-safe). Waiting for a feedback's log commit happens outside the lock. A configuration
reload (:meth:`Router.reload`) swaps the settings under that lock; each Route and Feedback reads
``self.settings`` once, so it works wholly with the old settings or wholly with the new ones.

``route`` reads as its steps, one method each; this module holds routing and the Router's
public face. Steps that need no router state, or only the parts handed to them, live in
modules of their own: reading a request (:mod:`~banditroute.route_request`), eligibility and
admission (:mod:`~banditroute.route_admission`, handed the health tracker and the shared
admission), the choice and the rows made of it (:mod:`~banditroute.route_choice`), pending
decisions and their rebuilding from the log (:mod:`~banditroute.pending`), rewards
(:mod:`~banditroute.rewards`), budgets and pacers (:mod:`~banditroute.budget_book`), the
audited rows (:mod:`~banditroute.audited_rows`) and decision ids
(:mod:`~banditroute.decision_ids`). Two parts with state of their own are objects the Router
owns and delegates to, each typed against only what it uses of the router: the pending table
with feedback, learning and settlement (:mod:`~banditroute.settlement`), and the live
policy's promotions and rollbacks (:mod:`~banditroute.policy_lifecycle`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from banditroute import audited_rows, route_admission
from banditroute.admission import SharedAdmission
from banditroute.audit import AuditChain
from banditroute.audit_record import AuditKind
from banditroute.budget_book import BudgetBook
from banditroute.budgets import BudgetStatus, TenantBudget
from banditroute.catalog import Catalog, ModelSpec
from banditroute.config import Settings
from banditroute.decision_ids import DecisionIds, decision_owner, sample_index
from banditroute.decisions import Decision, FeedbackReport, FeedbackResult, RouteQuery
from banditroute.features import Embedder, extract, prompt_hash
from banditroute.health import HealthTracker
from banditroute.load_limits import ModelLimits
from banditroute.objectives import BudgetPacer, Objective
from banditroute.observe import NoObserver, RouterObserver
from banditroute.outcomes import OutcomeStatus
from banditroute.pending import Pending
from banditroute.policies.base import Policy
from banditroute.policies.sharing import SharedUpdate
from banditroute.policy_lifecycle import PolicyLifecycle
from banditroute.reload import ConfigChange, config_change
from banditroute.route_choice import Choice, decided, floored, pick, shadow_pick
from banditroute.route_request import (
    RouteRequest,
    constraints_of,
    data_class_of,
    experiment_arm,
    prompt_text,
    validate,
)
from banditroute.rules import first_match
from banditroute.semantic import semantic_embedder
from banditroute.sessions import SessionKey, Sessions, SessionTable
from banditroute.settlement import Settlement
from banditroute.store.base import EventLog
from banditroute.tenancy import Tenant


class Router:
    """Routes prompts and learns from feedback; the shared core of server, simulator and replay."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        event_log: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
        seed: int = 0,
        policies: Mapping[str, Policy] | None = None,
        health: HealthTracker | None = None,
        audit: AuditChain | None = None,
        prompt_hash_key: bytes | None = None,
        embedder: Embedder | None = None,
        observer: RouterObserver | None = None,
        shared: SharedAdmission | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.observer: RouterObserver = NoObserver() if observer is None else observer
        self.embedder = embedder if embedder is not None else semantic_embedder(settings)
        self.policy = policy
        self.policies: dict[str, Policy] = {"default": policy, **(policies or {})}
        self.log = event_log
        self.health = health or HealthTracker(
            settings.health,
            _model_limits(settings),
            tenants=settings.access.callers,
        )
        self.audit = audit
        self.budgets = BudgetBook(clock)
        self.pacer(settings.objective(""))
        # Policies that price cost themselves follow the multiplier of the decision being made:
        # its objective's budget pacer plus its tenant's (outside a decision, e.g. a warm start,
        # the default objective's).
        self._deciding: float | None = None
        for candidate in self.policies.values():
            follow = getattr(candidate, "follow", None)
            if callable(follow):
                follow(self._decision_multiplier)
        self._clock = clock
        self._new_id = new_id or DecisionIds()
        self._seed = seed
        # The server passes its persistent key (hash_key.py); without one a random key keeps
        # the logged hashes unguessable, stable only for this router's lifetime.
        self._hash_key = secrets.token_bytes(32) if prompt_hash_key is None else prompt_hash_key
        self._lock = threading.Lock()
        self._settlement = Settlement(self, self._lock, clock, settings.catalog.ids)
        self._lifecycle = PolicyLifecycle(self, self._lock, self._decision_multiplier)
        self.sessions: Sessions = SessionTable()
        self.session_hash: Callable[[str], str] = lambda sid: self.prompt_hash("session\0" + sid)
        """A session id's keyed hash (a cluster replica shares both with the others)."""
        self.on_learn: Callable[[SharedUpdate], None] | None = None
        """Told of every update the default policy learns (with the features as logged), under
        the lock: a cluster replica ships them to the trainer."""

    @property
    def catalog(self) -> Catalog:
        """The models the router chooses from now."""
        return self.settings.catalog

    def _decision_multiplier(self) -> float:
        """The pacing multiplier of the decision being made (its objective's and its tenant's
        budgets), or the default objective's outside a decision (0 without budgets)."""
        if self._deciding is not None:
            return self._deciding
        pacer = self.pacer(self.settings.objective(""))
        return 0.0 if pacer is None else pacer.lam

    # -- configuration reload ----------------------------------------------------------------------
    def reload(self, settings: Settings) -> ConfigChange:
        """Swap in new settings at once, keeping what was learned (see :mod:`banditroute.reload`).

        FailedPrecondition naming the key if ``settings`` change what only a restart can (the
        old settings then stay). Policies keep their state (keyed by model id): a removed model
        is no longer eligible, an added one starts from the prior, a new price counts at the
        next Route. Pending decisions keep the models and objective they were made with, so
        feedback for a removed model's decision is still accepted and learned from. Health
        statistics, budget spend and pacing multipliers carry over."""
        with self._lock:
            change = config_change(self.settings, settings)
            self.health.reconfigure(
                settings.health, _model_limits(settings), tenants=settings.access.callers
            )
            self.budgets.reconfigure(settings)
            self._settlement.know(settings.catalog.ids)
            self.settings = settings
        return change

    # -- promotion (see :mod:`banditroute.policy_lifecycle`) ---------------------------------------
    @property
    def previous_policy(self) -> Policy | None:
        """The policy a promotion replaced, kept as it was for :meth:`rollback` (None if none)."""
        return self._lifecycle.previous

    def promote(self, policy: Policy, evidence: Mapping[str, Any]) -> tuple[str, int]:
        """Make ``policy`` the live policy, keeping the one it replaces for :meth:`rollback`,
        and chain the evidence in the audit log (:meth:`PolicyLifecycle.promote`)."""
        return self._lifecycle.promote(policy, evidence)

    def adopt(self, policy: Policy) -> str:
        """:meth:`promote` without an audit record (:meth:`PolicyLifecycle.adopt`)."""
        return self._lifecycle.adopt(policy)

    def rollback(self) -> tuple[str, str, int]:
        """Put back the policy the last promotion replaced (:meth:`PolicyLifecycle.rollback`)."""
        return self._lifecycle.rollback()

    def revert(self) -> str:
        """:meth:`rollback` with neither an audit record nor a complaint
        (:meth:`PolicyLifecycle.revert`)."""
        return self._lifecycle.revert()

    def audit_event(self, kind: AuditKind, version: str, payload: Mapping[str, Any]) -> int:
        """Chain an audit record that describes no logged row (a promotion's evidence, a
        rollback); returns its seq (0 without auditing)."""
        return audited_rows.log_event(
            self.audit, kind, version, payload, time=self._clock(), eligible=self.catalog.ids
        )

    def swap_policy(self, policy: Policy) -> None:
        """Make ``policy`` the default one (a cluster replica's newer snapshot); call with
        :meth:`locked` held, so a Route decides wholly with the old policy or the new."""
        self._lifecycle.swap(policy)

    def locked(self) -> threading.Lock:
        """The lock guarding the policy, for callers that read it (snapshots)."""
        return self._lock

    # -- Route -------------------------------------------------------------------------------------
    def route(self, query: RouteQuery) -> Decision:
        """Choose a model for the query, log the decision and keep it pending for feedback."""
        settings = self.settings  # read once: a concurrent reload must not mix two settings
        validate(query, settings.server.max_prompt_chars)
        self.log.admit()
        tenant = self._tenant(query.tenant, settings)
        objective = self._objective(query, tenant, settings)
        request_hash = self.request_fingerprint(query) if query.request_id else ""
        replayed = self._settlement.replay(query, request_hash)
        if replayed is not None:
            return replayed
        now = self._clock()
        budget = self.budgets.budget(tenant)
        if budget is not None:
            budget.check(now)
        request = self._read(
            query, settings, tenant=tenant, objective=objective, budget=budget, now=now,
            request_hash=request_hash,
        )  # fmt: skip
        choice = self._choose(request)
        decision, record = decided(request, choice, self.prompt_hash)
        pending = Pending(
            record, decision, request.features, choice.arms, choice.chosen, objective,
            admitted=True, ticket=choice.ticket,
        )  # fmt: skip
        replayed = self._settlement.keep(pending, query, request_hash)
        if replayed is not None:
            return replayed
        if request.session is not None:
            self.sessions.assign(request.session, decision.model, now, settings.sessions)
        audited_rows.log_decision(self.log, self.audit, record)
        self.observer.decided(decision)
        return decision

    def _tenant(self, name: str, settings: Settings | None = None) -> Tenant:
        """The tenant ``name`` of ``settings`` (else the current ones): see
        :meth:`AccessSettings.tenant <banditroute.tenancy.AccessSettings.tenant>`."""
        return (settings or self.settings).access.tenant(name)

    def _objective(self, query: RouteQuery, tenant: Tenant, settings: Settings) -> Objective:
        """The query's objective (else the tenant's default); InvalidArgument for an unknown
        one, PermissionDenied for one the tenant may not use."""
        name = query.objective or tenant.default_objective
        objective = settings.objective(name)
        tenant.check_objective(objective.name)
        return objective

    def _read(
        self, query: RouteQuery, settings: Settings, *, tenant: Tenant, objective: Objective,
        budget: TenantBudget | None, now: float, request_hash: str,
    ) -> RouteRequest:  # fmt: skip
        """Read the request before choosing: its data class (from the whole text and the
        tags), features, constraints and matching rule; and draw its decision id, with its
        A/B arm and its session (and the model the session holds)."""
        text = prompt_text(query)
        data_class = data_class_of(query, text)
        features = extract(
            query.prompt,
            query.messages,
            feature_chars=settings.server.feature_chars,
            embedder=self.embedder,
        )
        constraints = constraints_of(query, data_class)
        rule = first_match(settings.rules, tenant.name, features, query.tags, data_class)
        decision_id = self._new_id()
        arm = experiment_arm(tenant, query, decision_id)
        session = self._session_key(tenant, query.session_id)
        held = None if session is None else self.sessions.model(session, now, settings.sessions)
        return RouteRequest(
            query, settings, tenant, objective, budget, now, request_hash, text, data_class,
            features, constraints, rule, decision_id, arm, session, held,
        )  # fmt: skip

    def _choose(self, request: RouteRequest) -> Choice:
        """Choose among the eligible models and admit the choice. The chosen model is admitted
        (in-flight and rate limits) in one step with the check; if concurrent routes filled its
        limits since eligibility was computed, it is refused and the decision is made again
        without it, so limits never overshoot and the logged probabilities are those of the
        set actually decided over."""
        refused: dict[str, str] = {}
        while True:
            eligibility = route_admission.eligibility(request, self.health, refused)
            arms = eligibility.eligible
            probabilities, version, shadow = self._score(request, arms)
            # The session's model while it is eligible (and not refused); else a draw.
            chosen, sticky = pick(arms, probabilities, request.held, request.decision_id,
                                  self._seed)  # fmt: skip
            admitted = route_admission.admit(request, arms[chosen], self.health, self.shared)
            if isinstance(admitted, str):
                refused[arms[chosen].id] = admitted
                continue
            return Choice(eligibility, probabilities, version, shadow, chosen, sticky, admitted)

    def _score(
        self, request: RouteRequest, arms: tuple[ModelSpec, ...]
    ) -> tuple[np.ndarray, str, dict[str, dict[str, Any]]]:
        """The arm policy's floored distribution over ``arms`` and its version, and each
        shadow policy's pick; under the lock, priced at the decision's pacing multiplier."""
        shadow: dict[str, dict[str, Any]] = {}
        with self._lock:
            policy = self.policies[request.arm]
            self._deciding = self.budgets.multiplier(request.objective, request.budget)
            try:
                probabilities = floored(
                    policy.distribution(request.features, arms, explore=request.explore),
                    request.settings, request.arm, request.explore,
                )  # fmt: skip
                for name in request.tenant.shadow_policies:
                    shadow[name] = shadow_pick(
                        self.policies[name], name, request, arms, self._seed + 1
                    )
            finally:
                self._deciding = None
            return probabilities, policy.version, shadow

    def _session_key(self, tenant: Tenant, session_id: str) -> SessionKey | None:
        """The session a Route belongs to: its tenant's and the keyed hash of its id (no
        client text is kept, and another tenant's same id is another session); None without
        an id or for a tenant with ``sessions = false``."""
        if not session_id or not tenant.sessions:
            return None
        return tenant.name, self.session_hash(session_id)

    def prompt_hash(self, text: str) -> str:
        """The keyed hash of a prompt as this router logs it."""
        return prompt_hash(text, self._hash_key)

    def request_fingerprint(self, query: RouteQuery) -> str:
        """The keyed fingerprint of a request as this router logs it (``request_hash``)."""
        return query.fingerprint(self._hash_key)

    # -- budgets -----------------------------------------------------------------------------------
    def pacer(self, objective: Objective) -> BudgetPacer | None:
        """The budget pacer of an objective with a budget (created on first use)."""
        return self.budgets.pacer(objective)

    def restore_budgets(self, spend: Callable[[str, float], tuple[float, int]]) -> int:
        """Reload each budgeted tenant's spend in its current period; ``spend(tenant, since)``
        returns (USD, requests) from the log. Returns how many tenants were restored."""
        return self.budgets.restore_budgets(self.settings, spend)

    def restore_pacers(self, first_costs: Callable[..., Iterable[float]]) -> int:
        """Rebuild every budget pacer from the log's first-feedback costs (see
        :meth:`BudgetBook.restore_pacers`); returns how many costs were replayed."""
        return self.budgets.restore_pacers(self.settings, first_costs)

    def take_budget_spend(self) -> dict[str, tuple[float, float, int]]:
        """Each budgeted tenant's (period start, spend, requests) recorded here since the last
        call, for the other serving processes (``server.workers`` > 1)."""
        return self.budgets.take_spend()

    def add_budget_spend(self, spend: Mapping[str, tuple[float, float, int]]) -> None:
        """Count what other serving processes recorded (from their ``take_budget_spend``)
        against this process's budgets, so a hard cap holds for the whole server."""
        self.budgets.add_spend(self.settings.access.tenants, spend)

    def budget_status(self, tenant: str) -> BudgetStatus | None:
        """The tenant's budget figures for the current period (None without a budget)."""
        return self.budgets.status(self._tenant(tenant))

    def budget_totals(self, tenant: str) -> BudgetStatus | None:
        """:meth:`budget_status` with the spend and requests of every replica sharing the
        budget (this process's alone without a cluster, or while it cannot be reached)."""
        status = self.budget_status(tenant)
        if status is None or self.shared is None:
            return status
        return self.shared.totals(status)

    # -- Feedback and reward windows (see :mod:`banditroute.settlement`) -------------------------
    def feedback(self, report: FeedbackReport) -> FeedbackResult:
        """Join a feedback to its pending decision, learn per the combine rule, log it
        (:meth:`Settlement.feedback`)."""
        return self._settlement.feedback(report)

    def expire(self, now: float | None = None) -> int:
        """Settle every decision whose reward window has closed; returns how many."""
        return self._settlement.expire(now)

    def is_pending(self, decision_id: str) -> bool:
        """Whether ``decision_id`` waits here for feedback (:meth:`Settlement.is_pending`)."""
        return self._settlement.is_pending(decision_id)

    def settle_joined(self, decision_ids: Iterable[str]) -> int:
        """Mark pending decisions the cluster's trainer joined and learned as learned here
        too; returns how many (:meth:`Settlement.settle_joined`)."""
        return self._settlement.settle_joined(decision_ids)

    @property
    def pending_count(self) -> int:
        """Decisions currently waiting for feedback."""
        return self._settlement.count

    def restore_pending(self) -> int:
        """Reload decisions still inside their reward window from the log (after a restart),
        settling those whose window closed meanwhile; returns how many were reloaded
        (:meth:`Settlement.restore`)."""
        return self._settlement.restore()

    def live_sessions(self) -> int:
        """Sessions not yet expired (see :mod:`banditroute.sessions`)."""
        return self.sessions.live(self._clock(), self.settings.sessions)


def _model_limits(settings: Settings) -> dict[str, ModelLimits]:
    """Each catalogue model's load limits, for the health tracker."""
    return {
        m.id: ModelLimits(m.requests_per_minute, m.tokens_per_minute, m.max_in_flight)
        for m in settings.catalog
    }


__all__ = [
    "DecisionIds", "OutcomeStatus", "Pending", "Router", "decision_owner", "sample_index",
]  # fmt: skip
