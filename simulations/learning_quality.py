"""The learning-quality scenarios of issue 3: every acceptance run, one command.

    python simulations/learning_quality.py --data ../shared/data/outcomes \
        --json benchmarks/results/learning_quality.json

For each outcome table the budget is a fraction of a reference model's mean cost per prompt in
the whole file (RouterBench: 25% of GPT-4; ParetoBandit: 10% of Gemini-2.5-Pro; RouteLLM: 25%
of GPT-4, cost from catalogue prices). Runs, each over the same seeds:

* cold start, streaming the whole file: the cost-aware policy, the river LinUCB baseline and
  (RouterBench) VW with each exploration algorithm, uniform random; judged on the second half
  of the stream (quality, and against the best fixed model and LinUCB) and on the whole
  stream's cost;
* warm start: the file is split in halves (seed 0); the policy learns from part 1 as logged
  bandit feedback of a uniform-random policy, or as full information, then streams part 2;
  judged on the whole stream.

Each run is exactly ``banditroute simulate`` with the arguments printed beside it (the split
halves are the files ``simulations/split_outcomes.py`` writes). The script prints one table
row per run and checks the acceptance conditions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.config import load_settings
from banditroute.outcome_tables import load_outcomes, write_outcomes
from banditroute.simulation import SimulationConfig, simulate
from banditroute.simulation.catalog import build_run_catalog
from banditroute.simulation.plot import plot_run


@dataclass(frozen=True)
class Dataset:
    """An outcome table, the model whose cost sets the budget, and the policies to run."""

    file: str
    reference: str
    fraction: float
    cold_policies: tuple[str, ...]
    warm_policies: tuple[str, ...] = ("costaware", "linucb")


DATASETS = (
    Dataset(
        "routerbench_train.parquet",
        "gpt-4-1106-preview",
        0.25,
        (
            "costaware",
            "costaware-squarecb",
            "costaware-epsilon",
            "linucb",
            "vw",
            "vw-squarecb",
            "vw-epsilon",
            "vw-bag",
            "uniform",
        ),
    ),
    Dataset("paretobandit_val.parquet", "google/gemini-2.5-pro", 0.10, ("costaware", "linucb")),
    Dataset("routellm_mmlu.parquet", "gpt-4-1106-preview", 0.25, ("costaware", "linucb")),
)


def _row(name: str, summary: dict[str, Any]) -> str:
    budget = summary["budget_usd"]
    return (
        f"| {name} | {summary['policy']} | {summary['quality']:.4f} ± "
        f"{summary['quality_std']:.4f} | {summary['quality_last_half']:.4f} ± "
        f"{summary['quality_last_half_std']:.4f} | {summary['cost_usd'] / budget:.3f} | "
        f"{summary['best_fixed']['model'].rsplit('/', 1)[-1]} "
        f"{summary['best_fixed']['quality']:.4f} | {summary['wall_s']:.1f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; exit 1 if an acceptance condition fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/outcomes"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write every summary here")
    parser.add_argument("--plots", type=Path, help="write the cost-aware runs' plots here")
    parser.add_argument("--only", help="run only the dataset whose file name contains this")
    parser.add_argument("--cold-only", action="store_true", help="skip the warm-start runs")
    args = parser.parse_args(argv)
    settings = load_settings()
    results: dict[str, Any] = {}
    failures: list[str] = []
    print("| run | policy | quality | quality, last half | cost / budget | best fixed | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in DATASETS:
            if args.only and args.only not in dataset.file:
                continue
            path = args.data / dataset.file
            table = load_outcomes(path, model_order=settings.catalog.ids)
            run = build_run_catalog(table, settings.catalog)
            k = table.models.index(dataset.reference)
            budget = dataset.fraction * float(np.mean(run.cost_usd[:, k]))
            target = 0.92 * float(np.mean(table.quality[:, k]))
            stem = dataset.file.removesuffix(".parquet")
            cold: dict[str, dict[str, Any]] = {}
            for policy in dataset.cold_policies:
                started = time.perf_counter()
                config = SimulationConfig(
                    outcomes=path, policy=policy, budget_usd=budget, seeds=args.seeds
                )
                result = simulate(config, settings)
                summary = result.summary
                summary["wall_s"] = time.perf_counter() - started
                if args.plots is not None and policy == "costaware":
                    plot_run(summary, result.traces, args.plots / f"{stem}-cold.png")
                summary["command"] = (
                    f"banditroute simulate --outcomes {path} --policy {policy} "
                    f"--budget-usd {budget:.9f} --seeds {args.seeds}"
                )
                cold[policy] = summary
                results[f"{stem}/cold/{policy}"] = summary
                print(_row(f"{stem} cold", summary), flush=True)
            learner = cold["costaware"]
            last_half = learner["quality_last_half"]
            checks = {
                "quality_last_half >= 0.92 x reference": last_half >= target,
                "cost <= 1.05 x budget": learner["cost_usd"] <= 1.05 * budget,
                "last half beats best fixed": last_half > learner["best_fixed"]["quality"],
                "last half beats linucb": last_half > cold["linucb"]["quality_last_half"],
            }
            if args.cold_only:
                warm_runs: dict[str, dict[str, Any]] = {}
            else:
                first, second = table.split(0.5, seed=0)
                warm_path = Path(tmp) / f"{stem}.part1.parquet"
                stream_path = Path(tmp) / f"{stem}.part2.parquet"
                write_outcomes(first, warm_path)
                write_outcomes(second, stream_path)
                warm_runs = {}
                for mode in ("bandit", "full"):
                    for policy in dataset.warm_policies:
                        started = time.perf_counter()
                        config = SimulationConfig(
                            outcomes=stream_path,
                            policy=policy,
                            budget_usd=budget,
                            seeds=args.seeds,
                            warm_start=warm_path,
                            warm_start_mode=mode,  # type: ignore[arg-type]
                        )
                        result = simulate(config, settings)
                        summary = result.summary
                        summary["wall_s"] = time.perf_counter() - started
                        if args.plots is not None and policy == "costaware":
                            plot = args.plots / f"{stem}-warm-{mode}.png"
                            plot_run(summary, result.traces, plot)
                        summary["command"] = (
                            f"python simulations/split_outcomes.py {path} --out SPLIT && "
                            f"banditroute simulate --outcomes SPLIT/{stem}.part2.parquet "
                            f"--warm-start SPLIT/{stem}.part1.parquet --warm-start-mode {mode} "
                            f"--policy {policy} --budget-usd {budget:.9f} --seeds {args.seeds}"
                        )
                        warm_runs[f"{mode}/{policy}"] = summary
                        results[f"{stem}/warm-{mode}/{policy}"] = summary
                        print(_row(f"{stem} warm ({mode})", summary), flush=True)
                for mode in ("bandit", "full"):
                    mine, river = warm_runs[f"{mode}/costaware"], warm_runs[f"{mode}/linucb"]
                    checks[f"warm {mode}: quality >= 0.92 x reference"] = mine["quality"] >= target
                    checks[f"warm {mode}: cost <= 1.05 x budget"] = (
                        mine["cost_usd"] <= 1.05 * budget
                    )
                    checks[f"warm {mode}: beats best fixed"] = (
                        mine["quality"] > mine["best_fixed"]["quality"]
                    )
                    checks[f"warm {mode}: beats linucb"] = mine["quality"] > river["quality"]
            results[f"{stem}/checks"] = {
                "budget_usd": budget,
                "quality_target": target,
                "reference": dataset.reference,
                **checks,
            }
            for check, ok in checks.items():
                print(f"<!-- {stem}: {check}: {'ok' if ok else 'FAILED'} -->")
                if not ok:
                    failures.append(f"{stem}: {check}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if failures:
        print("failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
