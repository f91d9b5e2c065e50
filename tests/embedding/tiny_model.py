"""A tiny random BERT with all-MiniLM-L6-v2's file layout (config.json, model.safetensors with
Hugging Face's tensor names, a WordPiece tokenizer.json), written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from banditroute.embedding import ModelFiles

WORDS = (
    "the", "a", "cat", "dog", "sat", "on", "mat", "python", "code", "function", "write",
    "solve", "equation", "poem", "story", "translate", "french", "what", "is", "capital",
)  # fmt: skip
PIECES = ("##s", "##ing", "##ed", "un", "##known", "##x", "x")
CONFIG = {
    "hidden_act": "gelu",
    "hidden_size": 8,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}


def vocabulary() -> dict[str, int]:
    """Special tokens first, then whole words and word pieces."""
    tokens = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *PIECES)
    return {token: index for index, token in enumerate(tokens)}


def random_tensors(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under BertModel's tensor names."""
    rng = np.random.default_rng(seed)
    hidden, inner = CONFIG["hidden_size"], CONFIG["intermediate_size"]

    def r(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, shape).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": r(vocab_size, hidden),
        "embeddings.position_embeddings.weight": r(CONFIG["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": r(2, hidden),
        "embeddings.LayerNorm.weight": 1.0 + r(hidden),
        "embeddings.LayerNorm.bias": r(hidden),
    }
    shapes = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (inner, hidden),
        "output.dense": (hidden, inner),
    }
    for layer in range(CONFIG["num_hidden_layers"]):
        prefix = f"encoder.layer.{layer}"
        for name, (out, into) in shapes.items():
            tensors[f"{prefix}.{name}.weight"] = r(out, into)
            tensors[f"{prefix}.{name}.bias"] = r(out)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{prefix}.{norm}.weight"] = 1.0 + r(hidden)
            tensors[f"{prefix}.{norm}.bias"] = r(hidden)
    return tensors


def write_tiny_model(directory: Path, seed: int = 0) -> ModelFiles:
    """Write the tiny model's three files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    save_file(random_tensors(len(vocab), seed), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**CONFIG, "vocab_size": len(vocab)}))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.enable_padding(length=12)  # as the real file does: the loader must undo it
    tokenizer.save(str(directory / "tokenizer.json"))
    return ModelFiles(directory)
