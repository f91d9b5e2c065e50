"""The embedder ``[features] semantic`` asks for, shared by everything that extracts features
from settings (the router, warm start, the simulator), so they all see the same features."""

from __future__ import annotations

from banditroute.config import Settings
from banditroute.features import Embedder


def semantic_embedder(settings: Settings) -> Embedder | None:
    """The static embedder (loaded from its cache file, or distilled there first), or None
    when the semantic features are off. Imported lazily: off, nothing of it is loaded."""
    if not settings.features.semantic:
        return None
    from banditroute.embedding import shared_embedder

    return shared_embedder(settings.features.semantic_cache)
