"""Route latency tails from garbage collection, with and without the server's heap freezer.

Routes ``--decisions`` prompts through the in-process Router (VW policy, DuckDB log, a reward
window long enough that every decision stays pending, as in a busy server) twice in one
process: once with CPython's default collector, once calling
:class:`~banditroute.server.heap.HeapFreezer`'s ``tick`` every ``--tick-every`` routes (the
server ticks every second). Reports mean, p99, p99.99 and worst Route latency of each run.

    .venv/bin/python benchmarks/gc_pauses.py [--decisions 150000] [--tick-every 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from banditroute.config import settings_from_mapping
from banditroute.decisions import RouteQuery
from banditroute.policies.vw import VWPolicy
from banditroute.router import Router
from banditroute.server.heap import HeapFreezer
from banditroute.store.duckdb_log import DuckDBLog


def run(decisions: int, tick_every: int | None, workdir: Path) -> dict[str, float]:
    """Route ``decisions`` prompts; latency figures in ms."""
    settings = settings_from_mapping({"reward": {"window_s": 86_400.0}})
    log = DuckDBLog(workdir / "log.duckdb")
    router = Router(settings, VWPolicy(), log)
    freezer = HeapFreezer() if tick_every else None
    latencies = []
    label = "freezer" if freezer else "default gc"
    for i in tqdm(range(decisions), desc=label, mininterval=2.0):
        query = RouteQuery(prompt=f"What is the capital of country number {i}? Explain.")
        start = time.perf_counter()
        router.route(query)
        latencies.append(time.perf_counter() - start)
        if freezer is not None and tick_every and i % tick_every == 0:
            freezer.tick()
    log.close()
    gc.unfreeze()
    del router
    gc.collect()
    latencies.sort()
    n = len(latencies)
    return {
        "mean_ms": sum(latencies) / n * 1000,
        "p99_ms": latencies[int(n * 0.99)] * 1000,
        "p9999_ms": latencies[int(n * 0.9999)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=150_000)
    parser.add_argument("--tick-every", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.decisions <= 0 or args.tick_every <= 0:
        parser.error("--decisions and --tick-every must be positive")
    results: dict[str, Any] = {"decisions": args.decisions, "tick_every": args.tick_every}
    with tempfile.TemporaryDirectory() as workdir:
        results["default"] = run(args.decisions, None, Path(workdir) / "a")
        results["freezer"] = run(args.decisions, args.tick_every, Path(workdir) / "b")
    for name in ("default", "freezer"):
        r = results[name]
        print(f"{name:8s} mean {r['mean_ms']:.3f} ms  p99 {r['p99_ms']:.2f} ms  "
              f"p99.99 {r['p9999_ms']:.1f} ms  max {r['max_ms']:.0f} ms")  # fmt: skip
    results["max_ratio"] = results["freezer"]["max_ms"] / results["default"]["max_ms"]
    results["mean_ratio"] = results["freezer"]["mean_ms"] / results["default"]["mean_ms"]
    print(f"freezer / default: mean {results['mean_ratio']:.2f}, max {results['max_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
