"""The embedder ``[features] semantic`` asks for, shared by everything that extracts features
from settings (the router, warm start, the simulator), so they all see the same features."""

from __future__ import annotations

from banditroute.config import Settings
from banditroute.features import Embedder
from banditroute.policies.costaware import SEMANTIC_DIMS


def semantic_embedder(settings: Settings, components: int = SEMANTIC_DIMS) -> Embedder | None:
    """The static embedder (the table shipped with banditroute, or the one cached at
    ``features.semantic_cache``, distilled there first), giving the first ``components`` of
    each embedding (by default the :data:`SEMANTIC_DIMS` the policy reads: the features and
    the log hold no more than that), or None when the semantic features are off. Imported
    lazily: off, nothing of it is loaded."""
    if not settings.features.semantic:
        return None
    from banditroute.embedding import packaged_embedder, shared_embedder

    cache = settings.features.semantic_cache
    embedder = packaged_embedder() if cache is None else shared_embedder(cache)
    return embedder.leading(min(components, embedder.dims))


def semantic_source(settings: Settings) -> str:
    """Where the semantic features come from, for the start-up log: ``off``, ``shipped``
    (the table in the package) or the configured table file."""
    if not settings.features.semantic:
        return "off"
    cache = settings.features.semantic_cache
    return "shipped" if cache is None else str(cache)
