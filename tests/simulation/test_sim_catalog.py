"""The run's catalogue: matching table models to the configured catalogue, fitting prices,
deriving costs and token counts, and saying how."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from banditroute.catalog import match_model, normalise
from banditroute.config import Settings
from banditroute.errors import ConfigError
from banditroute.outcome_tables import OutcomeTable, table_from_rows
from banditroute.simulation.catalog import build_run_catalog


def test_prices_are_fitted_from_realised_cost_and_response_length(
    synthetic: Callable[..., OutcomeTable],
    synthetic_models: dict[str, tuple[float, float]],
    default_settings: Settings,
) -> None:
    """With response lengths, least squares on (input, output) tokens recovers the prices."""
    run = build_run_catalog(synthetic(60), default_settings.catalog)
    for model, (price_in, price_out) in synthetic_models.items():
        spec = run.catalog.get(model)
        assert spec.input_usd_per_mtok == pytest.approx(price_in, rel=1e-6)
        assert spec.output_usd_per_mtok == pytest.approx(price_out, rel=1e-6)
    assert any("prices fitted" in note for note in run.notes)
    assert any("the table's realised cost_usd" in note for note in run.notes)


def test_without_response_length_output_tokens_are_implied_by_cost(
    synthetic: Callable[..., OutcomeTable], default_settings: Settings
) -> None:
    """Without lengths the fit is input tokens plus a constant, and each call's output tokens
    are what its cost implies; the derived cost is still the realised one."""
    table = synthetic(60, with_response=False)
    run = build_run_catalog(table, default_settings.catalog)
    np.testing.assert_allclose(run.cost_usd, table.cost_usd)
    assert np.all(run.output_tokens >= 0)
    assert any("implied by each call's cost" in note for note in run.notes)


def test_models_are_matched_by_normalised_name_and_priced_from_the_catalogue(
    default_settings: Settings,
) -> None:
    """RouteLLM's Mixtral id matches the catalogue's Mixtral; with no cost in the table, cost
    is the catalogue price of the prompt's tokens and the typical output."""
    assert normalise("mistralai/Mixtral-8x7B-Instruct-v0.1") == normalise(
        "mistralai/mixtral-8x7b-chat"
    )
    assert match_model("claude-v1", default_settings.catalog) is not None
    assert match_model("nobody/unknown-model", default_settings.catalog) is None
    rows = [
        {"prompt_id": f"p{i}", "task": "t", "prompt": "x" * 385, "model": model, "quality": 1.0}
        for i in range(3)
        for model in ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")
    ]
    run = build_run_catalog(table_from_rows("r", rows), default_settings.catalog)
    gpt4 = default_settings.catalog.get("gpt-4-1106-preview")
    expected = gpt4.price(100, gpt4.typical_output_tokens)
    assert run.cost_usd[0, 0] == pytest.approx(expected)
    assert any("mixtral-8x7b-chat" in note for note in run.notes)
    assert any("priced from catalogue prices" in note for note in run.notes)


def test_a_model_without_cost_or_catalogue_entry_is_an_error_naming_the_argument(
    default_settings: Settings,
) -> None:
    """Nothing can price such a model: ConfigError naming --outcomes."""
    rows = [{"prompt_id": "p", "task": "t", "prompt": "hi", "model": "x/y", "quality": 1.0}]
    with pytest.raises(ConfigError, match="no cost") as error:
        build_run_catalog(table_from_rows("r", rows), default_settings.catalog)
    assert error.value.field == "--outcomes"
