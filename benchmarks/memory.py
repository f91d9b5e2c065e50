"""Resident memory of the in-process Router over a long stream of decisions with feedback.

Drives the same Router the server uses, with the DuckDB log, a short reward window (so
pending decisions expire) and feedback for 90% of decisions, and samples the process's
resident set size every ``--every`` decisions. Memory must level off once the window is
full: pending decisions expire and nothing else grows per decision.

    .venv/bin/python benchmarks/memory.py [--decisions 1000000] [--every 100000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from banditroute.audit import AuditChain
from banditroute.config import settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.features import warm_up
from banditroute.policies.factory import build_policy
from banditroute.router import Router
from banditroute.store.duckdb_log import DuckDBLog

PROMPTS = (
    "What is the capital of Australia? Answer in one word.",
    "Write a Python function that merges two sorted lists.",
    "Solve for x: 4x - 9 = 31, and explain each step.",
    "The trophy doesn't fit in the suitcase because the _ is too big.\nA) trophy\nB) suitcase",
)


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc, falling back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(decisions: int, every: int) -> dict[str, object]:
    """Stream ``decisions`` decisions; RSS samples as (decisions so far, MiB)."""
    warm_up()
    clock = [0.0]
    with tempfile.TemporaryDirectory() as workdir:
        settings = settings_from_mapping(
            {
                "log": {"path": f"{workdir}/log.duckdb", "sync_feedback": False},
                "reward": {"window_s": 60.0},
            }
        )
        log = DuckDBLog(settings.log.path, flush_interval_s=0.2, batch_size=8192)
        router = Router(
            settings,
            build_policy(settings.policy, semantic=settings.features.semantic),
            log,
            clock=lambda: clock[0],
            audit=AuditChain(sink=log.append_audit),
        )
        samples: list[tuple[int, float]] = [(0, rss_mb())]
        for index in tqdm(range(1, decisions + 1), desc="decisions", mininterval=2.0):
            clock[0] += 0.01  # 100 decisions per simulated second: 6,000 inside the window
            decision = router.route(RouteQuery(prompt=f"{PROMPTS[index % 4]} #{index}"))
            if index % 10:
                router.feedback(FeedbackReport(decision.decision_id, quality=0.8, cost_usd=0.001))
            if index % every == 0:
                router.expire()
                samples.append((index, rss_mb()))
        log.close()
    half = samples[len(samples) // 2][1]
    return {
        "decisions": decisions,
        "rss_mb": samples,
        "rss_growth_second_half_mb": samples[-1][1] - half,
        "pending_at_end": router.pending_count,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.decisions <= 0 or args.every <= 0:
        parser.error("--decisions and --every must be positive")
    result = run(args.decisions, args.every)
    for count, mb in result["rss_mb"]:  # type: ignore[union-attr]
        print(f"{count:>10,d} decisions  {mb:8.1f} MiB")
    print(f"growth over the second half: {result['rss_growth_second_half_mb']:.1f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
