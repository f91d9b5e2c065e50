"""A tamper-evident audit log: every decision, feedback and settlement as a record in a hash
chain, which also covers the logged row each one describes.

Each :class:`AuditRecord` says who asked (tenant), what happened (``kind``: ``"decision"``,
``"feedback"`` or ``"settlement"``), under which policy version and for which features (their
hash), which models were eligible, why every other model was excluded, which constraints
applied, the outcome (``payload``: the choice; the reward fragments and reward; what the
settlement did), and the digest of the exact ``decisions``, ``feedback`` or ``settlements``
row it describes (``row_digest``). Records are numbered ``seq = 1, 2, ...``; each carries the
hash of the one before it::

    hash(n) = sha256_hex(hash(n-1) + canonical_json(content(n)))      hash(0) = GENESIS_HASH

``content`` is every field except the two hashes, with ``seq`` included and ``time`` as
integer microseconds since the epoch, in canonical JSON (:mod:`banditroute.canonical`; the
encoding is :mod:`banditroute.audit_record`). The JSON fields are stored as the exact
canonical text the hash covers, and :func:`verify` hashes those stored bytes, after checking
that each is canonical: any byte-level change to a record (a duplicate key, which DuckDB and
Python's json read differently; whitespace; anything else) breaks it, even where a JSON
parser would read back the same values.

What :func:`verify` detects, reading the ``audit`` table in ``seq`` order:

- an edited record (its stored content no longer hashes to its ``hash``, or a JSON field is
  no longer canonical text); if the editor also rewrote that record's ``hash``, the next
  record's ``prev_hash`` no longer matches, so the break is reported one record later;
- an inserted record (a duplicate ``seq``, or a ``prev_hash`` that does not link);
- a deleted record (a gap in ``seq``; deleting and renumbering breaks the hashes instead);
- reordered records (a record's ``seq`` is part of its hash, and the links break);
- a logged row that is missing, altered (down to a byte of a JSON column), inserted or
  duplicated: each row must be the one exactly one record's ``row_digest`` describes
  (:mod:`banditroute.audit_rows`; rows of a log written before row digests are taken on trust
  from their records, and counted).

What it cannot detect on its own: a truncated tail (the last records deleted leave a shorter,
perfectly valid chain), and a wholesale rewrite of every record from some point on (the chain
has no secret: anyone who can write the table can recompute sha256). Both are caught by
anchoring: an operator (or a monitor) who notes the head ``(seq, hash)`` that ``banditroute
audit verify`` prints, and later passes it as ``expected_head``, learns whether the chain
still reaches that head unchanged. Records appended after the noted head are accepted.

A restart continues the chain: build the new :class:`AuditChain` from :func:`read_head` of
the log. Records the writer had not committed before a crash are a truncated tail: the chain
continues from the last committed record and verifies.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from banditroute.audit_record import (
    GENESIS_HASH,
    KINDS,
    AuditKind,
    AuditRecord,
    chain_hash,
    content,
    encode_field,
    joined_content,
    record_hash,
    time_us,
)
from banditroute.audit_rows import check_rows
from banditroute.canonical import canonical_json, is_canonical
from banditroute.errors import InvalidArgument
from banditroute.store.reader import TABLES, LogSource, export_selects, file_selects
from banditroute.store.rows import LoggedRow
from banditroute.store.rows import row_digest as digest_row
from banditroute.store.schema import CREATE_TABLES

__all__ = [
    "AUDIT_TABLE",
    "CREATE_AUDIT_TABLE",
    "GENESIS_HASH",
    "AuditChain",
    "AuditKind",
    "AuditRecord",
    "VerifyResult",
    "canonical_json",
    "open_audit_log",
    "read_head",
    "record_hash",
    "verify",
]

AUDIT_TABLE = "audit"

CREATE_AUDIT_TABLE = """
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT, time TIMESTAMPTZ, tenant VARCHAR, kind VARCHAR, decision_id VARCHAR,
    policy_version VARCHAR, feature_hash VARCHAR, eligible VARCHAR[], excluded JSON,
    constraints JSON, payload JSON, prev_hash VARCHAR, hash VARCHAR, row_digest VARCHAR);
ALTER TABLE audit ADD COLUMN IF NOT EXISTS row_digest VARCHAR;
"""
"""The JSON columns hold the canonical text the hash covers, byte for byte (DuckDB keeps a
JSON value's text as written). The ``ALTER`` adds ``row_digest`` to a log written before it
(its older records keep NULL there, as they were hashed without one)."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, how many records were read, and the first problem.

    ``first_bad_seq`` is the ``seq`` of the first record that does not verify (for a missing
    record: the ``seq`` that is missing; for a record whose logged row is missing or altered:
    that record; None for a logged row no record describes); ``problem`` says what is wrong.
    ``head`` is the last record's ``(seq, hash)`` when the chain is intact: note it to detect
    truncation or a rewrite later (``verify(con, expected_head=head)``). ``unchecked_rows``
    counts logged rows taken on trust from records written before row digests.
    """

    ok: bool
    records: int
    first_bad_seq: int | None
    problem: str | None
    head: tuple[int, str] | None = None
    unchecked_rows: int = 0


class AuditChain:
    """The head of the chain: numbers and hashes new records. Thread-safe.

    ``last_seq`` and ``last_hash`` are those of the newest record already written (``0`` and
    :data:`GENESIS_HASH` for a new log; :func:`read_head` after a restart). ``sink``, if given,
    is called with each new record while the chain's lock is held, so records reach it in
    ``seq`` order (pass the log writer's enqueue function: then a crash can lose only a tail
    of the chain, never a record in the middle). It must be quick and must not call back into
    the chain.
    """

    def __init__(
        self,
        last_seq: int = 0,
        last_hash: str = GENESIS_HASH,
        *,
        sink: Callable[[AuditRecord], None] | None = None,
    ) -> None:
        if last_seq < 0:
            raise ValueError(f"last_seq must be >= 0, got {last_seq}")
        if len(last_hash) != 64:
            raise ValueError(f"last_hash must be 64 hex digits, got {last_hash!r}")
        self._seq = last_seq
        self._hash = last_hash
        self._sink = sink
        self._lock = threading.Lock()

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest record (``(0, GENESIS_HASH)`` if none yet)."""
        with self._lock:
            return self._seq, self._hash

    def append(
        self,
        *,
        time: float,
        tenant: str,
        kind: AuditKind,
        decision_id: str,
        policy_version: str,
        feature_hash: str,
        eligible: Iterable[str],
        excluded: Mapping[str, str] | None = None,
        constraints: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        row: LoggedRow | None = None,
    ) -> AuditRecord:
        """Number, hash and return the next record (and hand it to the sink, if any).

        ``row`` is the logged row the record describes: its digest is hashed with the record,
        and the sink gets it with the record, to log both in one piece (so that no crash or
        segment boundary ever leaves one without the other).

        ValueError for an unknown ``kind`` or a non-finite time; TypeError for a value JSON
        cannot hold. A failed append consumes no ``seq``.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        if not math.isfinite(time):
            raise ValueError(f"time must be finite, got {time!r}")
        eligible_t = tuple(eligible)
        excluded_d = dict(excluded or {})
        constraints_d = dict(constraints or {})
        payload_d = dict(payload or {})
        micros = time_us(time)
        row_digest = None if row is None else digest_row(row)
        try:  # encoded once, for the hash and for the log row (see AuditRecord.encoded)
            encoded: tuple[str, str, str] | None = (
                encode_field(excluded_d), encode_field(constraints_d), encode_field(payload_d),
            )  # fmt: skip
        except ValueError:  # a NaN or infinity: content's fallback, and encoded on writing
            encoded = None
        with self._lock:
            seq = self._seq + 1
            head = (seq, micros, tenant, kind, decision_id, policy_version, feature_hash)
            text = (
                content((*head, list(eligible_t), excluded_d, constraints_d, payload_d), row_digest)
                if encoded is None
                else joined_content(head, eligible_t, encoded, row_digest)
            )
            digest = chain_hash(self._hash, text)
            record = AuditRecord(
                seq=seq, time=time, tenant=tenant, kind=kind, decision_id=decision_id,
                policy_version=policy_version, feature_hash=feature_hash, eligible=eligible_t,
                excluded=excluded_d, constraints=constraints_d, payload=payload_d,
                prev_hash=self._hash, hash=digest, row_digest=row_digest, row=row,
                encoded=encoded,
            )  # fmt: skip
            if self._sink is not None:
                self._sink(record)
            self._seq, self._hash = seq, digest
        return record


def read_head(con: duckdb.DuckDBPyConnection, table: str = AUDIT_TABLE) -> tuple[int, str]:
    """``(seq, hash)`` of the highest-numbered record, ``(0, GENESIS_HASH)`` if none: what a
    restarted server passes to :class:`AuditChain` to continue the chain."""
    row = con.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]), str(row[1])


_JSON_FIELDS = ("excluded", "constraints", "payload")


def verify(
    con: duckdb.DuckDBPyConnection,
    *,
    expected_head: tuple[int, str] | None = None,
    table: str = AUDIT_TABLE,
) -> VerifyResult:
    """Check the audit chain in ``table``: continuous ``seq`` from 1, every ``prev_hash``
    linking to the record before, every ``hash`` matching its record's stored content; then
    that the logged tables in ``con`` (``decisions``, ``feedback``, ``settlements``; a missing
    one counts as empty) hold exactly the rows the records' row digests describe
    (:func:`~banditroute.audit_rows.check_rows`).

    With ``expected_head = (seq, hash)`` (a head noted earlier) the chain must also reach that
    ``seq`` and carry that ``hash`` there: this detects a truncated tail and a rewrite of the
    records up to it, which a chain alone cannot. Stops at the first problem.
    """
    has_digests = "row_digest" in con.sql(f"SELECT * FROM {table} LIMIT 0").columns
    data = con.sql(
        f"""SELECT seq, epoch_us(time) AS time_us, tenant, kind, decision_id, policy_version,
                   feature_hash, eligible, excluded::VARCHAR, constraints::VARCHAR,
                   payload::VARCHAR, prev_hash, hash,
                   {"row_digest" if has_digests else "NULL::VARCHAR"}
            FROM {table} ORDER BY seq, hash"""
    ).to_arrow_table()
    cols = [data.column(i).to_pylist() for i in range(data.num_columns)]
    count = data.num_rows
    expected_seq, prev = 1, GENESIS_HASH

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(False, count, seq, problem)

    for i in range(count):
        seq = cols[0][i]
        prev_hash, stored = cols[11][i], cols[12][i]
        if seq is None:
            return bad(expected_seq, f"record after seq {expected_seq - 1} has no seq")
        if seq < expected_seq:
            return bad(seq, f"seq {seq} appears more than once or out of order (inserted record)")
        if seq > expected_seq:
            missing = (
                f"record {expected_seq} is missing"
                if seq == expected_seq + 1
                else f"records {expected_seq}..{seq - 1} are missing"
            )
            return bad(expected_seq, f"{missing} (seq jumps from {expected_seq - 1} to {seq})")
        if prev_hash != prev:
            return bad(seq, f"prev_hash does not link to record {seq - 1} (inserted, deleted "
                            f"or rewritten record before it)")  # fmt: skip
        texts = [cols[c][i] for c in (8, 9, 10)]
        for name, text in zip(_JSON_FIELDS, texts, strict=True):
            if not is_canonical(text):
                problem = "changed bytes, a duplicate key or whitespace"
                return bad(seq, f"{name} is not the canonical text that was hashed ({problem}): "
                                "record edited")  # fmt: skip
        head = [seq, *(cols[c][i] for c in range(1, 7))]
        text = joined_content(head, cols[7][i], texts, cols[13][i])
        if chain_hash(prev_hash, text) != stored:
            return bad(seq, "content does not match its hash (record edited)")
        expected_seq, prev = seq + 1, stored
    last_seq = expected_seq - 1
    if expected_head is not None:
        head_seq, head_hash = expected_head
        if head_seq < 0:
            raise ValueError(f"expected_head: seq must be >= 0, got {head_seq}")
        if last_seq < head_seq:
            return bad(
                last_seq + 1,
                f"the log ends at seq {last_seq} but the expected head is seq {head_seq}: "
                f"records {last_seq + 1}..{head_seq} were removed (truncated)",
            )
        at_head = cols[12][head_seq - 1] if head_seq >= 1 else GENESIS_HASH
        if at_head != head_hash:
            return bad(
                head_seq,
                f"record {head_seq} has hash {at_head[:16]}..., not the expected head "
                f"{head_hash[:16]}... (the chain up to it was rewritten)",
            )
    rows = check_rows(con, zip(cols[0], cols[3], cols[4], cols[13], strict=True))
    if rows.problem is not None:
        return VerifyResult(False, count, rows.seq, rows.problem, None, rows.unchecked)
    return VerifyResult(True, count, None, None, (last_seq, prev), rows.unchecked)


def open_audit_log(path: Path, *, arg: str = "--log") -> LogSource:
    """Open the audit records of a log for reading, as a view ``audit``, with the logged
    tables they chain (``decisions``, ``feedback``, ``settlements``; empty where the log has
    none): from the DuckDB file (attached read-only), or from the Parquet parts of its export
    when the file is in use by a running server (or when ``path`` is the export directory),
    the same fallback as :func:`~banditroute.store.reader.open_log`. InvalidArgument naming
    ``arg`` if the log cannot be read or holds no audit records table. One file only: each
    file of a multi-worker server carries its own chain.

    An export is read part by part while the server may be adding parts: a verify that
    overlaps the server writing one can see a table's new part without another's and report
    rows without records (or the reverse); run it again, or verify the stopped file."""
    con = duckdb.connect()
    tables = (AUDIT_TABLE, *TABLES)
    try:
        if path.is_dir():
            selects = export_selects(path, tables)
            description, live = f"Parquet export {path}", True
        elif not path.exists():
            raise InvalidArgument(f"{arg}: no such log {str(path)!r}", field=arg)
        else:
            selects, description, live = file_selects(con, path, "log", arg, tables)
        if AUDIT_TABLE not in selects:
            where = "no Parquet parts for it (not exported yet?)" if live else "no such table"
            raise InvalidArgument(
                f"{arg}: {str(path)!r} has no {AUDIT_TABLE} table (audit logging off?): {where}",
                field=arg,
            )
        con.execute(CREATE_TABLES)  # typed, empty tables for any logged table not there
        for table, select in selects.items():
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"CREATE VIEW {table} AS {select}")
    except BaseException:
        con.close()
        raise
    return LogSource(con, description, live_export=live)
