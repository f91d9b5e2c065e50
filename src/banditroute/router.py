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

``route`` and ``feedback`` read as their steps, one method each. What needs no router state
lives in its own module: reading a request (:mod:`~banditroute.route_request`), the choice
and the rows made of it (:mod:`~banditroute.route_choice`), pending decisions and their
rebuilding from the log (:mod:`~banditroute.pending`), rewards
(:mod:`~banditroute.rewards`), budgets and pacers (:mod:`~banditroute.budget_book`), the
audited rows (:mod:`~banditroute.audited_rows`) and decision ids
(:mod:`~banditroute.decision_ids`).
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import structlog

from banditroute import audited_rows, rewards
from banditroute.admission import SharedAdmission, Ticket
from banditroute.audit import AuditChain
from banditroute.audit_record import AuditKind
from banditroute.budget_book import BudgetBook
from banditroute.budgets import BudgetStatus, TenantBudget
from banditroute.catalog import Catalog, ModelSpec
from banditroute.config import Settings
from banditroute.decision_ids import DecisionIds, decision_owner, sample_index
from banditroute.decisions import Decision, Disposition, FeedbackReport, FeedbackResult, RouteQuery
from banditroute.eligibility import Eligibility, eligible_models
from banditroute.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from banditroute.features import Embedder, extract, prompt_hash
from banditroute.health import HealthTracker
from banditroute.load_limits import ModelLimits
from banditroute.objectives import BudgetPacer, Objective
from banditroute.observe import NoObserver, RouterObserver
from banditroute.outcomes import Fragments, OutcomeStatus
from banditroute.pending import Pending, rebuilt, restorable
from banditroute.policies.base import Policy
from banditroute.policies.sharing import SharedUpdate
from banditroute.reload import ConfigChange, config_change
from banditroute.route_choice import Choice, decided, floored, loggable_features, pick, shadow_pick
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
from banditroute.store.base import EventLog, acknowledge
from banditroute.store.records import FeedbackRecord, SettlementRecord
from banditroute.tenancy import Tenant

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 10.0
"""How long Feedback waits for its log commit before answering UNAVAILABLE."""


class _Refusing:
    """A health view that also refuses the models a route's admission found full."""

    def __init__(self, health: HealthTracker, refused: Mapping[str, str]) -> None:
        self._health = health
        self._refused = refused

    def unavailable_reason(self, model: str, tokens: int = 0) -> str | None:
        return self._refused.get(model) or self._health.unavailable_reason(model, tokens)


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
        self._known_models = set(settings.catalog.ids)  # every catalogue's, across reloads
        self.embedder = embedder if embedder is not None else semantic_embedder(settings)
        self.policy = policy
        self.policies: dict[str, Policy] = {"default": policy, **(policies or {})}
        self._previous: Policy | None = None
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
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._by_request: dict[tuple[str, str], str] = {}
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
            self._known_models.update(settings.catalog.ids)
            self.settings = settings
        return change

    # -- promotion ---------------------------------------------------------------------------------
    @property
    def previous_policy(self) -> Policy | None:
        """The policy a promotion replaced, kept as it was for :meth:`rollback` (None if none)."""
        return self._previous

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
            return policy.version, self.audit_event("promotion", policy.version, payload)

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
        previous = self.policy
        self._previous = previous
        self.policy = self.policies["default"] = policy
        return previous

    def _follow(self, policy: Policy) -> None:
        """Let a policy that prices cost itself (or the one a wrapper shares) follow the
        decision's pacing multiplier."""
        for target in (policy, getattr(policy, "inner", None)):
            follow = getattr(target, "follow", None)
            if callable(follow):
                follow(self._decision_multiplier)

    def rollback(self) -> tuple[str, str, int]:
        """Put back the policy the last promotion replaced; FailedPrecondition if none.
        Returns the restored version, the version rolled back, and the audit record's seq."""
        with self._lock:
            previous = self._previous
            if previous is None:
                raise FailedPrecondition(
                    "policy: no promotion to roll back (none since the server started, or "
                    "already rolled back)",
                    field="policy",
                )
            current = self.policy
            self.policy = self.policies["default"] = previous
            self._previous = None
            payload = {"rolled_back_version": current.version, "restored_version": previous.version}
            seq = self.audit_event("rollback", previous.version, payload)
        return previous.version, current.version, seq

    def revert(self) -> str:
        """:meth:`rollback` without an audit record (another serving process of this server
        chains it), and without complaint when there is nothing to put back: the version
        served afterwards."""
        with self._lock:
            previous = self._previous
            if previous is not None:
                self.policy = self.policies["default"] = previous
                self._previous = None
            return self.policy.version

    def audit_event(self, kind: AuditKind, version: str, payload: Mapping[str, Any]) -> int:
        """Chain an audit record that describes no logged row (a promotion's evidence, a
        rollback); returns its seq (0 without auditing)."""
        return audited_rows.log_event(
            self.audit, kind, version, payload, time=self._clock(), eligible=self.catalog.ids
        )

    def swap_policy(self, policy: Policy) -> None:
        """Make ``policy`` the default one (a cluster replica's newer snapshot); call with
        :meth:`locked` held, so a Route decides wholly with the old policy or the new."""
        self._follow(policy)
        self.policy = policy
        self.policies["default"] = policy

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
        replayed = self._replay(query, request_hash)
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
        replayed = self._keep(pending, query, request_hash)
        if replayed is not None:
            return replayed
        if request.session is not None:
            self.sessions.assign(request.session, decision.model, now, settings.sessions)
        audited_rows.log_decision(self.log, self.audit, record)
        self.observer.decided(decision)
        return decision

    def _tenant(self, name: str, settings: Settings | None = None) -> Tenant:
        """The configured tenant; a name the configuration does not list (only possible when
        the Router is driven in-process, since the server authenticates every call) is a
        tenant without restrictions."""
        tenant = (settings or self.settings).access.tenants.get(name)
        return Tenant(name) if tenant is None else tenant

    def _objective(self, query: RouteQuery, tenant: Tenant, settings: Settings) -> Objective:
        """The query's objective (else the tenant's default); InvalidArgument for an unknown
        one, PermissionDenied for one the tenant may not use."""
        name = query.objective or tenant.default_objective
        objective = settings.objective(name)
        tenant.check_objective(objective.name)
        return objective

    def _replay(self, query: RouteQuery, request_hash: str) -> Decision | None:
        """The decision already made for a retried request_id (see :meth:`_replayed`), or None
        for a new request."""
        if not query.request_id:
            return None
        with self._lock:
            return self._replayed(query, request_hash)

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
            eligibility = self._eligibility(request, refused)
            arms = eligibility.eligible
            probabilities, version, shadow = self._score(request, arms)
            # The session's model while it is eligible (and not refused); else a draw.
            chosen, sticky = pick(arms, probabilities, request.held, request.decision_id,
                                  self._seed)  # fmt: skip
            admitted = self._admit(request, arms[chosen])
            if isinstance(admitted, str):
                refused[arms[chosen].id] = admitted
                continue
            return Choice(eligibility, probabilities, version, shadow, chosen, sticky, admitted)

    def _eligibility(self, request: RouteRequest, refused: Mapping[str, str]) -> Eligibility:
        """The models the request may go to (its constraints, tenant, rule, and the models'
        health), less those ``refused`` by admission (with its reason)."""
        settings = request.settings
        return eligible_models(
            settings.catalog,
            request.features,
            request.constraints,
            tenant=request.tenant,
            rule=request.rule,
            language_tagged=settings.language_tagged,
            health=_Refusing(self.health, refused) if refused else self.health,
            expected_latency_ms=functools.partial(
                self._expected_latency, min_samples=settings.health.min_samples
            ),
        )

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

    def _admit(self, request: RouteRequest, model: ModelSpec) -> str | Ticket | None:
        """Admit the chosen model here (in-flight and rate limits) and, in a cluster, with the
        other replicas' share (their spend, load and breakers: one round trip). Returns why
        it was refused, else the cluster's ticket (None without a cluster)."""
        output = request.query.expected_output_tokens
        output = model.typical_output_tokens if output is None else output
        tokens = request.features.conversation_tokens
        why = self.health.try_admit(model.id, tokens, expected_output_tokens=output)
        if why is not None:
            return f"{why} (filled by concurrent routes)"
        if self.shared is None:
            return None
        try:
            admitted = self.shared.admit(request.tenant, model, tokens, output, request.now)
        except BaseException:
            self.health.release(model.id)
            raise
        if isinstance(admitted, str):
            self.health.release(model.id)
        return admitted

    def _keep(self, pending: Pending, query: RouteQuery, request_hash: str) -> Decision | None:
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

    def _expected_latency(self, model: ModelSpec, output_tokens: int, *, min_samples: int) -> float:
        """Median latency measured from feedback once there are ``min_samples`` outcomes (the
        route's own settings'); the prior before."""
        p50 = self.health.latency_p50(model.id, min_samples)
        return model.expected_latency_ms(output_tokens) if p50 is None else float(p50)

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

    # -- Feedback --------------------------------------------------------------------------------
    def feedback(self, report: FeedbackReport) -> FeedbackResult:
        """Join a feedback to its pending decision, learn per the combine rule, log it."""
        if not report.decision_id:
            raise InvalidArgument("decision_id: must not be empty", field="decision_id")
        if report.model and report.model not in self._known_models:
            self.catalog.get(report.model, field="model")  # InvalidArgument naming the field
        self.log.admit()
        self.expire()
        settings = self.settings
        with self._lock:
            pending, tenant, served = self._joined(report, settings)
            fragments = rewards.fragments(report, served, settings.reward)
            first_charge = served.id not in pending.charged
            charged = (fragments.cost_usd or 0.0) if first_charge else 0.0
            # The log keeps this feedback's own reward (restore re-combines them); the caller
            # gets the reward learned so far (combined, for the deferred rules).
            own_reward = self.budgets.reward(
                pending.objective, fragments, tenant,
                first=pending.feedback_count == 0, charge=first_charge,
            )  # fmt: skip
            pending.charged.add(served.id)
            self._outcome(pending, served.id, fragments, tenant)
            reward, disposition = self._dispose(pending, served.id, own_reward, settings)
            pending.feedback_count += 1
            feedback_count = pending.feedback_count
        if charged:
            self.observer.charged(tenant.name, charged)
        if self.shared is not None:  # the other replicas' caps see the charge (or its absence)
            self.shared.spent(tenant.name)
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
        tenant = self._tenant(pending.record.tenant, settings)
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
        self.health.record_outcome(served_id, fragments.status, fragments.latency_ms, tenant.name)
        if pending.record.session:
            self.sessions.outcome(
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
        (Unavailable if it is not within COMMIT_TIMEOUT_S)."""
        commit = audited_rows.log_feedback(self.log, self.audit, pending.record, record)
        if settings.log.sync_feedback:
            acknowledge(commit, COMMIT_TIMEOUT_S)

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
        args = (pending.features, pending.arms, pending.chosen, pending.decision.probability)
        policy = self.policies.get(pending.record.arm)
        if policy is not None:
            policy.learn(*args, reward)
            if self.on_learn is not None and policy is self.policy:
                self.on_learn(
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
            if name in self.policies and self.policies[name] is not policy:
                self.policies[name].learn(*args, reward)
        pending.learned = True

    # -- reward windows ----------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Settle every decision whose reward window has closed; returns how many."""
        now = self._clock() if now is None else now
        cutoff = now - self.settings.reward.window_s
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
        decision_id = pending.decision.decision_id
        self._release(pending)
        if pending.learned:
            return SettlementRecord(decision_id, now, "learned", None)
        if pending.rewards:
            reward = rewards.combine(self.settings.reward.combine, pending.rewards)
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_combined", reward)
        if self.settings.reward.on_missing == "default":
            reward = self.settings.reward.default_reward
            self._learn(pending, reward)
            return SettlementRecord(decision_id, now, "learned_default", reward)
        return SettlementRecord(decision_id, now, "skipped", None)

    def _release(self, pending: Pending) -> None:
        """The decision's admission is over: its in-flight slot here and its shared ticket."""
        if pending.admitted:
            self.health.release(pending.decision.model)
            pending.admitted = False
        ticket, pending.ticket = pending.ticket, None
        if ticket is not None and self.shared is not None:
            self.shared.release(ticket)

    def _log_settlements(self, settled: list[tuple[Pending, SettlementRecord]]) -> None:
        """Log settlement rows (with their audit records when auditing)."""
        audited_rows.log_settlements(self.log, self.audit, ((p.record, r) for p, r in settled))

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
    def pending_count(self) -> int:
        """Decisions currently waiting for feedback."""
        return len(self._pending)

    def restore_pending(self) -> int:
        """Reload decisions still inside their reward window from the log (after a restart);
        returns how many. Unsettled decisions whose window closed while the server was down
        are settled now, as :meth:`expire` would have (their deferred feedback or the default
        reward learned, a settlement row logged)."""
        now = self._clock()
        cutoff = now - self.settings.reward.window_s
        restored = unreadable = 0
        settled: list[tuple[Pending, SettlementRecord]] = []
        settings = self.settings
        for record, feedback in self.log.unsettled(0.0):
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

    def live_sessions(self) -> int:
        """Sessions not yet expired (see :mod:`banditroute.sessions`)."""
        return self.sessions.live(self._clock(), self.settings.sessions)


def _model_limits(settings: Settings) -> dict[str, ModelLimits]:
    """Each catalogue model's load limits, for the health tracker."""
    return {
        m.id: ModelLimits(m.requests_per_minute, m.tokens_per_minute, m.max_in_flight)
        for m in settings.catalog
    }


__all__ = ["DecisionIds", "OutcomeStatus", "Pending", "Router", "decision_owner", "sample_index"]
