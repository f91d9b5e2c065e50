"""Off-policy estimation accuracy on logs the real service writes, against the known truth.

Per seed: a real ``banditroute serve`` process (the default configuration, or with ``[policy]
min_probability`` set by ``--min-probability``) routes every prompt of an outcome table
(``--passes`` times, each pass in a fresh seeded random order) over gRPC, and only the chosen
model's outcome is reported back with ``Feedback`` (quality and realised cost from the table;
latency from the catalogue's prior, ``ttft + output tokens / speed``, as the table has none).
The server is stopped and the library behind ``banditroute replay`` (``open_log`` ->
``load_log`` -> ``replay``) estimates, under each objective, the logged policy, uniform and
every catalogue model as a fixed policy, with all six estimators and their 95% intervals.

The true value of a candidate is its expected reward on the logged decisions, from the full
table: ``mean_i sum_k target[i, k] * reward(prompt_i, k)`` with the candidate's distribution
on each logged decision (the logged distribution itself for ``logged``; fixed models fall
back to the first eligible model as ``FixedPolicy`` does). Every prompt appears ``--passes``
times, so for fixed and uniform this is also their mean over the table's prompts.

Reported per estimator over seeds x objectives x candidates: bias, mean absolute error (also
relative to the truth), the share within 2% of the truth (``|estimate - truth| <= 0.02
|truth|``), the coverage and the mean and largest width of the 95% intervals, how many
estimates and intervals the clipping to the reward range changed; and the same for the
candidates rated reliable (``replay``'s verdict at ``--tolerance``: ESS, overlap, and a DR
interval within that share of its estimate), with how many of each kind were.

    nice .venv/bin/python benchmarks/ope_accuracy.py \\
        /work/split/routerbench_train.holdout.parquet [--seeds 16] [--passes 3] \\
        [--min-probability 0.02] [--tolerance 0.02] [--workers 1] [--logs DIR] [--json OUT]

A server's failed calls (``rpc_failed``: incident id, exception type and stack) are printed
on stderr; with ``--logs`` its whole stderr is kept beside each log (``NAME.serve.stderr``).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from banditroute.catalog import CHARS_PER_TOKEN
from banditroute.choices import DEFAULT_TOLERANCE
from banditroute.config import Settings, load_settings
from banditroute.evaluation.candidates import parse_candidate, static_distribution
from banditroute.evaluation.logdata import ReplayLog, load_log
from banditroute.evaluation.objective_rewards import fragment_arrays, resolve_objective, score
from banditroute.evaluation.replay import ESTIMATOR_NAMES, replay
from banditroute.evaluation.reward_model import RidgeRewardModel
from banditroute.outcome_tables import OutcomeTable, load_outcomes
from banditroute.store.reader import open_log
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

OBJECTIVES = ("balanced", "quality=1,cost=0,latency=0")
ADDRESS = re.compile(r"\blistening\b.*\baddress=(\S+:\d+)")
START_TIMEOUT_S = 120.0
IN_FLIGHT = 64
"""Feedback calls in flight at once (a client does not wait for one before the next Route)."""


@dataclass(frozen=True)
class World:
    """The table's outcomes in catalogue order: quality, realised cost and prior latency."""

    table: OutcomeTable
    cost: np.ndarray
    latency: np.ndarray


def build_world(path: Path, settings: Settings) -> World:
    """Load the table (models in catalogue order), price it and give it latencies."""
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
    return World(table, cost, latency)


@dataclass(frozen=True)
class Job:
    """One seed's work (picklable)."""

    outcomes: Path
    seed: int
    passes: int
    objectives: tuple[str, ...]
    n_boot: int
    min_probability: float | None
    logs: Path | None
    tolerance: float = DEFAULT_TOLERANCE


def start_server(folder: Path, log_path: Path, config: Path | None) -> subprocess.Popen[bytes]:
    """``banditroute serve`` on a free port; returns once it listens (address in ``.address``)."""
    stderr_path = folder / "serve.stderr"
    command = [sys.executable, "-m", "banditroute.cli", "serve", "--port", "0"]
    command += ["--log", str(log_path)]
    if config is not None:
        command += ["--config", str(config)]
    with stderr_path.open("wb") as sink:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = ADDRESS.search(stderr_path.read_text("utf-8", errors="replace"))
        if match:
            process.address = match.group(1)  # type: ignore[attr-defined]
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not start:\n{stderr_path.read_text(errors='replace')}")


def write_log(log_path: Path, world: World, job: Job) -> dict[str, int]:
    """Route every prompt ``job.passes`` times through a real server; returns decision -> prompt."""
    table = world.table
    column = {m: k for k, m in enumerate(table.models)}
    rng = np.random.default_rng([job.seed, 0x0BE])
    with tempfile.TemporaryDirectory() as folder:
        config = None
        if job.min_probability is not None:
            config = Path(folder) / "floor.toml"
            config.write_text(f"[policy]\nmin_probability = {job.min_probability!r}\n", "utf-8")
        server = start_server(Path(folder), log_path, config)
        prompts: dict[str, int] = {}
        try:
            with grpc.insecure_channel(server.address) as channel:  # type: ignore[attr-defined]
                stub = pb_grpc.RouterServiceStub(channel)
                pending: list[Future[Any]] = []
                for _ in range(job.passes):
                    for p in rng.permutation(table.n_prompts).tolist():
                        decision = stub.Route(pb.RouteRequest(prompt=table.prompts[p]), timeout=60)
                        prompts[decision.decision_id] = p
                        k = column[decision.model]
                        pending.append(
                            stub.Feedback.future(
                                pb.FeedbackRequest(
                                    decision_id=decision.decision_id,
                                    quality=float(table.quality[p, k]),
                                    cost_usd=float(world.cost[p, k]),
                                    latency_ms=float(world.latency[p, k]),
                                ),
                                timeout=60,
                            )
                        )
                        if len(pending) >= IN_FLIGHT:
                            pending.pop(0).result()
                for call in pending:
                    call.result()
        finally:
            server.terminate()
            server.wait(timeout=120)
            keep_server_log(Path(folder) / "serve.stderr", log_path, job.logs is not None)
    return prompts


def keep_server_log(stderr_path: Path, log_path: Path, keep: bool) -> None:
    """Keep what the server logged past its temporary folder: its whole stderr beside the
    decision log (``NAME.serve.stderr``) with ``--logs``, and its ``rpc_failed`` lines (an
    INTERNAL answer's incident id, exception type and stack; never client text) on this
    script's stderr in any case, so an incident can be traced after the run."""
    if keep:
        shutil.copyfile(stderr_path, log_path.with_suffix(".serve.stderr"))
    text = stderr_path.read_text("utf-8", errors="replace")
    failed = [line for line in text.splitlines() if "rpc_failed" in line]
    if failed:
        print(f"{log_path.stem}: the server logged {len(failed)} failed call(s):", file=sys.stderr)
        for line in failed:
            print(line.replace("\\n", "\n"), file=sys.stderr)


def true_value(
    log: ReplayLog, target: np.ndarray, rewards: np.ndarray, prompts: np.ndarray, columns: list[int]
) -> float:
    """``mean_i sum_k target[i, k] * rewards[prompt_i, column_k]``: the candidate's expected
    reward on the logged decisions, from the full table."""
    table_rewards = rewards[prompts][:, columns]
    return float(np.mean(np.einsum("ik,ik->i", target, table_rewards)))


def run_seed(job: Job) -> dict[str, Any]:
    """Log one seed through a real server, replay it under each objective, compare."""
    settings = load_settings()
    world = build_world(job.outcomes, settings)
    table = world.table
    started = time.perf_counter()
    floor = "default" if job.min_probability is None else f"floor{job.min_probability:g}"
    name = f"{job.outcomes.stem}-seed{job.seed}-x{job.passes}-{floor}"
    with tempfile.TemporaryDirectory() as folder:
        where = job.logs or Path(folder)
        log_path = where / f"{name}.duckdb"
        prompt_path = where / f"{name}.prompts.json"
        if not (log_path.exists() and prompt_path.exists()):
            for stale in where.glob(f"{name}.duckdb*"):
                if stale.is_file():
                    stale.unlink()
            prompts = write_log(log_path, world, job)
            prompt_path.write_text(json.dumps(prompts), "utf-8")
        prompts = json.loads(prompt_path.read_text("utf-8"))
        logged_s = time.perf_counter() - started
        mark = time.perf_counter()
        source = open_log(log_path)
        log = load_log(source)
        source.connection.close()
    ids = log.decision_ids.to_pylist()
    prompt_of = np.array([prompts[d] for d in ids], dtype=np.int64)
    columns = [table.models.index(m) for m in log.models]
    candidates = ["logged", "uniform", *(f"fixed:{m}" for m in settings.catalog.ids)]
    specs = [parse_candidate(c) for c in candidates]
    rows = []
    ok = np.ones(table.quality.shape, dtype=bool)
    for objective_text in job.objectives:
        objective = resolve_objective(objective_text, settings)
        rewards = score(objective, fragment_arrays(table.quality, world.cost, world.latency, ok))
        result = replay(
            log,
            specs,
            objective,
            settings,
            n_boot=job.n_boot,
            seed=job.seed,
            reward_model=RidgeRewardModel(seed=job.seed),
            tolerance=job.tolerance,
        )
        used = log.subset(log.has_outcome)
        used_prompts = prompt_of[log.has_outcome]
        for spec, candidate in zip(specs, result.candidates, strict=True):
            truth = true_value(
                used, static_distribution(spec, used), rewards, used_prompts, columns
            )
            verdict = getattr(candidate, "verdict", None)
            for estimator, interval in candidate.estimates.items():
                rows.append(
                    {
                        "objective": objective_text,
                        "candidate": candidate.name,
                        "kind": spec.kind,
                        "estimator": estimator,
                        "truth": truth,
                        "estimate": interval.estimate,
                        "lower": interval.lower,
                        "upper": interval.upper,
                        "raw": getattr(interval, "raw_estimate", interval.estimate),
                        "clipped": bool(getattr(interval, "clipped", False)),
                        "range": list(getattr(result, "reward_range", (None, None))),
                        "ess": candidate.diagnostics.ess,
                        "max_weight": candidate.diagnostics.max_weight,
                        "reliable": None if verdict is None else verdict.reliable,
                        "reason": None if verdict is None else verdict.reason,
                        "half_width": None  # null: unbounded (an estimate of 0)
                        if verdict is None
                        else verdict.as_dict()["relative_half_width"],
                        "thin_mass": candidate.diagnostics.thin_mass,
                        "switch_tau": getattr(interval, "tau", None),
                    }
                )
    propensities = log.propensities
    return {
        "seed": job.seed,
        "n_decisions": log.n,
        "min_propensity": float(propensities.min()),
        "logged_s": logged_s,
        "replay_s": time.perf_counter() - mark,
        "rows": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Bias, MAE (absolute, relative), coverage, width and clipping counts per estimator."""
    out: dict[str, dict[str, float]] = {}
    for name in ESTIMATOR_NAMES:
        picked = [r for r in rows if r["estimator"] == name]
        if not picked:
            continue
        err = np.array([r["estimate"] - r["truth"] for r in picked])
        truth = np.array([r["truth"] for r in picked])
        low = np.array([r["lower"] for r in picked])
        high = np.array([r["upper"] for r in picked])
        out[name] = {
            "n": len(picked),
            "bias": float(err.mean()),
            "mae": float(np.mean(np.abs(err))),
            "mae_relative": float(np.mean(np.abs(err) / np.abs(truth))),
            "within_2pct": float(np.mean(np.abs(err) <= 0.02 * np.abs(truth))),
            "coverage": float(np.mean((low <= truth) & (truth <= high))),
            "mean_width": float(np.mean(high - low)),
            "max_width": float(np.max(high - low)),
            "clipped": int(sum(r["clipped"] for r in picked)),
        }
    return out


def reliable_counts(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per candidate kind: candidate estimates rated reliable, of all (DR rows: one each)."""
    dr = [r for r in rows if r["estimator"] == "dr"]
    return {
        kind: (
            sum(bool(r["reliable"]) for r in dr if r["kind"] == kind),
            sum(r["kind"] == kind for r in dr),
        )
        for kind in ("logged", "uniform", "fixed")
    }


def outside_range(rows: list[dict[str, Any]]) -> int:
    """Estimates or interval ends outside the reward range reported with them."""
    bad = 0
    for r in rows:
        low, high = r["range"]
        if low is None:
            continue
        values = (r["estimate"], r["lower"], r["upper"])
        bad += any(v < low - 1e-12 or v > high + 1e-12 for v in values)
    return bad


def print_table(title: str, summary: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    header = (
        f"{'estimator':<10} {'n':>5} {'bias':>8} {'MAE':>7} {'MAE/true':>9} {'<=2%':>6} "
        f"{'coverage':>9} {'width':>7} {'max w':>7} {'clipped':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, m in summary.items():
        print(
            f"{name:<10} {m['n']:>5} {m['bias']:>+8.4f} {m['mae']:>7.4f} "
            f"{m['mae_relative']:>9.2%} {m['within_2pct']:>6.0%} {m['coverage']:>9.1%} "
            f"{m['mean_width']:>7.4f} {m['max_width']:>7.4f} {m['clipped']:>8}"
        )


def write_document(path: Path, document: dict[str, Any]) -> None:
    """The JSON results: the summaries indented, then one compact line per interval (values
    rounded to 6 digits, the reward range kept per objective rather than per row, without the
    verdict's reason and the largest weight)."""
    rows = document.pop("rows")
    ranges = {r["objective"]: r.pop("range") for r in rows if "range" in r}
    for r in rows:  # per candidate, and long: the table has the verdicts' reasons
        r.pop("reason", None)
        r.pop("max_weight", None)
    document["reward_ranges"] = ranges
    lines = [
        json.dumps(
            {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()},
            separators=(",", ":"),
        )
        for row in rows
    ]
    text = json.dumps(document, indent=2)
    path.write_text(text[:-2] + ',\n  "rows": [\n' + ",\n".join(lines) + "\n  ]\n}\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outcomes", type=Path, help="an outcome table (Parquet)")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=3, help="times each prompt is routed (3)")
    parser.add_argument(
        "--objective",
        action="append",
        help=f"objective to replay under (repeatable; default: {' and '.join(OBJECTIVES)})",
    )
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--min-probability",
        type=float,
        help="log with [policy] min_probability set to this (default: the configured default)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="the verdict's precision: a reliable candidate's DR interval reaches at most this "
        f"share of its estimate (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument("--logs", type=Path, help="keep the seeds' logs here and reuse them")
    parser.add_argument("--log-only", action="store_true", help="write the logs, do not replay")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.tolerance <= 1:
        parser.error(f"--tolerance: must be in (0, 1], got {args.tolerance}")
    if args.passes < 1:
        parser.error(f"--passes: must be at least 1, got {args.passes}")
    if not args.outcomes.is_file():
        parser.error(f"outcomes: no such file {str(args.outcomes)!r}")
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [
        Job(
            args.outcomes,
            seed,
            args.passes,
            tuple(args.objective or OBJECTIVES),
            args.n_boot,
            args.min_probability,
            args.logs,
            args.tolerance,
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    if args.log_only:
        if args.logs is None:
            parser.error("--log-only: needs --logs")
        settings = load_settings()
        world = build_world(args.outcomes, settings)
        for job in jobs:
            floor = "default" if job.min_probability is None else f"floor{job.min_probability:g}"
            name = f"{job.outcomes.stem}-seed{job.seed}-x{job.passes}-{floor}"
            if (args.logs / f"{name}.prompts.json").exists():
                continue
            mark = time.perf_counter()
            prompts = write_log(args.logs / f"{name}.duckdb", world, job)
            (args.logs / f"{name}.prompts.json").write_text(json.dumps(prompts), "utf-8")
            print(f"seed {job.seed}: logged in {time.perf_counter() - mark:.0f} s", flush=True)
        return 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        seeds = []
        for done in pool.map(run_seed, jobs):
            seeds.append(done)
            print(
                f"seed {done['seed']:2d}: {done['n_decisions']} decisions (min propensity "
                f"{done['min_propensity']:.4f}), logged in {done['logged_s']:.0f} s, "
                f"replayed in {done['replay_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = [r for s in seeds for r in s["rows"]]
    overall = summarise(rows)
    by_kind = {
        k: summarise([r for r in rows if r["kind"] == k]) for k in ("fixed", "uniform", "logged")
    }
    reliable_rows = [r for r in rows if r["reliable"]]
    reliable = summarise(reliable_rows)
    reliable_by_kind = reliable_counts(rows)
    floor = (
        "default config"
        if args.min_probability is None
        else f"min_probability {args.min_probability:g}"
    )
    print(
        f"{args.outcomes.name}: {args.seeds} seeds x {len(jobs[0].objectives)} objectives x "
        f"{len({r['candidate'] for r in rows})} candidates, {seeds[0]['n_decisions']:,} decisions "
        f"per log ({floor}); min propensity over the logs "
        f"{min(s['min_propensity'] for s in seeds):.4f}"
    )
    print_table("all candidates", overall)
    for kind, summary in by_kind.items():
        print_table(f"{kind} candidates", summary)
    print_table(
        f"candidates rated reliable at tolerance {args.tolerance:g} "
        f"({len(reliable_rows) // max(1, len(overall))} of "
        f"{len(rows) // max(1, len(overall))})",
        reliable,
    )
    print(
        "reliable by kind: "
        + ", ".join(f"{k} {n} of {total}" for k, (n, total) in reliable_by_kind.items())
    )
    bad = outside_range(rows)
    print(f"\nestimates or intervals outside the reward range: {bad} of {len(rows)}")
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.0f} s with {args.workers} workers")
    if args.json:
        document = {
            "outcomes": args.outcomes.name,
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "passes": args.passes,
            "decisions": [s["n_decisions"] for s in seeds],
            "min_propensity": [s["min_propensity"] for s in seeds],
            "objectives": list(jobs[0].objectives),
            "config": floor,
            "n_boot": args.n_boot,
            "overall": overall,
            "by_kind": by_kind,
            "reliable": reliable,
            "n_reliable_rows": len(reliable_rows),
            "tolerance": args.tolerance,
            "reliable_by_kind": {k: list(v) for k, v in reliable_by_kind.items()},
            "outside_range": bad,
            "elapsed_s": elapsed,
            "machine": f"{platform.machine()}, python {platform.python_version()}",
            "rows": rows,
        }
        write_document(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
