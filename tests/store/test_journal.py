"""The journal: lines reach segment files in order, whole, once; a crash's leftovers are
moved in exactly once; what cannot be written stays buffered."""

from __future__ import annotations

import contextlib
import errno
import math
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
from store_helpers import count_rows
from structlog.testing import capture_logs

from banditroute.audit import AuditChain, open_audit_log, verify
from banditroute.store import journal
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.journal import Journal, list_segments, trim_torn_tail
from banditroute.store.journal_rows import (
    audit_line,
    decision_line,
    feedback_line,
    journal_selects,
    row_line,
)
from banditroute.store.reader import open_log


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_buffered_lines_reach_the_segment_in_order_only_when_written(tmp_path: Path) -> None:
    """append() only buffers; write() puts every buffered line in the open segment, in order;
    rotate() closes it, holding what was written (not what is still buffered), and numbers the
    next one after it."""
    j = Journal(tmp_path)
    j.append(b"1\n")
    j.append(b"2\n")
    (segment,) = list_segments(tmp_path)
    assert segment.read_bytes() == b""
    assert j.buffered_bytes == 4
    j.write()
    assert _lines(segment) == [b"1\n", b"2\n"]
    assert j.buffered_bytes == 0
    j.append(b"3\n")
    closed = j.rotate()
    assert closed == segment
    assert _lines(segment) == [b"1\n", b"2\n"]
    assert [p.name for p in list_segments(tmp_path)] == [segment.name, "000000000002.jsonl"]
    assert j.rotate() is None  # nothing written since: the empty segment stays open
    assert _lines(tmp_path / "000000000002.jsonl") == []
    assert j.close() == tmp_path / "000000000002.jsonl"  # close writes the buffer
    assert _lines(tmp_path / "000000000002.jsonl") == [b"3\n"]


def test_numbering_continues_after_existing_segments_and_the_ingested_mark(
    tmp_path: Path,
) -> None:
    """A new journal never reuses a number: it starts after the newest segment on disk and
    after the mark it is given."""
    (tmp_path / "000000000007.jsonl").write_bytes(b"x\n")
    j = Journal(tmp_path, after=3)
    assert j.close() is None
    assert [p.name for p in list_segments(tmp_path)] == ["000000000007.jsonl"]
    j = Journal(tmp_path, after=20)
    j.append_durable(b"y\n")
    assert j.close() == tmp_path / "000000000021.jsonl"


def test_durable_append_writes_what_was_buffered_before_it(tmp_path: Path) -> None:
    """append_durable() returns with its line and every earlier buffered line written."""
    j = Journal(tmp_path)
    j.append(b"decision\n")
    j.append_durable(b"feedback\n")
    (segment,) = list_segments(tmp_path)
    assert _lines(segment) == [b"decision\n", b"feedback\n"]
    j.close()


def test_concurrent_durable_appends_all_land_once(tmp_path: Path) -> None:
    """Lines appended durably from 8 threads are each in the segment exactly once."""
    j = Journal(tmp_path)

    def worker(t: int) -> None:
        for i in range(200):
            j.append_durable(f"{t}-{i}\n".encode())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    path = j.close()
    assert path is not None
    lines = _lines(path)
    assert len(lines) == 1600
    assert len(set(lines)) == 1600


def test_a_failed_write_keeps_the_lines_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails part-way (disk full) raises, is cut back to whole lines, and keeps
    its lines buffered in order; the next write puts them out."""
    j = Journal(tmp_path)
    j.append_durable(b"kept\n")
    real = journal._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal, "_write_all", half_then_full)
    with pytest.raises(OSError, match="No space"):
        j.append_durable(b"first-unwritten\n")
    j.append(b"second\n")
    (segment,) = list_segments(tmp_path)
    assert _lines(segment) == [b"kept\n"]
    monkeypatch.setattr(journal, "_write_all", real)
    j.write()
    assert _lines(segment) == [b"kept\n", b"first-unwritten\n", b"second\n"]
    j.close()


def _room_of(monkeypatch: pytest.MonkeyPatch, room: int) -> list[int]:
    """Let a journal write succeed only if it is at most ``room`` bytes (a disk with that
    much free); returns the list the sizes of successful writes are added to."""
    real, sizes = journal._write_all, []

    def write(fd: int, data: bytes) -> None:
        if len(data) > room:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)
        sizes.append(len(data))

    monkeypatch.setattr(journal, "_write_all", write)
    return sizes


def test_a_backlog_larger_than_the_free_space_goes_out_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer of a megabyte goes out although no write of more than a third of it fits:
    writes are chunks of whole lines of at most WRITE_CHUNK_BYTES, in order, and with
    ``chunks`` only that many go out."""
    line = b"x" * 1023 + b"\n"
    j = Journal(tmp_path)
    for _ in range(1024):
        j.append(line)
    sizes = _room_of(monkeypatch, (1 << 20) // 3)
    assert j.write(chunks=1) is True
    assert sizes == [journal.WRITE_CHUNK_BYTES]
    assert j.written == journal.WRITE_CHUNK_BYTES // len(line)
    assert j.write() is False
    assert all(size <= journal.WRITE_CHUNK_BYTES for size in sizes)
    assert (j.written, j.buffered_bytes) == (1024, 0)
    (segment,) = list_segments(tmp_path)
    assert _lines(segment) == [line] * 1024
    j.close()


def test_chunks_written_before_a_failure_stay_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the disk fills half-way through a backlog, the chunks that landed count as
    written (a durable append among them returns), the rest stays buffered in order, and a
    durable append behind a larger backlog than ``backlog_limit`` fails at once unwritten."""
    line = b"y" * 1023 + b"\n"
    j = Journal(tmp_path)
    for _ in range(768):
        j.append(line)
    real = journal._write_all
    budget = [2]

    def two_chunks_then_full(fd: int, data: bytes) -> None:
        if budget[0] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget[0] -= 1
        real(fd, data)

    monkeypatch.setattr(journal, "_write_all", two_chunks_then_full)
    with pytest.raises(OSError, match="No space"):
        j.append_durable(b"late\n")
    per_chunk = journal.WRITE_CHUNK_BYTES // len(line)
    assert j.written == 2 * per_chunk
    (segment,) = list_segments(tmp_path)
    assert _lines(segment) == [line] * (2 * per_chunk)
    with pytest.raises(OSError, match="catching up"):
        j.append_durable(b"later\n", backlog_limit=1024)
    monkeypatch.setattr(journal, "_write_all", real)
    j.write()
    assert _lines(segment)[-2:] == [b"late\n", b"later\n"]
    assert len(_lines(segment)) == 770
    j.close()


@pytest.mark.parametrize(
    ("content", "kept"),
    [(b"", b""), (b"a\nb\n", b"a\nb\n"), (b"a\nb\ntor", b"a\nb\n"), (b"torn", b"")],
)
def test_trim_torn_tail_cuts_back_to_the_last_whole_line(
    tmp_path: Path, content: bytes, kept: bytes
) -> None:
    """A segment ending mid-line is cut back to its last newline; whole ones are untouched."""
    path = tmp_path / "000000000001.jsonl"
    path.write_bytes(content)
    assert trim_torn_tail(path) == len(content) - len(kept)
    assert path.read_bytes() == kept


def test_a_start_moves_leftover_segments_in_once(tmp_path: Path, records: SimpleNamespace) -> None:
    """Segments a crashed run left (one with a torn last line) are moved in by the next start;
    a segment numbered at or below the ingested mark (moved in, then a crash before it was
    deleted) is deleted without being inserted again."""
    path = tmp_path / "log.duckdb"
    log = DuckDBLog(path)
    log.append_decision(records.decision(1))
    log.close()  # segment 1 moved in: the ingested mark is 1
    journal_dir = path.with_name(path.name + ".journal")
    (journal_dir / "000000000001.jsonl").write_bytes(decision_line(records.decision(1)))
    (journal_dir / "000000000005.jsonl").write_bytes(
        decision_line(records.decision(2))
        + feedback_line(records.feedback("dec-00002"))
        + b'{"k":"d","decision_id":"tor'
    )

    restarted = DuckDBLog(path)
    try:
        restarted.flush()
        assert count_rows(path, "decisions") == 2
        assert count_rows(path, "feedback") == 1
    finally:
        restarted.close()
    assert list_segments(journal_dir) == []


def test_a_row_duckdb_refuses_is_set_aside_alone(tmp_path: Path, records: SimpleNamespace) -> None:
    """A segment holding rows DuckDB refuses (a time that is text, a list that is not one)
    among two tenants' decisions, feedback and audit rows goes in at the first attempt without
    them: every other row is in the database, only the refused lines are under
    PATH.rejected/, the log line names their line numbers but none of their content, and the
    audit chain (with the rows its records describe) verifies."""
    path = tmp_path / "log.duckdb"
    log = DuckDBLog(path, flush_interval_s=0.01, ingest_interval_s=3600.0)  # one segment
    chain = AuditChain(sink=log.append_audit)
    bad_time = b'{"k":"d","decision_id":"secret-one","time":"not a number"}\n'
    bad_list = b'{"k":"d","decision_id":"secret-two","time":1,"probabilities":"oops"}\n'
    try:
        with capture_logs() as logged:
            for index in range(10):
                decision = records.decision(index, tenant="acme" if index % 2 else "globex")
                feedback = records.feedback(decision.decision_id)
                common: dict[str, Any] = {
                    "tenant": decision.tenant, "decision_id": decision.decision_id,
                    "policy_version": "v", "feature_hash": "h", "eligible": ["m"],
                }  # fmt: skip
                chain.append(kind="decision", time=decision.time, row=decision, **common)
                if index == 3:
                    log._journal.append(bad_time)
                if index == 7:
                    log._journal.append(bad_list)
                chain.append(kind="feedback", time=feedback.time, row=feedback, **common)
                log.sync().wait()
            log.flush()
        assert count_rows(path, "decisions") == 10
        assert count_rows(path, "feedback") == 10
        assert count_rows(path, "audit") == 20
        (rejected,) = log.rejected_dir.iterdir()
        assert rejected.read_bytes() == bad_time + bad_list
        (event,) = [e for e in logged if e["event"] == "log_rows_set_aside"]
        # Per decision its record and row in one piece, and (after any bad line) the feedback's.
        assert (event["rows"], event["kept"], event["lines"]) == (2, 40, [15, 32])
        assert "secret" not in repr(logged)
        assert "not a number" not in repr(logged)
    finally:
        log.close()
    source = open_audit_log(path)
    try:
        assert verify(source.connection).ok
    finally:
        source.connection.close()


def test_a_leftover_segment_that_cannot_be_read_does_not_stop_every_start(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """A segment a previous run left that DuckDB rejects is set aside by the start that finds
    it (retrying it cannot help): the start's first flush (audit_head, which a server's
    start-up calls) succeeds and the rows of the leftovers after it go in."""
    path = tmp_path / "log.duckdb"
    DuckDBLog(path).close()
    journal_dir = path.with_name(path.name + ".journal")
    (journal_dir / "000000000003.jsonl").write_bytes(b'{"k":"d","time":"not a number"}\n')
    (journal_dir / "000000000004.jsonl").write_bytes(decision_line(records.decision(1)))
    restarted = DuckDBLog(path)
    try:
        assert restarted.audit_head()[0] == 0
        assert count_rows(path, "decisions") == 1
        (rejected,) = restarted.rejected_dir.iterdir()
        assert b"not a number" in rejected.read_bytes()
    finally:
        restarted.close()


class _FailingIngest:
    """Wraps the writer's connection: the next ``times`` segment inserts raise ``error``."""

    def __init__(self, real: duckdb.DuckDBPyConnection, error: Exception, times: int) -> None:
        self.real, self.error, self.times = real, error, times

    def execute(self, query: str, *args: Any) -> Any:
        if self.times > 0 and "read_json" in query:
            self.times -= 1
            raise self.error
        return self.real.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_full_disk_at_commit_is_retried_not_set_aside(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """A commit failing for want of disk (DuckDB raises TransactionException there) is
    retried as often as it fails: the rows land once the disk is back, none set aside."""
    log = DuckDBLog(tmp_path / "log.duckdb", flush_interval_s=0.01)
    full = duckdb.TransactionException("Failed to commit: No space left on device")
    log._con = _FailingIngest(log._con, full, 8)  # type: ignore[assignment]
    try:
        log.append_decision(records.decision(1))
        for _ in range(8):
            with pytest.raises(duckdb.TransactionException):
                log.flush()
        log.flush()
        assert count_rows(tmp_path / "log.duckdb", "decisions") == 1
        assert not log.rejected_dir.exists()
    finally:
        log.close()


def test_rows_reach_the_journal_while_the_database_fails_for_another_reason(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """While moving segments in fails for a reason other than space, the writer still writes
    the buffer out to the journal (where a crash cannot lose it), and once the database
    recovers every row goes in exactly once."""
    log = DuckDBLog(tmp_path / "log.duckdb", flush_interval_s=0.01)
    broken = duckdb.InternalException("INTERNAL Error: something else went wrong")
    log._con = _FailingIngest(log._con, broken, 4)  # type: ignore[assignment]
    try:
        log.append_decision(records.decision(0))
        with pytest.raises(duckdb.InternalException):
            log.flush()  # its segment now waits to be moved in
        log.append_decision(records.decision(1))
        log.append_decision(records.decision(2))
        with pytest.raises(duckdb.InternalException):
            log.flush()
        assert log._journal.buffered_bytes == 0
        journaled = b"".join(p.read_bytes() for p in list_segments(log.journal_dir))
        assert journaled.count(b'"k":"d"') == 3
        for _ in range(5):
            with contextlib.suppress(duckdb.InternalException):
                log.flush()
        log.flush()
        assert count_rows(tmp_path / "log.duckdb", "decisions") == 3
    finally:
        log.close()


def test_set_aside_segments_keep_their_own_names_across_restarts(tmp_path: Path) -> None:
    """A set-aside segment advances the ingested mark, so the next start numbers past it, and
    two set-aside segments never overwrite each other."""
    path = tmp_path / "log.duckdb"
    for bad in (b'{"k":"d","time":"first"}\n', b'{"k":"d","time":"second"}\n'):
        log = DuckDBLog(path, flush_interval_s=60.0)
        log._journal.append(bad)
        log.flush()  # set aside (and logged as an error) at the first failure
        log.close()
    rejected = sorted(p.read_bytes() for p in (tmp_path / "log.duckdb.rejected").iterdir())
    assert rejected == [b'{"k":"d","time":"first"}\n', b'{"k":"d","time":"second"}\n']


def test_audit_head_sees_the_audit_rows_a_crash_left_in_the_journal(tmp_path: Path) -> None:
    """After a crash, audit_head() reports the newest audit record in the journal, not the
    older head in the database, so a restarted chain does not reuse sequence numbers."""
    path = tmp_path / "log.duckdb"
    log = DuckDBLog(path, flush_interval_s=60.0, ingest_interval_s=60.0)
    chain = AuditChain(sink=log.append_audit)
    for i in range(3):
        chain.append(time=1.7e9 + i, tenant="t", kind="decision", decision_id=f"d{i}",
                     policy_version="v", feature_hash="h", eligible=["m"])  # fmt: skip
    log._journal.write()
    crashed = tmp_path / "crashed" / "log.duckdb"
    crashed.parent.mkdir()
    shutil.copytree(log.journal_dir, crashed.with_name(crashed.name + ".journal"))
    log.close()
    restarted = DuckDBLog(crashed)
    try:
        assert restarted.audit_head() == chain.head
    finally:
        restarted.close()


def test_a_failed_segment_open_keeps_writing_to_the_open_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the next segment cannot be opened (disk full, no descriptors), rotate() raises and
    later lines still go to the current segment, not to a closed descriptor."""
    j = Journal(tmp_path)
    j.append_durable(b"one\n")

    def cannot_open(seq: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(j, "_open", cannot_open)
    with pytest.raises(OSError, match="Too many"):
        j.rotate()
    j.append_durable(b"two\n")
    (segment,) = list_segments(tmp_path)
    assert _lines(segment) == [b"one\n", b"two\n"]
    monkeypatch.undo()
    assert j.rotate() == segment
    j.close()
    with pytest.raises(OSError, match="closed"):
        j.append_durable(b"after close\n")


def test_the_writer_survives_an_unexpected_error(
    tmp_path: Path, records: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while moving rows in fails that flush() but does not kill the
    writer: the next flush() moves the rows in."""
    log = DuckDBLog(tmp_path / "log.duckdb", flush_interval_s=60.0)
    real = log._ingest
    calls = iter([RuntimeError("boom")])

    def flaky(segment: Path) -> None:
        error = next(calls, None)
        if error is not None:
            raise error
        real(segment)

    monkeypatch.setattr(log, "_ingest", flaky)
    try:
        log.append_decision(records.decision(1))
        with pytest.raises(RuntimeError, match="boom"):
            log.flush()
        log.flush()
        assert count_rows(tmp_path / "log.duckdb", "decisions") == 1
    finally:
        log.close()


def test_export_handles_quotes_in_paths_and_never_exports_a_row_twice(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """Parts land under a directory with a quote in its name; after a lost mark update (the
    part renamed, the mark not stored) the next export moves the mark to the part's end
    instead of writing the same rows again."""
    path = tmp_path / "bob's logs" / "log.duckdb"
    export = path.with_name("log.duckdb.export")
    log = DuckDBLog(path, export_dir=export, export_interval_s=3600.0)
    try:
        for i in range(3):
            log.append_decision(records.decision(i))
        log.flush()
        log.export()
        (part,) = (export / "decisions").glob("*.parquet")
        assert part.name == "part-000000000000-000000000003.parquet"
        log._export_marks["decisions"] = 0  # as if the mark update had failed
        log.append_decision(records.decision(3))
        log.flush()
        log.export()
    finally:
        log.close()
    parts = sorted(p.name for p in (export / "decisions").glob("*.parquet"))
    assert parts == [part.name, "part-000000000003-000000000004.parquet"]
    with duckdb.connect() as con:
        files = [str(export / "decisions" / p) for p in parts]
        row = con.execute("SELECT count(*), count(DISTINCT decision_id) FROM read_parquet(?)",
                          [files]).fetchone()  # fmt: skip
    assert row == (4, 4)


def test_non_finite_rewards_round_trip(tmp_path: Path, records: SimpleNamespace) -> None:
    """An infinite or NaN reward is stored as that number, not as NULL."""
    path = tmp_path / "log.duckdb"
    log = DuckDBLog(path)
    log.append_feedback(records.feedback("a", reward=-math.inf))
    log.append_feedback(records.feedback("b", reward=math.nan))
    log.close()
    with duckdb.connect(str(path)) as con:
        rows = dict(con.execute("SELECT decision_id, reward FROM feedback").fetchall())
    assert rows["a"] == -math.inf
    assert math.isnan(rows["b"])


def test_readers_see_the_rows_a_killed_server_left_in_its_journal(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """open_log and open_audit_log on a log whose server was killed read the rows still in its
    journal (a torn last line skipped) together with the file's, and change nothing: the
    segment stays and the file keeps its rows; the audit chain, and the rows its records
    describe, verify across both."""
    path = tmp_path / "log.duckdb"
    log = DuckDBLog(path)
    chain = AuditChain(sink=log.append_audit)
    fields: dict[str, Any] = {"tenant": "acme", "policy_version": "v", "feature_hash": "h",
                              "eligible": ["model-b"]}  # fmt: skip
    for i in range(3):
        chain.append(time=records.t0 + i, kind="decision", decision_id=f"dec-{i:05d}",
                     row=records.decision(i), **fields)  # fmt: skip
    log.close()  # three decisions and audit records moved in
    later = AuditChain(*chain.head, sink=lambda r: None)
    leftover = b""
    for kind, row in (("decision", records.decision(3)),
                      ("feedback", records.feedback("dec-00003"))):  # fmt: skip
        record = later.append(time=records.t0 + 3, kind=kind, decision_id="dec-00003",
                              row=row, **fields)  # fmt: skip
        leftover += audit_line(record) + row_line(row)
    segment = path.with_name("log.duckdb.journal") / "000000000009.jsonl"
    segment.write_bytes(leftover + b'{"k":"d","decision_id":"to')

    source = open_log(path)
    decisions = source.connection.execute("SELECT decision_id FROM decisions").fetchall()
    feedback = source.connection.execute("SELECT decision_id, reward FROM feedback").fetchall()
    assert sorted(d for (d,) in decisions) == [f"dec-{i:05d}" for i in range(4)]
    assert feedback == [("dec-00003", 0.75)]
    assert "1 journal segment" in source.description
    source.connection.close()
    audit = open_audit_log(path)
    result = verify(audit.connection, expected_head=later.head)
    audit.connection.close()
    assert result.ok, result
    assert segment.exists()
    assert count_rows(path, "decisions") == 3


def test_journal_rows_keep_their_time_in_any_session_time_zone(
    tmp_path: Path, records: SimpleNamespace
) -> None:
    """A reader's connection is not set to UTC: a journal row read there (a killed server's
    leftovers) still carries the instant written, or its audit hash would not verify."""
    decision = records.decision(1, time=records.t0 + 0.25)
    segment = tmp_path / "000000000001.jsonl"
    segment.write_bytes(decision_line(decision))
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'Asia/Tokyo'")
        select = journal_selects([str(segment)], ["decisions"])["decisions"]
        row = con.execute(f"SELECT epoch_us(time) FROM ({select})").fetchone()
    assert row == (round(decision.time * 1_000_000),)
