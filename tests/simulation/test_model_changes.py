"""Mid-stream model changes in the simulator (add, degrade, price) and costaware:K=V names."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from banditroute.config import Settings
from banditroute.errors import ConfigError
from banditroute.outcome_tables import OutcomeTable, table_from_rows
from banditroute.simulation.policies import validate_policy_name
from banditroute.simulation.runner import ModelChange, run_seed
from banditroute.simulation.simulate import SimulationConfig, prepare

PROMPTS = 40
STEP = 15


def _table() -> OutcomeTable:
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": f"Question {i}: A or B?", "model": model,
         "quality": quality, "cost_usd": cost}
        for i in range(PROMPTS)
        for model, quality, cost in (("x/a", 0.5, 0.001), ("x/b", 0.8, 0.002))
    ]  # fmt: skip
    return table_from_rows("hand", rows)


def _trace(settings: Settings, policy: str, change: ModelChange) -> tuple[np.ndarray, ...]:
    spec, _ = prepare(SimulationConfig(outcomes=_table(), policy=policy), settings)
    trace = run_seed(replace(spec, changes=(change,)), seed=3)
    return trace.chosen, trace.quality, trace.cost_usd


def test_an_added_model_is_never_chosen_before_its_step(default_settings: Settings) -> None:
    """``add``: the model is excluded before the step and chosen after it (uniform routing)."""
    chosen, _, _ = _trace(default_settings, "uniform", ModelChange("add", "x/b", STEP))
    assert not np.any(chosen[:STEP] == 1)
    assert np.any(chosen[STEP:] == 1)


def test_a_degraded_model_reveals_the_lower_quality_from_its_step(
    default_settings: Settings,
) -> None:
    """``degrade``: the model's revealed quality is multiplied by the factor from the step on."""
    chosen, quality, _ = _trace(
        default_settings, "fixed:x/b", ModelChange("degrade", "x/b", STEP, 0.5)
    )
    assert np.all(chosen == 1)
    np.testing.assert_allclose(quality[:STEP], 0.8)
    np.testing.assert_allclose(quality[STEP:], 0.4)


def test_a_price_cut_lowers_realised_costs_from_its_step(default_settings: Settings) -> None:
    """``price``: realised costs are multiplied by the factor from the step on (the router's
    catalogue is reloaded with the new prices at the same step)."""
    _, _, cost = _trace(default_settings, "fixed:x/b", ModelChange("price", "x/b", STEP, 0.25))
    np.testing.assert_allclose(cost[:STEP], 0.002)
    np.testing.assert_allclose(cost[STEP:], 0.0005)


def test_costaware_settings_in_a_policy_name(default_settings: Settings) -> None:
    """``costaware:K=V,...`` takes CostAwarePolicy's numeric settings; an unknown key, a value
    that is not a number or one the policy refuses is a ConfigError naming --policy."""
    catalog = default_settings.catalog
    name = "costaware:drift_delta=0,posterior_scale=0.5"
    assert validate_policy_name(name, catalog) == name
    for bad in ("costaware:bogus=1", "costaware:noise=x", "costaware:noise=-1"):
        with pytest.raises(ConfigError, match="--policy"):
            validate_policy_name(bad, catalog)
