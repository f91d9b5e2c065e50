"""benchmarks/embedding_cpu.py still runs (a tiny model and a few calls): the figure the
README quotes must stay reproducible."""

from __future__ import annotations

import sys
from pathlib import Path

from tiny_model import write_tiny_model

from banditroute.embedding import DistilSpec, StaticEmbedder, ensure_table

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import embedding_cpu


def test_embedding_cpu_reports_the_added_cost_per_prompt_kind(tmp_path: Path) -> None:
    """Short, 2 KB and novel-word prompts each get a positive added CPU figure, and the 2 KB
    prompts really are about 2 KB."""
    files = write_tiny_model(tmp_path / "model")
    table = ensure_table(tmp_path / "t.safetensors", files, DistilSpec(dims=4))
    results = embedding_cpu.run(StaticEmbedder(table, files.load_tokenizer()), calls=5)
    assert set(results) == {"short", "2kb", "2kb_novel_words"}
    assert all(r["added_us"] > 0 for r in results.values())
    assert 1900 <= results["2kb"]["chars"] <= 2048
