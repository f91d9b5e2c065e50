"""Synthetic outcome tables for the simulator tests (the shared benchmark files are not used).

Three tasks whose prompts carry distinguishing words (code, arithmetic, a multiple choice) and
four models that are not in the default catalogue, each best at something different:

=========  ======  ======  ======  =========================
model      code    math    choice  cost per call (USD)
=========  ======  ======  ======  =========================
cheap      0.20    0.20    0.90    in 0.1 / out 0.1 per Mtok
coder      0.90    0.30    0.30    in 1 / out 1 per Mtok
mathlete   0.30    0.90    0.30    in 1 / out 1 per Mtok
big        0.75    0.75    0.75    in 10 / out 30 per Mtok
=========  ======  ======  ======  =========================

Qualities are Bernoulli draws with these means (seeded); costs are exactly the prices times
the tokens (prompt characters and response characters over 3.85), so price fits are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from banditroute.outcome_tables import OutcomeTable, table_from_rows, write_outcomes

MODELS: dict[str, tuple[float, float]] = {
    "synth/cheap": (0.1, 0.1),
    "synth/coder": (1.0, 1.0),
    "synth/mathlete": (1.0, 1.0),
    "synth/big": (10.0, 30.0),
}
"""Model id -> (input, output) USD per million tokens."""

QUALITY: dict[str, dict[str, float]] = {
    "synth/cheap": {"code": 0.2, "math": 0.2, "choice": 0.9},
    "synth/coder": {"code": 0.9, "math": 0.3, "choice": 0.3},
    "synth/mathlete": {"code": 0.3, "math": 0.9, "choice": 0.3},
    "synth/big": {"code": 0.75, "math": 0.75, "choice": 0.75},
}
"""Model id -> task -> probability of a correct answer."""

TASKS = ("code", "math", "choice")


def prompt_text(task: str, index: int) -> str:
    """A prompt of the task, made unique by its index."""
    if task == "code":
        return (
            f"Write a python function def solve_{index}(items): that returns the items sorted; "
            "implement it with a loop and return the list."
        )
    if task == "math":
        return f"Calculate the total: {index} + {2 * index + 7} = ? Compute the sum."
    return (
        f"Question {index}: which planet is the largest?\nA) Mars\nB) Jupiter\nC) Venus\n"
        "D) Mercury\nAnswer:"
    )


def make_table(
    n_prompts: int = 300,
    *,
    seed: int = 0,
    quality: dict[str, dict[str, float]] | None = None,
    with_cost: bool = True,
    with_response: bool = True,
    name: str = "synthetic.parquet",
) -> OutcomeTable:
    """A full-information table of ``n_prompts`` prompts cycling through the three tasks."""
    rng = np.random.default_rng(seed)
    means = quality or QUALITY
    rows: list[dict[str, object]] = []
    for i in range(n_prompts):
        task = TASKS[i % len(TASKS)]
        prompt = prompt_text(task, i)
        for model, (price_in, price_out) in MODELS.items():
            response_chars = int(rng.integers(20, 400))
            cost = (len(prompt) / 3.85 * price_in + response_chars / 3.85 * price_out) / 1e6
            rows.append(
                {
                    "prompt_id": f"p{i:05d}",
                    "task": task,
                    "prompt": prompt,
                    "model": model,
                    "quality": float(rng.random() < means[model][task]),
                    "cost_usd": cost if with_cost else None,
                    "response_chars": response_chars if with_response else None,
                }
            )
    return table_from_rows(name, rows)


@pytest.fixture
def synthetic() -> Callable[..., OutcomeTable]:
    """Build a synthetic table (see :func:`make_table`)."""
    return make_table


@pytest.fixture
def synthetic_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic table to a Parquet file and return its path."""

    def write(name: str = "synthetic.parquet", **kwargs: object) -> Path:
        path = tmp_path / name
        write_outcomes(make_table(name=name, **kwargs), path)  # type: ignore[arg-type]
        return path

    return write


@pytest.fixture
def synthetic_models() -> dict[str, tuple[float, float]]:
    """The synthetic models' (input, output) prices in USD per million tokens."""
    return dict(MODELS)


@pytest.fixture
def synthetic_quality() -> dict[str, dict[str, float]]:
    """The synthetic models' probability of a correct answer per task."""
    return {model: dict(tasks) for model, tasks in QUALITY.items()}
