"""The benchmark scripts still run (tiny, bounded loads): ``make bench`` must not rot between
sessions that only run ``make test``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cluster_learning_cost
import cluster_route
import full_disk
import fuzz_rpcs
import ope_accuracy
import ope_verdicts
import privacy_scan
import route_cpu
import route_latency


@pytest.mark.slow
def test_route_latency_measures_noop_banditroute_and_a_calibration_server(
    tmp_path: Path,
) -> None:
    """One tiny round over loopback gives calls/s and latencies for the no-op, banditroute and a
    burning server, and their ratios to the no-op; the plot of them is a PNG. A burn given
    twice (``--burn-us 20 20``) is measured once."""
    burns = (20.0, 20.0)
    results = route_latency.run(40, [1, 4], 1, ["route", "feedback"], processes=1, burns=burns)
    assert set(results) == {"route_c1", "route_c4", "feedback_c1", "feedback_c4"}
    for entry in results.values():
        for kind in ("noop", "banditroute", "burn20"):
            assert 0 < entry[kind]["calls"] <= 40  # bounded (a Feedback slot may run dry)
            assert entry[kind]["calls_per_s"] > 0
            assert 0 < entry[kind]["p50_ms"] <= entry[kind]["p99_ms"]
        assert entry["throughput_ratio"] == pytest.approx(
            entry["banditroute"]["calls_per_s"] / entry["noop"]["calls_per_s"]
        )
        assert entry["burn20_throughput_ratio"] > 0
        assert [kind for kind in entry if kind.startswith("burn")] == [
            "burn20", "burn20_throughput_ratio", "burn20_p99_ratio",
        ]  # fmt: skip
    route_latency.plot(results, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cluster_route_compares_a_replica_with_a_lone_server() -> None:
    """One tiny round gives Route latency, throughput and CPU per call of a lone server and of
    one joined to a real valkey-server, and their ratios."""
    results = cluster_route.run(30, [1], 1)
    entry = results["route_c1"]
    for kind in ("lone", "cluster"):
        assert entry[kind]["calls"] == 30
        assert 0 < entry[kind]["p50_ms"] <= entry[kind]["p99_ms"]
        assert entry[kind]["server_cpu_us"] >= 0
    assert entry["p50_ratio"] == pytest.approx(entry["cluster"]["p50_ms"] / entry["lone"]["p50_ms"])


@pytest.mark.slow
def test_cluster_route_measures_the_throughput_of_several_replicas() -> None:
    """With --replicas, every replica is driven at once and the aggregate rate is set against
    one lone server given as many client threads."""
    found = cluster_route.run_replicas(20, 1, 1, 2)
    assert found["replicas"] == 2
    assert found["client_threads"] == 2
    assert found["lone_calls_per_s"] > 0
    assert found["cluster_calls_per_s"] > 0
    assert found["throughput_ratio"] == pytest.approx(
        found["cluster_calls_per_s"] / found["lone_calls_per_s"]
    )


def test_route_cpu_measures_route_and_feedback_against_protobuf_alone() -> None:
    """The in-process CPU benchmark routes and answers feedback through the servicer and
    reports a cost above protobuf's alone."""
    result = route_cpu.run(30)
    assert result["route_us"] > result["route_proto_us"] > 0
    assert result["feedback_us"] > result["feedback_proto_us"] > 0


def test_route_cpu_compares_another_policy_kind() -> None:
    """--compare-policy measures the same calls with another [policy] kind in the same run."""
    assert route_cpu.main(["--calls", "20", "--compare-policy", "uniform"]) == 0
    other = route_cpu.run(20, policy_kind="uniform")
    assert other["route_us"] > other["route_proto_us"] > 0


def test_privacy_scan_benchmark_times_short_long_and_hostile_texts() -> None:
    """The scan benchmark reports a positive time for short prompts, a 2 KB prompt and every
    hostile megabyte."""
    result = privacy_scan.run(2)
    assert result["prompt_2kb_us"] > 0
    assert result["short_prompt_us"] > 0
    assert all(result[f"hostile {name} s"] > 0 for name in privacy_scan.HOSTILE)


@pytest.mark.slow
def test_full_disk_loses_nothing_answered_when_less_space_returns(tmp_path: Path) -> None:
    """benchmarks/full_disk.py (skipped where a tmpfs cannot be mounted): a server filling a
    16 MB tmpfs under load, then given back 6 MB, loses no decision Route answered and no
    acknowledged feedback, sets nothing aside, and reports no unwritten row lost at its stop
    (a segment left in the journal is not lost: the next start moves it in). Routes are
    answered again once the space returns: the load goes on until 20 more are (not for a fixed
    time, which a loaded machine can spend draining the backlog)."""
    try:
        result = full_disk.run(
            tmp_path,
            disk_mb=16,
            free_mb=6.0,
            clients=2,
            warm_s=1.0,
            full_s=2.0,
            after_s=3.0,
            after_routes=20,
        )
    except PermissionError:
        pytest.skip("mounting a tmpfs is not permitted here")
    assert result["exit_code"] == 0
    assert result["routed"] >= result["routed_before_space_returned"] + 20 > 20
    assert (result["decisions_missing"], result["feedback_missing"]) == (0, 0), result
    assert not result["set_aside"]
    assert not [line for line in result["close_lines"] if "lost_unwritten" in line]


@pytest.mark.slow
def test_fuzz_rpcs_gets_no_internal_error_and_leaves_an_intact_log(tmp_path: Path) -> None:
    """benchmarks/fuzz_rpcs.py, 300 hostile and valid calls to every RPC of a real server
    process: no INTERNAL or UNKNOWN, no crash, no OK answer that breaks an invariant, nothing
    the clients sent in the server's log; the server still routes and learns afterwards,
    stops cleanly on SIGTERM, its audit chain verifies and no acknowledged feedback is lost.
    The status codes per RPC plot as a PNG."""
    result = fuzz_rpcs.run(tmp_path, calls=300, seed=3, threads=2, max_seconds=600.0)
    assert result["calls"] == 300
    assert not result["script_errors"], result["script_errors"]
    assert (result["internal"], result["unknown"], result["crashed"]) == (0, 0, False), result
    assert not result["violations"], result["violation_examples"]
    assert not result["leaks_in_stderr"]
    assert result["final_check"]["ok"], result["final_check"]
    assert result["exit_code"] == 0
    assert result["audit_verify"]["exit_code"] == 0, result["audit_verify"]
    assert result["feedback_missing"] == 0
    assert result["ok"]
    assert set(fuzz_rpcs.RPCS) <= set(result["codes"]), result["codes"]
    fuzz_rpcs.plot(result, tmp_path / "codes.png")
    assert (tmp_path / "codes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_learning_cost_measures_a_replica_and_a_trainer(tmp_path: Path) -> None:
    """A tiny run against a real valkey-server gives the replica's CPU per pair with and
    without the outbox, the lines it shipped, and a trainer that learned every update."""
    out = tmp_path / "cost.json"
    assert cluster_learning_cost.main(["--calls", "20", "--rounds", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["outbox_lines"] == 60  # a decision, a feedback and an update per pair
    assert results["trainer_updates"] == 20
    assert results["plain_pair_cpu_us"] > 0
    assert results["replica_pair_cpu_us"] > 0
    assert results["snapshot_bytes"] > 0


def test_ope_accuracy_keeps_the_servers_failed_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A logging server's ``rpc_failed`` lines (incident, exception type, stack) outlive its
    temporary folder: printed on stderr, with the stack's lines unescaped, and with ``--logs``
    its whole stderr is kept beside the log; a clean server prints nothing."""
    stderr = tmp_path / "serve.stderr"
    stderr.write_text(
        "[info ] listening address=127.0.0.1:1\n"
        "[error] rpc_failed error=KeyError incident=abc123 rpc=Route "
        "stack='  File \"router.py\", line 1, in route\\n    boom\\n'\n",
        "utf-8",
    )
    log = tmp_path / "logs" / "seed0.duckdb"
    log.parent.mkdir()
    ope_accuracy.keep_server_log(stderr, log, keep=True)
    printed = capsys.readouterr().err
    assert "1 failed call(s)" in printed
    assert "incident=abc123" in printed
    assert '  File "router.py", line 1, in route\n    boom' in printed
    assert (tmp_path / "logs" / "seed0.serve.stderr").read_text("utf-8") == stderr.read_text()
    stderr.write_text("[info ] listening address=127.0.0.1:1\n", "utf-8")
    ope_accuracy.keep_server_log(stderr, tmp_path / "other.duckdb", keep=False)
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "other.serve.stderr").exists()


def test_route_cpu_bounds_its_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    """--rounds outside 1..MAX_ROUNDS, or above 1 without --compare-semantic (where it would
    silently measure one run), is an error naming the argument."""
    for bad in ("0", str(route_cpu.MAX_ROUNDS + 1)):
        with pytest.raises(SystemExit):
            route_cpu.main(["--calls", "5", "--compare-semantic", "--rounds", bad])
        assert "--rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        route_cpu.main(["--calls", "5", "--rounds", "3"])
    assert "--compare-semantic" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ess", "thin", "interval"),
    [
        (500.0, 0.0, (0.60, 0.594, 0.606)),  # 1%: reliable at 2%
        (500.0, 0.0, (0.60, 0.59, 0.66)),  # 10% on the upper side
        (20.0, 0.0, (0.60, 0.594, 0.606)),  # too small an ESS
        (500.0, 0.3, (0.60, 0.594, 0.606)),  # traffic where the logger barely went
        (500.0, None, (0.0, -0.01, 0.01)),  # unbounded relative width
    ],
)
@pytest.mark.parametrize("tolerance", [0.02, 0.11])
def test_ope_verdicts_reapplies_replays_verdict(
    ess: float, thin: float | None, interval: tuple[float, float, float], tolerance: float
) -> None:
    """benchmarks/ope_verdicts.py re-rates a result row at another tolerance exactly as
    ``reliability.verdict`` rates the candidate, from what ope_accuracy.py writes per row."""
    from banditroute.evaluation.estimators import Diagnostics
    from banditroute.evaluation.intervals import Interval
    from banditroute.evaluation.reliability import verdict

    diagnostics = Diagnostics(ess=ess, max_weight=1.0, unsupported_share=0.0, thin_mass=thin)
    judged = verdict(diagnostics, Interval(*interval, 0.95), tolerance=tolerance)
    row = {"ess": ess, "thin_mass": thin, "half_width": judged.as_dict()["relative_half_width"]}
    assert ope_verdicts.reliable(row, tolerance) is judged.reliable


def test_semantic_parts_bounds_its_arguments(tmp_path: Path) -> None:
    """semantic_parts.py refuses --calls and --rounds outside their bounds (naming them)
    before building any service."""
    import semantic_parts

    table = str(tmp_path / "t.safetensors")
    for bad in (["--rounds", "0"], ["--rounds", "21"], ["--calls", "0"]):
        with pytest.raises(SystemExit):
            semantic_parts.main(["--semantic-cache", table, *bad])
    assert not (tmp_path / "t.safetensors").exists()


def test_semantic_interleaved_bounds_its_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """semantic_interleaved.py refuses --blocks and --block-calls outside their bounds
    (naming them) before building any service."""
    import semantic_interleaved

    table = str(tmp_path / "t.safetensors")
    bounds = {"--blocks": semantic_interleaved.MAX_BLOCKS,
              "--block-calls": semantic_interleaved.MAX_BLOCK_CALLS}  # fmt: skip
    for name, most in bounds.items():
        for bad in ("0", str(most + 1)):
            with pytest.raises(SystemExit):
                semantic_interleaved.main(["--semantic-cache", table, name, bad])
            assert name in capsys.readouterr().err
    assert not (tmp_path / "t.safetensors").exists()
