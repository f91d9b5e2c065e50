"""What the measurement scripts in simulations/ share: the three outcome tables they run on,
finding them in a data folder, and writing their JSON and Markdown results."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from banditroute.outcome_tables import OutcomeTable, load_outcomes

TABLES = ("routerbench_train", "paretobandit_val", "routellm_mmlu")
"""The shared outcome tables by file stem, as ``../shared/data/outcomes`` holds them."""


def found_tables(
    data: Path, model_order: Sequence[str], only: str | None = None
) -> Iterator[tuple[str, OutcomeTable]]:
    """Each of :data:`TABLES` (whose name contains ``only``, if given) that ``data`` holds,
    loaded with the catalogue's model order; a missing one is named on stderr and skipped."""
    for name in TABLES:
        if only and only not in name:
            continue
        path = data / f"{name}.parquet"
        if not path.is_file():
            print(f"skipping {name}: no {path}", file=sys.stderr)
            continue
        yield name, load_outcomes(path, model_order=model_order)


def write_json(path: Path | None, results: Any) -> None:
    """Write ``results`` as indented JSON to ``path`` (its folder made), if a path is given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


def write_results(results: Any, text: str, json_path: Path | None, md_path: Path | None) -> int:
    """Write ``results`` as JSON and their Markdown ``text`` (each if its path is given, folders
    made), print the text; 0, the scripts' exit status."""
    write_json(json_path, results)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
