"""Run every benchmark with bounded load and write one table and benchmarks/results.json.

``make bench`` runs this. Each benchmark is also a script of its own (see benchmarks/README.md).
Ratios are measured against a baseline in the same run; absolute figures vary with the machine.

    .venv/bin/python benchmarks/run_all.py [--quick] [--outcomes routerbench_train.parquet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import memory  # noqa: E402
import route_latency  # noqa: E402

CALIBRATION_BURNS_US = (50.0, 300.0)
"""CPU per call (µs) of the calibration servers measured beside the no-op and banditroute."""


def _ingestion(rows: int) -> dict[str, float]:
    """Feedback rows/s through the DuckDB log vs. one bare Arrow insert of the same rows.

    ``acknowledged_rows_per_s``: rows appended as the server does (each written to the journal
    before the call returns); ``log_rows_per_s``: the same rows until they are in the DuckDB
    tables (journal written, then moved in)."""
    import tempfile

    import duckdb
    import pyarrow as pa

    from banditroute.store.duckdb_log import DuckDBLog
    from banditroute.store.records import FeedbackRecord

    with tempfile.TemporaryDirectory() as workdir:
        log = DuckDBLog(Path(workdir) / "log.duckdb")
        records = [
            FeedbackRecord(
                f"d{i}", 1.0 + i, "m", 0.5, 0.001, None, None, 100.0, "OK", 0.4, "LEARNED"
            )
            for i in range(rows)
        ]
        start = time.perf_counter()
        for record in records:
            log.append_feedback(record).wait(120)
        acknowledged = time.perf_counter() - start
        log.flush()
        log_rate = rows / (time.perf_counter() - start)
        log.close()
        con = duckdb.connect(f"{workdir}/bare.duckdb")
        con.execute("CREATE TABLE t (decision_id VARCHAR, quality DOUBLE, reward DOUBLE)")
        start = time.perf_counter()
        bare_rows = pa.table(  # noqa: F841 - DuckDB reads the local by name
            {"decision_id": [r.decision_id for r in records],
             "quality": [r.quality for r in records], "reward": [r.reward for r in records]}
        )  # fmt: skip
        con.execute("INSERT INTO t SELECT * FROM bare_rows")
        bare_rate = rows / (time.perf_counter() - start)
    return {
        "acknowledged_rows_per_s": rows / acknowledged,
        "log_rows_per_s": log_rate,
        "bare_arrow_rows_per_s": bare_rate,
    }


def _script(args: list[str], timeout: float) -> dict[str, Any] | None:
    """Run another benchmark script that writes --json; its result, or None if it failed."""
    out = HERE / "results" / f".{Path(args[0]).stem}.json"
    try:
        subprocess.run(
            [sys.executable, str(HERE / args[0]), *args[1:], "--json", str(out)],
            check=True, timeout=timeout,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{args[0]} failed: {exc}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes, not tens)")
    parser.add_argument("--outcomes", type=Path, help="outcome table for the simulate speed run")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    if args.outcomes is not None and not args.outcomes.is_file():
        parser.error(f"--outcomes: no such file {args.outcomes}")
    calls = 1500 if args.quick else 4000
    results: dict[str, Any] = {"quick": args.quick}
    print("== Route/Feedback vs a no-op server, one process each")
    # Calibration beside them: no-op servers burning a known CPU time per call show the ratio
    # a handler of that cost can reach here (what the targets leave for routing work).
    single = route_latency.run(
        calls, [1, 16, 64], 2, ["route", "feedback"], processes=1, burns=CALIBRATION_BURNS_US
    )
    print("== Route/Feedback vs a no-op server, two processes each (SO_REUSEPORT)")
    double = route_latency.run(calls, [16, 64], 2, ["route", "feedback"], processes=2)
    results["route_latency"] = {"processes_1": single, "processes_2": double}
    for name, measured in (("1", single), ("2", double)):
        route_latency.plot(measured, HERE / "results" / f"route_latency_{name}_process.png")
    best16 = max(
        (single["route_c16"], double["route_c16"]), key=lambda e: e["banditroute"]["calls_per_s"]
    )
    best_fb = max(
        (single["feedback_c16"], double["feedback_c16"]),
        key=lambda e: e["banditroute"]["calls_per_s"],
    )
    results["route_vs_noop_throughput_ratio"] = best16["throughput_ratio"]
    results["feedback_vs_noop_throughput_ratio"] = best_fb["throughput_ratio"]
    results["route_vs_noop_p99_ratio_16"] = best16["p99_ratio"]
    results["calibration_throughput_ratio_c16"] = {
        f"burn_{burn:g}_us": single["route_c16"][f"burn{burn:g}_throughput_ratio"]
        for burn in CALIBRATION_BURNS_US
    }
    print("== Feedback ingestion into DuckDB")
    results["ingestion"] = _ingestion(20_000 if args.quick else 200_000)
    print(results["ingestion"])
    print("== Replay speed (six estimators with intervals)")
    results["replay"] = _script(
        ["ope_speed.py", "--decisions", "100000" if args.quick else "1000000"], 900
    )
    if args.outcomes is not None:
        print("== Simulate speed")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "banditroute.cli", "simulate", "--outcomes", str(args.outcomes),
             "--seeds", "5"],
            check=True, timeout=1800,
        )  # fmt: skip
        results["simulate_seconds_5_seeds"] = time.perf_counter() - start
    print("== Resident memory over a long stream")
    results["memory"] = memory.run(
        100_000 if args.quick else 1_000_000, 50_000 if args.quick else 100_000
    )
    print("== CPU per Route and Feedback call in-process")
    results["route_cpu"] = _script(
        ["route_cpu.py", "--calls", "1000" if args.quick else "3000"], 600
    )
    print("== Garbage-collection pauses with and without the heap freezer")
    results["gc_pauses"] = _script(
        ["gc_pauses.py", "--decisions", "50000" if args.quick else "150000"], 900
    )
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(
        json.dumps(
            {k: v for k, v in results.items() if k.endswith("ratio") or "ratio" in k}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
