"""Route CPU the semantic features add, with the two services in one process, interleaved.

``route_cpu.py --rounds N`` measures a service with ``features.semantic`` off, then one with
it on, seconds apart; on a shared machine at a load average of 8-13 a single pair's
difference ranges over 100 µs, so the median of a few pairs moves by 10-20 µs from run to
run. Here both services (built as the server builds them: ``build_service``, the default
policy, DuckDB log, audit chain; port 0, no client) run side by side, and blocks of
``--block-calls`` Routes alternate between them (the order swapped every block), each block
followed by the Feedback of its decisions (not timed). Each figure is calling-thread CPU per
Route (request bytes -> parse -> servicer -> response bytes); the result is the median over
blocks of the on-minus-off difference of adjacent blocks. Usage::

    python benchmarks/semantic_interleaved.py [--semantic-cache TABLE] [--blocks 60]
        [--block-calls 100] [--json OUT.json]
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

from route_cpu import WARM_UP_CALLS, _Context, feature_settings
from route_latency import _PROMPTS

from banditroute.config import settings_from_mapping
from banditroute.server.app import build_service
from banditroute.server.auth import _PRINCIPAL
from banditroute.server.servicer import RouterServicer
from banditroute.v1 import router_pb2 as pb

MAX_BLOCKS = 1000
"""Upper bound on --blocks."""
MAX_BLOCK_CALLS = 10_000
"""Upper bound on --block-calls."""


def _request(i: int) -> bytes:
    return bytes(pb.RouteRequest(prompt=f"{_PROMPTS[i % len(_PROMPTS)]} #{i}").SerializeToString())


def run(cache: Path | None, blocks: int, block_calls: int) -> dict[str, Any]:
    """µs of calling-thread CPU per Route with the semantic features off and on (medians over
    blocks) and the median of the per-block differences."""
    context = _Context()
    with tempfile.TemporaryDirectory(prefix="semantic_interleaved") as workdir:
        services = []
        for on in (False, True):
            features = feature_settings(on, cache)
            settings = settings_from_mapping(
                {
                    "server": {"port": 0, "grace_s": 0.1},
                    "log": {"path": f"{workdir}/{'on' if on else 'off'}.duckdb"},
                    "policy": {"snapshot_path": None},
                    "features": features,
                }
            )
            services.append(build_service(settings))
        token = _PRINCIPAL.set(settings.access.authenticate(None))
        try:
            for service in services:
                service.start()
            servicers = [RouterServicer(service.router) for service in services]

            def block(servicer: RouterServicer, first: int, calls: int) -> float:
                """Route ``calls`` requests, then send their Feedback; µs per Route."""
                requests = [_request(first + i) for i in range(calls)]
                decided = []
                started = time.thread_time_ns()
                for data in requests:
                    response = servicer.Route(pb.RouteRequest.FromString(data), context)
                    decided.append(response.SerializeToString())
                spent = (time.thread_time_ns() - started) / len(requests) / 1000
                for answer in decided:
                    decision_id = pb.RouteResponse.FromString(answer).decision_id
                    feedback = pb.FeedbackRequest(
                        decision_id=decision_id, quality=1.0, cost_usd=0.001, latency_ms=800.0
                    )
                    servicer.Feedback(feedback, context)
                return spent

            for servicer in servicers:
                block(servicer, 0, WARM_UP_CALLS)  # warm-up, as route_cpu.py's
            off: list[float] = []
            on: list[float] = []
            for index in range(blocks):
                first = WARM_UP_CALLS + index * block_calls
                order = (0, 1) if index % 2 == 0 else (1, 0)
                for which in order:
                    (off if which == 0 else on).append(block(servicers[which], first, block_calls))
        finally:
            _PRINCIPAL.reset(token)
            for service in services:
                service.stop()
    added = [b - a for a, b in zip(off, on, strict=True)]
    return {
        "blocks": blocks,
        "block_calls": block_calls,
        "route_thread_off_us": statistics.median(off),
        "route_thread_on_us": statistics.median(on),
        "route_thread_added_us": statistics.median(added),
        "route_thread_added_quartiles_us": (
            statistics.quantiles(added, n=4) if len(added) > 1 else [added[0]] * 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--semantic-cache", type=Path, help="a table file to use instead of the shipped one"
    )
    parser.add_argument("--blocks", type=int, default=60, help="off/on pairs of blocks")
    parser.add_argument("--block-calls", type=int, default=100, help="Routes per block")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 0 < args.blocks <= MAX_BLOCKS:
        parser.error(f"--blocks must be in 1..{MAX_BLOCKS}")
    if not 0 < args.block_calls <= MAX_BLOCK_CALLS:
        parser.error(f"--block-calls must be in 1..{MAX_BLOCK_CALLS}")
    result = run(args.semantic_cache, args.blocks, args.block_calls)
    quartiles = ", ".join(f"{q:.1f}" for q in result["route_thread_added_quartiles_us"])
    print(
        f"Route, calling thread: {result['route_thread_off_us']:.1f} µs off, "
        f"{result['route_thread_on_us']:.1f} on; semantic features add "
        f"{result['route_thread_added_us']:.1f} µs (median of {args.blocks} block pairs; "
        f"quartiles {quartiles})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
