"""The price of the exploration floor (``[policy] min_probability``): what the serving policy
loses in quality and cost per floor value, against how much better its logs evaluate other
policies.

    nice python simulations/exploration_floor.py --data ../shared/data/outcomes --seeds 3 \\
        --json benchmarks/results/exploration_floor.json \\
        --markdown benchmarks/results/exploration_floor.md

Per table (the held-out 30% of :meth:`OutcomeTable.holdout_split`, as ``routing_skill.py``),
floor and seed: the configured policy (``costaware``) streams the held-out prompts cold through
the real :class:`~banditroute.router.Router` with ``min_probability`` set to the floor (with
``--warm``, after learning the tuning part as full information, as ``serve --warm-start``), logging
to DuckDB as the server does (decisions with their whole distributions, feedback with the
table's quality and cost and the simulated latency), under the default objective. Then
``replay`` (the library behind ``banditroute replay``) estimates, with DR and its 95%
bootstrap interval, every fixed model and uniform on that log. Each prompt is streamed once, so
a candidate's true value is exactly the mean over the log's decisions of its distribution times
the table's rewards (the same eligible models, the same fallback).

Reported per table and floor, over seeds: the served quality, cost per request and reward (and
their change from floor 0 on the same seeds), and for the candidates DR's mean absolute error,
its share within 2% (relative) of the truth, the interval's mean width and coverage, and the
median ESS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.config import Settings, load_settings
from banditroute.evaluation.candidates import parse_candidate, static_distribution
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.replay import make_estimators, replay
from banditroute.outcome_tables import OutcomeTable, load_outcomes
from banditroute.simulation import SimulationConfig, prepare, run_seed
from banditroute.simulation.runner import objective_rewards
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.reader import open_log

TABLES = ("routerbench_train", "paretobandit_val", "routellm_mmlu")
FLOORS = (0.0, 0.005, 0.01, 0.02, 0.05)


@dataclass(frozen=True)
class Job:
    """One (table, floor, seed) run (picklable)."""

    table: str
    stream: OutcomeTable
    floor: float
    seed: int
    n_boot: int
    warm: OutcomeTable | None = None


def _with_floor(settings: Settings, floor: float) -> Settings:
    """``settings`` with the floor (checked against the run's catalogue, not the default one)."""
    return replace(settings, policy=replace(settings.policy, min_probability=floor))


def run(job: Job) -> dict[str, Any]:
    """Stream, log, replay and score one run."""
    config = SimulationConfig(
        outcomes=job.stream, seeds=1, warm_start=job.warm, warm_start_mode="full"
    )
    settings = load_settings()
    settings = replace(settings, log=replace(settings.log, sync_feedback=False))
    spec, _ = prepare(config, settings)
    spec = replace(spec, settings=_with_floor(spec.settings, job.floor))
    with tempfile.TemporaryDirectory(prefix="floor-") as folder:
        path = Path(folder) / "log.duckdb"
        event_log = DuckDBLog(path, flush_interval_s=0.02, batch_size=8192, sync_feedback=False)
        trace = run_seed(spec, job.seed, event_log=event_log)
        event_log.close()
        source = open_log(path)
        log = load_log(source, with_features=True)
        source.connection.close()
    table = spec.outcomes.table
    candidates = [parse_candidate(f"fixed:{model}") for model in table.models]
    candidates.append(parse_candidate("uniform"))
    result = replay(
        log,
        candidates,
        spec.objective,
        spec.settings,
        estimators=make_estimators(["dr"]),
        n_boot=job.n_boot,
        seed=job.seed,
    )
    # Decision ids are "SEED-STEP": the step's prompt is trace.order[step].
    steps = np.array([int(d.rsplit("-", 1)[1]) for d in log.decision_ids.to_pylist()])
    prompts = trace.order[steps]
    rewards = objective_rewards(
        spec.objective, table.quality, spec.outcomes.cost_usd, trace.latency_all
    )
    columns = [table.models.index(m) for m in log.models]
    logged_rewards = rewards[prompts][:, columns]
    rows = []
    for spec_, found in zip(candidates, result.candidates, strict=True):
        target = static_distribution(spec_, log)
        truth = float(np.mean(np.sum(target * logged_rewards, axis=1)))
        dr = found.estimates["dr"]
        rows.append(
            {
                "candidate": found.name,
                "truth": truth,
                "estimate": dr.estimate,
                "lower": dr.lower,
                "upper": dr.upper,
                "ess": found.diagnostics.ess,
            }
        )
    served = rewards[trace.order, trace.chosen]
    return {
        "table": job.table,
        "floor": job.floor,
        "seed": job.seed,
        "decisions": len(trace.order),
        "min_probability_logged": float(np.min(np.where(log.mask, log.logging_probs, 1.0))),
        "quality": float(trace.quality.mean()),
        "cost_usd": float(trace.cost_usd.mean()),
        "reward": float(served.mean()),
        "rows": rows,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per table and floor: the price (against floor 0, same seeds) and DR's accuracy."""
    out = []
    base = {(r["table"], r["seed"]): r for r in runs if r["floor"] == 0.0}
    for table in dict.fromkeys(r["table"] for r in runs):
        for floor in sorted({r["floor"] for r in runs if r["table"] == table}):
            picked = [r for r in runs if r["table"] == table and r["floor"] == floor]
            rows = [row for r in picked for row in r["rows"]]
            err = np.array([row["estimate"] - row["truth"] for row in rows])
            truth = np.abs(np.array([row["truth"] for row in rows]))
            width = np.array([row["upper"] - row["lower"] for row in rows])
            covered = [row["lower"] <= row["truth"] <= row["upper"] for row in rows]

            def delta(key: str, picked: list[dict[str, Any]] = picked) -> float:
                pairs = [(r[key], base[(r["table"], r["seed"])][key]) for r in picked]
                return float(np.mean([a - b for a, b in pairs]))

            out.append(
                {
                    "table": table,
                    "floor": floor,
                    "seeds": len(picked),
                    "candidates": len(rows),
                    "quality": float(np.mean([r["quality"] for r in picked])),
                    "cost_usd": float(np.mean([r["cost_usd"] for r in picked])),
                    "reward": float(np.mean([r["reward"] for r in picked])),
                    "quality_change": delta("quality"),
                    "cost_change_usd": delta("cost_usd"),
                    "reward_change": delta("reward"),
                    "dr_mae": float(np.mean(np.abs(err))),
                    "dr_within_2pct": float(np.mean(np.abs(err) <= 0.02 * np.maximum(truth, 1e-9))),
                    "dr_width": float(np.mean(width)),
                    "dr_coverage": float(np.mean(covered)),
                    "median_ess": float(np.median([row["ess"] for row in rows])),
                    "min_probability_logged": float(
                        np.min([r["min_probability_logged"] for r in picked])
                    ),
                }
            )
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| table | floor | quality (change) | cost/request USD (change) | reward change | "
        "DR mean abs. error | DR within 2% | DR 95% width | coverage | median ESS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['table']} | {s['floor']:g} | {s['quality']:.4f} ({s['quality_change']:+.4f}) "
            f"| {s['cost_usd']:.6f} ({s['cost_change_usd']:+.6f}) | {s['reward_change']:+.4f} "
            f"| {s['dr_mae']:.4f} | {s['dr_within_2pct']:.0%} | {s['dr_width']:.3f} "
            f"| {s['dr_coverage']:.0%} | {s['median_ess']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the outcome tables")
    parser.add_argument("--tables", nargs="+", default=list(TABLES))
    parser.add_argument("--floors", nargs="+", type=float, default=list(FLOORS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="warm-start the policy from the tuning part (full information) first",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if 0.0 not in args.floors:
        parser.error("--floors: include 0 (the price is measured against it)")
    jobs = []
    for name in args.tables:
        tune, stream = load_outcomes(args.data / f"{name}.parquet", arg="--data").holdout_split()
        jobs += [
            Job(name, stream, floor, seed, args.n_boot, tune if args.warm else None)
            for floor in args.floors
            for seed in range(args.seeds)
        ]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run, jobs))
    summary = summarise(runs)
    text = markdown(summary)
    sys.stdout.write(text)
    if args.json is not None:
        document = {"argv": sys.argv[1:], "warm": args.warm, "summary": summary, "runs": runs}
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
