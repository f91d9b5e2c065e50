"""The test suite's own layout: shared helpers are imported from named modules, never from
``conftest``."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def _imports_conftest(path: Path) -> bool:
    """Whether the module at ``path`` imports ``conftest`` (``import conftest`` or ``from
    conftest import ...``)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "conftest":
            return True
        if isinstance(node, ast.Import) and any(a.name == "conftest" for a in node.names):
            return True
    return False


def test_no_test_module_imports_from_a_conftest() -> None:
    """No file under tests/ imports ``conftest``: several folders have one, pytest registers
    each as the module ``conftest`` in turn, so such an import got whichever folder's was
    loaded last (``pytest tests/server/test_server_reload.py tests/evaluation`` failed to
    collect with "cannot import name 'ApiClient' from 'conftest'")."""
    offenders = sorted(
        str(path.relative_to(TESTS)) for path in TESTS.rglob("*.py") if _imports_conftest(path)
    )
    assert offenders == []
