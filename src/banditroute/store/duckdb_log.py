"""The DuckDB event log: rows go to a journal first, and a writer thread moves them in.

Route and Feedback turn a row into a JSON line (:mod:`banditroute.store.journal_rows`) and
hand it to the :class:`~banditroute.store.journal.Journal`: Route's lines are buffered and
written out by the writer thread every ``flush_interval_s`` (or as soon as ``batch_size``
rows wait), Feedback's are written before the call is acknowledged. Every
``ingest_interval_s`` (or on ``flush``) the writer closes the journal's segment and DuckDB
reads it natively into the tables, one transaction per segment that also records the
segment as done; then the segment is deleted. The serving threads thus do no
DuckDB work at all, and the writer holds the GIL for microseconds, not for the milliseconds
a Python-built batch took (which showed up as Route's p99).

What a crash can lose: kill -9 loses only rows still buffered (Route's decisions and
settlements of the last ``flush_interval_s``); an acknowledged feedback is in the journal and
is moved in by the next start. A power cut can also lose what the operating system had not
written back, unless ``fsync`` is set. If a segment cannot be moved in (disk full), it stays
in the journal and is retried; rows that cannot be written wait in memory, and past
``max_backlog_bytes`` of them :meth:`DuckDBLog.admit` refuses new calls rather than grow or
drop anything. When space returns the backlog goes out a chunk at a time, each moved in
before the next is written (:meth:`DuckDBLog._cycle`). A segment DuckDB refuses for its
content (a row it cannot parse or convert) goes in without the rows it refuses: those alone
are set aside under
``PATH.rejected/`` (the server log names the segment and the rows' line numbers, never their
content), so one bad row never costs the other rows, or other tenants, anything.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import structlog

from banditroute.audit import CREATE_AUDIT_TABLE, AuditRecord, read_head
from banditroute.errors import ConfigError, Unavailable
from banditroute.store.base import Commit
from banditroute.store.journal import (
    WRITE_CHUNK_BYTES,
    Journal,
    journal_dir,
    list_segments,
    segment_number,
    trim_torn_tail,
)
from banditroute.store.journal_rows import (
    CREATE_JOURNAL_TABLE,
    audit_line,
    decision_line,
    feedback_line,
    ingest_sql,
    ingested_upto,
    mark_sql,
    probe_sql,
    row_line,
    settlement_line,
    sql_string,
)
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord
from banditroute.store.schema import CREATE_TABLES, FEEDBACK_RANK

log = structlog.get_logger(__name__)

BAD_DATA_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException)
"""What a segment with malformed rows raises (a full disk raises IOException or, at commit,
TransactionException: those are retried, never set aside). Their messages may quote a row,
so only their class is logged."""

LOGGED_LINE_NUMBERS = 20
"""At most this many line numbers of set-aside rows are named in one log line."""

EXPORTED_TABLES = ("decisions", "feedback", "settlements", "audit")

DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
"""Unwritten journal (the disk has been full for a while) past which :meth:`DuckDBLog.admit`
refuses new decisions and feedback, so memory stays bounded and no row is dropped."""


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _exported_end(folder: Path, first: int) -> int | None:
    """The END of an export part ``part-FIRST-END.parquet`` already in ``folder``, if any."""
    for part in folder.glob(f"part-{first:012d}-*.parquet"):
        end = part.name.removesuffix(".parquet").rsplit("-", 1)[1]
        if end.isdigit():
            return int(end)
    return None


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Open (or create) the database file; ConfigError naming the file and the cause in one
    line when it cannot be (another server holds its lock, it is not a DuckDB file, a
    directory is in the way, no permission), instead of a traceback at start-up."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path))
    except OSError as exc:
        cause = exc.strerror or str(exc)
    except duckdb.Error as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pid = re.search(r"Could not set lock on file.*\(PID (\d+)\)", text)
        if pid is not None:
            cause = f"another process (PID {pid.group(1)}) holds it (a server already running?)"
        else:
            cause = text.removeprefix("IO Error: ").split(" See also")[0]
    raise ConfigError(f"log.path: cannot open {str(path)!r}: {cause}", field="log.path")


def _out_of_space(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full: then writing more journal would take the space
    the database needs to move it in."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return any(text in str(error) for text in ("No space left on device", "Disk quota exceeded"))


class DuckDBLog:
    """Event log in one DuckDB file, fed through a journal by a background thread."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval_s: float = 0.05,
        ingest_interval_s: float = 1.0,
        batch_size: int = 2048,
        export_dir: Path | None = None,
        export_interval_s: float = 60.0,
        memory_limit_mb: int = 256,
        fsync: bool = False,
        sync_feedback: bool = True,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
    ) -> None:
        self.path = path
        self.export_dir = export_dir
        self.journal_dir = journal_dir(path)
        self.rejected_dir = path.with_name(path.name + ".rejected")
        self._export_interval_s = export_interval_s
        self._last_export = time.monotonic()
        self._flush_interval_s = flush_interval_s
        self._ingest_interval_s = ingest_interval_s
        self._batch_size = batch_size
        self._sync_feedback = sync_feedback
        self._max_backlog_bytes = max_backlog_bytes
        self._con = _connect(path)
        # DuckDB caches database pages up to its memory limit (80% of RAM by default), which
        # would let a long-running server's resident memory grow with the log: bound it.
        self._con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        self._con.execute("SET TimeZone = 'UTC'")
        # Moving rows in is background work: one DuckDB thread, leaving the other cores to
        # the threads that serve requests.
        self._con.execute("SET threads = 1")
        self._con.execute(CREATE_TABLES + CREATE_AUDIT_TABLE + CREATE_JOURNAL_TABLE)
        self._export_marks = self._read_export_marks()
        self._failures = 0
        self.last_error: BaseException | None = None
        done = ingested_upto(self._con)
        self._pending = self._recover(done)
        self._journal = Journal(self.journal_dir, fsync=fsync, after=done)
        self._waiters: list[Commit] = []
        self._waiters_lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._unflushed = 0
        self._thread = threading.Thread(target=self._run, name="duckdb-log-writer", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------
    def admit(self) -> None:
        """Unavailable while the journal holds ``max_backlog_bytes`` it could not write yet
        (its disk full): the router asks before a decision or feedback, so a long outage
        sheds calls with a clear status instead of growing memory or dropping rows."""
        backlog = self._journal.buffered_bytes
        if backlog >= self._max_backlog_bytes:
            raise Unavailable(
                f"the decision log has {backlog // 1024} KiB of rows it could not write yet "
                "(is its disk full?); no new calls until it catches up: retry later"
            )

    @property
    def backlog_bytes(self) -> int:
        """Bytes of rows buffered in memory and not yet written to the journal."""
        return self._journal.buffered_bytes

    def _buffer(self, line: bytes) -> None:
        self._journal.append(line)
        self._unflushed += 1
        if self._unflushed >= self._batch_size:
            self._wake.set()

    def append_decision(self, record: DecisionRecord) -> None:
        self._buffer(decision_line(record))

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        """Write the feedback row (and every row before it) to the journal now; the commit is
        complete on return, failed with the OSError if the write failed (the row stays
        buffered and is written later). Without ``sync_feedback`` the row is only buffered."""
        if not self._sync_feedback:
            self._journal.append(feedback_line(record))
            return self._committed(None)
        return self._committed(self._journal.append(feedback_line(record)))

    def sync(self) -> Commit:
        """Write every row handed in so far to the journal now (as ``append_feedback`` does
        for its row: an audited feedback is handed in with its record, then synced)."""
        return self._committed(self._journal.appended if self._sync_feedback else None)

    def _committed(self, number: int | None) -> Commit:
        """A commit complete once journal line ``number`` and every line before it are
        written (failed with the OSError, kept as ``last_error``, if they could not be), or
        at once for None."""
        commit = Commit()
        # While a failure's backlog drains, only a small one is written from here (see
        # Journal.make_durable); the writer moves the rest in a chunk at a time.
        limit = WRITE_CHUNK_BYTES if self._failures else None
        try:
            if number is not None:
                self._journal.make_durable(number, backlog_limit=limit)
        except OSError as exc:
            self.last_error = exc
            commit.done(exc)
        else:
            commit.done()
        return commit

    def append_settlement(self, record: SettlementRecord) -> None:
        self._buffer(settlement_line(record))

    def append_audit(self, record: AuditRecord) -> None:
        """Buffer the audit record's line and its row's in one append, so the two always
        share a write and a segment."""
        line = audit_line(record)
        if record.row is not None:
            line += row_line(record.row)
        self._buffer(line)

    # -- readers -----------------------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reading rows from another thread (close it after use). Rows handed in
        so far are moved in first (within a flush interval), so a caller reads its writes."""
        self.flush()
        return self._con.cursor()

    def tenant_spend(self, tenant: str, since: float) -> tuple[float, int]:
        """A tenant's reported spend (USD) and decisions with a cost since ``since``: as the
        budget was charged, the cost of each served model's first report only (a repeated
        report of one call costs nothing more)."""
        self.flush()
        cursor = self._con.cursor()
        try:
            row = cursor.execute(
                f"""SELECT coalesce(sum(f.cost_usd), 0), count(DISTINCT f.decision_id)
                   FROM (SELECT *, {FEEDBACK_RANK} AS n FROM feedback) f
                   JOIN decisions d USING (decision_id)
                   WHERE d.tenant = ? AND f.n = 1 AND f.time >= ? AND f.cost_usd IS NOT NULL""",
                [tenant, _ts(since)],
            ).fetchone()
        finally:
            cursor.close()
        return (0.0, 0) if row is None else (float(row[0]), int(row[1]))

    def first_costs(
        self, *, objective: str | None = None, tenant: str | None = None
    ) -> list[float]:
        """The cost (0 when not reported) of each decision's first feedback, in time order
        (ties in the order written: the pacer's state depends on the order), for decisions
        under ``objective`` and/or of ``tenant``: what that objective's (or tenant's) budget
        pacer observed."""
        self.flush()
        where = " AND ".join(
            clause
            for clause, value in (("d.objective = ?", objective), ("d.tenant = ?", tenant))
            if value is not None
        )
        params = [v for v in (objective, tenant) if v is not None]
        cursor = self._con.cursor()
        try:
            rows = cursor.execute(
                f"""SELECT coalesce(cost_usd, 0) FROM (
                       SELECT f.cost_usd, f.time, f.rowid AS seq, row_number() OVER (
                           PARTITION BY f.decision_id ORDER BY f.time, f.rowid) AS n
                       FROM feedback f JOIN decisions d USING (decision_id)
                       WHERE {where or "true"})
                   WHERE n = 1 ORDER BY time, seq""",
                params,
            ).fetchall()
        finally:
            cursor.close()
        return [float(r[0]) for r in rows]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit record, to continue the chain: the journal a
        crash left is moved in first, or the chain would reuse its numbers."""
        self.flush()
        cursor = self._con.cursor()
        try:
            return read_head(cursor)
        finally:
            cursor.close()

    def flush(self) -> None:
        """Block until every row handed in so far is in the database; raise why not."""
        commit = Commit()
        with self._waiters_lock:
            if self._closed:
                return
            self._waiters.append(commit)
        self._wake.set()
        commit.wait()

    def close(self) -> None:
        """Move every row in, export, stop the writer and close the file."""
        with self._waiters_lock:
            if self._closing:
                already = True
            else:
                already, self._closing = False, True
        if already:
            self._thread.join()
            return
        self._wake.set()
        self._thread.join()
        self._con.close()

    # -- writer ------------------------------------------------------------------------------
    def _run(self) -> None:
        """Every flush interval write the journal's buffer out; every ingest interval (sooner
        on flush or close, and while retrying a failure) move the journal into the database.
        Moving in costs DuckDB a few milliseconds of fixed work per segment, so it is done
        seldom: the journal, not the database, is what makes a row survive a crash. An
        unexpected error fails the waiting callers and the writer carries on; it never
        leaves a caller of flush() waiting for a thread that died."""
        last_ingest = time.monotonic()
        while True:
            pause = (
                self._flush_interval_s
                if self._failures == 0
                else min(1.0, self._flush_interval_s * 10)
            )
            self._wake.wait(pause)
            self._wake.clear()
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
                closing = self._closing
            due = time.monotonic() - last_ingest >= self._ingest_interval_s
            error: BaseException | None = None
            try:
                if not (waiters or closing or due or self._failures):
                    self._unflushed = 0
                    self._journal.write()
                    continue
                last_ingest = time.monotonic()
                error = self._cycle(final=closing)
            except OSError as exc:
                self._failed(exc, where=str(self.journal_dir))
                error = exc
            except Exception as exc:  # a bug: say so, fail the waiters, keep the writer alive
                log.exception("log_writer_error", path=str(self.path))
                self.last_error = error = exc
            for waiter in waiters:
                waiter.done(error)
            if closing:
                if self._pending:
                    # Segments that cannot be moved in stay in the journal (the next start
                    # moves them in); say so instead of hanging the shutdown.
                    log.error("log_close_left_rows_in_journal", journal=str(self.journal_dir),
                              segments=len(self._pending), error=str(error))  # fmt: skip
                lost = self._journal.appended - self._journal.written
                if lost:
                    log.error("log_close_lost_unwritten_rows", error=str(error), rows=lost,
                              bytes=self._journal.buffered_bytes)  # fmt: skip
                with self._waiters_lock:
                    self._closed = True
                    late, self._waiters = self._waiters, []
                for waiter in late:
                    waiter.done(error)
                return

    def _cycle(self, *, final: bool = False) -> BaseException | None:
        """Move in every closed segment, then write out what was buffered when the cycle
        began a chunk at a time, each closed and moved in before the next is written (after a
        full disk its space is freed before more is used); at ``final`` close the journal.
        Export when due.

        A segment that fails for want of disk (or any other reason the database gives) is
        retried for as long as it takes; one DuckDB refuses for its content goes in without
        the rows it refuses (:meth:`_salvage`). While the database fails for a reason other
        than space, the buffer still goes to the journal, where it survives a crash.
        """
        self._unflushed = 0
        target = self._journal.appended
        error = self._move_in()
        while error is None:
            error = self._write_segment(chunks=1 if self._journal.written < target else 0)
            error = self._move_in() or error
            if self._journal.written >= target:
                break
        if error is not None and not _out_of_space(error):
            self._write_segment(chunks=None)
        if final:
            try:
                closed = self._journal.close()
            except OSError as exc:  # what it could not write is reported by the caller
                self._failed(exc, where=str(self.journal_dir))
                error, closed = error or exc, None
            if closed is not None:
                self._pending.append(closed)
                error = self._move_in() or error
        if error is not None:
            return error
        self._failures = 0
        self.last_error = None
        if final or time.monotonic() - self._last_export >= self._export_interval_s:
            self.export()
        return None

    def _write_segment(self, *, chunks: int | None) -> OSError | None:
        """Write ``chunks`` chunks of the buffer (all of it for None) and close the segment
        for moving in; the OSError that stopped it, or None."""
        error: OSError | None = None
        try:
            if chunks != 0:
                self._journal.write(chunks)
        except OSError as exc:
            self._failed(exc, where=str(self.journal_dir))
            error = exc
        try:
            closed = self._journal.rotate()
        except OSError as exc:
            self._failed(exc, where=str(self.journal_dir))
            return error or exc
        if closed is not None:
            self._pending.append(closed)
        return error

    def _move_in(self) -> BaseException | None:
        """Move the closed segments in, oldest first, deleting each; the error that stopped
        it (the segment stays, to be retried), or None."""
        while self._pending:
            segment = self._pending[0]
            try:
                try:
                    self._ingest(segment)
                except BAD_DATA_ERRORS:
                    self._rollback()
                    self._salvage(segment)
            except (duckdb.Error, OSError) as exc:
                self._rollback()
                self._failed(exc, where=str(segment))
                return exc
            self._pending.pop(0)
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()
            if self._failures:
                # Catching up after a full disk: fold the write-ahead log (about as large as
                # the segment) into the compressed file now, not at its usual 16 MB, so each
                # segment moved in frees more space than it took.
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("CHECKPOINT")
        return None

    def _failed(self, error: BaseException, *, where: str) -> None:
        self.last_error = error
        self._failures += 1
        # A refused row's error quotes it: name the error's class only.
        said = type(error).__name__ if isinstance(error, BAD_DATA_ERRORS) else str(error)
        log.error("log_write_failed", path=where, error=said, attempt=self._failures)

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self._con.execute("ROLLBACK")

    def _ingest(self, segment: Path) -> None:
        """Insert one segment's rows and advance the ingested mark, in one transaction."""
        self._con.execute(ingest_sql(str(segment), segment_number(segment)))

    def _salvage(self, segment: Path) -> None:
        """Move in a segment DuckDB refused, without the lines it refuses.

        Those lines are found by halving (:meth:`_refused`) and written to ``PATH.rejected/``
        under a name no other segment's can take; the others go in with the ingested mark in
        one transaction, as a whole segment would. Raises (and changes nothing in the
        database) if the disk or the database fails meanwhile: the segment is retried.
        """
        data = segment.read_bytes()
        lines = [line + b"\n" for line in data.split(b"\n")]
        lines[-1] = lines[-1][:-1]  # what followed the last newline: nothing, in a segment
        if not lines[-1]:
            lines.pop()
        part = segment.with_name(f".{segment.stem}.part")
        try:
            refused = self._refused(lines, part)
            out = set(refused)
            kept = [line for index, line in enumerate(lines) if index not in out]
            target = self.rejected_dir / f"{segment.stem}-{time.time_ns()}{segment.suffix}"
            if refused:
                self.rejected_dir.mkdir(exist_ok=True)
                target.write_bytes(b"".join(lines[index] for index in refused))
            if kept:
                part.write_bytes(b"".join(kept))
                self._con.execute(ingest_sql(str(part), segment_number(segment)))
            else:
                self._con.execute(mark_sql(segment_number(segment)))
        finally:
            part.unlink(missing_ok=True)
        log.error(
            "log_rows_set_aside", segment=segment_number(segment), rows=len(refused),
            kept=len(kept), lines=[index + 1 for index in refused[:LOGGED_LINE_NUMBERS]],
            bytes=sum(len(lines[index]) for index in refused),
            path=str(target) if refused else None,
        )  # fmt: skip

    def _refused(self, lines: list[bytes], part: Path) -> list[int]:
        """The indices of the ``lines`` DuckDB refuses, found by halving: the whole segment
        failed, and each half of a failing group is tried on its own (:meth:`_goes_in`) until
        the refused lines stand alone. Should a group fail while both its halves go in (rows
        refused only together), the group is refused, so a segment never fails for good."""
        refused: list[int] = []
        failing = [(0, len(lines))]
        while failing:
            start, end = failing.pop()
            if end - start <= 1:
                refused.extend(range(start, end))
                continue
            middle = (start + end) // 2
            halves = [
                h for h in ((middle, end), (start, middle)) if not self._goes_in(lines, h, part)
            ]
            failing.extend(halves)
            if not halves:
                refused.extend(range(start, end))
        return sorted(refused)

    def _goes_in(self, lines: list[bytes], group: tuple[int, int], part: Path) -> bool:
        """Whether the lines ``group`` (start, end) would go in: written to ``part`` and
        inserted in a transaction rolled back. Errors other than refused content propagate."""
        part.write_bytes(b"".join(lines[group[0] : group[1]]))
        try:
            self._con.execute(probe_sql(str(part)))
        except BAD_DATA_ERRORS:
            self._rollback()
            return False
        return True

    # -- start-up ----------------------------------------------------------------------------
    def _recover(self, done: int) -> list[Path]:
        """Segments a previous run left: delete those already in (numbered up to ``done``),
        return the rest (oldest first) after trimming a torn last line; the writer's first
        cycle moves them in."""
        left = []
        for segment in list_segments(self.journal_dir):
            if segment_number(segment) <= done:
                segment.unlink(missing_ok=True)
                continue
            trimmed = trim_torn_tail(segment)
            if trimmed:
                log.warning("log_journal_torn_tail", path=str(segment), bytes=trimmed)
            left.append(segment)
        if left:
            log.info("log_journal_recovered", segments=len(left), journal=str(self.journal_dir))
        return left

    # -- export ------------------------------------------------------------------------------
    def _read_export_marks(self) -> dict[str, int]:
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS export_marks (tbl VARCHAR PRIMARY KEY, exported BIGINT)"
        )
        marks = dict(self._con.execute("SELECT tbl, exported FROM export_marks").fetchall())
        for table in EXPORTED_TABLES:
            if table not in marks:
                # A log exported by an older version (or never): start from what is there.
                row = self._con.execute(f"SELECT count(*) FROM {table}").fetchone()
                marks[table] = 0 if row is None else int(row[0])
        return {t: int(marks[t]) for t in EXPORTED_TABLES}

    def export(self) -> None:
        """Write rows added since the last export as Parquet parts (writer thread only).

        Readers (``banditroute replay`` while the server runs) read these parts, since DuckDB
        lets no other process open the database file while it is open for writing. Each part
        is written to a temporary name and renamed, so a reader never sees half a file; the
        exported mark is kept in the database, so rows a crash kept from being exported are
        exported by the next start.
        """
        self._last_export = time.monotonic()
        if self.export_dir is None:
            return
        try:
            for table in EXPORTED_TABLES:
                self._export_table(table, self.export_dir / table)
        except (OSError, duckdb.Error) as exc:
            log.error("log_export_failed", path=str(self.export_dir), error=str(exc))

    def _export_table(self, table: str, folder: Path) -> None:
        """Export one table's rows from its mark on as ``part-FIRST-END.parquet`` (rowids
        FIRST <= rowid < END). A part already written from the mark (a crash or a failed
        mark update came between the rename and the mark) moves the mark to its end instead
        of exporting those rows twice."""
        mark = self._export_marks[table]
        while (done := _exported_end(folder, mark)) is not None and done > mark:
            mark = done
        row = self._con.execute(f"SELECT count(*) FROM {table}").fetchone()
        total = 0 if row is None else int(row[0])
        if total > mark:
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{mark:012d}-{total:012d}.parquet"
            tmp = folder / f".{name}.tmp"
            self._con.execute(
                f"COPY (SELECT * FROM {table} WHERE rowid >= {mark} AND rowid < {total}) "
                f"TO {sql_string(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
            )
            os.replace(tmp, folder / name)
            mark = total
        if mark != self._export_marks[table]:
            self._con.execute("INSERT OR REPLACE INTO export_marks VALUES (?, ?)", [table, mark])
            self._export_marks[table] = mark

    # -- restore -----------------------------------------------------------------------------
    def unsettled(self, since: float) -> list[tuple[DecisionRecord, list[FeedbackRecord]]]:
        """Decisions since ``since`` with no settlement row, with their feedback rows."""
        self.flush()
        cursor = self._con.cursor()
        rows = cursor.execute(
            """SELECT d.* FROM decisions d
               WHERE d.time >= ? AND d.decision_id NOT IN (SELECT decision_id FROM settlements)
               ORDER BY d.time""",
            [_ts(since)],
        ).fetchall()
        decisions = [
            DecisionRecord(
                decision_id=r[0],
                time=r[1].timestamp(),
                tenant=r[2],
                request_id=r[3],
                objective=r[4],
                prompt_hash=r[5],
                prompt=r[6],
                features=json.loads(r[7]) if r[7] else {},
                eligible=tuple(r[8]),
                probabilities=tuple(r[9]),
                model=r[10],
                probability=r[11],
                policy_version=r[12],
                explored=r[13],
                tags=json.loads(r[14]) if r[14] else {},
                arm=r[15] or "default",
                rule=r[16] or "",
                data_class=r[17] or "public",
                excluded=json.loads(r[18]) if r[18] else {},
                constraints=json.loads(r[19]) if r[19] else {},
                shadow=json.loads(r[20]) if r[20] else {},
                request_hash=r[21] or "",
            )
            for r in rows
        ]
        feedback: dict[str, list[FeedbackRecord]] = {}
        if decisions:
            names = [f.name for f in fields(FeedbackRecord)]
            fb_rows = cursor.execute(
                """SELECT * FROM feedback WHERE decision_id IN
                   (SELECT decision_id FROM decisions WHERE time >= ? AND decision_id
                    NOT IN (SELECT decision_id FROM settlements)) ORDER BY time""",
                [_ts(since)],
            ).fetchall()
            for row in fb_rows:
                values = dict(zip(names, row, strict=True))
                values["time"] = values["time"].timestamp()
                record = FeedbackRecord(**values)
                feedback.setdefault(record.decision_id, []).append(record)
        cursor.close()
        return [(d, feedback.get(d.decision_id, [])) for d in decisions]
