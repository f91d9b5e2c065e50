"""How log rows are written as journal lines, and the SQL that moves a segment into DuckDB.

Each row is one JSON object (orjson: a few microseconds on the request thread) with a kind
``k``: ``d`` decision, ``f`` feedback, ``s`` settlement, ``a`` audit. Times are integer
microseconds since the epoch. DuckDB parses a whole segment natively (``read_json``), so
moving rows into the database costs the serving threads no Python work and no GIL.

A JSON column's value travels as its text (:func:`~banditroute.store.rows.json_text`), which
DuckDB stores as written: the digest of the row that its audit record carries covers that
text. JSON has no non-finite numbers: an infinite or NaN reward (an absurd but finite cost can
overflow the reward to minus infinity) travels as the text ``"-inf"`` and the DOUBLE column
reads it back as the number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import orjson

from banditroute.audit_record import AuditRecord
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord
from banditroute.store.rows import LoggedRow, json_text
from banditroute.store.rows import time_us as _us


def _num(value: float | None) -> float | str | None:
    """A float for a JSON line: non-finite ones as text DuckDB casts back."""
    if value is None or math.isfinite(value):
        return value
    return str(value)  # "inf", "-inf", "nan"


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)


def decision_line(r: DecisionRecord) -> bytes:
    """The journal line of a decision."""
    return _line(
        {
            "k": "d", "decision_id": r.decision_id, "time": _us(r.time), "tenant": r.tenant,
            "request_id": r.request_id, "objective": r.objective, "prompt_hash": r.prompt_hash,
            "prompt": r.prompt, "features": json_text(r.features), "eligible": r.eligible,
            "probabilities": [_num(p) for p in r.probabilities], "model": r.model,
            "probability": _num(r.probability),
            "policy_version": r.policy_version, "explored": r.explored,
            "tags": json_text(r.tags), "arm": r.arm, "rule": r.rule, "data_class": r.data_class,
            "excluded": json_text(r.excluded), "constraints": json_text(r.constraints),
            "shadow": json_text(r.shadow), "request_hash": r.request_hash,
        }
    )  # fmt: skip


def _feedback_row(r: FeedbackRecord) -> dict[str, Any]:
    return {
        "k": "f", "decision_id": r.decision_id, "time": _us(r.time), "model": r.model,
        "quality": _num(r.quality), "cost_usd": _num(r.cost_usd),
        "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
        "latency_ms": _num(r.latency_ms), "status": r.status, "reward": _num(r.reward),
        "disposition": r.disposition,
    }  # fmt: skip


def feedback_line(r: FeedbackRecord) -> bytes:
    """The journal line of a feedback."""
    return _line(_feedback_row(r))


def trainer_feedback_line(r: FeedbackRecord, tenant: str) -> bytes:
    """The outbox line of a feedback a cluster replica accepted for another replica's decision
    (disposition ``FOR_TRAINER``): a feedback line that also names the caller's tenant, which
    the trainer checks against the decision's (the row itself has no tenant column)."""
    return _line({**_feedback_row(r), "tenant": tenant})


def settlement_line(r: SettlementRecord) -> bytes:
    """The journal line of a settlement."""
    return _line(
        {"k": "s", "decision_id": r.decision_id, "time": _us(r.time), "action": r.action,
         "reward": _num(r.reward)}
    )  # fmt: skip


def audit_line(r: AuditRecord) -> bytes:
    """The journal line of an audit record. Its JSON fields travel as their canonical text
    (the hash covers that text's values, non-finite floats included)."""
    excluded, constraints, payload = r.json_fields()
    return _line(
        {
            "k": "a", "seq": r.seq, "time": r.time_us, "tenant": r.tenant, "kind": r.kind,
            "decision_id": r.decision_id, "policy_version": r.policy_version,
            "feature_hash": r.feature_hash, "eligible": r.eligible,
            "audit_excluded": excluded, "audit_constraints": constraints, "payload": payload,
            "prev_hash": r.prev_hash, "hash": r.hash, "row_digest": r.row_digest,
        }
    )  # fmt: skip


def row_line(row: LoggedRow) -> bytes:
    """The journal line of a decision, feedback or settlement row."""
    if isinstance(row, DecisionRecord):
        return decision_line(row)
    if isinstance(row, FeedbackRecord):
        return feedback_line(row)
    return settlement_line(row)


_COLUMNS = {
    "k": "VARCHAR", "decision_id": "VARCHAR", "time": "BIGINT", "tenant": "VARCHAR",
    "request_id": "VARCHAR", "objective": "VARCHAR", "prompt_hash": "VARCHAR",
    "prompt": "VARCHAR", "features": "VARCHAR", "eligible": "VARCHAR[]",
    "probabilities": "DOUBLE[]", "model": "VARCHAR", "probability": "DOUBLE",
    "policy_version": "VARCHAR", "explored": "BOOLEAN", "tags": "VARCHAR", "arm": "VARCHAR",
    "rule": "VARCHAR", "data_class": "VARCHAR", "excluded": "VARCHAR",
    "constraints": "VARCHAR", "shadow": "VARCHAR", "request_hash": "VARCHAR",
    "quality": "DOUBLE", "cost_usd": "DOUBLE", "input_tokens": "BIGINT",
    "output_tokens": "BIGINT", "latency_ms": "DOUBLE", "status": "VARCHAR", "reward": "DOUBLE",
    "disposition": "VARCHAR", "action": "VARCHAR", "seq": "BIGINT", "kind": "VARCHAR",
    "feature_hash": "VARCHAR", "audit_excluded": "VARCHAR", "audit_constraints": "VARCHAR",
    "payload": "VARCHAR", "prev_hash": "VARCHAR", "hash": "VARCHAR", "row_digest": "VARCHAR",
}  # fmt: skip
"""Every key a line may carry, with its type (a line leaves out the keys of other kinds). JSON
columns are read as text and cast, so DuckDB keeps the text the row digest covers (a line
written before, with the value as a JSON object, reads as that object's text)."""

_TS = "make_timestamp(time) AT TIME ZONE 'UTC' AS time"
"""A line's integer microseconds as a TIMESTAMPTZ whatever the session's time zone (a plain
cast would read them as local time: a reader's connection is not set to UTC)."""

_COLUMNS_OF = {
    "decisions": f"""decision_id, {_TS}, tenant, request_id, objective, prompt_hash, prompt,
        features::JSON AS features, eligible, probabilities, model, probability,
        policy_version, explored, tags::JSON AS tags, arm, rule, data_class,
        excluded::JSON AS excluded, constraints::JSON AS constraints, shadow::JSON AS shadow,
        request_hash""",
    "feedback": f"""decision_id, {_TS}, model, quality, cost_usd, input_tokens, output_tokens,
        latency_ms, status, reward, disposition""",
    "settlements": f"decision_id, {_TS}, action, reward",
    "audit": f"""seq, {_TS}, tenant, kind, decision_id, policy_version, feature_hash, eligible,
        audit_excluded::JSON AS excluded, audit_constraints::JSON AS constraints,
        payload::JSON AS payload, prev_hash, hash, row_digest""",
}
"""Each table's columns, in its order and under its names, from the lines of one kind."""

_KIND_OF = {"decisions": "d", "feedback": "f", "settlements": "s", "audit": "a"}


def _select(table: str, source: str) -> str:
    return f"SELECT {_COLUMNS_OF[table]} FROM {source} WHERE k = '{_KIND_OF[table]}'"


def _read_json(files: str, *, skip_bad_lines: bool = False) -> str:
    pairs = (f"{sql_string(k)}: {sql_string(t)}" for k, t in _COLUMNS.items())
    columns = "{" + ", ".join(pairs) + "}"
    lenient = ", ignore_errors = true" if skip_bad_lines else ""
    return f"read_json({files}, format = 'newline_delimited', columns = {columns}{lenient})"


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _mark(number: int) -> str:
    return (
        f"DELETE FROM journal_segments; INSERT INTO journal_segments VALUES ({int(number)}, now());"
    )


def mark_sql(number: int) -> str:
    """Record segment ``number`` as the newest one moved in (or set aside)."""
    return f"BEGIN TRANSACTION; {_mark(number)} COMMIT;"


def _inserts(segment: str) -> str:
    """Statements that insert every row of the segment file at ``segment`` into its table."""
    inserts = "\n".join(
        f"INSERT INTO {table} {_select(table, 'segment')}"
        + (" ORDER BY seq;" if table == "audit" else ";")
        for table in _COLUMNS_OF
    )
    source = _read_json(sql_string(segment))
    return (
        f"CREATE OR REPLACE TEMP TABLE segment AS SELECT * FROM {source};\n"
        f"{inserts}\nDROP TABLE segment;"
    )


def ingest_sql(segment: str, number: int) -> str:
    """One transaction that inserts every row of the segment file at ``segment`` into its
    table and moves the ingested mark to its ``number`` (so a restart never inserts it
    twice: segments go in strictly in order)."""
    return f"BEGIN TRANSACTION;\n{_inserts(segment)}\n{_mark(number)}\nCOMMIT;"


def probe_sql(segment: str) -> str:
    """The inserts of :func:`ingest_sql` in a transaction rolled back: fails exactly when
    ingesting the file at ``segment`` would, and changes nothing."""
    return f"BEGIN TRANSACTION;\n{_inserts(segment)}\nROLLBACK;"


def journal_selects(segments: Sequence[str], tables: Iterable[str]) -> dict[str, str]:
    """``SELECT`` expressions over the rows of journal segments not yet moved in, per table,
    for a reader that must not change the files (a log whose server was killed). A torn last
    line (a write the kill interrupted, never acknowledged) is skipped."""
    files = "[" + ", ".join(sql_string(s) for s in segments) + "]"
    source = _read_json(files, skip_bad_lines=True)
    return {table: _select(table, source) for table in tables if table in _COLUMNS_OF}


CREATE_JOURNAL_TABLE = """
CREATE TABLE IF NOT EXISTS journal_segments (segment BIGINT, ingested TIMESTAMPTZ);
"""
"""One row: the newest journal segment moved into the database (and when), written in the
same transaction as its rows."""


def ingested_upto(con: duckdb.DuckDBPyConnection, table: str = "journal_segments") -> int:
    """The ingested mark kept in ``table``: the newest segment moved in (0 if none)."""
    row = con.execute(f"SELECT coalesce(max(segment), 0) FROM {table}").fetchone()
    return 0 if row is None else int(row[0])
