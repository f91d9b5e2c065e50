"""simulations/semantic_gain.py still runs end to end on a small table the test makes (random
token vectors stand in for the distilled model's, so it takes seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from banditroute.embedding import packaged_model
from banditroute.outcome_tables import table_from_rows, write_outcomes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "simulations"))

import semantic_gain

TOPICS = ("python code function loop", "poem story rhyme verse", "sum equation number total")


def test_semantic_gain_reports_every_variant_on_a_held_out_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held-out rule takes about 30% of prompts by a fixed hash; every feature variant
    gets per-model log-loss, Brier and AUC and a routed quality no better than the oracle;
    the JSON holds the same."""
    monkeypatch.setattr(semantic_gain, "CS", (0.3, 1.0))  # a shorter search: seconds
    rows = []
    for i in range(90):
        topic = TOPICS[i % 3]
        for model, good in (("acme/coder", 0), ("acme/poet", 1)):
            quality = 1.0 if i % 3 == good else float(i % 2)
            rows.append({"prompt_id": f"p{i}", "task": "t", "prompt": f"Please: {topic} {i}",
                         "model": model, "quality": quality, "cost_usd": 0.001})  # fmt: skip
    path = tmp_path / "small.parquet"
    write_outcomes(table_from_rows("small", rows), path)
    vocab = packaged_model().load_tokenizer().get_vocab_size()
    vectors = np.random.default_rng(0).normal(size=(vocab, 8)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    out = tmp_path / "gain.json"
    args = [str(path), "--vectors", str(tmp_path / "vectors.npy"), "--dims", "4", "8"]
    assert semantic_gain.main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())["small"]
    held = sum(semantic_gain.held_out(f"p{i}") for i in range(90))
    assert result["held_out"] == held
    assert 15 <= held <= 40
    assert set(result["variants"]) >= {"base", "numeric", "base+emb4", "base+emb8"}
    for variant in result["variants"].values():
        assert set(variant["per_model"]) == {"acme/coder", "acme/poet"}
        for metrics in variant["per_model"].values():
            assert metrics["log_loss"] > 0
            assert 0 <= metrics["brier"] <= 1
        assert variant["routed_quality"] <= result["oracle_quality"]
