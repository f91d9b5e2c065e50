"""Route (and Feedback) latency and throughput against a no-op gRPC server with the same proto.

Both servers run in their own process with the same server set-up (grpc.server with the
configured thread pool); the same Python client drives both over loopback in the same run,
alternating rounds, so the machine's noise hits both. Load is bounded in count and time.
Reports calls/s, p50 and p99 per server and concurrency (calls in flight), and the ratios
Route / no-op. Usage::

    python benchmarks/route_latency.py [--calls 3000] [--concurrency 1 16] [--rounds 2]
        [--json benchmarks/results/route_latency.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from banditroute.config import ServerSettings, settings_from_mapping
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

TIME_LIMIT_S = 30.0
"""No measurement runs longer than this, whatever the call count."""

_PROMPTS = [
    "What is the capital of Australia?",
    "Write a Python function that returns the n-th Fibonacci number using memoisation.",
    "Solve for x: 3x + 7 = 22. Show your steps.",
    "Summarize the following text in two sentences: " + "The committee met to review. " * 40,
    "Which of these is a mammal?\nA) shark\nB) dolphin\nC) trout\nD) eel\nAnswer:",
    "Translate into French: the weather is lovely today and we will walk to the market.",
    "The trophy doesn't fit into the brown suitcase because the _ is too large.\n"
    "A) trophy\nB) suitcase\nAnswer:",
    "Explain step by step why the sky appears blue during the day and red at sunset.",
]


class NoopServicer(pb_grpc.RouterServiceServicer):  # type: ignore[misc]
    """Answers every call with a constant response: the gRPC floor for this proto."""

    def __init__(self) -> None:
        self._route = pb.RouteResponse(
            decision_id="0" * 32,
            model="gpt-4-1106-preview",
            fallback_models=["gpt-3.5-turbo-1106"],
            probability=0.5,
            ranking=[pb.ModelProbability(model="gpt-4-1106-preview", probability=0.5)],
            policy_version="noop",
        )
        self._feedback = pb.FeedbackResponse(reward=1.0, disposition=1, feedback_count=1)

    def Route(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._route

    def Feedback(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._feedback


class BurningServicer(NoopServicer):
    """The no-op's constant answers after ``burn_us`` of pure-Python CPU per call: calibrates
    what ratio a handler of a given cost can reach on this machine, with this server set-up."""

    def __init__(self, burn_us: float) -> None:
        super().__init__()
        self._burn_s = burn_us / 1e6

    def _burn(self) -> None:
        end = time.thread_time() + self._burn_s
        while time.thread_time() < end:
            pass

    def Route(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._burn()
        return self._route

    def Feedback(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._burn()
        return self._feedback


def _noop_process(port: int, max_workers: int, ready: Any, stop: Any, burn_us: float = 0.0) -> None:
    """One no-op (or burning) server process bound with SO_REUSEPORT to a shared port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        maximum_concurrent_rpcs=ServerSettings().max_concurrent_rpcs,  # as banditroute's
        options=[("grpc.so_reuseport", 1)],
    )
    servicer = BurningServicer(burn_us) if burn_us > 0 else NoopServicer()
    pb_grpc.add_RouterServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    stop.wait()
    server.stop(1).wait()


def _serve(  # noqa: PLR0917 - multiprocessing passes positionals
    kind: str, workdir: str, max_workers: int, processes: int, port_queue: Any, stop: Any
) -> None:
    """Child process: run one server (``processes`` processes on one port) until ``stop``."""
    import multiprocessing as child_mp
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    if kind == "noop" or kind.startswith("burn"):
        burn_us = float(kind.removeprefix("burn")) if kind.startswith("burn") else 0.0
        context = child_mp.get_context("spawn")
        children = []
        for _ in range(processes):
            ready = context.Event()
            child = context.Process(
                target=_noop_process, args=(port, max_workers, ready, stop, burn_us)
            )
            child.start()
            ready.wait(60)
            children.append(child)
        port_queue.put(port)
        for child in children:
            child.join()
        return
    from banditroute.server.app import build_service
    from banditroute.server.workers import Supervisor

    settings = settings_from_mapping(
        {
            "server": {"port": port, "max_workers": max_workers, "workers": processes},
            "log": {"path": f"{workdir}/log.duckdb"},
            "policy": {"snapshot_path": f"{workdir}/policy.snapshot"},
        }
    )
    if processes > 1:
        supervisor = Supervisor(settings)
        supervisor.start()
        port_queue.put(port)
        while not stop.wait(settings.server.merge_interval_s):
            supervisor.merge_round()
        supervisor.stop()
        return
    service = build_service(settings)
    service.start()
    port_queue.put(service.port)
    stop.wait()
    service.stop()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _drive(calls_by_slot: Any, make_request: Any, calls: int, concurrency: int) -> dict[str, float]:
    """Run ``calls`` calls with ``concurrency`` client threads, thread ``i`` calling
    ``calls_by_slot[i]`` (its own channel); latency in ms."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    counter = iter(range(calls))
    lock = threading.Lock()
    deadline = time.perf_counter() + TIME_LIMIT_S

    def worker(slot: int) -> None:
        while time.perf_counter() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            request = make_request(index, slot)
            if request is None:
                return
            start = time.perf_counter()
            calls_by_slot[slot](request, timeout=10)
            latencies[slot].append((time.perf_counter() - start) * 1000.0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    flat = [x for per in latencies for x in per]
    return {
        "calls": len(flat),
        "calls_per_s": len(flat) / elapsed,
        "p50_ms": statistics.median(flat),
        "p99_ms": _percentile(flat, 0.99),
    }


def _measure(port: int, rpc: str, calls: int, concurrency: int) -> dict[str, float]:
    """One measurement. Each client thread has its own channel (and connection), so a server
    of several processes on one port (SO_REUSEPORT) gets its load spread over them."""
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    stubs = [pb_grpc.RouterServiceStub(channel) for channel in channels]
    for stub in stubs:
        for prompt in _PROMPTS * 3:
            stub.Route(pb.RouteRequest(prompt=prompt), timeout=10)
    if rpc == "route":
        result = _drive(
            [stub.Route for stub in stubs],
            lambda i, slot: pb.RouteRequest(prompt=f"{_PROMPTS[i % len(_PROMPTS)]} #{i}"),
            calls,
            concurrency,
        )
    else:
        # Feedback goes over the channel that routed the decision (same worker, no forwarding).
        per_slot = calls // concurrency + 1
        ids_by_slot = [
            [
                stub.Route(pb.RouteRequest(prompt=_PROMPTS[i % len(_PROMPTS)])).decision_id
                for i in range(per_slot)
            ]
            for stub in stubs
        ]

        def feedback_request(index: int, slot: int) -> pb.FeedbackRequest | None:
            if not ids_by_slot[slot]:
                return None
            return pb.FeedbackRequest(
                decision_id=ids_by_slot[slot].pop(), quality=1.0, cost_usd=0.001, latency_ms=800.0
            )

        result = _drive([stub.Feedback for stub in stubs], feedback_request, calls, concurrency)
    for channel in channels:
        channel.close()
    return result


def run(  # noqa: PLR0917
    calls: int,
    concurrencies: list[int],
    rounds: int,
    rpcs: list[str],
    processes: int = 1,
    burns: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Alternate no-op, real (and burning, one per ``burns`` µs) rounds; keep the median round
    per (rpc, concurrency, kind)."""
    context = mp.get_context("spawn")
    results: dict[str, Any] = {}
    # A burn given twice is measured once (a second server of that kind had no folder of its
    # own, and the ones already started were left running).
    kinds = tuple(dict.fromkeys(("noop", "banditroute", *(f"burn{burn:g}" for burn in burns))))
    with tempfile.TemporaryDirectory() as workdir:
        ports: dict[str, int] = {}
        started: list[tuple[Any, Any]] = []  # stopped in the end, even if a later one fails
        try:
            for kind in kinds:
                port_queue, stop = context.Queue(), context.Event()
                process = context.Process(
                    target=_serve,
                    args=(kind, f"{workdir}/{kind}", 16, processes, port_queue, stop),
                )
                Path(f"{workdir}/{kind}").mkdir()
                process.start()
                started.append((process, stop))
                ports[kind] = port_queue.get(timeout=60)
            for rpc in rpcs:
                for concurrency in concurrencies:
                    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
                    for _ in range(rounds):
                        for kind in kinds:
                            samples[kind].append(_measure(ports[kind], rpc, calls, concurrency))
                    entry = {}
                    for kind, runs in samples.items():
                        best = sorted(runs, key=lambda r: r["calls_per_s"])[len(runs) // 2]
                        entry[kind] = best
                    entry["throughput_ratio"] = (
                        entry["banditroute"]["calls_per_s"] / entry["noop"]["calls_per_s"]
                    )
                    entry["p99_ratio"] = entry["banditroute"]["p99_ms"] / entry["noop"]["p99_ms"]
                    results[f"{rpc}_c{concurrency}"] = entry
                    print(_row(rpc, concurrency, entry), flush=True)
                    for kind in kinds[2:]:
                        entry[f"{kind}_throughput_ratio"] = (
                            entry[kind]["calls_per_s"] / entry["noop"]["calls_per_s"]
                        )
                        entry[f"{kind}_p99_ratio"] = entry[kind]["p99_ms"] / entry["noop"]["p99_ms"]
                        print(
                            f"  calibration: a handler burning {kind[4:]} µs: "
                            f"{entry[kind]['calls_per_s']:7.0f}/s ratio "
                            f"{entry[f'{kind}_throughput_ratio']:.2f} "
                            f"p99x {entry[f'{kind}_p99_ratio']:.2f}",
                            flush=True,
                        )
        finally:
            for process, stop in started:
                stop.set()
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
    return results


def _row(rpc: str, concurrency: int, entry: dict[str, Any]) -> str:
    n, b = entry["noop"], entry["banditroute"]
    return (
        f"{rpc:8s} in-flight={concurrency:<3d} noop {n['calls_per_s']:7.0f}/s "
        f"p50 {n['p50_ms']:.2f} p99 {n['p99_ms']:.2f} ms | banditroute {b['calls_per_s']:7.0f}/s "
        f"p50 {b['p50_ms']:.2f} p99 {b['p99_ms']:.2f} ms | ratio {entry['throughput_ratio']:.2f} "
        f"p99x {entry['p99_ratio']:.2f}"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    """Calls/s per server kind, grouped by RPC and calls in flight, as a PNG: banditroute
    beside the no-op (and the calibration servers, when measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(results)
    kinds = [k for k in results[groups[0]] if isinstance(results[groups[0]][k], dict)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups)), 4.0))
    width = 0.8 / len(kinds)
    for offset, kind in enumerate(kinds):
        rates = [results[group][kind]["calls_per_s"] for group in groups]
        label = f"burning {kind[4:]} µs/call" if kind.startswith("burn") else kind
        positions = [
            index + (offset - (len(kinds) - 1) / 2) * width for index in range(len(groups))
        ]
        ax.bar(positions, rates, width, label=label)
    ax.set_xticks(
        range(len(groups)),
        [
            f"{g.replace('_c', ', ')} in flight\nratio {results[g]['throughput_ratio']:.2f}"
            for g in groups
        ],
    )
    ax.set_ylabel("calls/s")
    ax.set_title("banditroute vs a no-op server with the same proto (same run)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rpc", nargs="+", default=["route", "feedback"],
                        choices=["route", "feedback"])  # fmt: skip
    parser.add_argument("--processes", type=int, default=1,
                        help="serving processes per server (SO_REUSEPORT)")  # fmt: skip
    parser.add_argument("--burn-us", type=float, nargs="*", default=[],
                        help="also measure no-op servers burning this much CPU per call "
                             "(µs each): the ratio a handler of that cost reaches")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="draw calls/s per server kind to this PNG")
    args = parser.parse_args(argv)
    if any(burn <= 0 or burn > 100_000 for burn in args.burn_us):
        parser.error("--burn-us values must be in (0, 100000]")
    if args.calls <= 0 or args.rounds <= 0 or min(args.concurrency) <= 0 or args.processes <= 0:
        parser.error("--calls, --rounds, --concurrency and --processes must be positive")
    results = run(
        args.calls, args.concurrency, args.rounds, args.rpc, args.processes, tuple(args.burn_us)
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
