"""Usage analytics: figures equal hand-computed values; empty logs, plots, JSON and CLI errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from banditroute.cli_ops import add_parsers
from banditroute.errors import InvalidArgument
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.reader import open_log
from banditroute.store.records import DecisionRecord, FeedbackRecord
from banditroute.store.schema import CREATE_TABLES
from banditroute.usage import (
    BucketStats,
    ModelTenantStats,
    UsageReport,
    format_table,
    plot_usage,
    summarise,
    usage_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Six decisions on 2024-01-01 (UTC), models A and B, tenants acme and beta:
#   d1 10:05 acme chose A, feedback A  q=0.8  $0.01  100 ms OK
#   d2 10:20 acme chose A, feedback A  q=0.6  $0.02  300 ms OK
#   d3 10:40 beta chose B, feedback B  q=-    $-    1000 ms TIMEOUT
#   d4 11:10 beta chose A, feedback B  q=1.0  $0.04  400 ms OK       (fallback B served)
#   d5 11:30 acme chose B, no feedback                               (counts for B)
#   d6 12:00 acme chose A, feedback A  q=-    $0.00   50 ms ERROR, then B q=0.7 $0.03 500 ms OK
DECISIONS = [
    ("d1", "10:05", "acme", "A"),
    ("d2", "10:20", "acme", "A"),
    ("d3", "10:40", "beta", "B"),
    ("d4", "11:10", "beta", "A"),
    ("d5", "11:30", "acme", "B"),
    ("d6", "12:00", "acme", "A"),
]
FEEDBACK = [
    ("d1", "A", 0.8, 0.01, 100.0, "OK"),
    ("d2", "A", 0.6, 0.02, 300.0, "OK"),
    ("d3", "B", None, None, 1000.0, "TIMEOUT"),
    ("d4", "B", 1.0, 0.04, 400.0, "OK"),
    ("d6", "A", None, 0.0, 50.0, "ERROR"),
    ("d6", "B", 0.7, 0.03, 500.0, "OK"),
]


def _at(hhmm: str) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2024, 1, 1, hour, minute, tzinfo=UTC)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """A DuckDB log file with the six decisions and their feedback, written with SQL."""
    path = tmp_path / "usage.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE_TABLES)
        for decision_id, hhmm, tenant, model in DECISIONS:
            con.execute(
                "INSERT INTO decisions (decision_id, time, tenant, model, eligible, "
                "probabilities, probability, policy_version) "
                "VALUES (?, ?, ?, ?, ['A', 'B'], [0.5, 0.5], 0.5, 'v1')",
                [decision_id, _at(hhmm), tenant, model],
            )
        for decision_id, model, quality, cost, latency, status in FEEDBACK:
            con.execute(
                "INSERT INTO feedback (decision_id, time, model, quality, cost_usd, latency_ms, "
                "status, reward, disposition) VALUES (?, ?, ?, ?, ?, ?, ?, 0.0, 'LEARNED')",
                [decision_id, _at("12:30"), model, quality, cost, latency, status],
            )
    return path


@pytest.fixture
def con(log_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The log opened through open_log (read-only views), closed after the test."""
    connection = open_log(log_path).connection
    yield connection
    connection.close()


def _report_of(path: Path) -> UsageReport:
    """The default report of a log file or export, closing the connection."""
    connection = open_log(path).connection
    try:
        return usage_report(connection)
    finally:
        connection.close()


def _row(
    rows: tuple[ModelTenantStats, ...] | list[ModelTenantStats],
    model: str | None,
    tenant: str | None,
) -> ModelTenantStats:
    (found,) = [r for r in rows if r.model == model and r.tenant == tenant]
    return found


def _figures(row: ModelTenantStats) -> tuple[object, ...]:
    return (row.calls, row.feedback, row.spend_usd, row.mean_quality, row.latency_p50_ms,
            row.latency_p95_ms, row.error_rate)  # fmt: skip


# (model, tenant) -> calls, feedback, spend, mean quality, p50, p95, error rate, by hand:
# quantile_cont at q over n sorted values interpolates at position q * (n - 1).
EXPECTED = {
    ("A", None): (3, 3, 0.03, 0.7, 100.0, 280.0, 1 / 3),  # lat 50 100 300
    ("B", None): (4, 3, 0.07, 0.85, 500.0, 950.0, 1 / 3),  # lat 400 500 1000
    (None, "acme"): (4, 4, 0.06, 0.7, 200.0, 470.0, 1 / 4),  # lat 50 100 300 500
    (None, "beta"): (2, 2, 0.04, 1.0, 700.0, 970.0, 1 / 2),  # lat 400 1000
    ("A", "acme"): (3, 3, 0.03, 0.7, 100.0, 280.0, 1 / 3),
    ("B", "acme"): (2, 1, 0.03, 0.7, 500.0, 500.0, 0.0),  # d5 (no feedback), d6 via B
    ("B", "beta"): (2, 2, 0.04, 1.0, 700.0, 970.0, 1 / 2),
    (None, None): (6, 6, 0.10, 0.775, 350.0, 875.0, 2 / 6),  # lat 50 100 300 400 500 1000
}


def test_summary_matches_hand_computed(con: duckdb.DuckDBPyConnection) -> None:
    """Per model, per tenant, per model and tenant and in total: calls (distinct decisions,
    credited to the served model), feedback rows, spend, mean quality, latency p50/p95 and
    error rate equal the values worked out by hand, in that order of groups."""
    rows = summarise(con)
    assert len(rows) == len(EXPECTED)
    for (model, tenant), expected in EXPECTED.items():
        assert _figures(_row(rows, model, tenant)) == pytest.approx(expected), (model, tenant)
    assert [(r.model, r.tenant) for r in rows] == [
        ("A", None), ("B", None), (None, "acme"), (None, "beta"),
        ("A", "acme"), ("B", "acme"), ("B", "beta"), (None, None),
    ]  # fmt: skip


def test_only_feedback_that_counted_is_counted(tmp_path: Path) -> None:
    """Per decision and served model only the first report counts, plus every DEFERRED one
    (a deferred combine rule learns from all of them): repeated reports (IGNORED_DUPLICATE, a
    fallback reported twice) add no feedback, spend, quality, latency or error; a deferred
    decision's reports all count for quality but its one call costs once; at an equal time
    the learned report wins over its duplicate. summarise (GetStats) and usage_report
    (``report``) agree."""
    rows = [  # decision, model, time, quality, cost, latency, status, disposition
        ("e1", "A", "12:00", 1.0, 0.05, 100.0, "OK", "LEARNED"),
        ("e1", "A", "12:01", 0.0, 0.05, 900.0, "ERROR", "IGNORED_DUPLICATE"),
        ("e1", "A", "12:01", 0.2, 0.001, 900.0, "OK", "IGNORED_DUPLICATE"),
        ("e2", "A", "12:00", 0.4, 0.01, 200.0, "OK", "DEFERRED"),
        ("e2", "A", "12:02", 0.8, 0.01, 400.0, "OK", "DEFERRED"),
        ("e3", "B", "12:00", 0.5, 0.02, 300.0, "OK", "RECORDED_OFF_POLICY"),
        ("e3", "B", "12:03", 0.0, 0.02, 900.0, "ERROR", "RECORDED_OFF_POLICY"),
        ("e4", "A", "12:00", 0.1, 0.5, 900.0, "ERROR", "IGNORED_DUPLICATE"),
        ("e4", "A", "12:00", 0.9, 0.03, 500.0, "OK", "LEARNED"),
    ]
    path = tmp_path / "duplicates.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE_TABLES)
        for decision_id in ("e1", "e2", "e3", "e4"):
            con.execute(
                "INSERT INTO decisions (decision_id, time, tenant, model, eligible, "
                "probabilities, probability, policy_version) "
                "VALUES (?, ?, 'acme', 'A', ['A', 'B'], [0.5, 0.5], 0.5, 'v1')",
                [decision_id, _at("11:00")],
            )
        for decision_id, model, hhmm, quality, cost, latency, status, disposition in rows:
            con.execute(
                "INSERT INTO feedback (decision_id, time, model, quality, cost_usd, latency_ms, "
                "status, reward, disposition) VALUES (?, ?, ?, ?, ?, ?, ?, 0.0, ?)",
                [decision_id, _at(hhmm), model, quality, cost, latency, status, disposition],
            )
    connection = open_log(path).connection
    try:
        summary = summarise(connection)
        assert tuple(summary) == usage_report(connection).summary
    finally:
        connection.close()
    # counted: e1 LEARNED, e2 both, e3 first, e4 LEARNED; latencies 100 200 300 400 500
    assert _figures(_row(summary, None, None)) == pytest.approx(
        (4, 5, 0.11, 0.72, 300.0, 480.0, 0.0)
    )
    assert _figures(_row(summary, "B", None)) == pytest.approx((1, 1, 0.02, 0.5, 300.0, 300.0, 0.0))


def test_feedback_naming_no_model_counts_for_the_chosen_model(tmp_path: Path) -> None:
    """Feedback a cluster replica accepted for the trainer names no model when the report
    named none (the chosen model served): it is credited to the decision's chosen model, and
    ranked with that model's other reports, so a retry the owner logged too costs once."""
    path = tmp_path / "forwarded.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE_TABLES)
        for decision_id in ("g1", "g2"):
            con.execute(
                "INSERT INTO decisions (decision_id, time, tenant, model, eligible, "
                "probabilities, probability, policy_version) "
                "VALUES (?, ?, 'acme', 'B', ['A', 'B'], [0.5, 0.5], 0.5, 'v1')",
                [decision_id, _at("11:00")],
            )
        for decision_id, model, hhmm, disposition in (
            ("g1", "", "12:00", "FOR_TRAINER"),
            ("g2", "", "12:00", "FOR_TRAINER"),
            ("g2", "B", "12:05", "IGNORED_DUPLICATE"),  # the retry, at the owner restarted
        ):
            con.execute(
                "INSERT INTO feedback (decision_id, time, model, quality, cost_usd, latency_ms, "
                "status, reward, disposition) VALUES (?, ?, ?, 0.5, 0.01, 200.0, 'OK', 0.0, ?)",
                [decision_id, _at(hhmm), model, disposition],
            )
    connection = open_log(path).connection
    try:
        summary = summarise(connection)
    finally:
        connection.close()
    assert [row.model for row in summary if row.tenant is None and row.model] == ["B"]
    assert _figures(_row(summary, "B", None)) == pytest.approx((2, 2, 0.02, 0.5, 200.0, 200.0, 0.0))


def test_summary_for_one_tenant(con: duckdb.DuckDBPyConnection) -> None:
    """summarise(tenant=...) counts only that tenant's decisions."""
    rows = summarise(con, tenant="beta")
    assert _figures(_row(rows, None, None)) == pytest.approx(EXPECTED[(None, "beta")])
    assert {r.tenant for r in rows} == {"beta", None}
    assert summarise(con, tenant="nobody") == []


def test_hourly_series(con: duckdb.DuckDBPyConnection) -> None:
    """Decisions fall in UTC hour buckets by their time: 3 at 10:00, 2 at 11:00, 1 at 12:00,
    with per-bucket spend, and per-model rows per bucket."""
    report = usage_report(con, bucket="hour")
    totals = [s for s in report.series if s.model is None and s.tenant is None]
    assert [(s.bucket, s.calls, s.spend_usd) for s in totals] == [
        (_at("10:00"), 3, pytest.approx(0.03)),
        (_at("11:00"), 2, pytest.approx(0.04)),
        (_at("12:00"), 1, pytest.approx(0.03)),
    ]
    noon_a = [s for s in report.series if s.bucket == _at("12:00") and s.model == "A"]
    assert [(s.tenant, s.calls, s.error_rate) for s in noon_a] == [(None, 1, 1.0), ("acme", 1, 1.0)]
    assert all(isinstance(s, BucketStats) for s in report.series)
    assert report.summary == tuple(summarise(con))


def test_day_and_minute_buckets(con: duckdb.DuckDBPyConnection) -> None:
    """A day bucket holds all six decisions at midnight UTC; minute buckets one each."""
    day = usage_report(con, bucket="day")
    (total,) = [s for s in day.series if s.model is None and s.tenant is None]
    assert (total.bucket, total.calls) == (datetime(2024, 1, 1, tzinfo=UTC), 6)
    minute = usage_report(con, bucket="minute")
    totals = [s for s in minute.series if s.model is None and s.tenant is None]
    assert [s.bucket for s in totals] == [_at(d[1]) for d in DECISIONS]


def test_since_until_select_decisions(con: duckdb.DuckDBPyConnection) -> None:
    """since is inclusive and until exclusive on the decision time: 11:00-12:00 holds d4 and
    d5 only (with d4's feedback)."""
    report = usage_report(con, since=_at("11:00"), until=_at("12:00"))
    total = report.total()
    assert total is not None
    assert (total.calls, total.feedback, total.spend_usd) == (2, 1, pytest.approx(0.04))
    assert report.since == _at("11:00")
    naive = usage_report(con, since=datetime(2024, 1, 1, 11), until=_at("12:00").timestamp())
    assert naive.summary == report.summary


def test_bad_bucket_and_range_rejected(con: duckdb.DuckDBPyConnection) -> None:
    """An unknown bucket or an empty range raises InvalidArgument naming the parameter."""
    with pytest.raises(InvalidArgument, match=r"^bucket: "):
        usage_report(con, bucket="week")
    with pytest.raises(InvalidArgument, match=r"^until: "):
        usage_report(con, since=_at("12:00"), until=_at("11:00"))


@pytest.mark.parametrize("since", [253402300800.0, -62135596801.0, 1e300])
def test_a_time_no_datetime_holds_is_rejected(con: duckdb.DuckDBPyConnection, since: float) -> None:
    """Epoch seconds outside years 1..9999 (Timestamp's last nanosecond rounds up to year
    10000 as a float) raise InvalidArgument naming since, not a ValueError."""
    with pytest.raises(InvalidArgument, match=r"^since: "):
        summarise(con, since=since)


def test_empty_log(tmp_path: Path) -> None:
    """A log with no decisions gives an empty report that formats, serialises and plots."""
    path = tmp_path / "empty.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE_TABLES)
    report = _report_of(path)
    assert report.empty
    assert report.summary == ()
    assert report.series == ()
    assert report.total() is None
    assert "no decisions" in format_table(report)
    assert json.loads(json.dumps(report.to_dict()))["summary"] == []
    plot_usage(report, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


def test_format_table(con: duckdb.DuckDBPyConnection) -> None:
    """The text report has a section per grouping and per-bucket totals with the figures."""
    text = format_table(usage_report(con))
    for title in ("by model", "by tenant", "by model and tenant", "total", "by hour"):
        assert f"\n{title}\n" in f"\n{text}"
    assert "2024-01-01 10:00" in text
    assert "0.1000" in text  # total spend
    assert "33.3%" in text  # total error rate


def test_plot_written(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """plot_usage writes a PNG file."""
    out = tmp_path / "usage.png"
    plot_usage(usage_report(con), out)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_report_from_writer_and_export(tmp_path: Path) -> None:
    """A log written by DuckDBLog reads the same from the file and from its Parquet export."""
    path, export = tmp_path / "log.duckdb", tmp_path / "log.duckdb.export"
    log = DuckDBLog(path, flush_interval_s=0.01, export_dir=export)
    t0 = 1_700_000_000.0
    for i in range(4):
        log.append_decision(
            DecisionRecord(
                decision_id=f"d{i}",
                time=t0 + i,
                tenant="acme",
                request_id="",
                objective="b",
                prompt_hash="h",
                prompt=None,
                features={},
                eligible=("m1", "m2"),
                probabilities=(0.5, 0.5),
                model=f"m{1 + i % 2}",
                probability=0.5,
                policy_version="v",
            )
        )
        log.append_feedback(
            FeedbackRecord(
                f"d{i}",
                t0 + i + 1,
                f"m{1 + i % 2}",
                0.5,
                0.01 * (i + 1),
                None,
                None,
                100.0 * (i + 1),
                "OK",
                0.5,
                "LEARNED",
            )
        ).wait()
    log.close()
    from_file = _report_of(path)
    from_export = _report_of(export)
    assert from_file == from_export
    m2 = _row(from_file.summary, "m2", None)
    assert (m2.calls, m2.spend_usd, m2.latency_p50_ms) == (2, pytest.approx(0.06), 300.0)


def test_report_to_dict_is_json(con: duckdb.DuckDBPyConnection) -> None:
    """to_dict gives JSON-ready values, buckets as ISO 8601 text."""
    data = json.loads(json.dumps(usage_report(con, since=_at("10:00")).to_dict()))
    assert data["since"] == "2024-01-01T10:00:00+00:00"
    assert data["series"][0]["bucket"] == "2024-01-01T10:00:00+00:00"


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def run() -> Callable[..., int]:
    """Parse a `report` command line and run its handler."""
    parser = argparse.ArgumentParser(prog="banditroute")
    add_parsers(parser.add_subparsers(dest="command", required=True))

    def go(*argv: str) -> int:
        args = parser.parse_args(["report", *argv])
        code: int = args.handler(args)
        return code

    return go


def test_cli_report_writes_outputs(
    log_path: Path, tmp_path: Path, run: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    """`report` prints the tables and writes the PNG and the JSON asked for."""
    png, out = tmp_path / "r.png", tmp_path / "r.json"
    code = run("--log", str(log_path), "--bucket", "day", "--since", "2024-01-01T10:30Z",
               "--plot", str(png), "--json", str(out))  # fmt: skip
    assert code == 0
    assert "by day" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["bucket"] == "day"
    total = [s for s in data["summary"] if s["model"] is None and s["tenant"] is None]
    assert total[0]["calls"] == 4  # d3 .. d6


@pytest.mark.parametrize(
    ("argv", "arg"),
    [
        (["--since", "yesterday"], "--since"),
        (["--until", "2024-13-01"], "--until"),
        (["--since", "2024-01-02", "--until", "2024-01-01"], "--until"),
        (["--bucket", "week"], "--bucket"),
        (["--plot", "/nonexistent-dir/x.png"], "--plot"),
        (["--json", "/nonexistent-dir/x.json"], "--json"),
    ],
)
def test_cli_errors_name_argument(
    log_path: Path, run: Callable[..., int], argv: list[str], arg: str
) -> None:
    """A bad argument raises InvalidArgument whose message starts with the argument's name."""
    with pytest.raises(InvalidArgument, match=rf"^{arg}: ") as info:
        run("--log", str(log_path), *argv)
    assert info.value.field == arg


def test_cli_missing_log_names_argument(tmp_path: Path, run: Callable[..., int]) -> None:
    """A log that does not exist raises InvalidArgument naming --log."""
    with pytest.raises(InvalidArgument, match=r"^--log: "):
        run("--log", str(tmp_path / "nope.duckdb"))


def test_non_finite_figures_become_null_in_the_json_report() -> None:
    """A NaN or infinite figure (possible in Parquet another tool wrote) is written as null,
    so the report stays valid JSON."""
    stats = ModelTenantStats(
        model="m", tenant=None, calls=2, feedback=2, spend_usd=float("inf"),
        mean_quality=float("nan"), latency_p50_ms=100.0, latency_p95_ms=None, error_rate=0.5,
    )  # fmt: skip
    data = stats.to_dict()
    assert data["spend_usd"] is None
    assert data["mean_quality"] is None
    assert data["latency_p50_ms"] == 100.0
    assert json.loads(json.dumps(data, allow_nan=False)) == data
