"""The trainer's central log: every replica's rows, each exactly once, and the learner's state.

``--log CENTRAL.duckdb`` names a family of DuckDB files beside it:

- ``CENTRAL.r-SOURCE.duckdb`` per replica source: its decisions, feedback, settlements and
  audit records, laid out as a replica's own log (so ``replay``, ``report`` and ``tune`` given
  ``--log CENTRAL.duckdb`` read them all together, and ``audit verify`` checks each file's
  chain). A batch of lines goes in with the number of its last line as the file's ingested
  mark (the ``journal_segments`` row a replica's log keeps), in one transaction: a line at or
  below the mark is never inserted again.
- ``CENTRAL.trainer.duckdb``: for each source the number up to which the learner has learned
  its updates (and when the trainer last read a batch from it), with the learner's own
  snapshot and the published version, committed together, so a trainer that takes over
  continues exactly where the last commit left off: nothing
  learned twice, nothing skipped. With them, the learner's :class:`Lineage` (what kind of
  policy it is after a promotion, and the policy a rollback would restore), and the join of
  feedback that reached a replica while the decision's owner was gone
  (:mod:`banditroute.cluster.joiner`): the rows still waiting for their decision, the
  decisions learned that way, and the count of each outcome (``forwarded_feedback`` and
  ``forwarded_outcomes``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import structlog

from banditroute.audit import CREATE_AUDIT_TABLE
from banditroute.cluster import replica_tag
from banditroute.cluster.joiner import Cost, DecisionRow, JoinChanges, Row, owner_tag
from banditroute.cluster.outbox import Line
from banditroute.features import features_from_dict
from banditroute.store.duckdb_log import BAD_DATA_ERRORS
from banditroute.store.journal_rows import CREATE_JOURNAL_TABLE, ingest_sql, ingested_upto
from banditroute.store.schema import CREATE_TABLES

log = structlog.get_logger(__name__)

SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
MAX_SOURCE_CHARS = 128
MEMORY_LIMIT_MB = 128


def valid_source(source: str) -> bool:
    """Whether ``source`` may name a file (the characters ``cluster.replica_id`` allows)."""
    return 0 < len(source) <= MAX_SOURCE_CHARS and set(source) <= SOURCE_CHARS


def source_file(path: Path, source: str) -> Path:
    """The central file of one source: ``CENTRAL.r-SOURCE.duckdb``."""
    return path.with_name(f"{path.stem}.r-{source}{path.suffix}")


def state_file(path: Path) -> Path:
    """The trainer's state file: ``CENTRAL.trainer.duckdb``."""
    return path.with_name(f"{path.stem}.trainer{path.suffix}")


_STATE_TABLES = """
CREATE TABLE IF NOT EXISTS learned (source VARCHAR PRIMARY KEY, seq BIGINT);
ALTER TABLE learned ADD COLUMN IF NOT EXISTS heard DOUBLE;
CREATE TABLE IF NOT EXISTS trainer_state (
    id INTEGER PRIMARY KEY, version BIGINT, updates BIGINT, snapshot BLOB);
CREATE TABLE IF NOT EXISTS lineage (
    id INTEGER PRIMARY KEY, recipe VARCHAR, previous_recipe VARCHAR, previous BLOB,
    change VARCHAR);
CREATE TABLE IF NOT EXISTS forwarded_feedback (
    decision_id VARCHAR PRIMARY KEY, kind VARCHAR, arrived DOUBLE, data BLOB);
CREATE TABLE IF NOT EXISTS forwarded_outcomes (outcome VARCHAR PRIMARY KEY, n BIGINT);
"""

JoinState = tuple[list[Row], dict[str, int]]
"""The joiner's rows (decision id, ``held`` or ``joined``, when, held row) and its counts."""

_FIND_DECISION = """
SELECT decision_id, epoch(time), tenant, objective, features::VARCHAR, eligible, model,
       probability, arm
FROM decisions WHERE decision_id = ? AND time >= to_timestamp(?) LIMIT 1
"""
_FILL_COSTS = """
UPDATE feedback SET cost_usd = c.cost_usd FROM costs_in AS c
WHERE feedback.decision_id = c.decision_id AND feedback.disposition = 'FOR_TRAINER'
  AND feedback.cost_usd IS NULL AND feedback.model = c.model
  AND feedback.input_tokens IS NOT DISTINCT FROM c.input_tokens
  AND feedback.output_tokens IS NOT DISTINCT FROM c.output_tokens
"""
_OWNER_LEARNED = """
SELECT (SELECT count(*) FROM feedback
        WHERE decision_id = $1 AND time >= to_timestamp($2) AND disposition = 'LEARNED')
     + (SELECT count(*) FROM settlements
        WHERE decision_id = $1 AND time >= to_timestamp($2) AND action LIKE 'learned%')
"""


@dataclass(frozen=True)
class Lineage:
    """Where the trainer's learner comes from: its ``recipe`` (the promoted candidate spec
    it was built from; empty for the configured default policy), the policy the last
    promotion replaced (its recipe and snapshot, for a rollback; None after one) and the id
    of the last promotion or rollback applied (so a leader taking over applies it once)."""

    recipe: str = ""
    previous_recipe: str = ""
    previous: bytes | None = None
    change: str = ""


class CentralLog:
    """The central files of ``path``'s family, open for writing by the leader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._state = duckdb.connect(str(state_file(path)))
        self._state.execute(f"SET memory_limit = '{MEMORY_LIMIT_MB}MB'")
        self._state.execute("SET threads = 1")
        self._state.execute(_STATE_TABLES)
        self._files: dict[str, duckdb.DuckDBPyConnection] = {}
        self._marks: dict[str, int] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="banditroute-central-"))

    def _file(self, source: str) -> duckdb.DuckDBPyConnection:
        con = self._files.get(source)
        if con is None:
            con = duckdb.connect(str(source_file(self.path, source)))
            # One file per replica: bound each one's page cache (DuckDB's default is 80% of
            # RAM per database), as a replica's own log does.
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT_MB}MB'")
            con.execute("SET threads = 1")
            con.execute("SET TimeZone = 'UTC'")
            con.execute(CREATE_TABLES + CREATE_AUDIT_TABLE + CREATE_JOURNAL_TABLE)
            self._files[source] = con
            self._marks[source] = ingested_upto(con)
        return con

    def _sources(self) -> list[str]:
        """Every source with a central file (files of earlier runs included)."""
        prefix, suffix = f"{self.path.stem}.r-", self.path.suffix
        found = {
            p.name[len(prefix) : len(p.name) - len(suffix)]
            for p in self.path.parent.glob(f"{prefix}*{suffix}")
        }
        return sorted(s for s in found | set(self._files) if valid_source(s))

    def _sources_of(self, tag: str) -> list[str]:
        """The sources whose replica tag is ``tag``."""
        return [s for s in self._sources() if replica_tag(s) == tag]

    def fill_costs(self, costs: Sequence[Cost]) -> None:
        """Write each cost into the forwarded feedback rows (disposition ``FOR_TRAINER``) it
        is for that hold none, in the file of the source that accepted them only: the cost
        the owner would have recorded, for ``report``, ``replay`` and ``tune``. One
        statement per file, whatever the number of costs."""
        by_source: dict[str, dict[tuple[str, str, int | None, int | None], float]] = {}
        for c in costs:
            key = (c.decision_id, c.model, c.input_tokens, c.output_tokens)
            by_source.setdefault(c.source, {})[key] = c.cost_usd
        for source, priced in by_source.items():
            if not valid_source(source):  # a held row of an older state names none
                continue
            keys = list(priced)
            table = pa.table({
                "decision_id": pa.array([k[0] for k in keys], pa.string()),
                "model": pa.array([k[1] for k in keys], pa.string()),
                "input_tokens": pa.array([k[2] for k in keys], pa.int64()),
                "output_tokens": pa.array([k[3] for k in keys], pa.int64()),
                "cost_usd": pa.array(list(priced.values()), pa.float64()),
            })  # fmt: skip
            con = self._file(source)
            con.register("costs_in", table)
            try:
                con.execute(_FILL_COSTS)
            finally:
                con.unregister("costs_in")

    def find_decision(self, decision_id: str, since: float) -> DecisionRow | None:
        """The decision ``decision_id`` made at or after ``since`` (epoch seconds) by the
        replica its id's tag names, if its central file holds it. ValueError if the row
        cannot be learned from (damaged or forged: features a policy cannot read, a
        probability outside (0, 1]); the message never quotes it."""
        for source in self._sources_of(owner_tag(decision_id)):
            row = self._file(source).execute(_FIND_DECISION, [decision_id, since]).fetchone()
            if row is None:
                continue
            try:
                features = features_from_dict(orjson.loads(row[4]))
                found = DecisionRow(
                    str(row[0]), float(row[1]), str(row[2]), str(row[3]), features,
                    tuple(str(m) for m in row[5]), str(row[6]), float(row[7]), str(row[8]),
                )  # fmt: skip
            except (TypeError, ValueError) as exc:
                raise ValueError(f"malformed decision row: {exc}") from None
            if not 0.0 < found.probability <= 1.0:
                raise ValueError("malformed decision row: probability")
            return found
        return None

    def owner_learned(self, decision_id: str, since: float) -> bool:
        """Whether the owner's rows since ``since`` show it learned ``decision_id``."""
        for source in self._sources_of(owner_tag(decision_id)):
            row = self._file(source).execute(_OWNER_LEARNED, [decision_id, since]).fetchone()
            if row is not None and int(row[0]) > 0:
                return True
        return False

    def ingested(self, source: str) -> int:
        """The number of ``source``'s newest line in its central file (0 if none)."""
        self._file(source)
        return self._marks[source]

    def ingest(self, source: str, lines: Sequence[Line]) -> int:
        """Insert ``lines`` (consecutive) numbered after the file's mark, in one transaction
        with the new mark; returns how many went in. Lines that do not follow the mark (a gap:
        earlier lines were lost on the way) are left for the replica to send again. A line
        DuckDB refuses is left out alone (counted in the log line), never the batch."""
        con = self._file(source)
        mark = self._marks[source]
        fresh = [line for line in lines if line.seq > mark]
        if not fresh or fresh[0].seq != mark + 1:
            return 0
        segment = self._scratch / f"{source}.jsonl"
        last = fresh[-1].seq
        try:
            segment.write_bytes(b"".join(line.data for line in fresh))
            try:
                con.execute(ingest_sql(str(segment), last))
            except BAD_DATA_ERRORS:
                con.execute("ROLLBACK")
                self._one_by_one(con, segment, fresh)
        finally:
            segment.unlink(missing_ok=True)
        self._marks[source] = last
        return len(fresh)

    def _one_by_one(
        self, con: duckdb.DuckDBPyConnection, segment: Path, lines: Sequence[Line]
    ) -> None:
        refused = 0
        for line in lines:
            segment.write_bytes(line.data)
            try:
                con.execute(ingest_sql(str(segment), line.seq))
            except BAD_DATA_ERRORS:
                con.execute("ROLLBACK")
                con.execute(
                    "BEGIN; DELETE FROM journal_segments; "
                    f"INSERT INTO journal_segments VALUES ({int(line.seq)}, now()); COMMIT;"
                )
                refused += 1
        log.error("central_rows_refused", rows=refused, first=lines[0].seq, last=lines[-1].seq)

    def learned(self, since: float) -> dict[str, tuple[int, float | None]]:
        """Per source heard from at or after ``since`` (epoch seconds; or not known when: a
        file of an earlier version), the number up to which its updates are in the committed
        learner and when its last batch was read."""
        rows = self._state.execute(
            "SELECT source, seq, heard FROM learned WHERE heard IS NULL OR heard >= ?", [since]
        ).fetchall()
        return {str(s): (int(n), None if at is None else float(at)) for s, n, at in rows}

    def learned_mark(self, source: str) -> int:
        """The number up to which ``source``'s updates are in the committed learner (0 if
        none): what a source silent for long is deduplicated against when it sends again."""
        row = self._state.execute("SELECT seq FROM learned WHERE source = ?", [source]).fetchone()
        return 0 if row is None else int(row[0])

    def release_all_but(self, keep: set[str]) -> None:
        """Close every open central file but those of ``keep`` (files a join opened to read a
        dead owner's decisions, or a pruned source's, would otherwise stay open)."""
        for source in [s for s in self._files if s not in keep]:
            self.release(source)

    def release(self, source: str) -> None:
        """Close ``source``'s central file (it opens again when needed): a trainer holds
        open only the files of the replicas it hears from."""
        con = self._files.pop(source, None)
        self._marks.pop(source, None)
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def load_state(self) -> tuple[int, bytes] | None:
        """The committed (published version, learner snapshot), or None before the first."""
        row = self._state.execute(
            "SELECT version, snapshot FROM trainer_state WHERE id = 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def load_lineage(self) -> Lineage:
        """The committed :class:`Lineage` (the default one before any promotion)."""
        row = self._state.execute(
            "SELECT recipe, previous_recipe, previous, change FROM lineage WHERE id = 1"
        ).fetchone()
        if row is None:
            return Lineage()
        previous = None if row[2] is None else bytes(row[2])
        return Lineage(str(row[0]), str(row[1]), previous, str(row[3]))

    def load_joins(self) -> JoinState:
        """The joiner's committed state (empty before the first)."""
        rows = self._state.execute("SELECT * FROM forwarded_feedback").fetchall()
        counts = self._state.execute("SELECT * FROM forwarded_outcomes").fetchall()
        return (
            [(str(d), str(k), float(a), bytes(b)) for d, k, a, b in rows],
            {str(o): int(n) for o, n in counts},
        )

    def commit_state(
        self,
        learned: Mapping[str, int],
        version: int,
        updates: int,
        state: bytes,
        *,
        heard: Mapping[str, float] | None = None,
        lineage: Lineage | None = None,
        joins: JoinChanges | None = None,
    ) -> None:
        """Record the learned marks (with when each source was ``heard`` from last) and the
        learner's snapshot (and its ``lineage`` and what changed in the joiner's state, if
        given) together, atomically. Sources not in ``learned`` keep their rows."""
        heard = heard or {}
        con = self._state
        con.execute("BEGIN TRANSACTION")
        try:
            for source, seq in learned.items():
                con.execute(
                    "INSERT OR REPLACE INTO learned (source, seq, heard) VALUES (?, ?, ?)",
                    [source, seq, heard.get(source)],
                )
            con.execute(
                "INSERT OR REPLACE INTO trainer_state VALUES (1, ?, ?, ?)",
                [version, updates, state],
            )
            if lineage is not None:
                con.execute(
                    "INSERT OR REPLACE INTO lineage VALUES (1, ?, ?, ?, ?)",
                    [lineage.recipe, lineage.previous_recipe, lineage.previous, lineage.change],
                )
            if joins is not None:
                self._write_joins(con, joins)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_joins(con: duckdb.DuckDBPyConnection, joins: JoinChanges) -> None:
        """Write the joiner's changed rows (and delete its dropped ones) and its counts."""
        if joins.deleted:
            gone = pa.table({"decision_id": pa.array(joins.deleted, pa.string())})
            con.register("joins_gone", gone)
            try:
                con.execute(
                    "DELETE FROM forwarded_feedback "
                    "WHERE decision_id IN (SELECT decision_id FROM joins_gone)"
                )
            finally:
                con.unregister("joins_gone")
        if joins.rows:
            rows = joins.rows
            table = pa.table(
                {
                    "decision_id": [r[0] for r in rows],
                    "kind": [r[1] for r in rows],
                    "arrived": pa.array([r[2] for r in rows], pa.float64()),
                    "data": pa.array([r[3] for r in rows], pa.binary()),
                }
            )
            con.register("joins_in", table)
            try:
                con.execute("INSERT OR REPLACE INTO forwarded_feedback SELECT * FROM joins_in")
            finally:
                con.unregister("joins_in")
        for outcome, count in joins.counts.items():
            con.execute("INSERT OR REPLACE INTO forwarded_outcomes VALUES (?, ?)", [outcome, count])

    def close(self) -> None:
        """Close every file (a standby may then open them)."""
        for con in self._files.values():
            with contextlib.suppress(duckdb.Error):
                con.close()
        self._files.clear()
        with contextlib.suppress(duckdb.Error):
            self._state.close()
        with contextlib.suppress(OSError):
            self._scratch.rmdir()


__all__ = ["CentralLog", "Lineage", "source_file", "state_file", "valid_source"]
