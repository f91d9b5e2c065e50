"""The simulator's invariants: the router sees only the prompt and only the chosen outcome;
scores against the oracle and the best fixed model are right; budgets hold; learning wins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from banditroute.config import Settings
from banditroute.errors import ConfigError
from banditroute.objectives import BudgetPacer, Objective
from banditroute.outcome_tables import OutcomeTable
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.simulation import (
    SimulationConfig,
    oracle_choice,
    prepare,
    run_seed,
    runner,
    simulate,
)
from banditroute.simulation.results import best_fixed_model
from banditroute.simulation.runner import SIMULATION_OBJECTIVE, RunSpec, warm_log, warm_multiplier

QUALITY_ONLY = "quality=1,cost=0,latency=0"


def _results(summary: dict[str, object]) -> list[dict[str, object]]:
    """The per-seed results without their wall times."""
    seeds = summary["per_seed"]
    assert isinstance(seeds, list)
    return [{k: v for k, v in s.items() if k != "wall_s"} for s in seeds]


def _run(table: OutcomeTable, settings: Settings, **kwargs: object) -> dict[str, object]:
    config = SimulationConfig(outcomes=table, workers=1, **kwargs)  # type: ignore[arg-type]
    return simulate(config, settings).summary


def test_only_the_chosen_outcome_is_revealed_and_others_cannot_matter(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Each prompt reveals exactly one cell; rewriting every cell the router did not choose
    (quality and cost of the other models) leaves every decision and outcome unchanged."""
    table = synthetic(150)
    spec, _ = prepare(
        SimulationConfig(outcomes=table, policy="costaware", objective=QUALITY_ONLY, seeds=1),
        default_settings,
    )
    first = run_seed(spec, seed=4)
    assert first.revealed == table.n_prompts
    chosen = np.zeros_like(table.quality, dtype=bool)
    chosen[first.order, first.chosen] = True
    flipped = table.quality.copy()
    flipped[~chosen] = 1.0 - flipped[~chosen]
    cost = spec.outcomes.cost_usd.copy()
    cost[~chosen] *= 7.0
    other_table = replace(table, quality=flipped)
    other = replace(spec, outcomes=replace(spec.outcomes, table=other_table, cost_usd=cost))
    second = run_seed(other, seed=4)
    np.testing.assert_array_equal(second.chosen, first.chosen)
    np.testing.assert_array_equal(second.quality, first.quality)
    np.testing.assert_array_equal(second.probability, first.probability)
    # ... while the full-information comparators do change.
    assert (
        oracle_choice(spec.objective, flipped, cost, first.latency_all).tolist()
        != (
            oracle_choice(spec.objective, table.quality, spec.outcomes.cost_usd, first.latency_all)
        ).tolist()
    )


def test_the_router_never_sees_the_task_label(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Relabelling every prompt's task changes nothing the router does."""
    table = synthetic(90)
    relabelled = replace(table, tasks=tuple("same" for _ in table.tasks))
    a = _run(table, default_settings, policy="costaware", objective=QUALITY_ONLY, seeds=1)
    b = _run(relabelled, default_settings, policy="costaware", objective=QUALITY_ONLY, seeds=1)
    assert _results(a) == _results(b)


def test_oracle_and_best_fixed_are_computed_from_the_full_table(
    default_settings: Settings,
) -> None:
    """On a hand-made table the oracle takes the best model per prompt (ties to the cheapest)
    and the best fixed model is the best single model within the budget."""
    from banditroute.outcome_tables import table_from_rows

    # quality per prompt for models a (cheap), b (mid), c (dear)
    grid = {"p0": (1.0, 1.0, 1.0), "p1": (0.0, 1.0, 1.0), "p2": (0.0, 0.0, 1.0), "p3": (0, 0, 0)}
    prices = {"x/a": 0.001, "x/b": 0.002, "x/c": 0.01}
    rows = [
        {
            "prompt_id": pid,
            "task": "t",
            "prompt": f"Question {pid}?",
            "model": model,
            "quality": float(q),
            "cost_usd": prices[model],
        }
        for pid, qs in grid.items()
        for model, q in zip(prices, qs, strict=True)
    ]
    table = table_from_rows("hand", rows)
    summary = _run(table, default_settings, policy="uniform", objective=QUALITY_ONLY, seeds=2)
    oracle = summary["oracle"]
    assert isinstance(oracle, dict)
    assert oracle["quality"] == pytest.approx(3 / 4)
    assert oracle["cost_usd"] == pytest.approx((0.001 + 0.002 + 0.01 + 0.001) / 4)
    models = summary["models"]
    assert isinstance(models, dict)
    assert models["x/c"]["quality"] == pytest.approx(3 / 4)
    assert models["x/a"]["cost_usd"] == pytest.approx(0.001)
    best = summary["best_fixed"]
    assert isinstance(best, dict)
    assert best["model"] == "x/c"  # no budget, quality-only: the best single model
    budgeted = _run(
        table, default_settings, policy="uniform", objective=QUALITY_ONLY, budget_usd=0.005
    )
    assert budgeted["best_fixed"]["model"] == "x/b"  # type: ignore[index]
    mean = {"x/a": {"quality": 0.25, "cost_usd": 0.001, "reward": 0.25}}
    assert best_fixed_model(mean, Objective("q"), 1e-9) == "x/a"  # none within: cheapest


def test_summary_has_every_key_with_its_spread(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """The JSON summary carries the issue's keys, each mean with a ``_std`` beside it."""
    summary = _run(synthetic(60), default_settings, policy="uniform", seeds=2, budget_usd=0.001)
    for key in (
        "prompts", "seeds", "policy", "budget_usd", "quality", "cost_usd", "latency_ms",
        "quality_last_half", "cost_usd_last_half", "oracle", "best_fixed", "models",
        "regret_vs_oracle", "regret_vs_best_fixed",
    ):  # fmt: skip
        assert key in summary, key
    for key in (
        "quality", "cost_usd", "latency_ms", "quality_last_half", "regret_vs_oracle",
        "regret_vs_best_fixed_last_half",
    ):  # fmt: skip
        assert f"{key}_std" in summary
    assert summary["prompts"] == 60
    assert summary["seeds"] == 2
    assert set(summary["oracle"]) >= {"quality", "cost_usd", "quality_std"}  # type: ignore[arg-type]
    assert set(summary["best_fixed"]) >= {"model", "quality", "cost_usd"}  # type: ignore[arg-type]
    assert summary["revealed_per_prompt"] == 1.0
    assert any("latency: simulated" in n for n in summary["derivation"])  # type: ignore[attr-defined]


def test_same_seeds_give_the_same_run_in_processes_or_not(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Runs are reproducible: the same seeds give identical per-seed results whether they run
    in this process or in two worker processes."""
    table = synthetic(60)
    config = SimulationConfig(outcomes=table, policy="costaware", seeds=2, budget_usd=0.001)
    inline = simulate(replace(config, workers=1), default_settings).summary
    parallel = simulate(replace(config, workers=2), default_settings).summary
    assert _results(inline) == _results(parallel)


def test_budget_is_respected_on_synthetic_data(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """With a budget well under the dear model's cost, pacing keeps the mean cost within 5% of
    it while quality beats every single model that fits the budget."""
    table = synthetic(600)
    summary = _run(table, default_settings, policy="costaware", budget_usd=0.0003, seeds=2)
    assert summary["cost_usd"] <= 1.05 * 0.0003  # type: ignore[operator]
    assert summary["quality"] > summary["best_fixed"]["quality"] + 0.1  # type: ignore[index,operator]
    assert summary["objective"]["name"] == "max-quality"  # type: ignore[index]


@pytest.mark.parametrize("policy", ["vw-squarecb", "costaware"])
def test_learning_router_beats_the_best_fixed_model(
    policy: str, synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Where each task has a different best model, the learner (VW squarecb or the cost-aware
    policy) ends clearly above the best single model, and far above uniform random."""
    table = synthetic(600)
    summary = _run(table, default_settings, policy=policy, objective=QUALITY_ONLY, seeds=2)
    uniform = _run(table, default_settings, policy="uniform", objective=QUALITY_ONLY, seeds=1)
    best = summary["best_fixed"]["quality"]  # type: ignore[index]
    assert summary["quality_last_half"] > best + 0.05  # type: ignore[operator]
    assert summary["quality"] > uniform["quality"] + 0.15  # type: ignore[operator]


def test_oracle_policy_reaches_the_oracle(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """The simulator-only oracle policy, routed through the router, scores the oracle."""
    summary = _run(synthetic(60), default_settings, policy="oracle", objective=QUALITY_ONLY)
    assert summary["quality"] == pytest.approx(summary["oracle"]["quality"])  # type: ignore[index]
    assert summary["regret_vs_oracle"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mode", ["bandit", "full"])
def test_warm_start_learns_first_and_says_how(
    mode: str, synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Warm start learns from the other table first, one uniform-random model per prompt
    (bandit) or every model (full), and the output says which; it helps the stream."""
    warm_table = synthetic(300, seed=11)
    stream = synthetic(90, seed=12)
    kwargs = {"policy": "costaware", "objective": QUALITY_ONLY, "seeds": 2}
    cold = _run(stream, default_settings, **kwargs)
    warm = _run(stream, default_settings, warm_start=warm_table, warm_start_mode=mode, **kwargs)
    info = warm["warm_start"]
    assert isinstance(info, dict)
    assert info["mode"] == mode
    assert info["updates"] == 300 * (1 if mode == "bandit" else 4)
    assert ("uniform-random" in info["description"]) == (mode == "bandit")
    assert info["multiplier"] == 0.0  # no budget, nothing to pace
    assert warm["quality"] > cold["quality"]  # type: ignore[operator]


def test_warm_start_with_other_models_is_rejected_naming_the_argument(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """A warm-start table whose models differ from the streamed table's is a ConfigError."""
    stream = synthetic(30)
    keep = [0, 1, 2]
    other = replace(
        stream,
        models=stream.models[:3],
        quality=stream.quality[:, keep],
        cost_usd=stream.cost_usd[:, keep],
        input_tokens=stream.input_tokens[:, keep],
        output_tokens=stream.output_tokens[:, keep],
        response_chars=stream.response_chars[:, keep],
    )
    with pytest.raises(ConfigError) as error:
        prepare(SimulationConfig(outcomes=stream, warm_start=other), default_settings)
    assert error.value.field == "--warm-start"


def _warm_spec(
    synthetic: Callable[..., OutcomeTable], settings: Settings, mode: str, budget_share: float
) -> tuple[RunSpec, float]:
    """A warm-started costaware run on synthetic tables, with a budget that is a share of the
    mean cost of a mid-priced model (the budget binds below 1); also returns the budget."""
    config = SimulationConfig(
        outcomes=synthetic(90, seed=12),
        policy="costaware",
        objective=QUALITY_ONLY,
        budget_usd=1.0,
        seeds=1,
        warm_start=synthetic(300, seed=11),
        warm_start_mode=mode,  # type: ignore[arg-type]
    )
    spec, _ = prepare(config, settings)
    assert spec.warm is not None
    coder = spec.warm.outcomes.table.models.index("synth/coder")
    budget = budget_share * float(spec.warm.outcomes.cost_usd[:, coder].mean())
    spec, _ = prepare(replace(config, budget_usd=budget), settings)
    return spec, budget


def test_warm_multiplier_is_estimated_from_the_log_and_starts_the_stream(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """The budget multiplier estimated from a warm-start log rises as the budget tightens and
    is 0 when no model costs more than the budget; the stream's pacer starts from it."""
    spec, budget = _warm_spec(synthetic, default_settings, "bandit", 0.5)
    assert spec.warm is not None
    log = warm_log(spec, spec.warm, seed=0)
    lams = [
        warm_multiplier(log, spec.objective, BudgetPacer(share * budget))
        for share in (0.5, 1.0, 100.0)
    ]
    assert lams[0] > lams[1] > 0.0 == lams[2]
    trace = run_seed(spec, seed=0)
    assert trace.warm_multiplier == pytest.approx(lams[1])
    pacer = BudgetPacer(budget, spec.objective.pacing_rate)
    one_step = pacer.rate * pacer.scale * float(spec.outcomes.cost_usd.max()) / budget
    assert abs(trace.multiplier[0] - lams[1]) <= one_step
    cold = run_seed(replace(spec, warm=None), seed=0)
    assert cold.warm_multiplier == 0.0
    assert cold.multiplier[0] <= one_step < lams[1]


def _first_values(spec: RunSpec, monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """The cost-aware policy's price-free values and cost estimates at the stream's first
    prompt, read before it decides (after the warm start, before any of the stream)."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    build = runner.build_policy

    def spy(*args: object, **kwargs: object) -> object:
        policy = build(*args, **kwargs)  # type: ignore[arg-type]
        assert isinstance(policy, CostAwarePolicy)
        decide = policy.distribution

        def first(features: object, arms: object, **options: object) -> object:
            if not seen:
                seen.append(policy.value_estimates(features, arms))  # type: ignore[arg-type]
            return decide(features, arms, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(policy, "distribution", first)
        return policy

    monkeypatch.setattr(runner, "build_policy", spy)
    run_seed(spec, seed=0)
    return seen[0]


def test_a_budgeted_warm_start_charges_cost_once(
    synthetic: Callable[..., OutcomeTable],
    default_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a budget the warm start prices each logged reward at the warm multiplier, and the
    policy learns it back at that same multiplier: the values it holds when the stream starts
    are the price-free ones a warm start without a budget learns (cost is charged once, when
    deciding; learning the priced rewards back at 0 would charge it twice and underspend)."""
    budgeted, _ = _warm_spec(synthetic, default_settings, "full", 0.5)
    free = replace(budgeted, objective=replace(budgeted.objective, budget_usd=None))
    free = replace(free, settings=replace(
        free.settings,
        objectives={**free.settings.objectives, SIMULATION_OBJECTIVE: free.objective},
    ))  # fmt: skip
    assert run_seed(budgeted, seed=0).warm_multiplier > 0.0
    value, cost_hat = _first_values(budgeted, monkeypatch)
    free_value, _ = _first_values(free, monkeypatch)
    lam = run_seed(budgeted, seed=0).warm_multiplier
    # Values are learned from realised costs and priced at estimates: they may differ by the
    # multiplier times the estimate's error, never by the whole priced cost.
    np.testing.assert_allclose(value, free_value, atol=0.25 * lam * float(cost_hat.max()))


def test_bandit_warm_start_reads_only_the_logged_outcomes(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """A bandit-feedback warm start logs one cell per prompt; rewriting every other cell of
    the warm-start table (quality and cost) changes nothing: not the estimated multiplier,
    not a decision of the stream."""
    spec, _ = _warm_spec(synthetic, default_settings, "bandit", 0.5)
    warm = spec.warm
    assert warm is not None
    table = warm.outcomes.table
    column = {model: k for k, model in enumerate(table.models)}
    logged = np.zeros_like(table.quality, dtype=bool)
    for entry in warm_log(spec, warm, seed=3):
        logged[entry.prompt, column[entry.arms[entry.chosen].id]] = True
    assert logged.sum(axis=1).tolist() == [1] * table.n_prompts
    quality = np.where(logged, table.quality, 1.0 - table.quality)
    cost = np.where(logged, warm.outcomes.cost_usd, 7.0 * warm.outcomes.cost_usd)
    rewritten = replace(
        warm, outcomes=replace(warm.outcomes, table=replace(table, quality=quality), cost_usd=cost)
    )
    first = run_seed(spec, seed=3)
    second = run_seed(replace(spec, warm=rewritten), seed=3)
    assert first.warm_multiplier > 0.0
    assert second.warm_multiplier == first.warm_multiplier
    np.testing.assert_array_equal(second.chosen, first.chosen)
    np.testing.assert_array_equal(second.probability, first.probability)


def test_a_negative_first_seed_is_rejected_naming_the_argument(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Seeds seed numpy generators, which take no negative numbers: a ConfigError up front
    instead of a ValueError traceback from inside a seed's run."""
    with pytest.raises(ConfigError) as error:
        prepare(SimulationConfig(outcomes=synthetic(9), first_seed=-2), default_settings)
    assert error.value.field == "--first-seed"


def test_last_half_regret_is_against_the_same_prompts(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Always routing to the best fixed model has zero regret against it on the last half, and
    uniform routing a positive one equal to the best model's last-half reward minus its own."""
    table = synthetic(120)
    uniform = _run(table, default_settings, policy="uniform", objective=QUALITY_ONLY, seeds=2)
    best = uniform["best_fixed"]["model"]  # type: ignore[index]
    fixed = _run(table, default_settings, policy=f"fixed:{best}", objective=QUALITY_ONLY, seeds=2)
    assert fixed["regret_vs_best_fixed_last_half"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["regret_vs_best_fixed_last_half"] > 0  # type: ignore[operator]
    per_seed = uniform["per_seed"]
    assert isinstance(per_seed, list)
    assert all("reward_last_half" in seed for seed in per_seed)
