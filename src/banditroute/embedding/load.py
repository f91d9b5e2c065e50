"""Get a ready :class:`StaticEmbedder`: read the distilled table from its cache file, or
distil it from the packaged model (minutes, with a progress bar) and cache it first."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import structlog

from banditroute.embedding.bert import Array
from banditroute.embedding.cache import (
    CacheLock,
    Provenance,
    file_sha256,
    read_table,
    stored,
    write_table,
)
from banditroute.embedding.distil import DEFAULT_SPEC, DistilSpec, distil
from banditroute.embedding.source import ModelFiles, packaged_model
from banditroute.embedding.static import StaticEmbedder

log = structlog.get_logger(__name__)


def ensure_table(
    path: Path,
    files: ModelFiles,
    spec: DistilSpec,
    *,
    token_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> Array:
    """The table cached at ``path`` if it is intact and current, else a new one distilled
    and written there. ``token_ids`` distils only those tokens (tests); the cache records
    the subset, so a partial table is never taken for a full one. The table is as the file
    holds it (rows rounded to float16), whether read or just distilled."""
    source = files.digest()
    if token_ids is not None:
        subset = np.unique(np.asarray(token_ids, dtype=np.int64)).tobytes()
        source += "/tokens-" + hashlib.sha256(subset).hexdigest()[:16]
    origin = Provenance(source, file_sha256(files.tokenizer))
    with CacheLock(path):
        cached = read_table(path, spec, origin)
        if cached is not None:
            return cached.table
        log.info("embedding_distil_start", path=str(path), dims=spec.dims,
                 weighting=spec.weighting)  # fmt: skip
        started = time.monotonic()
        tokenizer = files.load_tokenizer()
        distilled = distil(
            files.encoder(),
            spec,
            cls_id=tokenizer.token_to_id("[CLS]"),
            sep_id=tokenizer.token_to_id("[SEP]"),
            token_ids=token_ids,
            progress=progress,
        )
        write_table(path, distilled, spec, origin)
        log.info("embedding_distil_done", path=str(path),
                 seconds=round(time.monotonic() - started, 1))  # fmt: skip
        return stored(distilled).table


def load_static_embedder(
    path: Path,
    spec: DistilSpec = DEFAULT_SPEC,
    *,
    files: ModelFiles | None = None,
    token_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> StaticEmbedder:
    """The static embedder of the packaged model (or ``files``), its table cached at
    ``path``: distilled there on first use."""
    files = packaged_model() if files is None else files
    table = ensure_table(path, files, spec, token_ids=token_ids, progress=progress)
    return StaticEmbedder(table, files.load_tokenizer())


@lru_cache(maxsize=4)
def shared_embedder(path: Path, progress: bool = True) -> StaticEmbedder:
    """One embedder per cache path and process (the simulator builds many Routers), with a
    progress bar on stderr should the table have to be distilled first."""
    return load_static_embedder(path, progress=progress)
