"""The shipped example outcome table is the one its committed script writes."""

from __future__ import annotations

import runpy
from pathlib import Path

import pyarrow.parquet as pq

from banditroute.outcome_tables import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, load_outcomes

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_example_table_matches_its_script(tmp_path: Path) -> None:
    """examples/make_outcomes.py (fixed seed) writes exactly the committed
    examples/outcomes_small.parquet, a small table in the outcome format that simulate reads,
    with every column the README documents."""
    out = tmp_path / "outcomes_small.parquet"
    script = runpy.run_path(str(EXAMPLES / "make_outcomes.py"))
    assert script["main"]([str(out)]) == 0
    committed = pq.read_table(EXAMPLES / "outcomes_small.parquet")
    assert pq.read_table(out).equals(committed)
    assert set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) <= set(committed.column_names)
    table = load_outcomes(EXAMPLES / "outcomes_small.parquet")
    assert (table.n_prompts, table.n_models) == (80, 4)
    assert (EXAMPLES / "outcomes_small.parquet").stat().st_size < 64 * 1024
