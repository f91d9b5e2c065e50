"""Check the logged tables against the audit chain: every decisions, feedback and settlements
row must be the row one audit record's ``row_digest`` describes, and the other way round.

:func:`check_rows` recomputes each row's digest (:mod:`banditroute.store.rows`) from what is
stored and pairs rows with records one to one, so an edited row (down to a byte of a JSON
column), a deleted one, an inserted one and a duplicated one all show: a record whose row is
gone or altered, or a row no record describes.

Logs written before row digests existed have records without one (and no settlement records
at all): their rows cannot be checked. Each such record vouches, unchecked, for one row of its
table with its decision id (a decision record also for one settlement row); any other row
that matches no record is a problem. The result counts the rows taken on trust.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from banditroute.store.rows import DIGEST_COLUMNS, digest

__all__ = ["TABLE_OF_KIND", "RowCheck", "check_rows"]

TABLE_OF_KIND = {"decision": "decisions", "feedback": "feedback", "settlement": "settlements"}
"""The logged table whose row an audit record of each kind describes."""


@dataclass(frozen=True)
class RowCheck:
    """Outcome of :func:`check_rows`: the first problem (None if every row matched), the
    record it concerns (None for a row no record describes), and how many rows were taken on
    trust from records written before row digests."""

    problem: str | None
    seq: int | None
    unchecked: int


def check_rows(
    con: duckdb.DuckDBPyConnection, records: Iterable[tuple[int, str, str, str | None]]
) -> RowCheck:
    """Pair the rows of the logged tables in ``con`` with ``records`` (``(seq, kind,
    decision_id, row_digest)`` of every record of an intact chain, in ``seq`` order)."""
    expected: dict[tuple[str, str], list[int]] = {}
    trusted: Counter[tuple[str, str]] = Counter()
    for seq, kind, decision_id, row_digest in records:
        table = TABLE_OF_KIND.get(kind)
        if table is None:
            continue
        if row_digest is None:
            trusted[(table, decision_id)] += 1
            if table == "decisions":
                trusted[("settlements", decision_id)] += 1
        else:
            expected.setdefault((table, row_digest), []).append(seq)
    strays: list[tuple[str, str]] = []
    unchecked = 0
    for table, columns in DIGEST_COLUMNS.items():
        try:
            data = con.sql(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        except duckdb.CatalogException:  # no such table: as good as empty
            data = []
        for values in data:
            seqs = expected.get((table, digest(table, list(values))))
            if seqs:
                seqs.pop()
                continue
            key = (table, values[0])
            if trusted[key] > 0:
                trusted[key] -= 1
                unchecked += 1
            else:
                strays.append(key)
    missing = sorted((seq, table) for (table, _), seqs in expected.items() for seq in seqs)
    if missing:
        seq, table = missing[0]
        return RowCheck(
            f"the {table} row that record {seq} describes is missing or altered "
            f"({len(missing)} record(s) without their row, {len(strays)} row(s) without a "
            "record): a row was deleted or edited",
            seq,
            unchecked,
        )
    if strays:
        table, decision_id = strays[0]
        return RowCheck(
            f"{len(strays)} row(s) match no audit record, the first a {table} row for "
            f"decision_id {decision_id!r}: a row was inserted or duplicated",
            None,
            unchecked,
        )
    return RowCheck(None, None, unchecked)
