"""Write examples/outcomes_small.parquet: a small synthetic outcome table for trying the tools.

Synthetic, not measured: 80 prompts of four kinds (code, arithmetic, multiple choice,
translation) and four models of the default catalogue, each with its own strengths. A model's
quality on a prompt is a seeded Bernoulli draw with the mean below; its cost is the catalogue
price of the prompt's tokens and a drawn answer length (characters / 3.85 per token), so the
table agrees with the default catalogue's prices. The seed is fixed: running this again writes
the same table (tests/test_examples.py checks the committed file against it).

    .venv/bin/python examples/make_outcomes.py [OUT.parquet]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from banditroute.catalog import CHARS_PER_TOKEN
from banditroute.config import load_settings
from banditroute.outcome_tables import table_from_rows, write_outcomes

SEED = 20261205
PROMPTS = 80
OUT = Path(__file__).with_name("outcomes_small.parquet")

QUALITY: dict[str, dict[str, float]] = {
    "gpt-4-1106-preview": {"code": 0.9, "math": 0.9, "choice": 0.9, "translate": 0.9},
    "gpt-3.5-turbo-1106": {"code": 0.7, "math": 0.6, "choice": 0.8, "translate": 0.8},
    "meta/code-llama-instruct-34b-chat": {
        "code": 0.85, "math": 0.4, "choice": 0.4, "translate": 0.3,
    },
    "mistralai/mixtral-8x7b-chat": {"code": 0.5, "math": 0.5, "choice": 0.85, "translate": 0.7},
}  # fmt: skip
"""Model id (as in the default catalogue) -> kind of prompt -> probability of a good answer."""

ANSWER_CHARS: dict[str, tuple[int, int]] = {
    "code": (300, 1200), "math": (20, 200), "choice": (2, 60), "translate": (40, 200),
}  # fmt: skip
"""Kind of prompt -> range of answer lengths in characters."""

KINDS = tuple(ANSWER_CHARS)
WORDS = ("river", "mountain", "library", "garden", "market", "station", "harbour", "bridge")


def prompt_text(kind: str, index: int, rng: np.random.Generator) -> str:
    """A prompt of this kind, made distinct by the index and seeded draws."""
    a, b = (int(x) for x in rng.integers(2, 999, size=2))
    word = WORDS[int(rng.integers(len(WORDS)))]
    if kind == "code":
        return (
            f"Write a Python function count_{word}_{index}(items) that returns how many "
            f"items are longer than {a % 17 + 2} characters. Include a docstring and a test."
        )
    if kind == "math":
        return f"What is {a} * {b} + {index}? Show the calculation step by step."
    if kind == "choice":
        return (
            f"Question {index}: which of these is a prime number?\nA) {a * 2}\nB) {b * 3}\n"
            f"C) 97\nD) {a * 5}\nAnswer with the letter only."
        )
    return f"Translate into French: 'The {word} near the old town opens at {a % 12 + 1} o'clock.'"


def build_rows() -> list[dict[str, object]]:
    """One row per (prompt, model) in the outcome table format."""
    catalog = load_settings(None).catalog
    rng = np.random.default_rng(SEED)
    rows: list[dict[str, object]] = []
    for index in range(PROMPTS):
        kind = KINDS[index % len(KINDS)]
        prompt = prompt_text(kind, index, rng)
        input_tokens = round(len(prompt) / CHARS_PER_TOKEN)
        for model, means in QUALITY.items():
            spec = catalog.get(model)
            low, high = ANSWER_CHARS[kind]
            response_chars = int(rng.integers(low, high))
            output_tokens = round(response_chars / CHARS_PER_TOKEN)
            cost = (
                input_tokens * spec.input_usd_per_mtok + output_tokens * spec.output_usd_per_mtok
            ) / 1e6
            rows.append({
                "prompt_id": f"example-{index:03d}",
                "task": kind,
                "prompt": prompt,
                "model": model,
                "quality": float(rng.random() < means[kind]),
                "cost_usd": cost,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "response_chars": response_chars,
            })  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    """Write the table to ``argv[0]`` (default: beside this script)."""
    out = Path(argv[0]) if argv else OUT
    table = table_from_rows(OUT.name, build_rows(), model_order=tuple(QUALITY))
    write_outcomes(table, out)
    print(f"wrote {out}: {table.n_prompts} prompts x {table.n_models} models")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
