"""The audit hash chain: records round-trip through DuckDB, tampering is found, restarts go on."""

from __future__ import annotations

import argparse
import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.audit import (
    CREATE_AUDIT_TABLE,
    GENESIS_HASH,
    AuditChain,
    AuditRecord,
    VerifyResult,
    canonical_json,
    open_audit_log,
    read_head,
    record_hash,
    verify,
)
from banditroute.cli_ops import add_parsers
from banditroute.errors import InvalidArgument
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.journal_rows import (
    CREATE_JOURNAL_TABLE,
    audit_line,
    decision_line,
    ingest_sql,
)
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord
from banditroute.store.schema import CREATE_TABLES

T0 = 1_700_000_000.0
N = 10


def _append(chain: AuditChain, i: int) -> AuditRecord:
    """Record i: decisions on even i, feedback on odd i, with awkward values (sub-microsecond
    time, non-ASCII text, float repr edge cases, nested constraints)."""
    if i % 2 == 0:
        return chain.append(
            time=T0 + i * 0.1234567891,
            tenant="acme" if i % 4 else "bêta",
            kind="decision",
            decision_id=f"d{i // 2:04d}",
            policy_version="vw:abc:3",
            feature_hash=f"fh{i}",
            eligible=("gpt-4", "claude-v2", "mixtral"),
            excluded={"llama-70b": "context window 4096 < 9000 tokens", "yi-34b": "allow-list"},
            constraints={"max_cost_usd": 0.1 + 0.2, "capabilities": ["code"], "data": "pii"},
        )
    return chain.append(
        time=T0 + i * 0.1234567891,
        tenant="acme",
        kind="feedback",
        decision_id=f"d{i // 2:04d}",
        policy_version="vw:abc:3",
        feature_hash=f"fh{i - 1}",
        eligible=("gpt-4", "claude-v2", "mixtral"),
        payload={
            "quality": 0.8,
            "cost_usd": 1e-7,
            "latency_ms": 350.5,
            "status": "OK",
            "reward": -0.25,
            "model": "gpt-4",
            "note": "日本語",
        },
    )


def _ingest(con: duckdb.DuckDBPyConnection, segment: Path, records: list[AuditRecord]) -> None:
    """Append records to the audit table the way the log does: as journal lines in a segment
    file that one ingest moves in."""
    con.execute(CREATE_TABLES + CREATE_AUDIT_TABLE + CREATE_JOURNAL_TABLE)
    if records:
        segment.write_bytes(b"".join(map(audit_line, records)))
        con.execute(ingest_sql(str(segment), 1))
        segment.unlink()


def _write(path: Path, records: list[AuditRecord]) -> None:
    """Append records to the audit table of a DuckDB file (see _ingest)."""
    with duckdb.connect(str(path)) as con:
        _ingest(con, path.with_name(path.name + ".segment.jsonl"), records)


def _sql(path: Path, *statements: str) -> None:
    """Tamper with the file directly."""
    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement)


def _verify(path: Path, expected_head: tuple[int, str] | None = None) -> VerifyResult:
    """Verify the chain in a DuckDB file, opened read-only."""
    with duckdb.connect(str(path), read_only=True) as con:
        return verify(con, expected_head=expected_head)


@pytest.fixture
def chain_log(tmp_path: Path) -> tuple[Path, list[AuditRecord]]:
    """A DuckDB file holding an intact chain of N records (and the records)."""
    path = tmp_path / "audit.duckdb"
    chain = AuditChain()
    records = [_append(chain, i) for i in range(N)]
    _write(path, records)
    return path, records


def test_intact_chain_verifies(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """A chain written as the log writes it verifies, and its head is the last record's."""
    path, records = chain_log
    result = _verify(path)
    assert result.ok
    assert result.records == N
    assert result.first_bad_seq is None
    assert result.problem is None
    assert result.head == (N, records[-1].hash)


def test_hashes_match_logs_written_before(tmp_path: Path) -> None:
    """The hash of a record is what earlier versions computed (these two were computed by the
    version before the stored-bytes check), so their logs still verify."""
    chain = AuditChain()
    first = chain.append(
        time=1_700_000_000.25, tenant="bêta", kind="decision", decision_id="d1",
        policy_version="vw:1", feature_hash="fh", eligible=("a", "b"),
        excluded={"c": "allow-list"}, constraints={"max_cost_usd": 0.1},
        payload={"model": "a", "probability": 0.5},
    )  # fmt: skip
    second = chain.append(
        time=1_700_000_001.0, tenant="acme", kind="feedback", decision_id="d1",
        policy_version="vw:1", feature_hash="fh", eligible=("a", "b"),
        payload={"reward": float("nan"), "quality": 0.8},
    )  # fmt: skip
    assert first.hash == "e8bf4a8cb0845a1ac9a8374c468212bfa7520c957fb522c6af4d3cda6662fd8a"
    assert second.hash == "755ae768826441c6216ca7099b28d610a7c2e42eb218617c05e6ed7ed6491583"
    path = tmp_path / "old.duckdb"
    _write(path, [first, second])
    assert _verify(path).ok


def test_chain_links_and_hashes(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """Records are numbered from 1, record 1 links to the genesis hash, each later record to
    the one before, and each hash is recomputable from the record alone."""
    _, records = chain_log
    assert [r.seq for r in records] == list(range(1, N + 1))
    assert records[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    assert all(record_hash(r) == r.hash for r in records)
    assert len({r.hash for r in records}) == N


def test_values_round_trip(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """What is stored is what was hashed: time to the microsecond, lists in order, and the
    dictionaries as canonical JSON (sorted keys, no spaces, non-ASCII kept)."""
    path, records = chain_log
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(
            "SELECT epoch_us(time), eligible, excluded::VARCHAR, constraints::VARCHAR, "
            "payload::VARCHAR FROM audit WHERE seq = 2"
        ).fetchone()
        first = con.execute("SELECT constraints::VARCHAR FROM audit WHERE seq = 1").fetchone()
    assert row is not None
    assert first is not None
    assert row[0] == records[1].time_us
    assert row[1] == ["gpt-4", "claude-v2", "mixtral"]
    assert row[2] == "{}"
    assert json.loads(row[4]) == dict(records[1].payload)
    assert "日本語" in row[4]
    assert " " not in row[4].replace("日本語", "")
    assert first[0] == '{"capabilities":["code"],"data":"pii","max_cost_usd":0.30000000000000004}'


@pytest.mark.parametrize(
    "assignment",
    [
        "tenant = 'evil'",
        "kind = 'decision'",
        "decision_id = 'd9999'",
        "policy_version = 'vw:abc:4'",
        "feature_hash = 'x'",
        "time = time + INTERVAL 1 MICROSECOND",
        "eligible = ['gpt-4']",
        """excluded = '{"llama-70b":"budget"}'""",
        """constraints = '{"max_cost_usd":1.0}'""",
        """payload = '{"quality":1.0}'""",
        "payload = NULL",
        # Byte-level edits a JSON parser reads back as the same values: a duplicate key
        # (DuckDB's JSON functions read the first value, Python's json the last), whitespace.
        """payload = ('{"quality":0.0123,' || substr(payload::varchar, 2))::json""",
        "payload = replace(payload::varchar, ',', ', ')::json",
        "payload = (' ' || payload::varchar)::json",
    ],
)
def test_edited_field_detected(chain_log: tuple[Path, list[AuditRecord]], assignment: str) -> None:
    """Changing any content field of record 4 (a feedback record) makes it the first bad one,
    down to a byte of a stored JSON field (a duplicate key, whitespace): the hash covers the
    stored bytes, not a re-encoding of what a parser reads from them."""
    path, _ = chain_log
    _sql(path, f"UPDATE audit SET {assignment} WHERE seq = 4")
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem is not None
    assert "edited" in result.problem


def test_edit_with_recomputed_hash_detected_at_next(
    chain_log: tuple[Path, list[AuditRecord]],
) -> None:
    """An editor who also recomputes the edited record's hash breaks the next record's link."""
    path, records = chain_log
    forged = AuditRecord(**{**records[3].__dict__, "tenant": "evil", "hash": ""})
    digest = record_hash(forged)
    _sql(path, f"UPDATE audit SET tenant = 'evil', hash = '{digest}' WHERE seq = 4")
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == 5
    assert result.problem is not None
    assert "prev_hash" in result.problem


def _forged(records: list[AuditRecord], seq: int) -> AuditRecord:
    """A well-formed record numbered ``seq`` that links to record ``seq - 1``."""
    chain = AuditChain(seq - 1, records[seq - 2].hash)
    return _append(chain, 0)


def test_inserted_record_with_duplicate_seq_detected(
    chain_log: tuple[Path, list[AuditRecord]],
) -> None:
    """A forged record reusing seq 4 (even one whose own hash is valid) is found at seq 4."""
    path, records = chain_log
    forged = _forged(records, 4)
    assert record_hash(forged) == forged.hash
    _write(path, [forged])
    result = _verify(path)
    assert not result.ok
    assert result.records == N + 1
    assert result.first_bad_seq == 4


def test_inserted_record_with_renumbering_detected(
    chain_log: tuple[Path, list[AuditRecord]],
) -> None:
    """Shifting records 4.. up by one to make room for a valid-looking forged record 4 breaks
    the record after it (its seq is part of its hash and its link points past the forgery)."""
    path, records = chain_log
    _sql(path, "UPDATE audit SET seq = seq + 1 WHERE seq >= 4")
    _write(path, [_forged(records, 4)])
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == 5


def test_deleted_record_detected(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """Deleting record 4 leaves a gap reported as record 4 missing."""
    path, _ = chain_log
    _sql(path, "DELETE FROM audit WHERE seq = 4")
    result = _verify(path)
    assert not result.ok
    assert result.records == N - 1
    assert result.first_bad_seq == 4
    assert result.problem is not None
    assert "missing" in result.problem


def test_deleted_records_renumbered_detected(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """Deleting records 4 and 5 and renumbering the rest to close the gap is found at seq 4."""
    path, _ = chain_log
    _sql(
        path,
        "DELETE FROM audit WHERE seq IN (4, 5)",
        "UPDATE audit SET seq = seq - 2 WHERE seq > 5",
    )
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == 4


def test_reordered_records_detected(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """Swapping the numbers of records 4 and 5 is found at seq 4."""
    path, _ = chain_log
    _sql(path, "UPDATE audit SET seq = CASE seq WHEN 4 THEN 5 ELSE 4 END WHERE seq IN (4, 5)")
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == 4


def test_restart_continues_chain(chain_log: tuple[Path, list[AuditRecord]]) -> None:
    """A chain rebuilt from read_head of the log continues it: old and new records verify."""
    path, records = chain_log
    with duckdb.connect(str(path), read_only=True) as con:
        head = read_head(con)
    assert head == (N, records[-1].hash)
    chain = AuditChain(*head)
    more = [_append(chain, i) for i in range(5)]
    assert more[0].seq == N + 1
    assert more[0].prev_hash == records[-1].hash
    _write(path, more)
    result = _verify(path)
    assert result.ok
    assert result.records == N + 5
    assert result.head == (N + 5, more[-1].hash)


def test_truncation_detected_only_with_expected_head(
    chain_log: tuple[Path, list[AuditRecord]],
) -> None:
    """Deleting the last two records leaves a valid chain; a noted head reveals the loss,
    naming the first removed record, while an older noted head still verifies."""
    path, records = chain_log
    _sql(path, f"DELETE FROM audit WHERE seq > {N - 2}")
    with duckdb.connect(str(path), read_only=True) as con:
        alone = verify(con)
        anchored = verify(con, expected_head=(N, records[-1].hash))
        older = verify(con, expected_head=(N - 3, records[N - 4].hash))
    assert alone.ok
    assert alone.records == N - 2
    assert not anchored.ok
    assert anchored.first_bad_seq == N - 1
    assert anchored.problem is not None
    assert "truncated" in anchored.problem
    assert older.ok


def test_rewritten_chain_detected_only_with_expected_head(
    chain_log: tuple[Path, list[AuditRecord]],
) -> None:
    """Someone who rewrites and rehashes every record from 3 on leaves a valid chain; the head
    noted before the rewrite no longer matches."""
    path, records = chain_log
    chain = AuditChain(2, records[1].hash)
    rewritten = [_append(chain, 0) for _ in range(3, N + 1)]
    _sql(path, "DELETE FROM audit WHERE seq >= 3")
    _write(path, rewritten)
    with duckdb.connect(str(path), read_only=True) as con:
        alone = verify(con)
        anchored = verify(con, expected_head=(N, records[-1].hash))
    assert alone.ok
    assert not anchored.ok
    assert anchored.first_bad_seq == N


def test_empty_table(tmp_path: Path) -> None:
    """An empty audit table is an intact chain at the genesis head; a noted head past it is a
    truncation from record 1."""
    path = tmp_path / "empty.duckdb"
    _write(path, [])
    with duckdb.connect(str(path), read_only=True) as con:
        result = verify(con)
        genesis = verify(con, expected_head=(0, GENESIS_HASH))
        anchored = verify(con, expected_head=(1, "f" * 64))
        head = read_head(con)
    assert result.ok
    assert result.records == 0
    assert result.head == (0, GENESIS_HASH)
    assert genesis.ok
    assert not anchored.ok
    assert anchored.first_bad_seq == 1
    assert head == (0, GENESIS_HASH)


def test_concurrent_appends_form_one_chain(tmp_path: Path) -> None:
    """Appends from many threads get distinct consecutive seqs, reach the sink in seq order,
    and the stored chain verifies."""
    sunk: list[AuditRecord] = []
    chain = AuditChain(sink=sunk.append)

    def work() -> None:
        for i in range(200):
            _append(chain, i)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.seq for r in sunk] == list(range(1, 1601))
    path = tmp_path / "threads.duckdb"
    _write(path, sunk)
    with duckdb.connect(str(path), read_only=True) as con:
        assert verify(con).ok


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"kind": "route"}, ValueError),
        ({"time": float("nan")}, ValueError),
        ({"payload": {"when": object()}}, TypeError),
    ],
)
def test_bad_append_rejected_without_using_a_seq(
    change: dict[str, object], error: type[Exception]
) -> None:
    """An unknown kind, a non-finite time or a value JSON cannot hold is refused, and the next
    good record still gets the next seq."""
    chain = AuditChain()
    fields: dict[str, object] = {
        "time": T0, "tenant": "acme", "kind": "decision", "decision_id": "d1",
        "policy_version": "v", "feature_hash": "f", "eligible": ["a"],
    }  # fmt: skip
    with pytest.raises(error):
        chain.append(**{**fields, **change})  # type: ignore[arg-type]
    assert chain.append(**fields).seq == 1  # type: ignore[arg-type]


def test_non_finite_numbers_stored_as_text(tmp_path: Path) -> None:
    """A NaN or infinite value in a payload is kept as JSON text ("NaN", "Infinity"), which
    DuckDB's JSON type accepts, and the stored record still verifies."""
    chain = AuditChain()
    record = chain.append(
        time=T0, tenant="acme", kind="feedback", decision_id="d1", policy_version="v",
        feature_hash="f", eligible=["a"],
        payload={"reward": float("nan"), "latency_ms": float("inf"), "n": [float("-inf")]},
    )  # fmt: skip
    path = tmp_path / "nan.duckdb"
    _write(path, [record])
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT payload::VARCHAR FROM audit").fetchone()
    assert row is not None
    assert row[0] == '{"latency_ms":"Infinity","n":["-Infinity"],"reward":"NaN"}'
    assert _verify(path).ok


def test_parquet_export_verifies(tmp_path: Path) -> None:
    """open_audit_log reads the audit parts of a Parquet export (split over several parts)."""
    export = tmp_path / "log.duckdb.export"
    chain = AuditChain()
    records = [_append(chain, i) for i in range(N)]
    with duckdb.connect() as con:
        _ingest(con, tmp_path / "segment.jsonl", records)
        (export / "decisions").mkdir(parents=True)
        con.execute(f"COPY decisions TO '{export / 'decisions' / 'part-1.parquet'}'")
        (export / "audit").mkdir()
        con.execute(f"COPY (FROM audit WHERE seq > 5) TO '{export / 'audit' / 'part-2.parquet'}'")
        con.execute(f"COPY (FROM audit WHERE seq <= 5) TO '{export / 'audit' / 'part-1.parquet'}'")
    source = open_audit_log(export)
    try:
        result = verify(source.connection)
    finally:
        source.connection.close()
    assert result.ok
    assert result.records == N


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def parse() -> Callable[[list[str]], argparse.Namespace]:
    """Parse a command line with the operator subcommands."""
    parser = argparse.ArgumentParser(prog="banditroute")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args


def _run(parse: Callable[[list[str]], argparse.Namespace], argv: list[str]) -> int:
    args = parse(argv)
    code: int = args.handler(args)
    return code


def test_cli_verify_intact_prints_head(
    chain_log: tuple[Path, list[AuditRecord]],
    parse: Callable[[list[str]], argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`audit verify` exits 0 on an intact log and prints the head to note; passing that head
    back with --expect-head still exits 0."""
    path, records = chain_log
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"head: {N}:{records[-1].hash}" in out
    head = f"{N}:{records[-1].hash}"
    assert _run(parse, ["audit", "verify", "--log", str(path), "--expect-head", head]) == 0


def test_cli_verify_tampered_names_record(
    chain_log: tuple[Path, list[AuditRecord]],
    parse: Callable[[list[str]], argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`audit verify` exits 1 on a tampered log, naming the first bad record; a truncation
    is reported only with --expect-head."""
    path, records = chain_log
    _sql(path, "DELETE FROM audit WHERE seq = 7")
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 1
    assert "first bad record seq 7" in capsys.readouterr().err
    _sql(path, "DELETE FROM audit WHERE seq >= 7")
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 0
    head = f"{N}:{records[-1].hash}"
    assert _run(parse, ["audit", "verify", "--log", str(path), "--expect-head", head]) == 1
    assert "first bad record seq 7" in capsys.readouterr().err


@pytest.mark.parametrize("head", ["12", "x:" + "a" * 64, "3:abc", "-1:" + "a" * 64])
def test_cli_bad_expect_head_names_argument(
    chain_log: tuple[Path, list[AuditRecord]],
    parse: Callable[[list[str]], argparse.Namespace],
    head: str,
) -> None:
    """A malformed --expect-head raises InvalidArgument naming --expect-head."""
    path, _ = chain_log
    with pytest.raises(InvalidArgument, match=r"^--expect-head: ") as info:
        _run(parse, ["audit", "verify", "--log", str(path), f"--expect-head={head}"])
    assert info.value.field == "--expect-head"


def test_cli_log_without_audit_table_names_argument(
    tmp_path: Path, parse: Callable[[list[str]], argparse.Namespace]
) -> None:
    """A log with no audit table, or no log at all, raises InvalidArgument naming --log."""
    path = tmp_path / "plain.duckdb"
    _sql(path, CREATE_TABLES)
    with pytest.raises(InvalidArgument, match=r"^--log: .*no audit table"):
        _run(parse, ["audit", "verify", "--log", str(path)])
    with pytest.raises(InvalidArgument, match=r"^--log: no such log"):
        _run(parse, ["audit", "verify", "--log", str(tmp_path / "missing.duckdb")])


_JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    time=st.floats(min_value=0, max_value=4e9),
    eligible=st.lists(st.text(), max_size=4),
    fields=st.tuples(*[st.dictionaries(st.text(), _JSONABLE, max_size=4)] * 3),
)
def test_append_hashes_the_canonical_content_and_stores_its_fields(
    text: str,
    time: float,
    eligible: list[str],
    fields: tuple[dict[str, object], dict[str, object], dict[str, object]],
) -> None:
    """AuditChain.append encodes the JSON fields once and joins the content from them: the
    hash must be that of the canonical JSON of the whole content (record_hash), and the log row
    must carry each field's canonical JSON, NaN and infinities included."""
    excluded, constraints, payload = fields
    record = AuditChain(7, "a" * 64).append(
        time=time, tenant=text, kind="decision", decision_id=text[::-1], policy_version="v",
        feature_hash=text + "#", eligible=eligible, excluded=excluded, constraints=constraints,
        payload=payload,
    )  # fmt: skip
    assert record.hash == record_hash(record)
    assert record.json_fields() == tuple(canonical_json(f) for f in fields)


def test_cli_verify_reads_every_worker_file(
    tmp_path: Path,
    parse: Callable[[list[str]], argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given the configured log path of a multi-worker server (only NAME.wN.duckdb exist),
    `audit verify` checks each worker file's own chain, prints each head, and names the file
    of a broken one."""
    heads = {}
    for worker in (0, 1):
        chain = AuditChain()
        records = [_append(chain, i) for i in range(N + worker)]
        _write(tmp_path / f"log.w{worker}.duckdb", records)
        heads[worker] = f"{len(records)}:{records[-1].hash}"
    path = tmp_path / "log.duckdb"
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"head: {heads[0]}" in out
    assert f"head: {heads[1]}" in out
    _sql(tmp_path / "log.w1.duckdb", "DELETE FROM audit WHERE seq = 4")
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 1
    captured = capsys.readouterr()
    assert "log.w1.duckdb" in captured.err
    assert "first bad record seq 4" in captured.err
    assert f"head: {heads[0]}" in captured.out


# -- logged rows ----------------------------------------------------------------------------------


def _decision(i: int) -> DecisionRecord:
    """A decision row with awkward values: non-ASCII, nested JSON, numpy-free floats."""
    return DecisionRecord(
        decision_id=f"d{i:04d}", time=T0 + i * 0.1234567891, tenant="bêta", request_id=f"r{i}",
        objective="balanced", prompt_hash=f"ph{i}", prompt=None,
        features={"tokens": 12 + i, "language": "日本語", "scores": [0.1 + 0.2, 1e-7]},
        eligible=("gpt-4", "mixtral"), probabilities=(0.75, 0.25), model="gpt-4",
        probability=0.75, policy_version="vw:1", tags={"user": "ann"},
        excluded={"llama": "allow-list: not allowed"}, constraints={"max_cost_usd": 0.1},
    )  # fmt: skip


def _audited_log(path: Path, decisions: int = 3) -> list[AuditRecord]:
    """A DuckDB log written by DuckDBLog through an audit chain whose records carry their
    rows: per decision a decision, a feedback and a settlement (one with a NaN reward)."""
    log = DuckDBLog(path, flush_interval_s=0.01)
    chain = AuditChain(*log.audit_head(), sink=log.append_audit)
    records = []
    for i in range(decisions):
        d = _decision(i)
        fb = FeedbackRecord(
            d.decision_id, d.time + 1, "gpt-4", 0.8, 0.001, 10, 20, 350.5, "OK",
            float("nan") if i == 1 else -0.25, "learned",
        )  # fmt: skip
        settlement = SettlementRecord(d.decision_id, d.time + 600, "learned", None)
        for kind, row in (("decision", d), ("feedback", fb), ("settlement", settlement)):
            records.append(
                chain.append(
                    time=row.time,
                    tenant=d.tenant,
                    kind=kind,
                    decision_id=d.decision_id,  # type: ignore[arg-type]
                    policy_version=d.policy_version,
                    feature_hash=d.prompt_hash,
                    eligible=d.eligible,
                    row=row,
                )
            )
    log.close()
    return records


def test_logged_rows_verify_and_carry_their_digest(tmp_path: Path) -> None:
    """A log written through DuckDBLog verifies, rows and all: each record's row digest is
    that of the row as stored (JSON columns as the text written, NaN, non-ASCII)."""
    path = tmp_path / "rows.duckdb"
    records = _audited_log(path)
    result = _verify(path)
    assert result.ok, result.problem
    assert result.records == len(records) == 9
    assert result.unchecked_rows == 0
    assert all(r.row_digest is not None for r in records)
    assert all(record_hash(r) == r.hash for r in records)


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [
        ("UPDATE decisions SET probability = 0.76 WHERE decision_id = 'd0001'", 4),
        ("UPDATE decisions SET tags = '{\"user\": \"ann\"}' WHERE decision_id = 'd0001'", 4),
        (
            'UPDATE decisions SET features = \'{"tokens":1,"tokens":13}\' '
            "WHERE decision_id = 'd0001'",
            4,
        ),
        ("UPDATE feedback SET quality = 0.0123 WHERE decision_id = 'd0002'", 8),
        ("UPDATE feedback SET time = time + INTERVAL 1 MICROSECOND WHERE decision_id = 'd0000'", 2),
        ("DELETE FROM settlements WHERE decision_id = 'd0001'", 6),
        ("UPDATE settlements SET action = 'skipped' WHERE decision_id = 'd0000'", 3),
        ("DELETE FROM feedback", 2),
        ("INSERT INTO feedback SELECT * FROM feedback WHERE decision_id = 'd0000'", None),
        ("INSERT INTO settlements SELECT * FROM settlements WHERE decision_id = 'd0002'", None),
        (
            "INSERT INTO decisions SELECT * REPLACE ('d9999' AS decision_id) FROM decisions "
            "WHERE decision_id = 'd0000'",
            None,
        ),
    ],
)
def test_tampered_logged_row_detected(tmp_path: Path, tamper: str, bad_seq: int | None) -> None:
    """An edited, deleted, duplicated or inserted decisions, feedback or settlements row fails
    verify, naming the record whose row is gone or altered (or none, for a row no record
    describes), and the CLI exits 1."""
    path = tmp_path / "rows.duckdb"
    _audited_log(path)
    _sql(path, tamper)
    result = _verify(path)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert result.problem is not None
    assert ("missing or altered" if bad_seq else "match no audit record") in result.problem


def test_log_written_before_row_digests_verifies_and_continues(tmp_path: Path) -> None:
    """A log written by an earlier version (an audit table without row_digest, records
    without row digests) verifies, its rows counted as taken on trust; a row beyond what its
    records vouch for fails. DuckDBLog opens it, adds the column, and the records it then
    writes carry row digests: the whole log verifies."""
    path = tmp_path / "old.duckdb"
    chain = AuditChain()
    old = [chain.append(time=T0, tenant="acme", kind="decision", decision_id="d0000",
                        policy_version="v", feature_hash="f", eligible=["a"])]  # fmt: skip
    _write(path, old)
    with duckdb.connect(str(path)) as con:
        segment = tmp_path / "old-rows.jsonl"
        segment.write_bytes(decision_line(_decision(0)))
        con.execute(ingest_sql(str(segment), 2))
        con.execute("ALTER TABLE audit DROP COLUMN row_digest")
    result = _verify(path)
    assert result.ok, result.problem
    assert result.unchecked_rows == 1

    log = DuckDBLog(path, flush_interval_s=0.01)
    chain = AuditChain(*log.audit_head(), sink=log.append_audit)
    d = _decision(1)
    chain.append(time=d.time, tenant=d.tenant, kind="decision", decision_id=d.decision_id,
                 policy_version="v", feature_hash="f", eligible=d.eligible, row=d)  # fmt: skip
    log.close()
    result = _verify(path)
    assert result.ok, result.problem
    assert (result.records, result.unchecked_rows) == (2, 1)

    _sql(path, "INSERT INTO decisions SELECT * FROM decisions WHERE decision_id = 'd0000'")
    result = _verify(path)
    assert not result.ok
    assert result.problem is not None
    assert "match no audit record" in result.problem


def test_cli_names_a_row_no_record_describes(
    tmp_path: Path,
    parse: Callable[[list[str]], argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`audit verify` exits 1 on a duplicated feedback row and says which table it is in."""
    path = tmp_path / "rows.duckdb"
    _audited_log(path)
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 0
    _sql(path, "INSERT INTO feedback SELECT * FROM feedback LIMIT 1")
    assert _run(parse, ["audit", "verify", "--log", str(path)]) == 1
    err = capsys.readouterr().err
    assert "feedback row" in err
    assert "seq None" not in err
