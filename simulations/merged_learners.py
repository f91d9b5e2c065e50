"""Do several serving processes with merged learners route as well as one process?

Streams an outcome table through N in-process Routers (the same Router the server uses), each
with its own VW policy, taking prompts round-robin as SO_REUSEPORT spreads connections, and
merges them every ``--merge-every`` decisions. Compared, over the same seeds and prompt
orders: one router; N routers sharing their learning updates (what the multi-worker server
does, ``banditroute.policies.sharing``); N routers merging VW weight deltas
(``vw_delta_merging.py`` beside this script); N routers never merged. Reports mean quality, cost and
reward under the objective over the second half of the stream.

    .venv/bin/python simulations/merged_learners.py --outcomes routerbench_train.parquet \\
        [--workers 2] [--merge-every 200] [--seeds 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from banditroute.config import load_settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.features import warm_up
from banditroute.objectives import parse_objective
from banditroute.outcome_tables import load_outcomes
from banditroute.policies.sharing import SharedLearning
from banditroute.policies.vw import VWPolicy
from banditroute.router import Router
from banditroute.simulation.catalog import build_run_catalog
from banditroute.simulation.runner import NullLog, run_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vw_delta_merging as merging


def stream(
    table_path: Path,
    workers: int,
    merge_every: int | None,
    seed: int,
    objective_text: str,
    *,
    mode: str = "updates",
) -> dict[str, float]:
    """Second-half means of one stream with ``workers`` routers, merged every ``merge_every``
    decisions by sharing updates (``mode="updates"``) or VW deltas (``"deltas"``)."""
    base_settings = load_settings()
    table = load_outcomes(table_path)
    run = build_run_catalog(table, base_settings.catalog)
    objective = parse_objective(objective_text, base_settings.objectives)
    settings = run_settings(base_settings, run, objective)
    seed_policy = VWPolicy(settings.policy.vw_args, seed=seed)
    routers = []
    for index in range(workers):
        vw_policy = VWPolicy(settings.policy.vw_args, seed=seed)
        vw_policy.restore(seed_policy.save())
        policy = SharedLearning(vw_policy) if mode == "updates" else vw_policy
        counter = iter(range(10**9))
        routers.append(
            Router(
                settings,
                policy,
                NullLog(),
                seed=seed,
                new_id=lambda i=index, c=counter: f"{seed}-{i}-{next(c)}",
            )
        )
    states = [merging.start_sync(r.policy) for r in routers if isinstance(r.policy, VWPolicy)]
    order = np.random.default_rng(seed).permutation(table.n_prompts)
    index_of = {m.id: k for k, m in enumerate(run.catalog)}
    quality, cost, reward = [], [], []
    for step, prompt_index in enumerate(order):
        router = routers[step % workers]
        decision = router.route(
            RouteQuery(prompt=table.prompts[prompt_index], objective=objective.name)
        )
        k = index_of[decision.model]
        q, c = float(table.quality[prompt_index, k]), float(run.cost_usd[prompt_index, k])
        ack = router.feedback(FeedbackReport(decision.decision_id, quality=q, cost_usd=c))
        quality.append(q)
        cost.append(c)
        reward.append(ack.reward)
        if merge_every and workers > 1 and (step + 1) % merge_every == 0 and mode == "updates":
            boxes = [r.policy.take_updates() for r in routers]  # type: ignore[attr-defined]
            for me, r in enumerate(routers):
                others = [u for j, box in enumerate(boxes) if j != me for u in box]
                r.policy.learn_shared(others, run.catalog)  # type: ignore[attr-defined]
        elif merge_every and workers > 1 and (step + 1) % merge_every == 0:
            deltas = [
                merging.outgoing_delta(r.policy, st)  # type: ignore[arg-type]
                for r, st in zip(routers, states, strict=True)
            ]
            for me, (r, st) in enumerate(zip(routers, states, strict=True)):
                merging.adopt(r.policy, st, deltas, me)  # type: ignore[arg-type]
    return second_half(quality, cost, reward)


def second_half(quality: list[float], cost: list[float], reward: list[float]) -> dict[str, float]:
    """Mean quality, cost and reward over the second half of a stream."""
    half = len(quality) // 2
    return {
        "quality": float(np.mean(quality[half:])),
        "cost_usd": float(np.mean(cost[half:])),
        "reward": float(np.mean(reward[half:])),
    }


def report(
    results: dict[str, dict[str, list[float]]], seeds: int, objective: str, out: Path | None
) -> None:
    """Print one row per arm (mean ± sd over the seeds) and write ``results`` to ``out``."""
    print(f"second half of the stream, mean ± sd over {seeds} seeds, objective {objective}")
    for name, values in results.items():
        cells = "  ".join(f"{key} {np.mean(v):.4f} ± {np.std(v):.4f}" for key, v in values.items())
        print(f"{name:40s} {cells}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--merge-every", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--objective", default="balanced")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.outcomes.is_file():
        parser.error(f"--outcomes: no such file {args.outcomes}")
    if args.workers < 2 or args.merge_every <= 0 or args.seeds <= 0:
        parser.error("--workers must be >= 2, --merge-every and --seeds positive")
    warm_up()
    n, every = args.workers, args.merge_every
    arms = {
        "one router": (1, None, "updates"),
        f"{n} sharing updates every {every}": (n, every, "updates"),
        f"{n} merging VW deltas every {every}": (n, every, "deltas"),
        f"{n} never merged": (n, None, "updates"),
    }
    results: dict[str, dict[str, list[float]]] = {}
    for name, (workers, merge_every, mode) in arms.items():
        runs = [
            stream(args.outcomes, workers, merge_every, seed, args.objective, mode=mode)
            for seed in tqdm(range(args.seeds), desc=name)
        ]
        results[name] = {key: [r[key] for r in runs] for key in runs[0]}
    report(results, args.seeds, args.objective, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
