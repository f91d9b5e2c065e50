"""The numpy BERT encoder against a direct per-operation reference on a tiny random model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_model import CONFIG, write_tiny_model


def _reference_sentence(tensors: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """One sentence, token by token and head by head, straight from the BERT equations."""
    eps = CONFIG["layer_norm_eps"]
    heads = CONFIG["num_attention_heads"]
    size = CONFIG["hidden_size"] // heads

    def norm(v: np.ndarray, name: str) -> np.ndarray:
        mean = sum(v) / len(v)
        var = sum((x - mean) ** 2 for x in v) / len(v)
        return (
            np.array([(x - mean) / math.sqrt(var + eps) for x in v]) * tensors[f"{name}.weight"]
            + tensors[f"{name}.bias"]
        )

    def dense(v: np.ndarray, name: str) -> np.ndarray:
        weight, bias = tensors[f"{name}.weight"], tensors[f"{name}.bias"]
        return np.array([float(np.dot(weight[o], v)) + bias[o] for o in range(len(bias))])

    states = [
        norm(
            tensors["embeddings.word_embeddings.weight"][t]
            + tensors["embeddings.position_embeddings.weight"][p]
            + tensors["embeddings.token_type_embeddings.weight"][0],
            "embeddings.LayerNorm",
        )
        for p, t in enumerate(ids)
    ]
    for layer in range(CONFIG["num_hidden_layers"]):
        prefix = f"encoder.layer.{layer}"
        q = [dense(s, f"{prefix}.attention.self.query") for s in states]
        k = [dense(s, f"{prefix}.attention.self.key") for s in states]
        v = [dense(s, f"{prefix}.attention.self.value") for s in states]
        new_states = []
        for i, state in enumerate(states):
            context = np.zeros(CONFIG["hidden_size"])
            for h in range(heads):
                part = slice(h * size, (h + 1) * size)
                scores = [float(np.dot(q[i][part], k[j][part])) / math.sqrt(size)
                          for j in range(len(states))]  # fmt: skip
                top = max(scores)
                exps = [math.exp(s - top) for s in scores]
                for j, e in enumerate(exps):
                    context[part] += e / sum(exps) * v[j][part]
            attended = norm(
                dense(context, f"{prefix}.attention.output.dense") + state,
                f"{prefix}.attention.output.LayerNorm",
            )
            inner = dense(attended, f"{prefix}.intermediate.dense")
            inner = np.array([0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))) for x in inner])
            output = dense(inner, f"{prefix}.output.dense") + attended
            new_states.append(norm(output, f"{prefix}.output.LayerNorm"))
        states = new_states
    pooled = sum(states) / len(states)
    return pooled / math.sqrt(float(np.dot(pooled, pooled)))


def test_encoder_matches_a_per_op_reference_on_a_tiny_model(tmp_path: Path) -> None:
    """Sentence embeddings of a padded batch equal the reference's, sentence by sentence:
    embeddings + LayerNorm, multi-head attention, erf GELU feed-forward, post-LayerNorms,
    mean pooling over the real tokens only, and L2 normalisation."""
    from safetensors.numpy import load_file

    files = write_tiny_model(tmp_path)
    tensors = load_file(str(files.weights))
    encoder = files.encoder()
    sentences = [[2, 6, 7, 3], [2, 4, 5, 9, 12, 8, 3], [2, 3]]
    length = max(map(len, sentences))
    ids = np.zeros((len(sentences), length), dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=np.bool_)
    for row, sentence in enumerate(sentences):
        ids[row, : len(sentence)] = sentence
        mask[row, : len(sentence)] = True
    got = encoder.sentence_embeddings(ids, mask)
    for row, sentence in enumerate(sentences):
        expected = _reference_sentence(tensors, sentence)
        np.testing.assert_allclose(got[row], expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_encoder_runs_blas_on_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the encoder runs, every BLAS library is limited to one thread (OpenBLAS's
    spinning workers multiplied the CPU of a distillation on a busy machine), and the
    process's own setting is restored afterwards."""
    from threadpoolctl import threadpool_info

    encoder = write_tiny_model(tmp_path).encoder()
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    seen: list[list[int]] = []
    real = encoder.hidden_states

    def recording(*args: Any) -> Any:
        seen.append([lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"])
        return real(*args)

    monkeypatch.setattr(encoder, "hidden_states", recording)
    ids = np.array([[2, 6, 3]], dtype=np.int64)
    encoder.sentence_embeddings(ids, np.ones(ids.shape, dtype=np.bool_))
    assert seen
    assert seen[0]
    assert set(seen[0]) == {1}
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
