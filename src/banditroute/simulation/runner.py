"""Stream an outcome table through the in-process :class:`~banditroute.router.Router`.

Per seed: a fresh policy and router (a fake clock, decision ids ``"<seed>-<step>"``, the
router's sampling seeded by the seed), optionally a warm start (with a budget, the pacer's
multiplier is first estimated from the warm-start log: :func:`warm_multiplier`), then the
prompts in a seeded random order. Each prompt is routed with only its text and the objective's
name; the environment then reveals the chosen model's outcome, and only that outcome is reported
back with ``Feedback``. Seeds run in parallel worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from banditroute.catalog import Catalog, ModelSpec
from banditroute.config import Settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.eligibility import eligible_models
from banditroute.features import PromptFeatures, extract
from banditroute.objectives import BudgetPacer, Objective
from banditroute.outcome_tables import FloatMatrix, IntVector, OutcomeTable
from banditroute.outcomes import Fragments
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.router import Router
from banditroute.semantic import semantic_embedder
from banditroute.simulation.catalog import RunCatalog
from banditroute.simulation.environment import LatencyModel, ReplayEnvironment
from banditroute.simulation.policies import OraclePolicy, build_policy, embedding_components
from banditroute.store.base import COMMITTED, Commit, EventLog
from banditroute.store.memory import MemoryLog
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord

WarmMode = Literal["bandit", "full"]
START_TIME = 1_700_000_000.0
"""The fake clock's start (seconds since the epoch); it advances one second per prompt."""
SIMULATION_OBJECTIVE = "simulation"
"""Name under which the run's objective is added to the settings' profiles."""


class NullLog(MemoryLog):
    """An event log that keeps no decisions, feedback or settlements (a simulation needs none
    and would otherwise hold every row in memory); feedback commits at once."""

    def append_decision(self, record: DecisionRecord) -> None:
        """Drop the decision."""

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        """Drop the feedback; it is 'committed' immediately."""
        return COMMITTED

    def append_settlement(self, record: SettlementRecord) -> None:
        """Drop the settlement."""


class FakeClock:
    """A clock the runner advances by hand."""

    def __init__(self, start: float = START_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass(frozen=True)
class Outcomes:
    """The per-call arrays of one table: quality, cost and output tokens, ``(prompts, models)``."""

    table: OutcomeTable
    cost_usd: FloatMatrix
    output_tokens: FloatMatrix

    @classmethod
    def from_run(cls, table: OutcomeTable, run: RunCatalog) -> Outcomes:
        """The table with the costs and token counts derived for the run."""
        return cls(table, run.cost_usd, run.output_tokens)


@dataclass(frozen=True)
class WarmStart:
    """Outcomes the policy learns from before the stream, and how."""

    outcomes: Outcomes
    mode: WarmMode
    path: str = ""


ChangeKind = Literal["add", "degrade", "price"]


@dataclass(frozen=True)
class ModelChange:
    """A change to one model in the middle of a stream (the model-change scenarios).

    ``add``: the model is excluded from every request before ``step`` (a model added to the
    catalogue then); ``degrade``: from ``step`` on, the model's quality on every prompt is
    multiplied by ``factor``; ``price``: from ``step`` on, its realised costs and its catalogue
    prices are multiplied by ``factor`` (the router is told, as a config reload would).
    """

    kind: ChangeKind
    model: str
    step: int
    factor: float = 1.0


@dataclass(frozen=True)
class RunSpec:
    """Everything one seed needs (picklable, sent once to each worker process)."""

    outcomes: Outcomes
    settings: Settings
    objective: Objective
    policy: str
    latency: LatencyModel
    warm: WarmStart | None = None
    changes: tuple[ModelChange, ...] = ()


@dataclass(frozen=True)
class SeedTrace:
    """What happened at each step of one seed's stream (arrays in stream order)."""

    seed: int
    order: IntVector
    chosen: IntVector
    probability: FloatMatrix
    quality: FloatMatrix
    cost_usd: FloatMatrix
    latency_ms: FloatMatrix
    multiplier: FloatMatrix
    latency_all: FloatMatrix
    revealed: int
    warm_updates: int
    wall_s: float
    warm_multiplier: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def objective_rewards(objective: Objective, quality: Any, cost: Any, latency: Any) -> Any:
    """The objective's reward (no pacing surcharge) of outcomes given as arrays."""
    return objective.quality * quality - objective.cost * cost - objective.latency * latency


def oracle_choice(objective: Objective, quality: Any, cost: Any, latency: Any) -> IntVector:
    """Per prompt, the model with the highest reward; ties go to the cheapest."""
    rewards = objective_rewards(objective, quality, cost, latency)
    top = rewards.max(axis=1, keepdims=True)
    masked = np.where(rewards >= top - 1e-12, cost, np.inf)
    return np.asarray(np.argmin(masked, axis=1), dtype=np.int64)


def run_settings(settings: Settings, run: RunCatalog, objective: Objective) -> Settings:
    """The settings of a run: the run's catalogue, and the objective as a named profile that is
    also the default one. Default because a cost-pricing policy learns outside a decision (the
    warm start) at the default objective's multiplier: any other default would learn the warm
    start's rewards, priced at the run's multiplier, back at 0 and so charge cost twice."""
    policy = settings.policy
    if policy.kind == "fixed" and policy.fixed_model not in run.catalog:
        policy = replace(policy, fixed_model=None, kind="uniform")
    return replace(
        settings,
        catalog=run.catalog,
        objectives={**settings.objectives, SIMULATION_OBJECTIVE: objective},
        default_objective=SIMULATION_OBJECTIVE,
        policy=replace(policy, snapshot_path=None),
    )


@dataclass(frozen=True)
class LoggedOutcome:
    """One warm-start observation: a prompt (its row in the table and its features), its
    eligible models, the logged model's index among them, the logging probability and the
    outcome (only the logged model's)."""

    prompt: int
    features: PromptFeatures
    arms: tuple[ModelSpec, ...]
    chosen: int
    probability: float
    fragments: Fragments


def warm_log(spec: RunSpec, warm: WarmStart, seed: int) -> list[LoggedOutcome]:
    """The warm-start table as a log: in a seeded order, one uniform-random eligible model's
    outcome per prompt (bandit) or every eligible model's (full), among the models the table
    has."""
    table = warm.outcomes.table
    catalog = spec.settings.catalog
    column = {model: k for k, model in enumerate(table.models)}
    # The warm table's own models, in its column order (it may lack a model added later).
    priors = [catalog.get(model) for model in table.models]
    warm_latency = replace(
        spec.latency,
        ttft_ms=tuple(m.ttft_ms for m in priors),
        tokens_per_s=tuple(m.tokens_per_s for m in priors),
    )
    latency = warm_latency.sample(warm.outcomes.output_tokens, seed + 7_919)
    rng = np.random.default_rng([seed, 0x3A7])
    feature_chars = spec.settings.server.feature_chars
    embedder = semantic_embedder(spec.settings, embedding_components(spec.policy))
    log: list[LoggedOutcome] = []
    for i in rng.permutation(table.n_prompts):
        features = extract(table.prompts[i], feature_chars=feature_chars, embedder=embedder)
        # Models the warm-start table lacks (one added to the catalogue later) did not exist
        # then: they are not among the arms the warm-start decisions were made over.
        arms = tuple(a for a in eligible_models(catalog, features).eligible if a.id in column)
        if warm.mode == "bandit":
            picks = [int(rng.integers(len(arms)))]
            probability = 1.0 / len(arms)
        else:
            picks = list(range(len(arms)))
            probability = 1.0
        for a in picks:
            k = column[arms[a].id]
            fragments = Fragments(
                float(table.quality[i, k]),
                float(warm.outcomes.cost_usd[i, k]),
                float(latency[i, k]),
            )
            log.append(LoggedOutcome(int(i), features, arms, a, probability, fragments))
    return log


def warm_multiplier(log: list[LoggedOutcome], objective: Objective, pacer: BudgetPacer) -> float:
    """The budget multiplier at which greedy routing of the logged prompts meets the budget.

    Estimated from the log alone, so the stream starts at its cost level instead of letting
    the multiplier climb from 0 while the first requests overspend, and so the warm start's
    rewards are priced as the stream's will be. A fresh :class:`CostAwarePolicy` learns each
    model's value from the log; a model's cost is its catalogue estimate times the ratio of
    realised to estimated cost over its logged outcomes; the multiplier is found by bisection
    on the mean cost of each prompt's best model at that price (mean cost falls as it rises).
    """
    probe = CostAwarePolicy()
    spent: dict[str, float] = {}
    estimated: dict[str, float] = {}
    prompts: dict[int, LoggedOutcome] = {}
    for entry in log:
        probe.learn(
            entry.features, entry.arms, entry.chosen, entry.probability,
            objective.reward(entry.fragments),
        )  # fmt: skip
        arm = entry.arms[entry.chosen]
        cost = entry.fragments.cost_usd
        if cost is not None:
            spent[arm.id] = spent.get(arm.id, 0.0) + cost
            estimated[arm.id] = estimated.get(arm.id, 0.0) + arm.price(
                entry.features.tokens, arm.typical_output_tokens
            )
        prompts.setdefault(entry.prompt, entry)
    if not prompts:
        return 0.0
    width = max(len(entry.arms) for entry in prompts.values())
    value = np.full((len(prompts), width), -np.inf)
    cost_usd = np.zeros((len(prompts), width))
    for row, entry in enumerate(prompts.values()):
        mean, cost_hat = probe.value_estimates(entry.features, entry.arms)
        ratio = [
            spent[arm.id] / estimated[arm.id] if estimated.get(arm.id, 0.0) > 0 else 1.0
            for arm in entry.arms
        ]
        value[row, : len(entry.arms)] = mean
        cost_usd[row, : len(entry.arms)] = cost_hat * np.array(ratio)
    rows = np.arange(len(prompts))

    def mean_cost(lam: float) -> float:
        best = np.argmax(value - lam * cost_usd, axis=1)
        return float(cost_usd[rows, best].mean())

    low, high = 0.0, 100.0 * pacer.scale
    if mean_cost(low) <= pacer.budget_usd:
        return 0.0
    if mean_cost(high) > pacer.budget_usd:
        return high
    for _ in range(60):
        middle = 0.5 * (low + high)
        if mean_cost(middle) > pacer.budget_usd:
            low = middle
        else:
            high = middle
    return high


def _warm_start(
    policy: Policy, spec: RunSpec, warm: WarmStart, seed: int, pacer: BudgetPacer | None
) -> int:
    """Learn from the warm-start table; returns the number of learning updates.

    With a budget, the pacer's multiplier is first set to :func:`warm_multiplier` and the
    logged rewards are priced at it, as the router prices the stream's.
    """
    log = warm_log(spec, warm, seed)
    multiplier = 0.0
    if pacer is not None:
        multiplier = pacer.lam = warm_multiplier(log, spec.objective, pacer)
    for entry in log:
        reward = spec.objective.reward(entry.fragments, extra_cost_weight=multiplier)
        policy.learn_logged(entry.features, entry.arms, entry.chosen, entry.probability, reward)
    return len(log)


def run_seed(
    spec: RunSpec,
    seed: int,
    progress: Callable[[int], object] | None = None,
    *,
    event_log: EventLog | None = None,
) -> SeedTrace:
    """One seed: build router and policy, warm-start, stream every prompt once. The router
    logs to ``event_log`` when given (to replay the stream's log later), else nowhere."""
    started = time.perf_counter()
    outcomes = spec.outcomes
    table = outcomes.table
    n = table.n_prompts
    policy = build_policy(spec.policy, spec.settings, seed=seed)
    clock = FakeClock()
    steps = iter(range(10**12))
    router = Router(
        spec.settings,
        policy,
        NullLog() if event_log is None else event_log,
        clock=clock,
        new_id=lambda: f"{seed}-{next(steps):07d}",
        seed=seed,
        embedder=semantic_embedder(spec.settings, embedding_components(spec.policy)),
    )
    objective = spec.settings.objective(SIMULATION_OBJECTIVE)
    pacer = router.pacer(objective)  # the router prices each decision at its multiplier
    warm_updates = 0
    warm_lam = 0.0
    if spec.warm is not None:
        warm_updates = _warm_start(policy, spec, spec.warm, seed, pacer)
        warm_lam = pacer.lam if pacer is not None else 0.0
    latency = spec.latency.sample(outcomes.output_tokens, seed)
    quality_now, cost_now = table.quality, outcomes.cost_usd
    env = ReplayEnvironment(quality_now, cost_now, latency, outcomes.output_tokens)
    column = {model: k for k, model in enumerate(table.models)}
    oracle = (
        oracle_choice(objective, table.quality, outcomes.cost_usd, latency)
        if isinstance(policy, OraclePolicy)
        else None
    )
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    chosen = np.zeros(n, dtype=np.int64)
    probability = np.zeros(n)
    quality = np.zeros(n)
    cost = np.zeros(n)
    lat = np.zeros(n)
    lam = np.zeros(n)
    reported = 0
    for step, i in enumerate(order):
        if oracle is not None and isinstance(policy, OraclePolicy):
            policy.target = table.models[int(oracle[i])]
        for change in spec.changes:
            if change.step == step and change.kind != "add":
                quality_now, cost_now = _apply_change(
                    change, column[change.model], router, quality_now, cost_now
                )
                env.swap(quality_now, cost_now)
        excluded = tuple(c.model for c in spec.changes if c.kind == "add" and step < c.step)
        decision = router.route(
            RouteQuery(
                prompt=table.prompts[i], objective=SIMULATION_OBJECTIVE, excluded_models=excluded
            )
        )
        k = column[decision.model]
        outcome = env.reveal(int(i), k)
        router.feedback(
            FeedbackReport(
                decision.decision_id,
                quality=outcome.quality,
                cost_usd=outcome.cost_usd,
                latency_ms=outcome.latency_ms,
            )
        )
        chosen[step] = k
        probability[step] = decision.probability
        quality[step] = outcome.quality
        cost[step] = outcome.cost_usd
        lat[step] = outcome.latency_ms
        lam[step] = pacer.lam if pacer is not None else 0.0
        clock.advance(1.0)
        if progress is not None and (step + 1) % 100 == 0:
            progress(100)
            reported += 100
    if progress is not None and n > reported:
        progress(n - reported)
    return SeedTrace(
        seed=seed,
        order=order,
        chosen=chosen,
        probability=probability,
        quality=quality,
        cost_usd=cost,
        latency_ms=lat,
        multiplier=lam,
        latency_all=latency,
        revealed=env.revealed,
        warm_updates=warm_updates,
        warm_multiplier=warm_lam,
        wall_s=time.perf_counter() - started,
    )


def _apply_change(
    change: ModelChange, column: int, router: Router, quality: FloatMatrix, cost: FloatMatrix
) -> tuple[FloatMatrix, FloatMatrix]:
    """The outcome arrays after a ``degrade`` or ``price`` change (the router told of prices)."""
    if change.kind == "degrade":
        quality = quality.copy()
        quality[:, column] *= change.factor
        return quality, cost
    cost = cost.copy()
    cost[:, column] *= change.factor
    spec = router.settings.catalog.get(change.model)
    priced = replace(
        spec,
        input_usd_per_mtok=spec.input_usd_per_mtok * change.factor,
        output_usd_per_mtok=spec.output_usd_per_mtok * change.factor,
    )
    models = tuple(priced if m.id == change.model else m for m in router.settings.catalog)
    router.reload(replace(router.settings, catalog=Catalog(models)))
    return quality, cost


# -- parallel seeds -------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}
"""A worker process's run spec and progress queue, set once by :func:`_init_worker`."""


def _init_worker(spec: RunSpec, progress_queue: Any) -> None:
    _WORKER["spec"] = spec
    _WORKER["queue"] = progress_queue


def _worker_run(seed: int) -> SeedTrace:
    progress_queue = _WORKER["queue"]
    return run_seed(_WORKER["spec"], seed, progress_queue.put)


def run_seeds(
    spec: RunSpec,
    seeds: list[int],
    *,
    workers: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[SeedTrace]:
    """Run every seed (in ``workers`` processes; in this process when 1), in seed order."""
    workers = min(len(seeds), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [run_seed(spec, seed, progress) for seed in seeds]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    progress_queue = context.Queue()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(spec, progress_queue),
    ) as pool:
        futures = [pool.submit(_worker_run, seed) for seed in seeds]
        while not all(f.done() for f in futures):
            try:
                done = progress_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if progress is not None:
                progress(done)
        traces = [f.result() for f in futures]
    while True:
        try:
            done = progress_queue.get_nowait()
        except queue.Empty:
            break
        if progress is not None:
            progress(done)
    progress_queue.close()
    progress_queue.join_thread()
    return traces
