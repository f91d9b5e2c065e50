"""``simulate``'s terminal table prints every model name whole, however long."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from banditroute.cli import main
from banditroute.simulation.results import format_table


def test_long_and_dotted_model_names_are_not_cut(
    synthetic_file: Callable[..., Path], tmp_path: Path
) -> None:
    """A best fixed model named ``mistralai/Mixtral-8x7B-Instruct-v0.1`` shows as
    ``best fixed: Mixtral-8x7B-Instruct-v0.1`` (it was cut to ``...-v0`` at 36 characters), and
    a model row of 50 characters keeps all of them, its figures still in their columns."""
    out = tmp_path / "run.json"
    argv = ["simulate", "--outcomes", str(synthetic_file(n_prompts=40)), "--policy", "uniform"]
    assert main([*argv, "--seeds", "1", "--no-progress", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    long_name = "vendor/" + "x" * 43
    models = dict(summary["models"])
    first = next(iter(models))
    models[long_name] = models.pop(first)
    summary["models"] = models
    summary["best_fixed"]["model"] = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    lines = format_table(summary).splitlines()
    assert any(line.startswith("best fixed: Mixtral-8x7B-Instruct-v0.1 ") for line in lines)
    row = next(line for line in lines if line.startswith(long_name))
    header = next(line for line in lines if line.lstrip().startswith("quality"))
    assert row[len(long_name)] == " "
    # The quality figure ("0.6500 ± 0.0000") ends where the right-aligned header word does.
    assert row.index(" ± ") + len(" ± 0.0000") == header.index("quality") + len("quality")
