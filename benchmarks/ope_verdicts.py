"""How many candidates a log can answer for, per log size and tolerance, from ope_accuracy runs.

Reads the JSON files ``benchmarks/ope_accuracy.py --json`` writes (every interval with its
candidate's verdict inputs: ESS, the share of traffic where the logger barely went, and the DR
interval's half-width relative to its estimate) and re-applies ``replay``'s verdict at each
``--tolerance`` (the ESS and overlap tests do not depend on it), then prints, per file and
tolerance, one Markdown row: decisions per log, candidates rated reliable (of all, and per kind)
and, over those, DR within 2% of the truth, DR's coverage and its interval width (mean, max);
then, per file, the 95% interval coverage of all six estimators over every candidate.

    .venv/bin/python benchmarks/ope_verdicts.py benchmarks/results/ope_accuracy_*.json \\
        [--tolerance 0.02 --tolerance 0.05 --tolerance 0.1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.evaluation.reliability import MAX_THIN_SHARE, MIN_ESS
from banditroute.evaluation.replay import ESTIMATOR_NAMES

KINDS = ("logged", "uniform", "fixed")


def reliable(row: dict[str, Any], tolerance: float) -> bool:
    """``replay``'s verdict on a row's candidate at ``tolerance`` (``reliability.verdict``)."""
    thin = row.get("thin_mass")
    half = row.get("half_width")
    return (
        row["ess"] >= MIN_ESS
        and (thin is None or thin <= MAX_THIN_SHARE)
        and half is not None
        and half <= tolerance
    )


def summary(document: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Reliable counts and DR's accuracy over the reliable candidates at ``tolerance``."""
    dr = [r for r in document["rows"] if r["estimator"] == "dr"]
    if any("half_width" not in r for r in dr):
        raise SystemExit(f"{document['config']}: rows without half_width (an older run)")
    chosen = [r for r in dr if reliable(r, tolerance)]
    out: dict[str, Any] = {
        "config": document["config"],
        "decisions": int(np.median(document["decisions"])),
        "seeds": document["seeds"],
        "tolerance": tolerance,
        "reliable": len(chosen),
        "of": len(dr),
        "by_kind": {
            k: (sum(r["kind"] == k for r in chosen), sum(r["kind"] == k for r in dr)) for k in KINDS
        },
    }
    if chosen:
        err = np.array([abs(r["estimate"] - r["truth"]) for r in chosen])
        truth = np.array([abs(r["truth"]) for r in chosen])
        width = np.array([r["upper"] - r["lower"] for r in chosen])
        covered = [r["lower"] <= r["truth"] <= r["upper"] for r in chosen]
        out |= {
            "within_2pct": float(np.mean(err <= 0.02 * truth)),
            "coverage": float(np.mean(covered)),
            "mean_width": float(width.mean()),
            "max_width": float(width.max()),
        }
    return out


def row_text(s: dict[str, Any]) -> str:
    """One Markdown table row."""
    kinds = ", ".join(f"{k} {n}/{total}" for k, (n, total) in s["by_kind"].items())
    head = (
        f"| {s['config']} | {s['decisions']:,} | {s['seeds']} | {s['tolerance']:g} | "
        f"{s['reliable']} of {s['of']} ({kinds}) |"
    )
    if not s["reliable"]:
        return head + " - | - | - |"
    return (
        head + f" {s['within_2pct']:.0%} | {s['coverage']:.0%} | "
        f"{s['mean_width']:.4f} / {s['max_width']:.4f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="ope_accuracy.py --json files")
    parser.add_argument("--tolerance", type=float, action="append")
    args = parser.parse_args(argv)
    tolerances = args.tolerance or [0.02, 0.05, 0.1]
    if not all(0 < t <= 1 for t in tolerances):
        parser.error("--tolerance: must be in (0, 1]")
    print(
        "| log | decisions | seeds | tolerance | rated reliable | DR within 2% | DR coverage "
        "| DR width mean / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    documents = []
    for path in args.results:
        if not path.is_file():
            parser.error(f"results: no such file {str(path)!r}")
        documents.append(json.loads(path.read_text("utf-8")))
        for tolerance in tolerances:
            print(row_text(summary(documents[-1], tolerance)))
    print("\n| log | decisions | seeds | intervals | " + " | ".join(ESTIMATOR_NAMES) + " |")
    print("| --- " * (4 + len(ESTIMATOR_NAMES)) + "|")
    for document in documents:
        overall = document["overall"]
        print(
            f"| {document['config']} | {int(np.median(document['decisions'])):,} | "
            f"{document['seeds']} | {overall['dr']['n']} | "
            + " | ".join(f"{overall[name]['coverage']:.1%}" for name in ESTIMATOR_NAMES)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
