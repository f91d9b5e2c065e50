"""The DuckDB event log: a background writer that commits batches as Arrow tables.

Route and Feedback only enqueue rows; one writer thread drains the queue and commits what it
holds at least every ``flush_interval_s`` (or as soon as ``batch_size`` rows wait), one
transaction per batch, inserting Arrow tables (never row by row). A feedback's
:class:`~banditroute.store.base.Commit` completes when its batch is committed, so a server
that waits on it acknowledges only durable feedback (group commit). If a commit fails (disk
full), the batch is kept and retried, and waiting callers get the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import astuple, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from banditroute.audit import CREATE_AUDIT_TABLE, AuditRecord, audit_rows_to_arrow, read_head
from banditroute.store.base import Commit
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord
from banditroute.store.schema import (
    CREATE_TABLES,
    DECISIONS_SCHEMA,
    FEEDBACK_SCHEMA,
    SETTLEMENTS_SCHEMA,
)

log = structlog.get_logger(__name__)

MAX_WRITE_ATTEMPTS = 5
"""A batch that fails this many times in a row is set aside to a file, not retried forever."""


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _decision_row(r: DecisionRecord) -> tuple[Any, ...]:
    return (
        r.decision_id, _ts(r.time), r.tenant, r.request_id, r.objective, r.prompt_hash,
        r.prompt, json.dumps(r.features), list(r.eligible), list(r.probabilities), r.model,
        r.probability, r.policy_version, r.explored, json.dumps(r.tags), r.arm, r.rule,
        r.data_class, json.dumps(r.excluded), json.dumps(r.constraints), json.dumps(r.shadow),
    )  # fmt: skip


def _plain_row(r: FeedbackRecord | SettlementRecord) -> tuple[Any, ...]:
    values = list(astuple(r))
    values[1] = _ts(values[1])
    return tuple(values)


def _table(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.table(
        [pa.array(list(col), type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


class DuckDBLog:
    """Event log in one DuckDB file, written by a background thread in Arrow batches."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval_s: float = 0.05,
        batch_size: int = 2048,
        export_dir: Path | None = None,
        export_interval_s: float = 60.0,
        memory_limit_mb: int = 256,
    ) -> None:
        self.path = path
        self.export_dir = export_dir
        self._export_interval_s = export_interval_s
        self._last_export = time.monotonic()
        self._export_seq = 0
        self._committed: dict[str, list[pa.Table]] = {}
        self._uncommitted: dict[str, list[pa.Table]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB caches database pages up to its memory limit (80% of RAM by default), which
        # would let a long-running server's resident memory grow with the log: bound it.
        self._con = duckdb.connect(str(path))
        self._con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        self._con.execute(CREATE_TABLES)
        self._con.execute(CREATE_AUDIT_TABLE)
        self._flush_interval_s = flush_interval_s
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._retry: list[Any] = []
        self._failures = 0
        self._closed = False
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="duckdb-log-writer", daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------
    def append_decision(self, record: DecisionRecord) -> None:
        self._queue.put(record)

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        commit = Commit()
        self._queue.put((record, commit))
        self._urgent.set()
        return commit

    def append_settlement(self, record: SettlementRecord) -> None:
        self._queue.put(record)

    def append_audit(self, record: AuditRecord) -> None:
        self._queue.put(record)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reading committed rows from another thread (close it after use)."""
        return self._con.cursor()

    def tenant_spend(self, tenant: str, since: float) -> tuple[float, int]:
        """A tenant's reported spend (USD) and decisions with a cost since ``since``."""
        self.flush()
        cursor = self._con.cursor()
        try:
            row = cursor.execute(
                """SELECT coalesce(sum(f.cost_usd), 0), count(DISTINCT f.decision_id)
                   FROM feedback f JOIN decisions d USING (decision_id)
                   WHERE d.tenant = ? AND f.time >= ? AND f.cost_usd IS NOT NULL""",
                [tenant, _ts(since)],
            ).fetchone()
        finally:
            cursor.close()
        return (0.0, 0) if row is None else (float(row[0]), int(row[1]))

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit record already in the file, to continue the chain."""
        cursor = self._con.cursor()
        try:
            return read_head(cursor)
        finally:
            cursor.close()

    def flush(self) -> None:
        commit = Commit()
        self._queue.put(commit)
        self._urgent.set()
        commit.wait()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(None)
        self._urgent.set()
        self._thread.join()
        self._con.close()

    # -- writer ------------------------------------------------------------------------------
    def _run(self) -> None:
        """Commit batches. After the first row of a batch arrives the writer sleeps until the
        flush deadline (or until urgent work: a feedback someone waits for, a flush, close)
        and then drains the queue in one go: waking for every row would hand the GIL back and
        forth with the threads serving requests on each Route."""
        while True:
            items = self._retry
            self._retry = []
            if not items:
                try:
                    items.append(self._queue.get(timeout=self._flush_interval_s))
                except queue.Empty:
                    if time.monotonic() - self._last_export >= self._export_interval_s:
                        self.export()
                    continue
            deadline = time.monotonic() + self._flush_interval_s
            urgent = any(i is None or isinstance(i, tuple | Commit) for i in items)
            if not urgent:
                self._urgent.wait(max(0.0, deadline - time.monotonic()))
            self._urgent.clear()
            while len(items) < self._batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            if stop:
                items = [i for i in items if i is not None]
            self._write(items)
            if stop:
                self.export()
                return
            if time.monotonic() - self._last_export >= self._export_interval_s:
                self.export()

    def _write(self, items: list[Any]) -> None:
        decisions = [i for i in items if isinstance(i, DecisionRecord)]
        feedback = [i for i in items if isinstance(i, tuple)]
        settlements = [i for i in items if isinstance(i, SettlementRecord)]
        audits = [i for i in items if isinstance(i, AuditRecord)]
        commits = [i[1] for i in feedback] + [i for i in items if isinstance(i, Commit)]
        try:
            self._con.execute("BEGIN TRANSACTION")
            if decisions:
                self._insert("decisions", [_decision_row(r) for r in decisions], DECISIONS_SCHEMA)
            if feedback:
                self._insert("feedback", [_plain_row(r) for r, _ in feedback], FEEDBACK_SCHEMA)
            if settlements:
                self._insert(
                    "settlements", [_plain_row(r) for r in settlements], SETTLEMENTS_SCHEMA
                )
            if audits:
                self._insert_table("audit", audit_rows_to_arrow(audits))
            self._con.execute("COMMIT")
            for table, batches in self._uncommitted.items():
                self._committed.setdefault(table, []).extend(batches)
            self._uncommitted = {}
        except Exception as exc:  # disk full, I/O error: keep the rows, tell the waiters
            self._uncommitted = {}
            with contextlib.suppress(duckdb.Error):
                self._con.execute("ROLLBACK")
            self.last_error = exc
            self._failures += 1
            log.error("log_write_failed", path=str(self.path), error=str(exc), rows=len(items),
                      attempt=self._failures)  # fmt: skip
            for commit in commits:
                commit.done(exc)
            rows = [i for i in items if not isinstance(i, Commit)]
            if self._failures >= MAX_WRITE_ATTEMPTS and self._set_aside(rows, exc):
                self._failures = 0
            else:
                self._retry = rows
                time.sleep(min(1.0, self._flush_interval_s * 10))
            return
        self._failures = 0
        self.last_error = None
        for commit in commits:
            commit.done()

    def _set_aside(self, rows: list[Any], error: BaseException) -> bool:
        """Move rows that keep failing to a JSON-lines file beside the log; True if written."""
        aside = self.path.with_name(self.path.name + ".rejected.jsonl")
        try:
            with open(aside, "a", encoding="utf-8") as handle:
                for row in rows:
                    record = row[0] if isinstance(row, tuple) else row
                    entry = {"table": type(record).__name__, "error": str(error),
                             "row": dataclasses.asdict(record)}  # fmt: skip
                    handle.write(json.dumps(entry, default=str) + "\n")
        except OSError:
            return False
        log.error("log_rows_set_aside", path=str(aside), rows=len(rows))
        return True

    def _insert(self, table: str, rows: list[tuple[Any, ...]], schema: pa.Schema) -> None:
        self._insert_table(table, _table(rows, schema))

    def _insert_table(self, table: str, batch: pa.Table) -> None:
        """Insert an Arrow batch (DuckDB reads the local variable ``batch`` by name)."""
        self._con.execute(f"INSERT INTO {table} SELECT * FROM batch")
        if self.export_dir is not None:
            self._uncommitted.setdefault(table, []).append(batch)

    def export(self) -> None:
        """Write rows committed since the last export as Parquet parts (writer thread only).

        Readers (``banditroute replay`` while the server runs) read these parts, since DuckDB
        lets no other process open the database file while it is open for writing. Each part
        is written to a temporary name and renamed, so a reader never sees half a file.
        """
        self._last_export = time.monotonic()
        if self.export_dir is None or not self._committed:
            return
        committed, self._committed = self._committed, {}
        self._export_seq += 1
        stamp = f"{int(time.time() * 1000):013d}-{self._export_seq:06d}"
        try:
            for table, batches in committed.items():
                folder = self.export_dir / table
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"part-{stamp}.parquet"
                tmp = folder / f".part-{stamp}.parquet.tmp"
                pq.write_table(pa.concat_tables(batches), tmp, compression="zstd")
                os.replace(tmp, target)
        except OSError as exc:
            log.error("log_export_failed", path=str(self.export_dir), error=str(exc))

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
                features=json.loads(r[7]),
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
            )
            for r in rows
        ]
        feedback: dict[str, list[FeedbackRecord]] = {}
        if decisions:
            names = [f.name for f in fields(FeedbackRecord)]
            fb_rows = cursor.execute(
                """SELECT * FROM feedback WHERE decision_id IN
                   (SELECT decision_id FROM decisions WHERE time >= ?) ORDER BY time""",
                [_ts(since)],
            ).fetchall()
            for row in fb_rows:
                values = dict(zip(names, row, strict=True))
                values["time"] = values["time"].timestamp()
                record = FeedbackRecord(**values)
                feedback.setdefault(record.decision_id, []).append(record)
        cursor.close()
        return [(d, feedback.get(d.decision_id, [])) for d in decisions]
