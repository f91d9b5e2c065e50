"""Off-policy estimation accuracy against ground truth on a real outcome table.

Per seed: an exploring VW policy (epsilon-greedy, ``--epsilon 0.5``: half the traffic explored
uniformly) routes ``--decisions`` prompts, drawn with replacement from
the outcome table, through the real :class:`~banditroute.router.Router` with a
:class:`~banditroute.store.duckdb_log.DuckDBLog` on disk; only the chosen model's outcome is
reported back with ``Feedback`` (quality and realised cost from the table; latency from the
catalogue's prior, ``ttft + output tokens / speed``, since the table has none). Then
``banditroute replay`` (the library behind it: ``open_log`` -> ``load_log`` -> ``replay``)
estimates five target policies: three fixed models and uniform on the whole log, and a VW
policy trained on the first half of the log and evaluated on the second half (two replay runs,
as a user would make them: with a trained candidate, replay evaluates every candidate on the
held-out half).

The true value of a target is the mean over *all* the table's prompts of its expected reward
under the objective: for fixed models (with the router's fallback to the first eligible model
when the model is not eligible) and uniform straight from the table; for the trained policy, its
distribution on each prompt (the features and eligible models the router logs for that prompt)
times the table's rewards.

Reported per estimator over seeds x targets: bias, RMSE, mean absolute error (absolute and
relative to the true value) and the coverage and mean width of the 95% intervals.

    .venv/bin/python benchmarks/ope_accuracy.py ../shared/data/outcomes/routerbench_train.parquet \\
        [--seeds 20] [--decisions 50000] [--epsilon 0.5] [--workers 2] [--logs DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.catalog import CHARS_PER_TOKEN
from banditroute.config import Settings, load_settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import fragment_arrays, resolve_objective, score
from banditroute.evaluation.replay import ESTIMATOR_NAMES, replay
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.features import features_from_dict
from banditroute.policies.uniform import UniformPolicy
from banditroute.policies.vw import VWPolicy
from banditroute.router import Router
from banditroute.simulation.tables import OutcomeTable, load_outcomes
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.memory import MemoryLog
from banditroute.store.reader import open_log


def logging_args(epsilon: float) -> tuple[str, ...]:
    """The exploring logging policy: epsilon-greedy VW on the default features."""
    return (
        "--cb_explore_adf",
        "--epsilon",
        f"{epsilon:g}",
        "-q",
        "sa",
        "-q",
        "wa",
        "--power_t",
        "0",
    )


TRAINED = "vw:--cb_explore_adf --epsilon 0.05 -q sa -q wa --power_t 0"
FIXED = ("gpt-4-1106-preview", "zero-one-ai/Yi-34B-Chat", "mistralai/mistral-7b-chat")
TARGETS = (*(f"fixed:{m}" for m in FIXED), "uniform", TRAINED)
T0 = 1_700_000_000.0


@dataclass(frozen=True)
class World:
    """The table's outcomes as the router sees them, and what it logs for each prompt."""

    table: OutcomeTable
    cost: np.ndarray
    latency: np.ndarray
    eligible: tuple[tuple[int, ...], ...]
    features: tuple[dict[str, Any], ...]


def build_world(path: Path, settings: Settings) -> World:
    """Load the table (models in catalogue order) and probe each prompt's eligible models."""
    table = load_outcomes(path, model_order=settings.catalog.ids, arg="outcomes")
    missing = [m for m in table.models if m not in settings.catalog]
    if missing:
        raise SystemExit(f"outcomes: models not in the catalogue: {', '.join(missing)}")
    specs = [settings.catalog.get(m) for m in table.models]
    out_tokens = np.where(
        np.isfinite(table.output_tokens),
        table.output_tokens,
        table.response_chars / CHARS_PER_TOKEN,
    )
    typical = np.array([s.typical_output_tokens for s in specs], dtype=np.float64)
    out_tokens = np.where(np.isfinite(out_tokens), out_tokens, typical[None, :])
    in_tokens = np.array([len(p) / CHARS_PER_TOKEN for p in table.prompts])[:, None]
    prices = [(s.input_usd_per_mtok, s.output_usd_per_mtok) for s in specs]
    catalogue_cost = np.column_stack(
        [
            (in_tokens[:, 0] * pin + out_tokens[:, k] * pout) / 1e6
            for k, (pin, pout) in enumerate(prices)
        ]
    )
    cost = np.where(np.isfinite(table.cost_usd), table.cost_usd, catalogue_cost)
    ttft = np.array([s.ttft_ms for s in specs])
    speed = np.array([s.tokens_per_s for s in specs])
    latency = ttft[None, :] + 1000.0 * out_tokens / speed[None, :]
    # What the router logs for each prompt: its eligible models and features.
    probe_log = MemoryLog()
    probe = Router(settings, UniformPolicy(), probe_log, clock=lambda: T0)
    for prompt in table.prompts:
        probe.route(RouteQuery(prompt=prompt))
    column = {m: k for k, m in enumerate(table.models)}
    eligible = tuple(tuple(column[m] for m in r.eligible) for r in probe_log.decisions)
    features = tuple(r.features for r in probe_log.decisions)
    return World(table, cost, latency, eligible, features)


def true_values(world: World, settings: Settings, objective: Any, policy: Any) -> dict[str, float]:
    """Each target's mean reward over all prompts, from the full table."""
    table = world.table
    ok = np.ones(table.quality.shape, dtype=bool)
    rewards = score(objective, fragment_arrays(table.quality, world.cost, world.latency, ok))
    n = rewards.shape[0]
    values: dict[str, float] = {}
    for model in FIXED:
        column = table.models.index(model)
        chosen = [column if column in e else e[0] for e in world.eligible]
        values[f"fixed:{model}"] = float(np.mean(rewards[np.arange(n), chosen]))
    values["uniform"] = float(
        np.mean([rewards[i, list(e)].mean() for i, e in enumerate(world.eligible)])
    )
    expected = []
    for i, e in enumerate(world.eligible):
        arms = tuple(settings.catalog.get(table.models[c]) for c in e)
        probs = policy.distribution(features_from_dict(world.features[i]), arms)
        expected.append(float(np.dot(probs, rewards[i, list(e)])))
    values[TRAINED] = float(np.mean(expected))
    return values


@dataclass(frozen=True)
class Job:
    """One seed's work (picklable)."""

    outcomes: Path
    seed: int
    decisions: int
    objective: str
    n_boot: int
    epsilon: float
    word_buckets: int
    logs: Path | None
    logging: str = "vw"


def write_log(path: Path, world: World, settings: Settings, job: Job) -> None:
    """Route ``job.decisions`` prompts through the Router, logging to DuckDB at ``path``."""
    table = world.table
    rng = np.random.default_rng([job.seed, 0xACC])
    event_log = DuckDBLog(path, flush_interval_s=0.02, batch_size=8192)
    clock = [T0]
    ids = itertools.count()
    router = Router(
        settings,
        VWPolicy(logging_args(job.epsilon), seed=job.seed)
        if job.logging == "vw"
        else UniformPolicy(),
        event_log,
        clock=lambda: clock[0],
        new_id=lambda: f"{job.seed}-{next(ids):08d}",
        seed=job.seed,
    )
    column = {m: k for k, m in enumerate(table.models)}
    for p in rng.integers(0, table.n_prompts, job.decisions):
        decision = router.route(RouteQuery(prompt=table.prompts[p]))
        clock[0] += 1.0
        k = column[decision.model]
        router.feedback(
            FeedbackReport(
                decision.decision_id,
                quality=float(table.quality[p, k]),
                cost_usd=float(world.cost[p, k]),
                latency_ms=float(world.latency[p, k]),
            )
        )
    event_log.close()


def run_seed(job: Job) -> dict[str, Any]:
    """Log one seed through the Router and DuckDB, replay it, compare with the truth."""
    settings = load_settings()
    settings = replace(settings, log=replace(settings.log, sync_feedback=False))
    world = _world(job.outcomes, settings)
    objective = resolve_objective(job.objective, settings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        policy = f"eps{job.epsilon:g}" if job.logging == "vw" else job.logging
        name = f"{job.outcomes.stem}-seed{job.seed}-n{job.decisions}-{policy}.duckdb"
        log_path = (job.logs or Path(folder)) / name
        if not log_path.exists():
            partial = log_path.with_name(log_path.name + ".partial")
            partial.unlink(missing_ok=True)
            write_log(partial, world, settings, job)
            partial.rename(log_path)
        logged_s = time.perf_counter() - started
        mark = time.perf_counter()
        source = open_log(log_path)
        log = load_log(source, with_features=True, word_buckets=job.word_buckets)
        source.connection.close()
        # Fixed and uniform targets on the whole log; the trained one on the held-out half
        # (replay trains it on the first half), as two `banditroute replay` runs would.
        results = [
            replay(
                log,
                [parse_candidate(t) for t in group],
                objective,
                settings,
                n_boot=job.n_boot,
                seed=job.seed,
                reward_model=RidgeRewardModel(seed=job.seed),
            )
            for group in (TARGETS[:-1], TARGETS[-1:])
        ]
        replay_s = time.perf_counter() - mark
    truth = true_values(world, settings, objective, results[1].policies[TRAINED])
    rows = []
    for candidate in (c for result in results for c in result.candidates):
        for name, interval in candidate.estimates.items():
            rows.append(
                {
                    "target": candidate.name,
                    "estimator": name,
                    "truth": truth[candidate.name],
                    "estimate": interval.estimate,
                    "lower": interval.lower,
                    "upper": interval.upper,
                    "ess": candidate.diagnostics.ess,
                    "max_weight": candidate.diagnostics.max_weight,
                }
            )
    return {
        "seed": job.seed,
        "n_eval": [result.n_decisions for result in results],
        "logged_s": logged_s,
        "replay_s": replay_s,
        "rows": rows,
    }


_WORLD: dict[Path, World] = {}


def _world(path: Path, settings: Settings) -> World:
    if path not in _WORLD:
        _WORLD[path] = build_world(path, settings)
    return _WORLD[path]


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Bias, RMSE, MAE (absolute, relative), coverage and width per estimator."""
    out: dict[str, dict[str, float]] = {}
    for name in ESTIMATOR_NAMES:
        picked = [r for r in rows if r["estimator"] == name]
        if not picked:
            continue
        err = np.array([r["estimate"] - r["truth"] for r in picked])
        truth = np.array([r["truth"] for r in picked])
        out[name] = {
            "n": len(picked),
            "bias": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "mae_relative": float(np.mean(np.abs(err) / np.abs(truth))),
            "coverage": float(np.mean([r["lower"] <= r["truth"] <= r["upper"] for r in picked])),
            "mean_width": float(np.mean([r["upper"] - r["lower"] for r in picked])),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outcomes", type=Path, help="an outcome table (Parquet)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--objective", default="balanced")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epsilon", type=float, default=0.5, help="logging exploration (0.5)")
    parser.add_argument(
        "--logging-policy",
        choices=["vw", "uniform"],
        default="vw",
        help="vw: epsilon-greedy VW learning online (default); uniform: uniform random",
    )
    parser.add_argument("--word-buckets", type=int, default=0, help="reward model words (0)")
    parser.add_argument("--logs", type=Path, help="keep the seeds' logs here and reuse them")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.outcomes.is_file():
        parser.error(f"outcomes: no such file {str(args.outcomes)!r}")
    started = time.perf_counter()
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    jobs = [
        Job(
            args.outcomes,
            seed,
            args.decisions,
            args.objective,
            args.n_boot,
            args.epsilon,
            args.word_buckets,
            args.logs,
            args.logging_policy,
        )
        for seed in range(args.seeds)
    ]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        seeds = []
        for done in pool.map(run_seed, jobs):
            seeds.append(done)
            print(
                f"seed {done['seed']:2d}: logged in {done['logged_s']:.1f} s, "
                f"replayed in {done['replay_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = [r for s in seeds for r in s["rows"]]
    overall = summarise(rows)
    per_target = {t: summarise([r for r in rows if r["target"] == t]) for t in TARGETS}
    truths = {t: float(np.mean([r["truth"] for r in rows if r["target"] == t])) for t in TARGETS}
    print(
        f"\n{args.outcomes.name}: {args.seeds} seeds x {len(TARGETS)} targets, "
        f"{args.decisions:,} logged decisions per seed (fixed and uniform evaluated on "
        f"{seeds[0]['n_eval'][0]:,}, the trained policy on the last {seeds[0]['n_eval'][1]:,}), "
        f"objective {args.objective}"
    )
    header = (
        f"{'estimator':<10} {'bias':>8} {'RMSE':>8} {'MAE':>8} {'MAE/true':>9} "
        f"{'coverage':>9} {'width':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, m in overall.items():
        print(
            f"{name:<10} {m['bias']:>+8.4f} {m['rmse']:>8.4f} {m['mae']:>8.4f} "
            f"{m['mae_relative']:>9.2%} {m['coverage']:>9.0%} {m['mean_width']:>8.4f}"
        )
    print("\nper target (true value; DR MAE/true, coverage; IPS MAE/true, coverage):")
    for target in TARGETS:
        dr, ips = per_target[target]["dr"], per_target[target]["ips"]
        print(
            f"  {target:<60} {truths[target]:.4f}  DR {dr['mae_relative']:6.2%} "
            f"{dr['coverage']:4.0%}  IPS {ips['mae_relative']:6.2%} {ips['coverage']:4.0%}"
        )
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s with {args.workers} workers")
    if args.json:
        document = {
            "outcomes": args.outcomes.name,
            "seeds": args.seeds,
            "decisions": args.decisions,
            "objective": args.objective,
            "logging_policy": " ".join(logging_args(args.epsilon)),
            "word_buckets": args.word_buckets,
            "targets": list(TARGETS),
            "true_values": truths,
            "overall": overall,
            "per_target": per_target,
            "elapsed_s": elapsed,
            "machine": f"{platform.machine()}, python {platform.python_version()}",
            "rows": rows,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
