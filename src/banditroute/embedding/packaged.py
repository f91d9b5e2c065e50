"""The semantic features' table shipped with banditroute: all-MiniLM-L6-v2 distilled once (by
``make embedding-table``) and installed with the package, beside the model's tokenizer, so that
the features are on from the first Route of every install: no model package, no minutes of
distilling, and every replica and replay of a cluster reads the same table."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from banditroute.embedding.cache import file_sha256, read_table
from banditroute.embedding.distil import DEFAULT_SPEC
from banditroute.embedding.source import load_tokenizer
from banditroute.embedding.static import StaticEmbedder
from banditroute.errors import ConfigError

DATA = Path(__file__).with_name("data")
TABLE = DATA / "minilm-l6-static64.safetensors"
"""The distilled table (float16 rows and their PCA basis; ``DEFAULT_SPEC``)."""
TOKENIZER = DATA / "tokenizer.json"
"""all-MiniLM-L6-v2's WordPiece tokenizer, which splits words the vocabulary lacks."""


@lru_cache(maxsize=1)
def packaged_embedder() -> StaticEmbedder:
    """The static embedder over the shipped table (one per process), or a ConfigError saying
    the install is damaged: the table or the tokenizer missing, the table failing its digest,
    or the two not made for each other (the table records its tokenizer's SHA-256)."""
    try:
        distilled = read_table(TABLE, DEFAULT_SPEC, None, tokenizer_sha256=file_sha256(TOKENIZER))
        if distilled is None:
            raise ValueError("table missing, damaged or made for another tokenizer")
        tokenizer = load_tokenizer(TOKENIZER)
        if distilled.table.shape[0] != tokenizer.get_vocab_size():
            raise ValueError("table and tokenizer disagree on the vocabulary")
        return StaticEmbedder(distilled.table, tokenizer)
    except ConfigError:  # a module of the features missing: its own message says what to do
        raise
    except Exception as exc:  # tokenizers raises its own exception types on a bad file
        raise ConfigError(
            f"features.semantic: the embedding table shipped with banditroute ({DATA}) is "
            f"missing or damaged ({type(exc).__name__}: {str(exc)[:200]}); reinstall "
            "banditroute, or set features.semantic_cache to a path to distil one there from "
            "the model package",
            field="features.semantic",
        ) from exc
