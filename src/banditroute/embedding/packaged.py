"""The semantic features' table shipped with banditroute: all-MiniLM-L6-v2 distilled once (by
``make embedding-table``) and installed with the package, beside the model's tokenizer, so that
the features are on from the first Route of every install: no model package, no minutes of
distilling, and every replica and replay of a cluster reads the same table."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from banditroute.embedding.cache import read_table
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
    the install is damaged when the table is missing or fails its digest."""
    distilled = read_table(TABLE, DEFAULT_SPEC, None)
    if distilled is None or not TOKENIZER.is_file():
        raise ConfigError(
            f"features.semantic: the embedding table shipped with banditroute ({DATA}) is "
            "missing or damaged; reinstall banditroute, or set features.semantic_cache to a "
            "path to distil one there from the model package",
            field="features.semantic",
        )
    return StaticEmbedder(distilled.table, load_tokenizer(TOKENIZER))
