"""A numpy BERT encoder (embeddings, self-attention, GELU feed-forward, post-LayerNorm) with
sentence-transformers' mean pooling, read from a Hugging Face ``BertModel`` safetensors file.

It is far too slow to run per request (about 1.4 GFLOP for 32 tokens): it serves offline, to
distil the static token table (:mod:`banditroute.embedding.distil`), and as the reference the
tests compare the static embedder with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from banditroute.embedding.extra import require

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder (the keys of its Hugging Face ``config.json``)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BertConfig:
        """The config from a parsed ``config.json`` (other keys are ignored)."""
        if data.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"config.json: hidden_act {data['hidden_act']!r} is not 'gelu'")
        names = cls.__dataclass_fields__
        return cls(**{name: data[name] for name in names if name in data})


@dataclass(frozen=True)
class _Layer:
    query: tuple[Array, Array]
    key: tuple[Array, Array]
    value: tuple[Array, Array]
    attention_out: tuple[Array, Array]
    attention_norm: tuple[Array, Array]
    intermediate: tuple[Array, Array]
    output: tuple[Array, Array]
    output_norm: tuple[Array, Array]


def _dense(tensors: Mapping[str, Array], name: str) -> tuple[Array, Array]:
    """A linear layer as (weight transposed to in x out, bias)."""
    weight = np.ascontiguousarray(tensors[f"{name}.weight"].T, dtype=np.float32)
    return weight, np.asarray(tensors[f"{name}.bias"], dtype=np.float32)


def _norm(tensors: Mapping[str, Array], name: str) -> tuple[Array, Array]:
    return (
        np.asarray(tensors[f"{name}.weight"], dtype=np.float32),
        np.asarray(tensors[f"{name}.bias"], dtype=np.float32),
    )


def layer_norm(x: Array, params: tuple[Array, Array], eps: float) -> Array:
    """LayerNorm over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Array = (x - mean) / np.sqrt(var + eps) * params[0] + params[1]
    return out


def gelu(x: Array) -> Array:
    """The exact (erf) GELU BERT uses."""
    out: Array = (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)
    return out


class BertEncoder:
    """The encoder of a BERT model, from its tensors (names as Hugging Face's ``BertModel``)."""

    def __init__(self, config: BertConfig, tensors: Mapping[str, Array]) -> None:
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("config.json: hidden_size is not a multiple of num_attention_heads")
        self.config = config
        self.word = np.asarray(tensors["embeddings.word_embeddings.weight"], dtype=np.float32)
        self.position = np.asarray(
            tensors["embeddings.position_embeddings.weight"], dtype=np.float32
        )
        self.token_type = np.asarray(
            tensors["embeddings.token_type_embeddings.weight"], dtype=np.float32
        )
        self.embedding_norm = _norm(tensors, "embeddings.LayerNorm")
        if self.word.shape != (config.vocab_size, config.hidden_size):
            raise ValueError(
                f"word embeddings are {self.word.shape}, config says "
                f"({config.vocab_size}, {config.hidden_size})"
            )
        self.layers = tuple(
            _Layer(
                query=_dense(tensors, f"{p}.attention.self.query"),
                key=_dense(tensors, f"{p}.attention.self.key"),
                value=_dense(tensors, f"{p}.attention.self.value"),
                attention_out=_dense(tensors, f"{p}.attention.output.dense"),
                attention_norm=_norm(tensors, f"{p}.attention.output.LayerNorm"),
                intermediate=_dense(tensors, f"{p}.intermediate.dense"),
                output=_dense(tensors, f"{p}.output.dense"),
                output_norm=_norm(tensors, f"{p}.output.LayerNorm"),
            )
            for p in (f"encoder.layer.{i}" for i in range(config.num_hidden_layers))
        )

    def hidden_states(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> Array:
        """The last layer's states, ``(batch, length, hidden)``, for token ids ``(batch,
        length)``; ``mask`` is False at padding, which no token attends to."""
        config = self.config
        batch, length = ids.shape
        if length > config.max_position_embeddings:
            raise ValueError(f"{length} tokens: the model takes at most "
                             f"{config.max_position_embeddings}")  # fmt: skip
        eps = config.layer_norm_eps
        x = self.word[ids] + self.position[:length] + self.token_type[0]
        x = layer_norm(x, self.embedding_norm, eps)
        heads = config.num_attention_heads
        size = config.hidden_size // heads
        # Padding keys get a large negative score: exp() of it is 0 after the max shift.
        bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]

        def split(t: Array) -> Array:
            return t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

        for layer in self.layers:
            q = split(x @ layer.query[0] + layer.query[1])
            k = split(x @ layer.key[0] + layer.key[1])
            v = split(x @ layer.value[0] + layer.value[1])
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(size)) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            attended = context @ layer.attention_out[0] + layer.attention_out[1]
            x = layer_norm(attended + x, layer.attention_norm, eps)
            inner = gelu(x @ layer.intermediate[0] + layer.intermediate[1])
            x = layer_norm(inner @ layer.output[0] + layer.output[1] + x, layer.output_norm, eps)
        return x.astype(np.float32)

    def sentence_embeddings(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> Array:
        """Mean of the last states over the unmasked tokens, L2-normalised (``(batch,
        hidden)``): what sentence-transformers' all-MiniLM-L6-v2 returns.

        BLAS runs on one thread here: on a busy machine OpenBLAS's spinning worker threads
        cost six to ten times the CPU (1.5 s against 9-12 s per batch of 256 tokens), and the
        server's own threads need the cores."""
        with require("threadpoolctl").threadpool_limits(limits=1, user_api="blas"):
            states = self.hidden_states(ids, mask)
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        out: Array = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out
