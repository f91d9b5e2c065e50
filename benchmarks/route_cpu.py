"""CPU per Route and Feedback call in-process, through the servicer, against protobuf alone.

Builds and starts the service as the server does (``build_service``: the default policy, DuckDB
log behind its journal, audit chain, the maintenance thread that expires decisions and freezes
the heap every second; port 0, a temporary log, no snapshot; no client ever connects),
authenticates as the default tenant the way the AuthInterceptor does, and calls
``RouterServicer.Route`` / ``Feedback`` directly: request bytes -> parse -> servicer ->
serialized response. CPU is ``time.process_time`` (every thread of the process, so the log
writer's work is counted). The baseline, measured in the same process, is protobuf alone:
parsing the same request bytes and serializing a response of the same shape. With
``--compare-semantic`` it also measures a service with ``features.semantic`` off (the
default has it on, from the table shipped with banditroute, or from ``--semantic-cache PATH``)
and reports the difference; with ``--rounds N``, N pairs of runs (off, on) and the medians of
their differences, since the difference is tens of µs and a shared machine's load moves each
run by as much. Usage::

    python benchmarks/route_cpu.py [--calls 3000] [--json /tmp/route_cpu.json]
        [--compare-semantic [--rounds 3]] [--semantic-cache TABLE]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from route_latency import _PROMPTS

from banditroute.config import settings_from_mapping
from banditroute.server.app import build_service
from banditroute.server.auth import _PRINCIPAL
from banditroute.server.servicer import RouterServicer
from banditroute.v1 import router_pb2 as pb

MAX_CALLS = 100_000
"""Upper bound on --calls, so a run stays bounded."""
MAX_ROUNDS = 20
"""Upper bound on --rounds."""
WARM_UP_CALLS = 500
"""Routes (and Feedbacks) before measuring: VW, regex caches and the log writer settle."""


class _Context:
    """The little of grpc.ServicerContext the servicer touches on the success path."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def _cpu_us(calls: list[Callable[[], Any]]) -> tuple[float, float]:
    """CPU µs per call: all threads of the process (the log writer's and DuckDB's included),
    and the calling thread alone (the request path, steadier on a shared machine)."""
    gc.collect()
    start, thread_start = time.process_time(), time.thread_time()
    for call in calls:
        call()
    thread_us = (time.thread_time() - thread_start) / len(calls) * 1e6
    return (time.process_time() - start) / len(calls) * 1e6, thread_us


def feature_settings(semantic: bool, semantic_cache: Path | None) -> dict[str, Any]:
    """The ``[features]`` section of a run with the semantic features on (the shipped table,
    or the one cached at ``semantic_cache``) or off."""
    features: dict[str, Any] = {"semantic": semantic}
    if semantic and semantic_cache is not None:
        features["semantic_cache"] = str(semantic_cache)
    return features


def run(
    calls: int,
    semantic: bool = True,
    semantic_cache: Path | None = None,
    policy_kind: str | None = None,
) -> dict[str, float]:
    """Measure Route, Feedback and their protobuf-only baselines (µs of CPU per call), with
    the semantic features on (the shipped table, or the one cached at ``semantic_cache``) or
    off, and another policy kind than the default when given one."""
    features = feature_settings(semantic, semantic_cache)
    with tempfile.TemporaryDirectory(prefix="route_cpu") as workdir:
        settings = settings_from_mapping(
            {
                "server": {"port": 0, "grace_s": 0.1},
                "log": {"path": f"{workdir}/log.duckdb"},
                "policy": {"snapshot_path": None} | ({"kind": policy_kind} if policy_kind else {}),
                "features": features,
            }
        )
        service = build_service(settings)
        service.start()
        token = _PRINCIPAL.set(settings.access.authenticate(None))
        try:
            servicer = RouterServicer(service.router)
            context = _Context()

            def route(data: bytes) -> bytes:
                response = servicer.Route(pb.RouteRequest.FromString(data), context)
                return bytes(response.SerializeToString())

            def feedback(data: bytes) -> bytes:
                response = servicer.Feedback(pb.FeedbackRequest.FromString(data), context)
                return bytes(response.SerializeToString())

            def route_bytes(i: int) -> bytes:
                prompt = f"{_PROMPTS[i % len(_PROMPTS)]} #{i}"
                return bytes(pb.RouteRequest(prompt=prompt).SerializeToString())

            def feedback_bytes(decision: bytes) -> bytes:
                decision_id = pb.RouteResponse.FromString(decision).decision_id
                request = pb.FeedbackRequest(
                    decision_id=decision_id, quality=1.0, cost_usd=0.001, latency_ms=800.0
                )
                return bytes(request.SerializeToString())

            warm = [route(route_bytes(i)) for i in range(WARM_UP_CALLS)]
            for answer in warm:
                feedback(feedback_bytes(answer))
            route_requests = [route_bytes(WARM_UP_CALLS + i) for i in range(calls)]
            answers: list[bytes] = []
            route_us, route_thread_us = _cpu_us(
                [lambda d=d: answers.append(route(d)) for d in route_requests]
            )
            feedback_requests = [feedback_bytes(a) for a in answers]
            feedback_us, feedback_thread_us = _cpu_us(
                [lambda d=d: feedback(d) for d in feedback_requests]
            )

            # Protobuf alone: parse the same request, serialize a response of the same shape.
            route_shape = pb.RouteResponse.FromString(answers[-1])
            feedback_shape = pb.FeedbackResponse(reward=1.0, disposition=1, feedback_count=1)

            def route_proto(data: bytes) -> bytes:
                pb.RouteRequest.FromString(data)
                return bytes(route_shape.SerializeToString())

            def feedback_proto(data: bytes) -> bytes:
                pb.FeedbackRequest.FromString(data)
                return bytes(feedback_shape.SerializeToString())

            # Repeated: a couple of µs per call needs more calls to measure steadily.
            route_base = _cpu_us([lambda d=d: route_proto(d) for d in route_requests * 10])[0]
            feedback_base = _cpu_us(
                [lambda d=d: feedback_proto(d) for d in feedback_requests * 10]
            )[0]
        finally:
            _PRINCIPAL.reset(token)
            service.stop()
    return {
        "calls": calls,
        "route_us": route_us,
        "feedback_us": feedback_us,
        "route_thread_us": route_thread_us,
        "feedback_thread_us": feedback_thread_us,
        "route_proto_us": route_base,
        "feedback_proto_us": feedback_base,
        "route_ratio": route_us / route_base,
        "feedback_ratio": feedback_us / feedback_base,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls measured per RPC")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--compare-semantic",
        action="store_true",
        help="also measure with features.semantic off and report what the features add",
    )
    parser.add_argument(
        "--semantic-cache", type=Path, help="a table file to use instead of the shipped one"
    )
    parser.add_argument(
        "--compare-policy",
        choices=("vw", "linucb", "uniform"),
        help="also measure with this [policy] kind (the default is costaware)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --compare-semantic: measure off then on this many times, report the medians",
    )
    args = parser.parse_args(argv)
    if not 0 < args.calls <= MAX_CALLS:
        parser.error(f"--calls must be in 1..{MAX_CALLS}")
    if not 0 < args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be in 1..{MAX_ROUNDS}")
    if args.rounds != 1 and not args.compare_semantic:
        parser.error("--rounds: pairs of runs are for --compare-semantic")
    result: dict[str, Any] = run(args.calls, semantic_cache=args.semantic_cache)
    _print(result)
    if args.compare_policy:
        other = run(args.calls, semantic_cache=args.semantic_cache, policy_kind=args.compare_policy)
        print(f"with policy.kind = {args.compare_policy}:")
        _print(other)
        print(
            f"the default policy costs {result['route_us'] - other['route_us']:.1f} µs more per "
            f"Route and {result['feedback_us'] - other['feedback_us']:.1f} µs more per Feedback"
        )
        result = {**result, args.compare_policy: other}
    if args.compare_semantic:
        result = {**result, **_semantic(args.calls, args.semantic_cache, args.rounds, result)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


_ADDED = ("route_us", "route_thread_us", "feedback_us", "feedback_thread_us")


def _semantic(calls: int, cache: Path | None, rounds: int, on: dict[str, Any]) -> dict[str, Any]:
    """Semantic features on against off: ``rounds`` pairs of runs, off then on (the first
    on run is ``on``, measured already), so a change in the machine's load hits both; the
    medians of the per-pair differences."""
    pairs: list[dict[str, float]] = []
    for round_ in range(rounds):
        base = run(calls, semantic=False)
        print(f"round {round_ + 1}, with features.semantic off:")
        _print(base)
        semantic = on if round_ == 0 else run(calls, semantic_cache=cache)
        pairs.append({key: semantic[key] - base[key] for key in _ADDED})
        print(
            f"semantic features add {pairs[-1]['route_us']:.1f} µs CPU per Route (calling "
            f"thread {pairs[-1]['route_thread_us']:.1f}), {pairs[-1]['feedback_us']:.1f} per "
            f"Feedback (calling thread {pairs[-1]['feedback_thread_us']:.1f})"
        )
    added = {key: statistics.median(pair[key] for pair in pairs) for key in _ADDED}
    if rounds > 1:
        print(
            f"median of {rounds} rounds: semantic features add {added['route_us']:.1f} µs CPU "
            f"per Route (calling thread {added['route_thread_us']:.1f}), "
            f"{added['feedback_us']:.1f} per Feedback (calling thread "
            f"{added['feedback_thread_us']:.1f})"
        )
    return {"semantic_off": base, "semantic_rounds": pairs, "semantic_added_median": added}


def _print(result: dict[str, float]) -> None:
    print(
        f"Route    {result['route_us']:7.1f} µs CPU/call  (protobuf alone "
        f"{result['route_proto_us']:5.1f} µs, ratio {result['route_ratio']:.0f}; calling thread "
        f"{result['route_thread_us']:.1f} µs)\n"
        f"Feedback {result['feedback_us']:7.1f} µs CPU/call  (protobuf alone "
        f"{result['feedback_proto_us']:5.1f} µs, ratio {result['feedback_ratio']:.0f}; calling "
        f"thread {result['feedback_thread_us']:.1f} µs)"
    )


if __name__ == "__main__":
    sys.exit(main())
