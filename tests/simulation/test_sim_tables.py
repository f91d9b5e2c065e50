"""Outcome tables: reading, pivoting, validation and the Parquet round trip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from banditroute.errors import ConfigError
from banditroute.outcome_tables import (
    OutcomeTable,
    load_outcomes,
    table_from_rows,
    write_outcomes,
)


def test_write_then_load_round_trips_every_column(
    synthetic: Callable[..., OutcomeTable], tmp_path: Path
) -> None:
    """A table written to Parquet and read back has the same prompts, models and values."""
    table = synthetic(30)
    path = tmp_path / "t.parquet"
    write_outcomes(table, path)
    loaded = load_outcomes(path)
    assert loaded.prompt_ids == table.prompt_ids
    assert loaded.prompts == table.prompts
    assert loaded.tasks == table.tasks
    assert set(loaded.models) == set(table.models)
    order = [loaded.models.index(m) for m in table.models]
    np.testing.assert_array_equal(loaded.quality[:, order], table.quality)
    np.testing.assert_allclose(loaded.cost_usd[:, order], table.cost_usd)
    np.testing.assert_array_equal(loaded.response_chars[:, order], table.response_chars)
    assert np.all(np.isnan(loaded.output_tokens))


def test_model_order_follows_the_given_order_then_names() -> None:
    """Models listed in ``model_order`` come first in that order, the rest alphabetically."""
    rows = [
        {"prompt_id": "a", "task": "t", "prompt": "hi", "model": m, "quality": 1.0}
        for m in ("zeta", "alpha", "mid")
    ]
    table = table_from_rows("x", rows, model_order=("mid", "unknown"))
    assert table.models == ("mid", "alpha", "zeta")


def test_prompts_not_answered_by_every_model_are_dropped_and_noted() -> None:
    """A prompt missing some model's row is dropped, and the notes say how many."""
    rows = [
        {"prompt_id": "p1", "task": "t", "prompt": "one", "model": "a", "quality": 1.0},
        {"prompt_id": "p1", "task": "t", "prompt": "one", "model": "b", "quality": 0.0},
        {"prompt_id": "p2", "task": "t", "prompt": "two", "model": "a", "quality": 1.0},
    ]
    table = table_from_rows("x", rows)
    assert table.prompt_ids == ("p1",)
    assert any("dropped 1 prompt" in note for note in table.notes)


def test_duplicate_prompt_model_rows_are_rejected() -> None:
    """Two rows for the same (prompt, model) make the table ambiguous: an error, not a guess."""
    row = {"prompt_id": "p1", "task": "t", "prompt": "one", "model": "a", "quality": 1.0}
    with pytest.raises(ConfigError, match="more than one row"):
        table_from_rows("x", [row, dict(row)])


def test_quality_outside_zero_one_is_rejected() -> None:
    """Quality must lie in [0, 1]."""
    rows = [{"prompt_id": "p1", "task": "t", "prompt": "one", "model": "a", "quality": 1.5}]
    with pytest.raises(ConfigError, match=r"quality"):
        table_from_rows("x", rows)


@pytest.mark.parametrize("column", ["cost_usd", "input_tokens", "output_tokens", "response_chars"])
@pytest.mark.parametrize("value", [-1e-6, float("inf")])
def test_negative_or_infinite_costs_and_counts_name_the_argument(
    column: str, value: float, tmp_path: Path
) -> None:
    """A negative or infinite cost or token count is a ConfigError naming --outcomes and the
    column at load (a negative cost crashed the run with an InvalidArgument on feedback)."""
    path = tmp_path / "bad.parquet"
    row = {"prompt_id": "p1", "task": "t", "prompt": "one", "model": "a", "quality": 1.0}
    pq.write_table(pa.Table.from_pylist([{**row, column: value}]), path)
    with pytest.raises(ConfigError, match=rf"--outcomes: .*{column}") as error:
        load_outcomes(path)
    assert error.value.field == "--outcomes"


def test_non_numeric_values_name_the_argument_and_column(tmp_path: Path) -> None:
    """A quality or cost column of text (a CSV converted without types) is a ConfigError
    naming --outcomes and the column, not a ValueError traceback."""
    path = tmp_path / "text.parquet"
    row = {"prompt_id": "p1", "task": "t", "prompt": "one", "model": "a", "quality": "good"}
    pq.write_table(pa.Table.from_pylist([row]), path)
    with pytest.raises(ConfigError, match=r"--outcomes: .*quality.*'good'") as error:
        load_outcomes(path)
    assert error.value.field == "--outcomes"
    row = {**row, "quality": 1.0, "cost_usd": "$0.01"}
    with pytest.raises(ConfigError, match=r"cost_usd.*'\$0.01'"):
        table_from_rows("x", [row])


def test_missing_columns_and_missing_files_name_the_argument(tmp_path: Path) -> None:
    """Unusable files raise ConfigError naming the CLI argument that gave them."""
    with pytest.raises(ConfigError, match="--outcomes: no such file") as missing:
        load_outcomes(tmp_path / "absent.parquet")
    assert missing.value.field == "--outcomes"
    path = tmp_path / "thin.parquet"
    pq.write_table(pa.table({"prompt_id": ["a"], "model": ["m"]}), path)
    with pytest.raises(ConfigError, match=r"--warm-start: .*lacks column") as thin:
        load_outcomes(path, arg="--warm-start")
    assert thin.value.field == "--warm-start"
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet at all")
    with pytest.raises(ConfigError, match="not a Parquet file"):
        load_outcomes(text)


def test_split_gives_disjoint_halves_covering_every_prompt(
    synthetic: Callable[..., OutcomeTable],
) -> None:
    """A seeded split partitions the prompts; the same seed gives the same split."""
    table = synthetic(41)
    first, second = table.split(0.5, seed=3)
    assert set(first.prompt_ids).isdisjoint(second.prompt_ids)
    assert set(first.prompt_ids) | set(second.prompt_ids) == set(table.prompt_ids)
    assert first.n_prompts == 20
    assert table.split(0.5, seed=3)[0].prompt_ids == first.prompt_ids
