"""Where the CPU the semantic features add to Route and Feedback goes.

Runs ``route_cpu.py``'s in-process service with ``features.semantic`` off and on, in
alternating rounds (so a change in the machine's load hits both), with a few functions of the
request path timed on the calling thread's CPU clock: feature extraction and the embedding in
it, the policy's distribution and update, the audit chain's append (the logged row's JSON and
digest), and the garbage collector. Each figure is µs per Route (per Feedback for the policy's
update and ``Router.feedback``), the median over the rounds. Usage::

    python benchmarks/semantic_parts.py [--semantic-cache TABLE] [--calls 3000] [--rounds 3]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import route_cpu

from banditroute import router as router_module
from banditroute.audit import AuditChain
from banditroute.embedding.static import LeadingComponents
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.router import Router

MAX_ROUNDS = 20
"""Upper bound on --rounds."""

_spent: collections.Counter[str] = collections.Counter()
_calls: collections.Counter[str] = collections.Counter()

PARTS: dict[str, tuple[Any, str, str]] = {
    "Router.route": (Router, "route", "route"),
    "extract (with the embedding)": (router_module, "extract", "route"),
    "embed_words": (LeadingComponents, "embed_words", "route"),
    "policy distribution": (CostAwarePolicy, "distribution", "route"),
    "audit append (row JSON, digest)": (AuditChain, "append", "route"),
    "Router.feedback": (Router, "feedback", "feedback"),
    "policy learn": (CostAwarePolicy, "learn", "feedback"),
}
"""Timed functions: where each lives, its name there, and the RPC it is counted per."""


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return function(*args, **kwargs)
        finally:
            _spent[name] += time.thread_time_ns() - started
            _calls[name] += 1

    return timed


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _spent["_gc_started"] = time.thread_time_ns()
    else:
        _spent["garbage collection"] += time.thread_time_ns() - _spent["_gc_started"]


def _install() -> None:
    for name, (owner, attribute, _) in PARTS.items():
        setattr(owner, attribute, _timed(name, getattr(owner, attribute)))
    gc.callbacks.append(_gc_timer)


def _one_run(calls: int, on: bool, cache: Path | None) -> dict[str, float]:
    """µs per RPC of each part over one route_cpu run (its warm-up calls included)."""
    _spent.clear()
    _calls.clear()
    route_cpu.run(calls, semantic=on, semantic_cache=cache)
    per = {"route": _calls["Router.route"], "feedback": _calls["Router.feedback"]}
    out = {name: _spent[name] / per[rpc] / 1000 for name, (_, _, rpc) in PARTS.items()}
    out["garbage collection"] = _spent["garbage collection"] / per["route"] / 1000
    return out


def run(calls: int, cache: Path | None, rounds: int) -> dict[str, dict[str, float]]:
    """Per part: the median µs per call with the semantic features off, on, and added."""
    _install()
    off: list[dict[str, float]] = []
    on: list[dict[str, float]] = []
    for _ in range(rounds):
        off.append(_one_run(calls, False, None))
        on.append(_one_run(calls, True, cache))
    result = {}
    for name in off[0]:
        result[name] = {
            "off_us": statistics.median(r[name] for r in off),
            "on_us": statistics.median(r[name] for r in on),
            "added_us": statistics.median(b[name] - a[name] for a, b in zip(off, on, strict=True)),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--semantic-cache", type=Path, help="a table file to use instead of the shipped one"
    )
    parser.add_argument("--calls", type=int, default=3000, help="calls measured per RPC")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs of runs")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 0 < args.calls <= route_cpu.MAX_CALLS:
        parser.error(f"--calls must be in 1..{route_cpu.MAX_CALLS}")
    if not 0 < args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be in 1..{MAX_ROUNDS}")
    result = run(args.calls, args.semantic_cache, args.rounds)
    print(f"{'µs CPU per call, calling thread':34s} {'off':>7s} {'on':>7s} {'added':>7s}")
    for name, r in result.items():
        print(f"{name:34s} {r['off_us']:7.1f} {r['on_us']:7.1f} {r['added_us']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
